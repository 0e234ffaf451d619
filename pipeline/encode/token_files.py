"""The on-disk token format: a bare array, its metadata, and a per-document index.

`00.bin` is the little-endian token stream, every document followed by the separator (eos), so
`np.memmap(path, dtype=np.uint16, mode="r")` reads it as nanoGPT's loader does. `00.json` says
what the array is (dtype, vocabulary, tokenizer hash, counts); `00.idx` holds one INDEX_DTYPE
record per document: where its tokens start, its UTF-8 length and the id of its group (data.group_field).
"""

import contextlib
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import files
from pipeline.core.errors import PipelineError

FORMAT = "pile-gpt tokens v2"  # v2: the metadata holds the sha256 of the tokens
INDEX_DTYPE = np.dtype([("token_offset", "<u8"), ("n_bytes", "<u8"), ("set_id", "<u4")])
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


def metadata_path(bin_path: Path) -> Path:
    return Path(bin_path).with_suffix(".json")


def index_path(bin_path: Path) -> Path:
    return Path(bin_path).with_suffix(".idx")


class TokenWriter:
    """Writes a token array and its document index, whole or not at all, and counts what it wrote.

        with TokenWriter(output) as writer:
            writer.add(tokens, doc_tokens, doc_bytes, groups)   # a batch of documents, in order
        write_json_atomic(metadata_path(output), writer.metadata(vocab_size=..., ...))

    The .idx and .bin are renamed into place when the block ends without error (the .bin last: its
    presence means the pair is complete); on any error neither is touched."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.n_tokens = self.n_docs = self.n_bytes = 0
        self.set_ids: dict[str, int] = {}
        """Group name -> its set id in the index, in the order the groups first appear."""
        self.per_group: dict[str, Counter] = {}
        self.digest = hashlib.sha256()  # of the .bin, as it is written: what a checkpoint records of its data

    def __enter__(self) -> "TokenWriter":
        with contextlib.ExitStack() as stack:
            tmp_index, tmp_tokens = stack.enter_context(files.replacing(index_path(self.output), self.output))
            self._index, self._tokens = (
                stack.enter_context(open(tmp_index, "wb")),
                stack.enter_context(open(tmp_tokens, "wb")),
            )
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info) -> bool:
        return self._stack.__exit__(*exc_info)

    def add(self, tokens: np.ndarray, doc_tokens: np.ndarray, doc_bytes: np.ndarray, groups: list[str]) -> None:
        """Append a batch: its tokens (each document's followed by the separator), and per document its
        token count (separator included), its UTF-8 length and its group."""
        index = np.empty(len(doc_tokens), dtype=INDEX_DTYPE)
        index["token_offset"] = self.n_tokens + np.concatenate(([0], np.cumsum(doc_tokens)[:-1])).astype(np.uint64)
        index["n_bytes"] = doc_bytes
        index["set_id"] = [self.set_ids.setdefault(name, len(self.set_ids)) for name in groups]
        for name, count, size in zip(groups, doc_tokens, doc_bytes):
            counts = self.per_group.setdefault(name, Counter())
            counts["docs"] += 1
            counts["tokens"] += int(count)
            counts["bytes"] += int(size)
        data = tokens.tobytes()
        self._tokens.write(data)
        self.digest.update(data)
        self._index.write(index.tobytes())
        self.n_tokens += len(tokens)
        self.n_docs += len(doc_tokens)
        self.n_bytes += int(doc_bytes.sum())

    def metadata(self, **about: Any) -> dict[str, Any]:
        """The .json beside the array: what the caller says `about` it, and what this writer counted."""
        return {
            "format": FORMAT,
            **about,
            "n_tokens": self.n_tokens,
            "sha256": self.digest.hexdigest(),
            "n_docs": self.n_docs,
            "n_bytes": self.n_bytes,
            "index": {"file": index_path(self.output).name, "dtype": INDEX_DTYPE.descr},
            "groups": list(self.set_ids),
            "per_group": {name: dict(counts) for name, counts in self.per_group.items()},
        }


def check_folder(directory: Path, keys: list[str], stage: str) -> None:
    """Refuse to run `stage`, which depends on the whole of `directory` (DVC cannot take a stage's deps
    from params), when it holds a file that no stage makes: it would change the folder's hash in
    dvc.lock, and no clean clone would have it."""
    made = {f"{key}{suffix}" for key in keys for suffix in (".bin", ".idx", ".json")}
    for path in files.strays(directory, made):
        key = path.name.split(".")[0]
        raise PipelineError(
            f"{path}: no stage makes this file ({key!r} is no key of data.shards), yet {stage} depends on the "
            f"whole of {directory}: its hash in dvc.lock would count it, and no clean clone has it. Remove it "
            f"({'rm ' + str(directory / key) + '.*' if path.is_file() else 'rm -r ' + str(path)}), or add the "
            f"key {key!r} under data.shards"
        )


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
