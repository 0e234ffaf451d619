"""The on-disk token format: a bare array, Megatron's index of it, per-document facts, and its metadata.

`00.bin` is the little-endian token stream, every document followed by the separator (eos), so
`np.memmap(path, dtype=np.uint16, mode="r")` reads it as nanoGPT's loader does. `00.idx` is
Megatron's MMIDIDX index of it (pipeline.encode.megatron_index: one sequence per document, its
separator included), so `--data-path data/tokens/00` reads the pair in place in Megatron-LM, NeMo and
GPT-NeoX. `00.docs` holds one DOCS_DTYPE record per document for evaluation: its UTF-8 length and
the id of its group (data.group_field). `00.json` says what the array is (dtype, vocabulary,
tokenizer hash, counts, groups).
"""

import contextlib
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import files
from pipeline.core.errors import PipelineError
from pipeline.encode import megatron_index

FORMAT = "pile-gpt tokens v3"  # v3: the .idx is Megatron's MMIDIDX index; bytes and groups moved to the .docs
DOCS_DTYPE = np.dtype([("n_bytes", "<u8"), ("set_id", "<u4")])
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
ID_LIMITS = {"uint16": 1 << 16, "uint32": 1 << 31}
"""Ids must be below these: uint32 arrays are indexed with Megatron's int32 code, whose bytes they share
only below 2**31."""
SUFFIXES = (".bin", ".idx", ".docs", ".json")
"""The files of one token array, all made by its stage."""


def metadata_path(bin_path: Path) -> Path:
    return Path(bin_path).with_suffix(".json")


def index_path(bin_path: Path) -> Path:
    return Path(bin_path).with_suffix(".idx")


def docs_path(bin_path: Path) -> Path:
    return Path(bin_path).with_suffix(".docs")


class TokenWriter:
    """Writes a token array, its index and its per-document facts, whole or not at all, and counts
    what it wrote.

        with TokenWriter(output, "uint16") as writer:
            writer.add(tokens, doc_tokens, doc_bytes, groups)   # a batch of documents, in order
        write_json_atomic(metadata_path(output), writer.metadata(vocab_size=..., ...))

    The .idx, .docs and .bin are renamed into place when the block ends without error (the .bin last:
    its presence means the set is complete); on any error none is touched."""

    def __init__(self, output: Path, dtype: str):
        self.output, self.dtype = Path(output), dtype
        self.n_tokens = self.n_docs = self.n_bytes = 0
        self.set_ids: dict[str, int] = {}
        """Group name -> its set id in the .docs, in the order the groups first appear."""
        self.per_group: dict[str, Counter] = {}
        self.digest = hashlib.sha256()  # of the .bin, as it is written: what a checkpoint records of its data

    def __enter__(self) -> "TokenWriter":
        with contextlib.ExitStack() as stack:
            outputs = (index_path(self.output), docs_path(self.output), self.output)
            tmp_index, tmp_docs, tmp_tokens = stack.enter_context(files.replacing(*outputs))
            self._docs, self._tokens = (
                stack.enter_context(open(tmp_docs, "wb")),
                stack.enter_context(open(tmp_tokens, "wb")),
            )
            self._index = megatron_index.IndexWriter(
                stack.enter_context(open(tmp_index, "w+b")), self.dtype, index_path(self.output)
            )
            stack.push(self._complete_index)  # runs first on the way out, while the files are open
            self._stack = stack.pop_all()
        return self

    def _complete_index(self, exc_type, *_) -> bool:
        if exc_type is None:  # a failed write publishes nothing: no index to complete
            self._index.finish()
        return False

    def __exit__(self, *exc_info) -> bool:
        return self._stack.__exit__(*exc_info)

    def add(self, tokens: np.ndarray, doc_tokens: np.ndarray, doc_bytes: np.ndarray, groups: list[str]) -> None:
        """Append a batch: its tokens (each document's followed by the separator), and per document its
        token count (separator included), its UTF-8 length and its group."""
        if tokens.dtype != DTYPES[self.dtype]:
            raise TypeError(f"{self.output}: tokens of dtype {tokens.dtype}, the array holds {self.dtype}")
        docs = np.empty(len(doc_tokens), dtype=DOCS_DTYPE)
        docs["n_bytes"] = doc_bytes
        docs["set_id"] = [self.set_ids.setdefault(name, len(self.set_ids)) for name in groups]
        for name, count, size in zip(groups, doc_tokens, doc_bytes):
            counts = self.per_group.setdefault(name, Counter())
            counts["docs"] += 1
            counts["tokens"] += int(count)
            counts["bytes"] += int(size)
        data = tokens.tobytes()
        self._tokens.write(data)
        self.digest.update(data)
        self._index.add(doc_tokens)
        self._docs.write(docs.tobytes())
        self.n_tokens += len(tokens)
        self.n_docs += len(doc_tokens)
        self.n_bytes += int(np.sum(doc_bytes))

    def metadata(self, **about: Any) -> dict[str, Any]:
        """The .json beside the array: what the caller says `about` it, and what this writer counted."""
        return {
            "format": FORMAT,
            **about,
            "dtype": self.dtype,
            "n_tokens": self.n_tokens,
            "sha256": self.digest.hexdigest(),
            "n_docs": self.n_docs,
            "n_bytes": self.n_bytes,
            "index": {
                "file": index_path(self.output).name,
                "layout": "Megatron MMIDIDX v1, one sequence per document",
                "dtype_code": megatron_index.CODE_OF[self.dtype],
            },
            "documents": {"file": docs_path(self.output).name, "dtype": DOCS_DTYPE.descr},
            "groups": list(self.set_ids),
            "per_group": {name: dict(counts) for name, counts in self.per_group.items()},
        }


def check_folder(directory: Path, keys: list[str], stage: str) -> None:
    """Refuse to run `stage`, which depends on the whole of `directory` (DVC cannot take a stage's deps
    from params), when it holds a file that no stage makes: it would change the folder's hash in
    dvc.lock, and no clean clone would have it."""
    made = {f"{key}{suffix}" for key in keys for suffix in SUFFIXES}
    for path in files.strays(directory, made):
        key = path.name.split(".")[0]
        raise PipelineError(
            f"{path}: no stage makes this file ({key!r} is no key of data.shards), yet {stage} depends on the "
            f"whole of {directory}: its hash in dvc.lock would count it, and no clean clone has it. Remove it "
            f"({'rm ' + str(directory / key) + '.*' if path.is_file() else 'rm -r ' + str(path)}), or add the "
            f"key {key!r} under data.shards"
        )


def check_dtype_fits(vocab_size: int, dtype: str, model: Path) -> None:
    """Refuse, before any work, a vocabulary whose largest id would wrap around in `dtype`, or, in uint32,
    reach 2**31, where the bytes stop being those of Megatron's int32 (its index has no uint32 code)."""
    limit = ID_LIMITS[dtype]
    if vocab_size > limit:
        raise PipelineError(
            f"{model}: {vocab_size:,} pieces do not fit {dtype} (at most {limit:,}"
            + (
                "; set pretokenize.dtype: uint32)"
                if dtype == "uint16"
                else ": Megatron's index reads these arrays as int32, which holds ids below 2**31)"
            )
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
        raise PipelineError(
            f"{path}: format {meta.get('format')!r}, and this version reads {FORMAT!r} (its .idx is Megatron's "
            "index; the .bin is unchanged): rerun `dvc repro pretokenize` to rewrite the token arrays"
        )
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


@dataclass(frozen=True)
class Documents:
    """Where each document of an array starts, and what .docs says of it, in order."""

    starts: np.ndarray
    """int64: each document's first token in the .bin (from the index's byte pointers)."""
    n_bytes: np.ndarray
    """uint64: each document's UTF-8 length."""
    set_id: np.ndarray
    """uint32: each document's group, an index into the metadata's `groups`."""


def open_documents(bin_path: Path) -> Documents:
    """The documents of an array from its index and .docs, each checked against its metadata."""
    meta = read_metadata(bin_path)
    index = megatron_index.read(index_path(bin_path))
    n, itemsize = meta["n_docs"], DTYPES[meta["dtype"]].itemsize
    if index.code != megatron_index.CODE_OF[meta["dtype"]] or len(index.lengths) != n:
        raise PipelineError(
            f"{index.path}: dtype code {index.code} and {len(index.lengths):,} sequences, but its metadata says "
            f"{meta['dtype']} (code {megatron_index.CODE_OF[meta['dtype']]}) and {n:,} documents; rerun pretokenize"
        )
    if not np.array_equal(index.document_indices, np.arange(n + 1)):
        raise PipelineError(f"{index.path}: not one sequence per document, as pretokenize writes; rerun pretokenize")
    docs_file = docs_path(bin_path)
    try:
        size = docs_file.stat().st_size
    except FileNotFoundError:
        raise PipelineError(f"{docs_file}: missing; rerun pretokenize") from None
    if size != n * DOCS_DTYPE.itemsize:
        raise PipelineError(f"{docs_file}: {size:,} bytes, not {n:,} documents' worth; rerun pretokenize")
    docs = np.memmap(docs_file, dtype=DOCS_DTYPE, mode="r") if n else np.empty(0, DOCS_DTYPE)
    return Documents(np.asarray(index.pointers) // itemsize, docs["n_bytes"], docs["set_id"])


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
