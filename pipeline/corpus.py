"""The tokenizer's training text: one shard's text lines, sampled to a quota, reproducibly.

SentencePiece 0.2.x samples `input_sentence_size` lines differently on every run and silently skips
lines over `max_sentence_length` bytes, so this stage does both jobs itself: it splits long lines at
whitespace (at a character boundary when a line has none) and keeps an exact, seeded, uniform
sample of the resulting lines (selection sampling: two streaming passes, O(1) memory). A shard whose
lines all fit the quota is written in the first pass.
"""

import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pipeline import files, progress
from pipeline.errors import PipelineError
from pipeline.jsonl import BadRecord, ShardReader, bad_record_message, parse_record
from pipeline.params import CORPUS_DIR, METRICS_DIR, Params

WHITESPACE = b" \t"


@dataclass
class CorpusStats:
    docs: int = 0
    bad_records: Counter = field(default_factory=Counter)
    text_lines: int = 0
    empty_lines: int = 0
    long_lines_split: int = 0
    splits_without_whitespace: int = 0
    candidate_lines: int = 0
    selected_lines: int = 0
    selected_bytes: int = 0
    per_set: dict = field(default_factory=lambda: defaultdict(Counter))

    def as_json(self, quota: int) -> dict:
        return {
            "docs": self.docs, "bad_records": dict(self.bad_records), "text_lines": self.text_lines,
            "skipped_empty_lines": self.empty_lines, "long_lines_split": self.long_lines_split,
            "splits_without_whitespace": self.splits_without_whitespace,
            "candidate_lines": self.candidate_lines, "quota": quota,
            "selected_lines": self.selected_lines, "selected_bytes": self.selected_bytes,
            "per_set": {name: dict(counts) for name, counts in sorted(self.per_set.items())},
        }


def quota(max_lines: int, shards: tuple[str, ...], key: str) -> int:
    """This shard's share of `max_lines`; the remainder goes to the first shards listed."""
    base, extra = divmod(max_lines, len(shards))
    return base + (shards.index(key) < extra)


def split_line(line: bytes, max_bytes: int) -> list[bytes]:
    """Cut a UTF-8 line into pieces of at most max_bytes, before whitespace where there is some."""
    pieces = []
    while len(line) > max_bytes:
        cut = max(line.rfind(b" ", 1, max_bytes + 1), line.rfind(b"\t", 1, max_bytes + 1))
        if cut <= 0:
            cut = max_bytes
            while line[cut] & 0xC0 == 0x80:  # never cut inside a UTF-8 sequence
                cut -= 1
        pieces.append(line[:cut])
        line = line[cut:]
    pieces.append(line)
    return pieces


def _lines(path: Path, max_bytes: int, on_bad_record: str, stats: CorpusStats | None,
           pbar=None) -> Iterator[tuple[str, bytes]]:
    """Every candidate line of a shard with its set name; counts into `stats` when given."""
    reader = ShardReader(path)
    for number, raw in reader.lines():
        if pbar is not None:
            pbar.update(reader.compressed_pos - pbar.n)
        try:
            record = parse_record(raw, number)
        except BadRecord as exc:
            if on_bad_record == "error":
                raise PipelineError(bad_record_message(path, number, str(exc))) from None
            if stats is not None:
                stats.bad_records[exc.kind] += 1
            continue
        if stats is not None:
            stats.docs += 1
            stats.per_set[record.set_name]["docs"] += 1
        for text_line in record.text.split("\n"):
            if stats is not None:
                stats.text_lines += 1
            if not text_line:
                if stats is not None:
                    stats.empty_lines += 1
                continue
            encoded = text_line.encode("utf-8")
            if len(encoded) <= max_bytes:
                yield record.set_name, encoded
                continue
            pieces = split_line(encoded, max_bytes)
            if stats is not None:
                stats.long_lines_split += 1
                stats.splits_without_whitespace += sum(
                    1 for piece in pieces[1:] if piece[:1] not in (b" ", b"\t"))
            for piece in pieces:
                yield record.set_name, piece


def build(raw: Path, output: Path, line_quota: int, seed: str, max_bytes: int,
          on_bad_record: str = "error") -> CorpusStats:
    """Write at most `line_quota` lines of `raw`'s text to `output`, a uniform sample seeded by `seed`."""
    stats = CorpusStats()
    with files.replacing(output) as (tmp,):
        with progress.bar(raw.stat().st_size if raw.exists() else None, f"corpus {raw.name} (count)") as pbar:
            with open(tmp, "wb") as out:
                for set_name, line in _lines(raw, max_bytes, on_bad_record, stats, pbar):
                    stats.candidate_lines += 1
                    if stats.candidate_lines <= line_quota:
                        out.write(line + b"\n")
                        _count_selected(stats, set_name, line)
        if stats.docs == 0:
            raise PipelineError(f"{raw}: contains no documents")
        if stats.candidate_lines > line_quota:
            _forget_selection(stats)
            _select(raw, tmp, line_quota, seed, max_bytes, on_bad_record, stats)
    return stats


def _select(raw: Path, tmp: Path, line_quota: int, seed: str, max_bytes: int, on_bad_record: str,
            stats: CorpusStats) -> None:
    """Knuth's selection sampling: line i is kept with probability (still needed) / (still to see)."""
    rng = random.Random(seed)
    remaining = stats.candidate_lines
    with open(tmp, "wb") as out, progress.bar(remaining, f"corpus {raw.name} (sample)", unit="line") as pbar:
        for set_name, line in _lines(raw, max_bytes, on_bad_record, None):
            if rng.random() * remaining < line_quota - stats.selected_lines:
                out.write(line + b"\n")
                _count_selected(stats, set_name, line)
            remaining -= 1
            pbar.update()


def _forget_selection(stats: CorpusStats) -> None:
    stats.selected_lines = stats.selected_bytes = 0
    for counts in stats.per_set.values():
        counts.pop("selected_lines", None)
        counts.pop("selected_bytes", None)


def _count_selected(stats: CorpusStats, set_name: str, line: bytes) -> None:
    stats.selected_lines += 1
    stats.selected_bytes += len(line) + 1
    stats.per_set[set_name]["selected_lines"] += 1
    stats.per_set[set_name]["selected_bytes"] += len(line) + 1


def run_stage(p: Params, key: str) -> None:
    """The corpus@KEY stage: this shard's sample of the tokenizer text, its stats and a summary."""
    line_quota = quota(p.corpus.max_lines, p.corpus.shards, key)
    output = CORPUS_DIR / f"{key}.txt"
    started = time.monotonic()
    stats = build(p.data.raw_path(key), output, line_quota, f"{p.corpus.seed}:{key}",
                  p.max_sentence_length, p.pretokenize.on_bad_record)
    seconds = time.monotonic() - started
    progress.write_json_atomic(METRICS_DIR / "corpus" / f"{key}.json", stats.as_json(line_quota))
    progress.summary(f"corpus@{key}", {
        "from": p.data.raw_path(key),
        "to": output,
        "documents": f"{stats.docs:,} ({sum(stats.bad_records.values()):,} bad records skipped)",
        "text lines": f"{stats.text_lines:,} ({stats.empty_lines:,} empty skipped, "
                      f"{stats.long_lines_split:,} over {p.max_sentence_length} bytes split)",
        "selected": f"{stats.selected_lines:,} of {stats.candidate_lines:,} lines (quota {line_quota:,}), "
                    f"{stats.selected_bytes / 1e6:.1f} MB",
        "time": f"{seconds:.1f} s",
    })
