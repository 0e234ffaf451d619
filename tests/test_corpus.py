"""The tokenizer corpus: an exact, seeded sample of text lines, long lines split, skips counted."""

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.errors import PipelineError
from pipeline.tokenizer import corpus
from tests.helpers import doc, peak_rss, write_shard


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=["Cs"]), max_size=400), st.integers(16, 64))
def test_split_line_keeps_every_byte_in_pieces_that_fit(text, max_bytes):
    line = text.encode("utf-8")
    pieces = corpus.split_line(line, max_bytes)
    assert b"".join(pieces) == line
    assert all(len(piece) <= max_bytes for piece in pieces)
    assert all(piece.decode("utf-8") for piece in pieces if piece)  # no cut inside a character


def test_long_line_is_cut_before_whitespace():
    assert corpus.split_line(b"aaaa bbbb cccc", 10) == [b"aaaa bbbb", b" cccc"]


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("ab\n"), max_size=60), st.integers(1, 8))
def test_blocks_hold_the_texts_lines_whole_and_in_order(text, chars):
    assert [line for block in corpus.blocks(text, chars) for line in block.split("\n")] == text.split("\n")


BUILD = """
import json, sys
from pathlib import Path
from pipeline.tokenizer.corpus import build
answer = {"lines": build([Path(sys.argv[1])], Path(sys.argv[2]), 1000, "0:00", 4192).selected_lines}
"""


def build_peak(shard, output) -> int:
    answer = peak_rss(BUILD, shard, output)
    assert answer["lines"] == 1000
    return answer["peak"]


@pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM from /proc")
def test_a_long_document_is_held_about_three_times_not_once_per_copy(tmp_path):
    """The stage's peak over its base follows its largest document: 8.5 times it before (the line, its
    pieces, the decoded text, the lines, their UTF-8 copies, a heap that kept the freed ones), 3 now."""
    line = "Un été à Paris, au bord de l'eau: les quais, les ponts et la foule des dimanches.\n"
    text = line * (16_000_000 // len(line))
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_text(json.dumps(doc(text[: 1100 * len(line)]), ensure_ascii=False) + "\n")
    big.write_text(json.dumps(doc(text), ensure_ascii=False) + "\n")
    baseline, peak = build_peak(small, tmp_path / "small.txt"), build_peak(big, tmp_path / "big.txt")
    assert peak - baseline < 3.5 * len(text.encode("utf-8")), (baseline, peak)


def shard_with_lines(path, n_docs=50, lines_per_doc=20):
    docs = [doc("\n".join(f"doc {d} line {i}" for i in range(lines_per_doc)), f"set {d % 3}") for d in range(n_docs)]
    return write_shard(path, docs)


def test_sample_is_exact_seeded_and_reproducible(tmp_path):
    raw = shard_with_lines(tmp_path / "00.jsonl.zst")
    stats = corpus.build([raw], tmp_path / "a.txt", 123, "1234:00", 4192)
    corpus.build([raw], tmp_path / "b.txt", 123, "1234:00", 4192)
    corpus.build([raw], tmp_path / "c.txt", 123, "99:00", 4192)
    a = (tmp_path / "a.txt").read_text().splitlines()
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    assert (tmp_path / "a.txt").read_bytes() != (tmp_path / "c.txt").read_bytes()
    assert len(a) == stats.selected_lines == 123 and stats.candidate_lines == 1000
    source = [f"doc {d} line {i}" for d in range(50) for i in range(20)]
    assert [line for line in source if line in set(a)] == a  # a subset, in the shard's order
    assert sum(c["selected_lines"] for c in stats.per_group.values()) == 123


def test_every_line_is_kept_under_the_quota_and_empty_lines_are_counted(tmp_path):
    raw = write_shard(tmp_path / "00.jsonl.zst", [doc("one\n\ntwo\n"), doc("x" * 50)])
    stats = corpus.build([raw], tmp_path / "out.txt", 100, "s", 16)
    assert (
        tmp_path / "out.txt"
    ).read_text() == "one\ntwo\n" + "x" * 16 + "\n" + "x" * 16 + "\n" + "x" * 16 + "\n" + "xx\n"
    assert (stats.empty_lines, stats.long_lines_split, stats.splits_without_whitespace) == (2, 1, 3)


def test_quota_shares_max_lines_over_the_shards():
    assert [corpus.quota(10, ("a", "b", "c"), key) for key in "abc"] == [4, 3, 3]


def test_bad_record_stops_with_file_and_line_or_is_skipped_and_counted(tmp_path):
    raw = write_shard(tmp_path / "00.jsonl.zst", raw_lines=[b'{"text": "good"}', b'{"text": ', b'{"text": "also"}'])
    with pytest.raises(PipelineError, match=r"00\.jsonl\.zst: line 2: not valid JSON"):
        corpus.build([raw], tmp_path / "out.txt", 10, "s", 4192)
    assert not (tmp_path / "out.txt").exists() and not list(tmp_path.glob("*.tmp"))
    stats = corpus.build([raw], tmp_path / "out.txt", 10, "s", 4192, on_bad_record="skip")
    assert (tmp_path / "out.txt").read_text() == "good\nalso\n" and stats.bad_records == {"not valid JSON": 1}


def test_shard_without_documents_is_an_error(tmp_path):
    raw = write_shard(tmp_path / "00.jsonl.zst", raw_lines=[])
    with pytest.raises(PipelineError, match="contains no documents"):
        corpus.build([raw], tmp_path / "out.txt", 10, "s", 4192)
    assert not (tmp_path / "out.txt").exists()
