"""The on-disk token format: a bare array, its metadata, and a per-document index.

`00.bin` is the little-endian token stream, every document followed by the separator (eos), so
`np.memmap(path, dtype=np.uint16, mode="r")` reads it as nanoGPT's loader does. `00.json` says
what the array is (dtype, vocabulary, tokenizer hash, counts); `00.idx` holds one INDEX_DTYPE
record per document: where its tokens start, its UTF-8 length and the id of its group (data.group_field).
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import files
from pipeline.core.errors import PipelineError

FORMAT = "pile-gpt tokens v1"
INDEX_DTYPE = np.dtype([("token_offset", "<u8"), ("n_bytes", "<u8"), ("set_id", "<u4")])
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


def metadata_path(bin_path: Path) -> Path:
    return Path(bin_path).with_suffix(".json")


def index_path(bin_path: Path) -> Path:
    return Path(bin_path).with_suffix(".idx")


def check_dtype_fits(vocab_size: int, dtype: str, model: Path) -> None:
    """Refuse, before any work, a vocabulary whose largest id would wrap around in `dtype`."""
    limit = np.iinfo(DTYPES[dtype]).max + 1
    if vocab_size > limit:
        raise PipelineError(
            f"{model}: {vocab_size:,} pieces do not fit {dtype} (at most {limit:,}); set pretokenize.dtype: uint32"
        )


def read_metadata(bin_path: Path) -> dict[str, Any]:
    path = metadata_path(bin_path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run `dvc repro pretokenize` to rebuild the token arrays") from None
    except ValueError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise PipelineError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}; rerun pretokenize")
    return meta


def open_tokens(bin_path: Path) -> np.memmap:
    """The token array, memory-mapped read-only, with the dtype its metadata states."""
    meta = read_metadata(bin_path)
    tokens = np.memmap(bin_path, dtype=DTYPES[meta["dtype"]], mode="r")
    if len(tokens) != meta["n_tokens"]:
        raise PipelineError(
            f"{bin_path}: holds {len(tokens):,} tokens, its metadata says "
            f"{meta['n_tokens']:,}; the file is damaged, rerun pretokenize"
        )
    return tokens


def open_index(bin_path: Path) -> np.ndarray:
    return np.fromfile(index_path(bin_path), dtype=INDEX_DTYPE)


def check_arrays(paths: list[Path], model: Path, vocab_size: int) -> list[dict]:
    """Refuse arrays made by another tokenizer, naming the file; return their metadata."""
    sha = files.sha256(model)
    metas = []
    for path in paths:
        meta = read_metadata(path)
        if meta["tokenizer_sha256"] != sha or meta["vocab_size"] != vocab_size:
            raise PipelineError(
                f"{path}: made with another tokenizer (sha256 {meta['tokenizer_sha256'][:12]}..., "
                f"{meta['vocab_size']} pieces; current {model}: {sha[:12]}..., {vocab_size} pieces); "
                "rerun `dvc repro pretokenize`"
            )
        if meta["dtype"] not in DTYPES:
            raise PipelineError(f"{path}: unknown dtype {meta['dtype']!r}")
        if meta["n_tokens"] < 2:
            raise PipelineError(f"{path}: holds {meta['n_tokens']} tokens, too few for one training window")
        metas.append(meta)
    return metas
