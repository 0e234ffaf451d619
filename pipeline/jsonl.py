"""Streaming reader for Pile-format shards: zstd-compressed JSON Lines, one document a line.

Decompression runs frame by frame, so files of several concatenated frames read whole, and a file
that ends inside a frame is reported as truncated (python-zstandard's stream reader would stop
quietly). Lines are split on b"\n" only: JSON strings may hold U+2028 and friends raw.
Memory holds one compressed chunk, its decompressed output, and the line being assembled.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from pipeline.errors import PipelineError

READ_CHUNK = 1 << 18  # compressed bytes per read: bounds the decompressed burst of a very compressible chunk
UNLABELLED_SET = "(none)"


class BadRecord(ValueError):
    """A line that is not a Pile record; the caller decides whether to stop or skip and count."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind} ({detail})" if detail else kind)
        self.kind = kind
        """A short, stable category for the stats: `not valid JSON`, `invalid UTF-8`, ..."""


@dataclass(frozen=True)
class Record:
    text: str
    set_name: str
    n_bytes: int
    """UTF-8 length of `text`; bits per byte are measured against it."""


class ShardReader:
    """Iterates the raw lines of one .jsonl.zst file and tracks how far into the file it is."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.compressed_pos = 0
        try:
            self.size = self.path.stat().st_size
        except FileNotFoundError:
            raise PipelineError(f"{self.path}: no such file") from None
        if self.size == 0:
            raise PipelineError(f"{self.path}: empty file (0 bytes): not a zstd stream")

    def _decompressed(self, f: BinaryIO) -> Iterator[bytes]:
        decompressor = zstandard.ZstdDecompressor()
        frame, frame_start, fed = decompressor.decompressobj(), 0, 0
        while chunk := f.read(READ_CHUNK):
            self.compressed_pos += len(chunk)
            while chunk:
                try:
                    out = frame.decompress(chunk)
                except zstandard.ZstdError as exc:
                    raise PipelineError(
                        f"{self.path}: corrupt zstd data in the frame starting at byte "
                        f"{frame_start:,} (read up to byte {self.compressed_pos:,}): {exc}"
                    ) from None
                fed += len(chunk)
                if out:
                    yield out
                if not frame.eof:
                    break
                chunk = frame.unused_data  # the next frame's first bytes: a suffix of this read
                frame_start = self.compressed_pos - len(chunk)
                frame, fed = decompressor.decompressobj(), 0
        if fed:
            raise PipelineError(
                f"{self.path}: truncated: the zstd frame starting at byte {frame_start:,} "
                f"ends early at byte {self.size:,}; download the file again"
            )

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """Yield (1-based line number, line without its b"\n"); a final line without b"\n" counts too."""
        number = 0
        pending: list[bytes] = []  # pieces of a line spread over several chunks, joined once
        with open(self.path, "rb") as f:
            for out in self._decompressed(f):
                pieces = out.split(b"\n")
                if len(pieces) == 1:
                    pending.append(out)
                    continue
                pending.append(pieces[0])
                number += 1
                yield number, b"".join(pending)
                for piece in pieces[1:-1]:
                    number += 1
                    yield number, piece
                pending = [pieces[-1]] if pieces[-1] else []
        if pending:
            number += 1
            yield number, b"".join(pending)


def parse_record(line: bytes, line_number: int = 0) -> Record:
    """Decode one JSON line into a Record, or raise BadRecord saying what is wrong with it."""
    if line_number == 1 and line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]  # a UTF-8 byte-order mark carries no text
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRecord("invalid UTF-8", f"at byte {exc.start} of the line") from None
    except json.JSONDecodeError as exc:
        raise BadRecord("not valid JSON", f"{exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise BadRecord("not a JSON object", f"got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        raise BadRecord("no string 'text'", "missing" if text is None else f"'text' is a {type(text).__name__}")
    try:
        n_bytes = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise BadRecord("lone surrogate", f"\\u{ord(text[exc.start]):04x} at character {exc.start} of 'text'") from None
    meta = obj.get("meta")
    set_name = meta.get("pile_set_name") if isinstance(meta, dict) else None
    if set_name is not None and not isinstance(set_name, str):
        raise BadRecord("pile_set_name not a string", f"got {type(set_name).__name__}")
    return Record(text=text, set_name=set_name or UNLABELLED_SET, n_bytes=n_bytes)


def bad_record_message(path: Path, line_number: int, reason: str) -> str:
    return f"{path}: line {line_number:,}: {reason}; set data.on_bad_record: skip to skip and count such records"
