"""Word-count tables: the (word, count) pairs SentencePiece's BPE trainer sees, as files that merge.

A table file (`.words`): MAGIC, the header's length and the header (JSON: the format, the params
that decided it, what was read and skipped), then one zstd frame with its checksum: the counts
(int64), the words' UTF-8 lengths (uint32) and their bytes, in UTF-8 byte order. Tables merge by
summing equal words (pipeline.tokenizer.table_merge): the table of several shards is the merge of
theirs. A table counted under other normalization or word-cutting params than the tokenizer's is
refused by name
(`check_made_by`); a damaged or truncated one, naming its file (`read`).
"""

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zstandard

from pipeline.core import files
from pipeline.core.errors import PipelineError
from pipeline.tokenizer.spm_spec import Specs

MAGIC = b"pile-gpt words v1\n"
FORMAT = "pile-gpt words v1"
# The params that decide a table: a table counted under other values is refused by name.
DECIDING = (
    "normalization_rule_name",
    "normalization_rule_tsv",
    "remove_extra_whitespaces",
    "add_dummy_prefix",
    "escape_whitespaces",
    "treat_whitespace_as_suffix",
    "split_by_whitespace",
    "allow_whitespace_only_pieces",
    "max_sentence_length",
    "input_format",
    "pretokenization_delimiter",
)


def deciding(s: Specs) -> dict:
    """The values that decide a table: the normalizer and the word cutting, which lines are kept,
    and the meta pieces that become boundaries."""
    t, n = s.trainer, s.normalizer
    values = {name: getattr(t if t.DESCRIPTOR.fields_by_name.get(name) else n, name) for name in DECIDING[1:]}
    values["normalization_rule_name"] = n.name
    values["normalization_rule_tsv"] = hashlib.sha256(n.precompiled_charsmap).hexdigest()
    values["meta_pieces"] = sorted(piece for piece, _ in s.meta.values())
    return values


@dataclass
class Table:
    """Words in UTF-8 byte order with their counts; `header` says what made them."""

    counts: np.ndarray  # int64
    lengths: np.ndarray  # uint32: each word's UTF-8 bytes
    blob: np.ndarray  # uint8: the words' UTF-8, one after another
    header: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def nbytes(self) -> int:
        """Its memory: 12 bytes a word and the words' UTF-8."""
        return self.counts.nbytes + self.lengths.nbytes + self.blob.nbytes

    def words(self) -> list[str]:
        text, ends = self.blob.tobytes(), np.cumsum(self.lengths, dtype=np.int64).tolist()
        return [text[a:b].decode("utf-8") for a, b in zip([0] + ends[:-1], ends)]


def table_of(counts: dict[str, int], header: dict | None = None) -> Table:
    """A Table from a {word: count} mapping (sorted here: code point order is UTF-8 byte order)."""
    words = sorted(counts)
    encoded = [word.encode("utf-8") for word in words]
    return Table(
        np.fromiter((counts[w] for w in words), np.int64, len(words)),
        np.fromiter(map(len, encoded), np.uint32, len(words)),
        np.frombuffer(b"".join(encoded), np.uint8).copy(),
        dict(header or {}),
    )


FEED = 1 << 22  # bytes handed to the compressor at once: the same file whatever the source's pieces


def write(table: Table, path: Path) -> None:
    """The table file, whole or not at all."""
    arrays = (table.counts.astype("<i8"), table.lengths.astype("<u4"), table.blob)
    _assemble(path, {**table.header, **_totals(len(table), int(table.counts.sum()), len(table.blob))},
              (memoryview(array).cast("B") for array in arrays))  # fmt: skip


def _totals(words: int, occurrences: int, utf8_bytes: int) -> dict:
    return {"format": FORMAT, "words": words, "occurrences": occurrences, "utf8_bytes": utf8_bytes}


def _assemble(path: Path, header: dict, sections) -> None:
    """MAGIC, the header, then one zstd frame of the sections' bytes (counts, lengths, words), fed in
    FEED-byte pieces so that the file is the same whether the sections come whole or in parts."""
    header_bytes = json.dumps(header, sort_keys=True, ensure_ascii=False).encode()
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    with files.replacing(path) as (tmp,), open(tmp, "wb") as out:
        out.write(MAGIC + struct.pack("<Q", len(header_bytes)) + header_bytes)
        with compressor.stream_writer(out, closefd=False) as stream:
            pending = bytearray()
            for section in sections:
                view = memoryview(section)
                if pending:
                    taken = FEED - len(pending)
                    pending += view[:taken]
                    view = view[taken:]
                    if len(pending) < FEED:
                        continue
                    stream.write(pending)
                    pending = bytearray()
                while len(view) >= FEED:
                    stream.write(view[:FEED])
                    view = view[FEED:]
                pending += view
            stream.write(pending)


class StreamedTable:
    """A table file written a piece at a time, in word order (each piece's words after the last's):
    the pieces wait in three files in `scratch`, so memory holds one piece, never the table."""

    def __init__(self, scratch: Path, name: str = "streamed"):
        self.parts = [scratch / f"{name}.{section}" for section in ("counts", "lengths", "words")]
        self.handles = [open(part, "wb") for part in self.parts]
        self.words = self.occurrences = self.utf8_bytes = 0

    def add(self, table: Table) -> None:
        for handle, array in zip(self.handles, (table.counts.astype("<i8"), table.lengths.astype("<u4"), table.blob)):
            handle.write(memoryview(array).cast("B"))
        self.words += len(table)
        self.occurrences += int(table.counts.sum())
        self.utf8_bytes += len(table.blob)

    def finish(self, path: Path, header: dict) -> dict:
        """Write the table file (as `write` would have written the whole table); return its header."""
        for handle in self.handles:
            handle.close()
        full = {**header, **_totals(self.words, self.occurrences, self.utf8_bytes)}
        _assemble(path, full, (chunk for part in self.parts for chunk in _chunks(part)))
        for part in self.parts:
            part.unlink()
        return full

    def finish_run(self, path: Path) -> None:
        """Write what was added as a sorted run (`write_run`'s format), a piece at a time."""
        for handle in self.handles:
            handle.close()
        sizes = []
        with files.replacing(path) as (tmp,), open(tmp, "wb") as out:
            out.write(RUN_MAGIC + bytes(32))  # the sizes, once known
            for part in self.parts:
                start = out.tell()
                with zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False) as stream:
                    for chunk in _chunks(part):
                        stream.write(chunk)
                sizes.append(out.tell() - start)
            out.seek(len(RUN_MAGIC))
            out.write(struct.pack("<4Q", self.words, *sizes))
        for part in self.parts:
            part.unlink()


def _chunks(path: Path):
    with open(path, "rb") as f:
        while chunk := f.read(FEED):
            yield chunk


RUN_MAGIC = b"pile-gpt words run v1\n"


def write_run(table: Table, path: Path) -> None:
    """A sorted run of a count too large to hold: its counts, lengths and words as three zstd frames,
    so that `RunReader` reads all three side by side, a piece at a time."""
    frames = [
        zstandard.ZstdCompressor(level=1).compress(memoryview(array).cast("B"))
        for array in (table.counts.astype("<i8"), table.lengths.astype("<u4"), table.blob)
    ]
    with files.replacing(path) as (tmp,), open(tmp, "wb") as out:
        out.write(RUN_MAGIC + struct.pack("<4Q", len(table), *map(len, frames)))
        for frame in frames:
            out.write(frame)


class RunReader:
    """The words of a run, in order, a piece of at most `n` words at a time."""

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            head = f.read(len(RUN_MAGIC) + 32)
        if not head.startswith(RUN_MAGIC):
            raise PipelineError(f"{path}: not a sorted run of a word count")
        self.left, *sizes = struct.unpack_from("<4Q", head, len(RUN_MAGIC))
        offset, self.streams = len(head), []
        for size in sizes:
            f = open(path, "rb")
            f.seek(offset)
            self.streams.append(zstandard.ZstdDecompressor().stream_reader(f, closefd=True))
            offset += size

    @property
    def done(self) -> bool:
        return self.left == 0

    def read(self, n: int) -> Table:
        n = min(n, self.left)
        self.left -= n
        counts = np.frombuffer(_exactly(self.streams[0], 8 * n), "<i8")
        lengths = np.frombuffer(_exactly(self.streams[1], 4 * n), "<u4")
        blob = np.frombuffer(_exactly(self.streams[2], int(lengths.sum())), np.uint8)
        if self.done:
            for stream in self.streams:
                stream.close()
        return Table(counts, lengths, blob)


def _exactly(stream, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        part = stream.read(size - got)
        if not part:
            raise PipelineError("a sorted run of a word count ends early (its disk filled, or it was changed)")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def read_header(path: Path) -> dict:
    """A table file's header alone (what made it, how many words): no decompression."""
    with open(path, "rb") as f:
        start = f.read(len(MAGIC) + 8)
        if not start.startswith(MAGIC) or len(start) < len(MAGIC) + 8:
            raise PipelineError(f"{path}: not a word-count table ({FORMAT}); rerun `dvc repro words`")
        (size,) = struct.unpack_from("<Q", start, len(MAGIC))
        try:
            return json.loads(f.read(size))
        except ValueError as exc:
            raise PipelineError(f"{path}: damaged word-count table ({exc}); rerun `dvc repro words`") from None


def read(path: Path) -> Table:
    """A table file, checked: a damaged or truncated one is a PipelineError naming it."""
    data = files.input_size(path) and Path(path).read_bytes()
    damaged = f"{path}: damaged word-count table"
    if not data.startswith(MAGIC):
        raise PipelineError(f"{path}: not a word-count table ({FORMAT}); rerun `dvc repro words`")
    try:
        (size,) = struct.unpack_from("<Q", data, len(MAGIC))
        start = len(MAGIC) + 8 + size
        header = json.loads(data[len(MAGIC) + 8 : start])
        payload = zstandard.ZstdDecompressor().decompressobj().decompress(data[start:])
    except (struct.error, ValueError, zstandard.ZstdError) as exc:
        raise PipelineError(f"{damaged} ({exc}); rerun `dvc repro words`") from None
    n = header.get("words", -1)
    if header.get("format") != FORMAT or len(payload) != 12 * n + header.get("utf8_bytes", -1):
        raise PipelineError(f"{damaged} (its header does not match its contents); rerun `dvc repro words`")
    counts = np.frombuffer(payload, "<i8", n)
    lengths = np.frombuffer(payload, "<u4", n, 8 * n)
    blob = np.frombuffer(payload, np.uint8, offset=12 * n)
    if int(lengths.sum()) != len(blob) or int(counts.sum()) != header["occurrences"] or (n and counts.min() < 1):
        raise PipelineError(f"{damaged} (its counts or lengths do not add up); rerun `dvc repro words`")
    return Table(counts, lengths, blob, header)


def check_made_by(table: Table, path: Path, s: Specs) -> None:
    """Refuse a table counted under other params than `s`, naming the table and the param."""
    made, wanted = table.header.get("deciding", {}), deciding(s)
    for name in wanted:
        if made.get(name) != wanted[name]:
            shown = "tokenizer.normalization_rule_tsv's rules" if name == "normalization_rule_tsv" else name
            raise PipelineError(
                f"{path}: counted with {shown} = {made.get(name)!r}, but the tokenizer is trained with "
                f"{wanted[name]!r}; rerun `dvc repro words` (a table holds words as the params it was counted "
                "under cut them)"
            )
