"""The corpus file formats a shard may be in, and the files a shard key stands for: what params may
name and what pipeline.ingest reads. A tracked dependency of every stage that reads documents: a
change here reruns them, and only them."""

from pathlib import Path

from pipeline.config import layout
from pipeline.config.schema import DataParams, Shard

FORMATS = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".parquet")
"""The suffixes a corpus file may have (pipeline.ingest.documents reads each)."""
DEFAULT_SUFFIX = ".jsonl.zst"  # of a shard path without a format suffix (the Pile's)
MEGATRON_SUFFIX = ".bin"  # a shard path ending so names an existing Megatron pair: PREFIX.bin and PREFIX.idx


def format_suffix(name: str) -> str | None:
    """The format suffix `name` ends with, or None."""
    return max((s for s in FORMATS if name.endswith(s)), key=len, default=None)


def is_megatron(shard: Shard) -> bool:
    """Whether the shard is an existing Megatron pair of token ids (imported as it is) rather than text."""
    return shard.path.endswith(MEGATRON_SUFFIX)


def shard_files(shard: Shard) -> list[str]:
    """The shard's files under the mirror root, in order, with their format suffix; for a Megatron pair,
    its .bin, its .idx and the tokenizer it was made with."""
    if is_megatron(shard):
        return [shard.path, shard.path.removesuffix(MEGATRON_SUFFIX) + ".idx", shard.tokenizer]
    names = [shard.path.format(n) for n in range(*shard.numbers)] if shard.numbers else [shard.path]
    return [name if format_suffix(name) else name + DEFAULT_SUFFIX for name in names]


def source(data: DataParams, key: str) -> str:
    """The mirror root of the key's files: its own `source`, else data.source."""
    return layout.shard(data, key).source or data.source


def raw_files(data: DataParams, key: str) -> list[Path]:
    """The key's downloaded files, in order: data/raw/KEY/<path on the mirror>."""
    return [layout.RAW_DIR / key / name for name in shard_files(layout.shard(data, key))]
