"""The one exception type a user sees as a message instead of a traceback, and how a child process's
end is put into words."""

import signal


class PipelineError(Exception):
    """A failure with a message that says what, where, and what to do; stages print it and exit 1."""

    exit_code = 1


class Stopped(PipelineError):
    """A stage that stopped on request before its end with its work saved, to be run again (a
    training preempted with a checkpoint): exit 75, EX_TEMPFAIL, "try again later"."""

    exit_code = 75


def describe_exit(exitcode: int | None) -> str:
    """`signal 9 (SIGKILL: killed, often the out-of-memory killer)` or `exit code 3`, for messages."""
    if exitcode is None:
        return "no exit status"
    if exitcode >= 0:
        return f"exit code {exitcode}"
    number = -exitcode
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    cause = {
        signal.SIGKILL: "killed, often by the out-of-memory killer",
        signal.SIGSEGV: "a crash in native code",
        signal.SIGBUS: "a crash in native code, or a memory-mapped file that shrank",
        signal.SIGTERM: "terminated by another process",
    }.get(signal.Signals(number))
    return f"signal {number} ({name}: {cause})" if cause else f"signal {number} ({name})"
