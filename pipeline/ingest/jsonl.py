"""JSON Lines in every flavour a corpus ships: plain `.jsonl`, gzip `.jsonl.gz`, zstd `.jsonl.zst`/`.zstd`.

One code path for all: a codec turns the file into decompressed chunks (gzip through zlib-ng: the
same format at twice zlib's speed), and the chunks are cut into lines on b"\n" only (JSON strings
may hold U+2028 and friends raw). gzip files of several members and zstd files of several frames
are read whole; a file that ends inside a member or frame is reported as truncated at its byte
offset (the standard library's and python-zstandard's stream readers would stop quietly or say
nothing of where). Memory holds one compressed chunk, its decompressed output (bounded), and the
line being assembled, once.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard
from zlib_ng import zlib_ng

from pipeline.core import files
from pipeline.core.errors import PipelineError
from pipeline.ingest.records import BadRecord, Fields, Record, text_record

READ_CHUNK = 1 << 18  # compressed bytes per read: bounds the decompressed burst of a very compressible chunk
GZIP_BURST = 1 << 22  # most bytes one inflate call may return, whatever the compression ratio
CODECS = {".jsonl": "plain", ".jsonl.gz": "gzip", ".jsonl.zst": "zstd", ".jsonl.zstd": "zstd"}
GZIP_WINDOW = 16 + zlib_ng.MAX_WBITS  # one gzip member, header and trailer checked


class JsonLinesReader:
    """Iterates the raw lines of one JSON Lines file and tracks how far into the file it is."""

    unit = "line"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.codec = next(codec for suffix, codec in CODECS.items() if self.path.name.endswith(suffix))
        self.position = 0
        """Bytes of the file read so far."""
        self.size = files.input_size(self.path)

    def _decompressed(self, f: BinaryIO) -> Iterator[bytes]:
        if self.codec == "plain":
            while chunk := f.read(READ_CHUNK):
                self.position += len(chunk)
                yield chunk
            return
        gzip = self.codec == "gzip"
        name = "gzip member" if gzip else "zstd frame"
        zstd = None if gzip else zstandard.ZstdDecompressor()
        new_unit = (lambda: zlib_ng.decompressobj(GZIP_WINDOW)) if gzip else zstd.decompressobj
        unit, unit_start, fed = new_unit(), 0, 0
        while chunk := f.read(READ_CHUNK):
            self.position += len(chunk)
            while chunk:
                try:
                    out = unit.decompress(chunk, GZIP_BURST) if gzip else unit.decompress(chunk)
                except (zstandard.ZstdError, zlib_ng.error) as exc:
                    raise PipelineError(
                        f"{self.path}: corrupt {self.codec} data in the {name} starting at byte "
                        f"{unit_start:,} (read up to byte {self.position:,}): {exc}"
                    ) from None
                fed += len(chunk)
                if out:
                    yield out
                if not unit.eof:
                    chunk = unit.unconsumed_tail if gzip else b""  # input held back to bound the output
                    continue
                chunk = unit.unused_data  # the next frame's or member's first bytes: a suffix of this read
                unit_start = self.position - len(chunk)
                unit, fed = new_unit(), 0
        if fed:
            raise PipelineError(
                f"{self.path}: truncated: the {name} starting at byte {unit_start:,} "
                f"ends early at byte {self.size:,}; download the file again"
            )

    def items(self) -> Iterator[tuple[int, bytes]]:
        """Yield (1-based line number, line without its b"\n"); a final line without b"\n" counts too."""
        number = 0
        # a line spread over several chunks, grown in place: its pieces leave no freed heap behind
        pending = bytearray()
        with open(self.path, "rb") as f:
            for out in self._decompressed(f):
                pieces = out.split(b"\n")
                if len(pieces) == 1:
                    pending += out
                    continue
                number += 1
                if pending:
                    pending += pieces[0]
                    yield number, _taken(pending)
                else:
                    yield number, pieces[0]
                for piece in pieces[1:-1]:
                    number += 1
                    yield number, piece
                pending += pieces[-1]
        if pending:
            number += 1
            yield number, _taken(pending)


def _taken(pending: bytearray) -> bytes:
    """The line assembled so far, the buffer emptied: while its reader waits, a long line is held once."""
    line = bytes(pending)
    pending.clear()
    return line


def parse_line(line: bytes, line_number: int, fields: Fields) -> Record:
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
    return text_record(_lookup(obj, fields.text), fields.group and _lookup(obj, fields.group), fields)


def _lookup(obj: dict, dotted: str) -> object:
    """The value at a dotted path (`meta.pile_set_name`), or None where the path ends early."""
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj
