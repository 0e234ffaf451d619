"""The one exception type a user sees as a message instead of a traceback."""


class PipelineError(Exception):
    """A failure with a message that says what, where, and what to do; stages print it and exit 1."""
