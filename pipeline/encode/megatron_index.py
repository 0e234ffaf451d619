"""Megatron's MMIDIDX index (`PREFIX.idx` beside the token stream `PREFIX.bin`), written and read byte for byte.

The layout, little-endian, as megatron-core's `indexed_dataset.py` reads it (and GPT-NeoX, NeMo and
datatrove write it):

    MAGIC (9 bytes) | version 1 (<Q) | dtype code (<B) | S, sequences (<Q) | D, document indices (<Q)
    int32[S] sequence lengths in tokens | int64[S] sequence pointers, byte offsets into the .bin
    int64[D] document indices: the first sequence of each document, then S

This pipeline writes one sequence per document, its separator included, so D = documents + 1 and
the index takes 42 + 20 bytes a document. A `.bin` of uint32 ids is indexed with Megatron's int32
code: the bytes are the same while every id is below 2**31, which check_dtype_fits enforces.
"""

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pipeline.core.errors import PipelineError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document-index count
CODES = {
    1: np.dtype("u1"),
    2: np.dtype("i1"),
    3: np.dtype("<i2"),
    4: np.dtype("<i4"),
    5: np.dtype("<i8"),
    6: np.dtype("<f8"),
    7: np.dtype("<f4"),
    8: np.dtype("<u2"),
}
"""Megatron's dtype codes (megatron.core.datasets.indexed_dataset.DType); it has no uint32."""
CODE_OF = {"uint16": 8, "uint32": 4}
"""The code this pipeline writes for each token dtype: uint32 ids below 2**31 are int32's bytes."""
INT32_MAX = np.iinfo(np.int32).max
CHUNK = 1 << 20  # entries read back and written at a time when the index is finished


def size(n_sequences: int, n_document_indices: int) -> int:
    """Bytes of an index with these counts."""
    return HEADER.size + 12 * n_sequences + 8 * n_document_indices


class IndexWriter:
    """Writes the index of a token array, one sequence per document, into `file` (opened "w+b", empty)
    as the documents come: their lengths at once, the pointers and document indices when `finish`
    reads the lengths back a chunk at a time, so memory never grows with the number of documents."""

    def __init__(self, file: BinaryIO, dtype: str, name: Path):
        self.file, self.name = file, name
        self.code = CODE_OF[dtype]
        self.itemsize = CODES[self.code].itemsize
        self.n_documents = 0
        file.write(bytes(HEADER.size))  # the counts are known at the end

    def add(self, doc_tokens: np.ndarray) -> None:
        """Append documents of these lengths (tokens, separator included)."""
        lengths = np.asarray(doc_tokens, dtype=np.int64)
        if len(lengths) and lengths.max() > INT32_MAX:
            raise PipelineError(
                f"{self.name}: document {self.n_documents + int(lengths.argmax()):,} holds {int(lengths.max()):,} "
                f"tokens; Megatron's index stores a length as int32 (at most {INT32_MAX:,})"
            )
        self.file.write(lengths.astype("<i4").tobytes())
        self.n_documents += len(lengths)

    def finish(self) -> None:
        """Append the pointers (from the lengths, read back) and the document indices; write the header."""
        n, file = self.n_documents, self.file
        file.flush()
        descriptor, offset = file.fileno(), 0
        for first in range(0, n, CHUNK):
            count = min(CHUNK, n - first)
            lengths = np.frombuffer(os.pread(descriptor, 4 * count, HEADER.size + 4 * first), dtype="<i4")
            ends = offset + np.cumsum(lengths, dtype=np.int64) * self.itemsize
            file.write((ends - lengths.astype(np.int64) * self.itemsize).astype("<i8").tobytes())
            offset = int(ends[-1])
        for first in range(0, n + 1, CHUNK):
            file.write(np.arange(first, min(first + CHUNK, n + 1), dtype="<i8").tobytes())
        file.seek(0)
        file.write(HEADER.pack(MAGIC, VERSION, self.code, n, n + 1))
        file.seek(0, os.SEEK_END)


@dataclass(frozen=True)
class Index:
    """An index, memory-mapped: what Megatron's `_IndexReader` sees."""

    path: Path
    code: int
    lengths: np.ndarray
    """int32[S]: each sequence's length in tokens."""
    pointers: np.ndarray
    """int64[S]: each sequence's first byte in the .bin."""
    document_indices: np.ndarray
    """int64[D]: each document's first sequence, then S."""

    @property
    def dtype(self) -> np.dtype:
        return CODES[self.code]


def read(path: Path) -> Index:
    """The index at `path`, its header and size checked; PipelineError naming the file and the byte
    offset of what is wrong."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such index file") from None
    if len(head) < HEADER.size:
        raise PipelineError(f"{path}: {len(head)} bytes, shorter than the {HEADER.size}-byte MMIDIDX header")
    magic, version, code, n_sequences, n_indices = HEADER.unpack(head)
    if magic != MAGIC:
        raise PipelineError(f"{path}: byte 0: {magic!r} is not Megatron's MMIDIDX magic {MAGIC!r}")
    if version != VERSION:
        raise PipelineError(f"{path}: byte 9: version {version}, and only version {VERSION} exists")
    if code not in CODES:
        raise PipelineError(f"{path}: byte 17: dtype code {code} is none of Megatron's ({', '.join(map(str, CODES))})")
    actual, expected = path.stat().st_size, size(n_sequences, n_indices)
    if actual != expected or n_indices < 1:
        raise PipelineError(
            f"{path}: {actual:,} bytes, but its header (byte 18: {n_sequences:,} sequences, byte 26: {n_indices:,} "
            f"document indices) makes {expected:,}; the file is damaged or not an index"
        )
    lengths_at = HEADER.size
    pointers_at = lengths_at + 4 * n_sequences
    indices_at = pointers_at + 8 * n_sequences

    def view(dtype: str, count: int, at: int) -> np.ndarray:
        return np.memmap(path, dtype=dtype, mode="r", offset=at, shape=(count,)) if count else np.empty(0, dtype)

    index = Index(
        path,
        code,
        view("<i4", n_sequences, lengths_at),
        view("<i8", n_sequences, pointers_at),
        view("<i8", n_indices, indices_at),
    )
    if index.document_indices[0] != 0 or index.document_indices[-1] != n_sequences:
        raise PipelineError(
            f"{path}: byte {indices_at:,}: document indices run from {int(index.document_indices[0]):,} to "
            f"{int(index.document_indices[-1]):,}, not from 0 to the sequence count {n_sequences:,}"
        )
    return index
