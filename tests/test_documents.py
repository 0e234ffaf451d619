"""Any corpus in: the same documents in every format give the same token arrays, and bad input in
each format is an error naming the file and where (or a counted skip)."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.config.schema import PretokenizeParams
from pipeline.core.errors import PipelineError
from pipeline.encode import pretokenize
from pipeline.ingest import documents
from pipeline.ingest.records import UNLABELLED, Fields
from tests.helpers import SAMPLE, write_shard

TWO = PretokenizeParams(workers=2, batch_bytes=50_000)
OTHER_NAMES = Fields(text="content", group="info.subset")  # a corpus that names its fields otherwise


def sample_records(name: str = "val") -> list[dict]:
    data = zstandard.ZstdDecompressor().stream_reader(open(SAMPLE / f"{name}.jsonl.zst", "rb")).read()
    return [json.loads(line) for line in data.splitlines()]


def renamed(record: dict) -> dict:
    """The record as a corpus with other field names and extra fields keeps it."""
    return {"id": 7, "content": record["text"], "info": {"subset": record["meta"]["pile_set_name"], "score": 3.5}}


def jsonl_bytes(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def write_parquet(path, records: list[dict], row_group_size: int = 100, **columns) -> None:
    """`records` (renamed) as parquet: content, info{subset, score}, id; small row groups."""
    table = pa.table(
        columns
        or {
            "id": [r["id"] for r in records],
            "content": [r["content"] for r in records],
            "info": [r["info"] for r in records],
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)


def write_every_format(directory, records: list[dict]) -> dict:
    """The records in each format a corpus ships, gzip in two members, with other field names."""
    other = [renamed(r) for r in records]
    half = len(records) // 2
    paths = {
        "jsonl": directory / "x.jsonl",
        "gz": directory / "x.jsonl.gz",
        "zstd": directory / "x.jsonl.zstd",
        "parquet": directory / "x.parquet",
    }
    paths["jsonl"].write_bytes(jsonl_bytes(other))
    paths["gz"].write_bytes(gzip.compress(jsonl_bytes(other[:half])) + gzip.compress(jsonl_bytes(other[half:])))
    paths["zstd"].write_bytes(zstandard.ZstdCompressor().compress(jsonl_bytes(other)))
    write_parquet(paths["parquet"], other)
    return paths


def test_the_sample_in_every_format_gives_byte_identical_arrays_and_index(small_model, tmp_path):
    pretokenize.run([SAMPLE / "val.jsonl.zst"], small_model, tmp_path / "pile" / "val.bin", TWO)
    for kind, path in write_every_format(tmp_path, sample_records()).items():
        out = tmp_path / kind / "val.bin"
        meta = pretokenize.run([path], small_model, out, TWO, fields=OTHER_NAMES)
        for suffix in (".bin", ".idx", ".docs"):
            assert (out.with_suffix(suffix)).read_bytes() == (tmp_path / "pile" / f"val{suffix}").read_bytes(), kind
        assert sorted(meta["groups"]) == ["Django code", "Django docs", "Django translations"]


def test_a_shard_of_several_files_gives_the_arrays_of_their_concatenation(small_model, tmp_path):
    records = sample_records()
    third = len(records) // 3
    parts = [records[:third], records[third : 2 * third], records[2 * third :]]
    paths = [write_shard(tmp_path / f"part_{i}.jsonl.zst", part) for i, part in enumerate(parts)]
    pretokenize.run(paths, small_model, tmp_path / "parts.bin", TWO)
    pretokenize.run([SAMPLE / "val.jsonl.zst"], small_model, tmp_path / "whole.bin", TWO)
    for suffix in (".bin", ".idx", ".docs"):
        assert (tmp_path / f"parts{suffix}").read_bytes() == (tmp_path / f"whole{suffix}").read_bytes()


def test_each_reader_yields_the_documents_in_the_files_order(tmp_path):
    records = sample_records()
    expected = [(r["text"], r["meta"]["pile_set_name"]) for r in records]
    for kind, path in write_every_format(tmp_path, records).items():
        got = [(r.text, r.group) for r in documents.records(path, OTHER_NAMES, "error")]
        assert got == expected, kind


def test_no_group_field_and_a_record_without_its_group(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        jsonl_bytes([{"text": "a", "meta": {"pile_set_name": "S"}}, {"text": "b"}, {"text": "c", "meta": 3}])
    )
    assert [r.group for r in documents.records(path, Fields(), "error")] == ["S", UNLABELLED, UNLABELLED]
    assert {r.group for r in documents.records(path, Fields(group=None), "error")} == {UNLABELLED}


def test_a_truncated_gzip_file_names_the_member_and_byte_offset(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    first = gzip.compress(jsonl_bytes([{"text": "one " * 1000}]))
    second = gzip.compress(jsonl_bytes([{"text": "two " * 5000, "n": i} for i in range(50)]))
    path.write_bytes(first + second[: len(second) // 2])
    with pytest.raises(
        PipelineError, match=rf"cut\.jsonl\.gz: truncated: the gzip member starting at byte {len(first):,}"
    ):
        list(documents.records(path, Fields(), "error"))


def test_corrupt_gzip_names_the_file_and_where(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    data = bytearray(gzip.compress(jsonl_bytes([{"text": "word " * 4000}])))
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match=r"bad\.jsonl\.gz: corrupt gzip data in the gzip member starting at byte 0"):
        list(documents.records(path, Fields(), "error"))


def test_a_truncated_parquet_file_is_refused_before_any_row(tmp_path):
    path = tmp_path / "cut.parquet"
    write_parquet(path, [renamed(r) for r in sample_records()])
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(PipelineError, match=r"cut\.parquet: not a readable parquet file .*download the file again"):
        documents.open_reader(path, OTHER_NAMES)


def test_an_unreadable_parquet_row_group_is_named(tmp_path):
    path = tmp_path / "rot.parquet"
    texts = [f"document {i} " + "payload " * 200 for i in range(300)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=100, compression="zstd")
    reader = pq.ParquetFile(path)
    group = reader.metadata.row_group(1).column(0)
    start = group.dictionary_page_offset or group.data_page_offset
    data = bytearray(path.read_bytes())
    for i in range(start + 40, start + group.total_compressed_size - 40):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match=r"rot\.parquet: row group 1 \(rows 101 to 200\) cannot be read"):
        list(documents.records(path, Fields(group=None), "error"))


def test_parquet_columns_that_are_missing_or_not_text_are_named(tmp_path):
    path = tmp_path / "x.parquet"
    write_parquet(path, [renamed(r) for r in sample_records()[:5]])
    with pytest.raises(
        PipelineError, match=r"x\.parquet: no column 'text' \(columns: id, content, info\); set data.text_field"
    ):
        documents.open_reader(path, Fields())
    with pytest.raises(
        PipelineError, match=r"no column 'info.set' \(fields of info: subset, score\).*group_field: null"
    ):
        documents.open_reader(path, Fields(text="content", group="info.set"))
    with pytest.raises(PipelineError, match=r"column 'info.score' holds double, not strings; check data.group_field"):
        documents.open_reader(path, Fields(text="content", group="info.score"))
    with pytest.raises(PipelineError, match=r"'content' is a string, not a struct; check data.text_field"):
        documents.open_reader(path, Fields(text="content.body"))


def test_a_null_text_stops_at_its_row_or_is_skipped_and_counted(small_model, tmp_path):
    path = tmp_path / "nulls.parquet"
    texts = ["first", None, "third", None]
    write_parquet(path, [], content=texts, info=[{"subset": "A"}] * 4)
    with pytest.raises(PipelineError, match=r"nulls\.parquet: row 2: no string 'content' \(missing or null\).*skip"):
        pretokenize.run([path], small_model, tmp_path / "out.bin", TWO, fields=OTHER_NAMES)
    assert not list(tmp_path.glob("out*"))
    meta = pretokenize.run([path], small_model, tmp_path / "out.bin", TWO, "skip", OTHER_NAMES)
    assert meta["n_docs"] == 2 and meta["bad_records"] == {"no string 'content'": 2}


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zstd"])
def test_bad_lines_in_every_json_flavour_name_the_file_line_and_field(small_model, tmp_path, suffix):
    lines = [{"content": "fine", "info": {"subset": "A"}}, {"content": 5}, {"info": {"subset": "A"}}, {"content": "ok"}]
    data = jsonl_bytes(lines)
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(
        {".jsonl": data, ".jsonl.gz": gzip.compress(data)}.get(suffix) or zstandard.ZstdCompressor().compress(data)
    )
    with pytest.raises(PipelineError, match=rf"bad{suffix}: line 2: no string 'content' \('content' is a int\)"):
        pretokenize.run([path], small_model, tmp_path / "out.bin", TWO, fields=OTHER_NAMES)
    assert not list(tmp_path.glob("out*"))
    meta = pretokenize.run([path], small_model, tmp_path / "out.bin", TWO, "skip", OTHER_NAMES)
    assert meta["n_docs"] == 2 and meta["bad_records"] == {"no string 'content'": 2}


def test_a_file_of_no_known_format_is_refused(tmp_path):
    (tmp_path / "x.csv").write_text("text\nhello\n")
    with pytest.raises(PipelineError, match=r"x\.csv: not a corpus file: its name ends in none of .*\.parquet"):
        documents.open_reader(tmp_path / "x.csv", Fields())
