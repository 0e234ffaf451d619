"""The .jsonl.zst reader: every line, in order, or an error naming the file and where."""

import json

import pytest
import zstandard

from pipeline.core.errors import PipelineError
from pipeline.ingest import jsonl
from pipeline.ingest.jsonl import JsonLinesReader, parse_line
from pipeline.ingest.records import ENCODE_CHARS, PILE_FIELDS, UNLABELLED, BadRecord
from tests.helpers import doc, write_shard


def read_all(path):
    return [(number, parse_line(line, number, PILE_FIELDS).text) for number, line in JsonLinesReader(path).items()]


def test_reads_every_document_across_several_zstd_frames(tmp_path):
    texts = [f"document {i}\nsecond line" for i in range(100)]
    one = write_shard(tmp_path / "one.jsonl.zst", [doc(t) for t in texts])
    many = write_shard(tmp_path / "many.jsonl.zst", [doc(t) for t in texts], frames=7)
    assert read_all(one) == read_all(many) == list(enumerate(texts, 1))


def test_unicode_line_breaks_inside_strings_do_not_split_records(tmp_path):
    text = "a\u2028b\u2029c\x85d\x1ce\x0bf\x0cg\rh"
    raw = json.dumps(doc(text), ensure_ascii=False).encode()
    path = write_shard(tmp_path / "x.jsonl.zst", raw_lines=[raw, raw])
    assert read_all(path) == [(1, text), (2, text)]


def test_line_longer_than_many_read_chunks_is_read_whole(tmp_path):
    text = "word " * (3 * jsonl.READ_CHUNK)
    path = write_shard(tmp_path / "x.jsonl.zst", [doc(text), doc("short")])
    assert read_all(path) == [(1, text), (2, "short")]


def test_truncated_zstd_names_file_and_byte_offset(tmp_path):
    path = write_shard(tmp_path / "x.jsonl.zst", [doc("text " * 5000) for _ in range(20)], frames=3)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(PipelineError, match=r"x\.jsonl\.zst: truncated: .* byte [\d,]+ ends early"):
        list(JsonLinesReader(path).items())


def test_corrupt_and_non_zstd_files_name_the_file(tmp_path):
    path = write_shard(tmp_path / "x.jsonl.zst", [doc("text " * 5000)])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match=r"x\.jsonl\.zst: corrupt zstd data .* byte"):
        list(JsonLinesReader(path).items())
    plain = tmp_path / "plain.jsonl.zst"
    plain.write_text('{"text": "not compressed"}\n')
    with pytest.raises(PipelineError, match=r"plain\.jsonl\.zst: corrupt zstd data"):
        list(JsonLinesReader(plain).items())


def test_missing_and_empty_files_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match="nope.jsonl.zst: no such file"):
        JsonLinesReader(tmp_path / "nope.jsonl.zst")
    (tmp_path / "empty.jsonl.zst").write_bytes(b"")
    with pytest.raises(PipelineError, match="empty.jsonl.zst: empty file"):
        JsonLinesReader(tmp_path / "empty.jsonl.zst")


@pytest.mark.parametrize(
    "line, kind",
    [
        (b'{"text": "a"', "not valid JSON"),
        (b'["text"]', "not a JSON object"),
        (b'{"meta": {}}', "no string 'text'"),
        (b'{"text": 5}', "no string 'text'"),
        (b'{"text": "caf\xc3"}', "invalid UTF-8"),
        (b'{"text": "\\ud800 alone"}', "lone surrogate"),
        (b'{"text": "a", "meta": {"pile_set_name": 3}}', "pile_set_name not a string"),
        (b"", "not valid JSON"),
    ],
)
def test_bad_record_says_what_is_wrong(line, kind):
    with pytest.raises(BadRecord) as info:
        parse_line(line, 2, PILE_FIELDS)
    assert info.value.kind == kind


def test_byte_order_mark_crlf_and_missing_meta_are_read():
    assert parse_line(b'\xef\xbb\xbf{"text": "x"}\r', 1, PILE_FIELDS).text == "x"
    record = parse_line('{"text": "h\u00e9"}'.encode(), 3, PILE_FIELDS)
    assert (record.group, record.n_bytes) == (UNLABELLED, 3)


def test_a_long_texts_utf8_length_and_lone_surrogate_are_found_past_its_first_slice():
    text = "\u00e9\u4e00a" * (ENCODE_CHARS // 3 + 7)  # slices end inside no character; every width counts
    assert parse_line(json.dumps({"text": text}).encode(), 1, PILE_FIELDS).n_bytes == len(text.encode())
    with pytest.raises(BadRecord, match=f"at character {len(text) + 1} of"):
        parse_line(json.dumps({"text": text + "a\ud800"}).encode(), 1, PILE_FIELDS)


def test_final_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "x.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "a"}\n{"text": "b"}'))
    assert read_all(path) == [(1, "a"), (2, "b")]
