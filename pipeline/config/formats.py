"""The corpus file formats a shard may be in: what params may name and what pipeline.ingest reads.

A tracked dependency of every stage that reads documents: a change to this list reruns them."""

FORMATS = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".parquet")
"""The suffixes a corpus file may have (pipeline.ingest.documents reads each)."""
DEFAULT_SUFFIX = ".jsonl.zst"  # of a shard path without a format suffix (the Pile's)


def format_suffix(name: str) -> str | None:
    """The format suffix `name` ends with, or None."""
    return max((s for s in FORMATS if name.endswith(s)), key=len, default=None)
