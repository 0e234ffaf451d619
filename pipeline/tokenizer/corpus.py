"""The tokenizer's training text: one shard's text lines, sampled to a quota, reproducibly.

SentencePiece 0.2.x samples `input_sentence_size` lines differently on every run and silently skips
lines over `max_sentence_length` bytes, so this stage does both jobs itself: it splits long lines at
whitespace (at a character boundary when a line has none) and keeps an exact, seeded, uniform
sample of the resulting lines (selection sampling: two streaming passes; a shard whose lines all
fit the quota is kept whole without drawing). Memory does not grow with the shard; it grows with its
largest document, held about three times while JSON parses it (the line, its decoded text, the
document's text) and once after: its lines are cut and encoded a block at a time.
"""

import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import formats
from pipeline.config.layout import CORPUS_DIR, STATS_DIR
from pipeline.config.schema import Params
from pipeline.core import files, memory, progress
from pipeline.core.errors import PipelineError
from pipeline.ingest.documents import describe, records
from pipeline.ingest.records import PILE_FIELDS, Fields, Record

WHITESPACE = b" \t"
BLOCK_CHARS = 1 << 20  # a document's lines are cut and encoded a block at a time: a long one is held once


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
    per_group: dict = field(default_factory=lambda: defaultdict(Counter))

    def as_json(self, quota: int) -> dict:
        return {
            "docs": self.docs,
            "bad_records": dict(self.bad_records),
            "text_lines": self.text_lines,
            "skipped_empty_lines": self.empty_lines,
            "long_lines_split": self.long_lines_split,
            "splits_without_whitespace": self.splits_without_whitespace,
            "candidate_lines": self.candidate_lines,
            "quota": quota,
            "selected_lines": self.selected_lines,
            "selected_bytes": self.selected_bytes,
            "per_group": {name: dict(counts) for name, counts in sorted(self.per_group.items())},
        }


def quota(max_lines: int, shards: tuple[str, ...], key: str) -> int:
    """This shard's share of `max_lines`; the remainder goes to the first shards listed."""
    base, extra = divmod(max_lines, len(shards))
    return base + (shards.index(key) < extra)


def split_line(line: bytes, max_bytes: int) -> list[bytes]:
    """Cut a UTF-8 line into pieces of at most max_bytes, before whitespace where there is some."""
    pieces = []
    start = 0  # each piece is sliced once from the line: linear in its length, however long
    while len(line) - start > max_bytes:
        end = start + max_bytes
        cut = max(line.rfind(b" ", start + 1, end + 1), line.rfind(b"\t", start + 1, end + 1))
        if cut < 0:
            cut = end
            while line[cut] & 0xC0 == 0x80:  # never cut inside a UTF-8 sequence
                cut -= 1
        pieces.append(line[start:cut])
        start = cut
    pieces.append(line[start:])
    return pieces


def blocks(text: str, chars: int = BLOCK_CHARS) -> Iterator[str]:
    """The text in consecutive blocks of whole lines, each of about `chars` characters or one longer
    line; the "\n" between two blocks belongs to neither, so their lines are the text's lines."""
    start = 0
    while len(text) - start > chars and (end := text.find("\n", start + chars)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:] if start else text


def build(
    raw: list[Path],
    output: Path,
    line_quota: int,
    seed: str,
    max_bytes: int,
    on_bad_record: str = "error",
    fields: Fields = PILE_FIELDS,
) -> CorpusStats:
    """Write at most `line_quota` lines of the text of the files `raw` to `output`, a uniform sample
    seeded by `seed`."""
    memory.return_large_frees()
    stats = CorpusStats()
    _count(raw, fields, max_bytes, on_bad_record, stats)
    if stats.docs == 0:
        raise PipelineError(f"{describe(raw)}: contains no documents")
    with files.replacing(output) as (tmp,):
        _select(raw, fields, tmp, line_quota, seed, max_bytes, stats)
    return stats


def _records(
    paths: list[Path], fields: Fields, on_bad_record: str, stats: CorpusStats | None, pbar
) -> Iterator[Record]:
    """Every record of the files; bad ones stop the stage or are skipped (counted when `stats` is given)."""
    done = 0
    for path in paths:
        bad = stats.bad_records if stats is not None else None
        yield from records(
            path, fields, on_bad_record, bad, lambda position, before=done: pbar.update(before + position - pbar.n)
        )
        done += path.stat().st_size


def _total_size(paths: list[Path]) -> int | None:
    return sum(path.stat().st_size for path in paths) if all(path.exists() for path in paths) else None


def _candidates(lines: list[str], max_bytes: int, stats: CorpusStats | None = None) -> list[bytes]:
    """The non-empty lines in UTF-8, those over max_bytes split (counted into `stats` when given)."""
    kept = [line.encode("utf-8") for line in lines if line]
    if max(map(len, kept), default=0) <= max_bytes:
        return kept
    fitting = []
    for line in kept:
        if len(line) <= max_bytes:
            fitting.append(line)
            continue
        pieces = split_line(line, max_bytes)
        fitting += pieces
        if stats is not None:
            stats.long_lines_split += 1
            stats.splits_without_whitespace += sum(piece[:1] not in (b" ", b"\t") for piece in pieces[1:])
    return fitting


def _count(raw: list[Path], fields: Fields, max_bytes: int, on_bad_record: str, stats: CorpusStats) -> None:
    """First pass: the documents, lines and candidate lines (selection sampling needs their total)."""
    with progress.bar(_total_size(raw), f"corpus {raw[0].name} (count)") as pbar:
        for record in _records(raw, fields, on_bad_record, stats, pbar):
            stats.docs += 1
            stats.per_group[record.group]["docs"] += 1
            for block in blocks(record.text):
                lines = block.split("\n")
                empty = lines.count("")
                stats.text_lines += len(lines)
                stats.empty_lines += empty
                if record.n_bytes <= max_bytes:  # no line to split: counted without encoding any
                    stats.candidate_lines += len(lines) - empty
                else:
                    stats.candidate_lines += len(_candidates(lines, max_bytes, stats))


def _select(
    raw: list[Path], fields: Fields, tmp: Path, line_quota: int, seed: str, max_bytes: int, stats: CorpusStats
) -> None:
    """Second pass, Knuth's selection sampling: each line is kept with probability (still needed) /
    (still to see). Once every line left is needed, the rest are kept without drawing (same lines)."""
    rng = random.Random(seed)
    remaining, needed = stats.candidate_lines, line_quota
    with open(tmp, "wb") as out, progress.bar(_total_size(raw), f"corpus {raw[0].name} (sample)") as pbar:
        for record in _records(raw, fields, "skip", None, pbar):  # bad records were dealt with by the first pass
            for block in blocks(record.text):
                lines = _candidates(block.split("\n"), max_bytes)
                if remaining <= needed:
                    chosen = lines
                    remaining, needed = remaining - len(lines), needed - len(lines)
                else:
                    chosen = []
                    for line in lines:
                        if rng.random() * remaining < needed:
                            chosen.append(line)
                            needed -= 1
                        remaining -= 1
                if chosen:
                    out.write(b"\n".join(chosen) + b"\n")
                    size = sum(map(len, chosen)) + len(chosen)
                    stats.selected_lines += len(chosen)
                    stats.selected_bytes += size
                    stats.per_group[record.group]["selected_lines"] += len(chosen)
                    stats.per_group[record.group]["selected_bytes"] += size


def run_stage(p: Params, key: str) -> None:
    """The corpus@KEY stage: this shard's sample of the tokenizer text, its stats and a summary."""
    line_quota = quota(p.corpus.max_lines, p.corpus.shards, key)
    output = CORPUS_DIR / f"{key}.txt"
    started = time.monotonic()
    raw = formats.raw_files(p.data, key)
    stats = build(
        raw,
        output,
        line_quota,
        f"{p.corpus.seed}:{key}",
        p.max_sentence_length,
        p.data.on_bad_record,
        Fields(p.data.text_field, p.data.group_field),
    )
    seconds = time.monotonic() - started
    files.write_json_atomic(STATS_DIR / "corpus" / f"{key}.json", stats.as_json(line_quota))
    progress.summary(
        f"corpus@{key}",
        {
            "from": describe(raw),
            "to": output,
            "documents": f"{stats.docs:,} ({sum(stats.bad_records.values()):,} bad records skipped)",
            "text lines": f"{stats.text_lines:,} ({stats.empty_lines:,} empty skipped, "
            f"{stats.long_lines_split:,} over {p.max_sentence_length} bytes split)",
            "selected": f"{stats.selected_lines:,} of {stats.candidate_lines:,} lines (quota {line_quota:,}), "
            f"{stats.selected_bytes / 1e6:.1f} MB",
            "time": f"{seconds:.1f} s",
        },
    )
