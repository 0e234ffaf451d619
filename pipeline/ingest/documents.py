"""Documents from any corpus file, one interface for every format.

`open_reader(path, fields)` picks the reader by the file's suffix (FORMATS). A reader yields each
document's raw form cheaply, in the file's order, with its 1-based line or row number: a JSON line's
bytes, a parquet row's (text, group). `parse` turns one into a Record or raises BadRecord. The split
lets pretokenize read in its main process and parse in its workers; the same documents in another
format give the same Records, so the same token arrays.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pipeline.config.formats import FORMATS, format_suffix
from pipeline.core.errors import PipelineError
from pipeline.ingest.jsonl import JsonLinesReader, parse_line
from pipeline.ingest.parquet import ParquetReader, parse_row
from pipeline.ingest.records import BadRecord, Fields, Record, bad_record_message


class Reader(Protocol):
    path: Path
    size: int
    """Bytes on disk."""
    position: int
    """Bytes of the file read so far, for progress bars."""
    unit: str
    """What a number counts in messages: `line` or `row`."""

    def items(self) -> Iterator[tuple[int, object]]: ...


def open_reader(path: Path, fields: Fields) -> Reader:
    kind = format_suffix(Path(path).name)
    if kind is None:
        raise PipelineError(f"{path}: not a corpus file: its name ends in none of {', '.join(FORMATS)}")
    return ParquetReader(path, fields) if kind == ".parquet" else JsonLinesReader(path)


def parse(item: object, number: int, fields: Fields) -> Record:
    """One raw item of a reader as a Record; raises BadRecord."""
    return parse_line(item, number, fields) if isinstance(item, bytes) else parse_row(item, number, fields)


def records(
    path: Path, fields: Fields, on_bad_record: str, bad: dict | None = None, on_position=None
) -> Iterator[Record]:
    """Every document of a file; a bad one stops with its file and line or row (`error`), or is skipped
    (`skip`) and counted by kind into `bad` when given. `on_position(bytes read)` follows the reading."""
    reader = open_reader(path, fields)
    for number, item in reader.items():
        if on_position is not None:
            on_position(reader.position)
        try:
            yield parse(item, number, fields)
        except BadRecord as exc:
            if on_bad_record == "error":
                raise PipelineError(bad_record_message(path, reader.unit, number, str(exc))) from None
            if bad is not None:
                bad[exc.kind] = bad.get(exc.kind, 0) + 1


def describe(paths: list[Path]) -> str:
    """A shard's files in a few words: the file, or how many from the first to the last."""
    if len(paths) == 1:
        return str(paths[0])
    return f"{len(paths):,} files, {paths[0]} to {paths[-1].name}"
