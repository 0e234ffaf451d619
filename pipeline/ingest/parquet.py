"""Parquet corpus files (FineWeb, FineWeb-Edu): the text column and the group column only, a row
group at a time, in batches of rows, so memory stays bounded for multi-GB files with large row groups.

A truncated parquet file loses its footer, where the schema and row groups are described, so it
fails on opening; a row group that cannot be decoded fails naming the row group and its rows.
pyarrow is imported here only, so JSON-lines readers and workers never load it.
"""

from collections.abc import Iterator
from pathlib import Path

from pipeline.core import files
from pipeline.core.errors import PipelineError
from pipeline.ingest.records import Fields, Record, text_record

BATCH_ROWS = 1024  # rows decoded at once: a few MB of text, whatever the row group's size


class ParquetReader:
    """Iterates (text, group) of every row of one parquet file and tracks how far into it it is."""

    unit = "row"

    def __init__(self, path: Path, fields: Fields):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path, self.fields, self.position = Path(path), fields, 0
        self.size = files.input_size(self.path)
        try:
            self.file = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise PipelineError(
                f"{self.path}: not a readable parquet file ({exc}); a truncated download loses the "
                "footer: download the file again"
            ) from None
        self.columns = [_column(self.file.schema_arrow, self.path, fields.text, "data.text_field")]
        if fields.group is not None:
            self.columns.append(_column(self.file.schema_arrow, self.path, fields.group, "data.group_field"))

    def items(self) -> Iterator[tuple[int, tuple[str | None, str | None]]]:
        """Yield (1-based row number, (text, group)) in the file's order."""
        import pyarrow as pa

        metadata, row = self.file.metadata, 0
        for index in range(metadata.num_row_groups):
            group_meta = metadata.row_group(index)
            first = row + 1
            try:
                batches = self.file.iter_batches(
                    batch_size=BATCH_ROWS, row_groups=[index], columns=self.columns, use_threads=False
                )
                for batch in batches:
                    texts = _leaf(batch, self.fields.text).to_pylist()
                    groups = _leaf(batch, self.fields.group).to_pylist() if self.fields.group else [None] * len(texts)
                    for text, group in zip(texts, groups):
                        row += 1
                        yield row, (text, group)
            except (pa.ArrowException, OSError) as exc:
                raise PipelineError(
                    f"{self.path}: row group {index:,} (rows {first:,} to {first + group_meta.num_rows - 1:,}) "
                    f"cannot be read: {exc}; download the file again"
                ) from None
            self.position += sum(group_meta.column(i).total_compressed_size for i in range(group_meta.num_columns))
        self.position = self.size


def parse_row(row: tuple[str | None, str | None], row_number: int, fields: Fields) -> Record:
    """A row's (text, group) as a Record, or BadRecord (a null text)."""
    return text_record(*row, fields)


def _column(schema, path: Path, dotted: str, param: str) -> str:
    """Check that `dotted` names a string column (or a string field of struct columns); return it."""
    import pyarrow as pa

    node, parts = schema, dotted.split(".")
    for depth, part in enumerate(parts):
        names = [field.name for field in node] if depth else schema.names
        if part not in names:
            where = "columns" if depth == 0 else f"fields of {'.'.join(parts[:depth])}"
            raise PipelineError(
                f"{path}: no column {dotted!r} ({where}: {', '.join(names)}); set {param} to one of them"
                + ("; data.group_field: null means no groups" if param == "data.group_field" else "")
            )
        field = node.field(part) if depth else schema.field(part)
        node = field.type
        if depth < len(parts) - 1 and not pa.types.is_struct(node):
            raise PipelineError(f"{path}: {'.'.join(parts[: depth + 1])!r} is a {node}, not a struct; check {param}")
    if not (pa.types.is_string(node) or pa.types.is_large_string(node) or pa.types.is_string_view(node)):
        raise PipelineError(f"{path}: column {dotted!r} holds {node}, not strings; check {param}")
    return dotted


def _leaf(batch, dotted: str):
    """The array at a dotted path of a record batch; a null struct gives null children."""
    import pyarrow.compute as pc

    parts = dotted.split(".")
    array = batch.column(parts[0])
    for part in parts[1:]:
        array = pc.struct_field(array, [part])
    return array
