"""The tokenizer's training text: one shard's text lines, sampled to a quota, reproducibly.

SentencePiece 0.2.x samples `input_sentence_size` lines differently on every run and silently skips
lines over `max_sentence_length` bytes, so this stage does both jobs itself: it splits long lines at
whitespace (at a character boundary when a line has none) and keeps an exact, seeded, uniform
sample of the resulting lines (selection sampling: two streaming passes, O(1) memory). `workers`
processes parse and cut the documents, a batch at a time, in order: the first pass counts each
batch's candidate lines, so the main process draws the sample from counts alone and a worker gets a
batch with its lines' choices; any number of workers gives the same bytes. Memory does not grow
with the shard; it grows with its largest document, held about three times while JSON parses it (the
line, its decoded text, the document's text) and once after: its lines are cut and encoded a block
at a time.
"""

import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path

from pipeline.config import formats
from pipeline.config.layout import CORPUS_DIR, STATS_DIR
from pipeline.config.schema import Params
from pipeline.core import files, memory, progress
from pipeline.core.errors import PipelineError
from pipeline.core.machine import usable_cores
from pipeline.core.workers import pool
from pipeline.ingest.documents import describe, in_order, open_reader, parse
from pipeline.ingest.records import PILE_FIELDS, BadRecord, Fields, bad_record_message

WHITESPACE = b" \t"
BLOCK_CHARS = 1 << 20  # a document's lines are cut and encoded a block at a time: a long one is held once
BATCH_BYTES = 1 << 20  # raw JSON (or text) a worker cuts at a time: amortises the hand-off, bounds memory
FIRST_PASS_COUNTS = (
    "docs",
    "text_lines",
    "empty_lines",
    "long_lines_split",
    "splits_without_whitespace",
    "candidate_lines",
)
WORKER_DIED_HINT = "lower corpus.workers or give the job more memory, then rerun (nothing was written)"


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

    def add(self, other: "CorpusStats") -> None:
        """Add another batch's counts of the first pass."""
        for name in FIRST_PASS_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.bad_records.update(other.bad_records)
        for group, counts in other.per_group.items():
            self.per_group[group].update(counts)

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
    line; the b"\n" between two blocks belongs to neither, so their lines are the text's lines."""
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
    workers: int = 1,
    batch_bytes: int = BATCH_BYTES,
) -> CorpusStats:
    """Write at most `line_quota` lines of the text of the files `raw` to `output`, a uniform sample
    seeded by `seed`; `workers` processes cut the documents into lines (the same sample for any number)."""
    memory.return_large_frees()
    stats, batch_candidates = _count(raw, fields, max_bytes, on_bad_record, workers, batch_bytes)
    if stats.docs == 0:
        raise PipelineError(f"{describe(raw)}: contains no documents")
    selection = _Selection(seed, stats.candidate_lines, line_quota, batch_candidates, fields, max_bytes)
    with files.replacing(output) as (tmp,):
        _select(raw, fields, tmp, selection, workers, batch_bytes, stats)
    return stats


def count_batch(
    file_index: int, first: int, items: list, fields: Fields, max_bytes: int
) -> tuple[CorpusStats, list[tuple[int, int, str, str]]]:
    """A batch's documents, lines and candidate lines, and (file index, number, kind, message) of each
    item that is not a record."""
    stats, bad = CorpusStats(), []
    for number, item in enumerate(items, first):
        try:
            record = parse(item, number, fields)
        except BadRecord as exc:
            stats.bad_records[exc.kind] += 1
            bad.append((file_index, number, exc.kind, str(exc)))
            continue
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
    return stats, bad


def select_batch(first: int, items: list, fields: Fields, max_bytes: int, chosen: bytes) -> tuple[bytes, dict]:
    """The batch's chosen candidate lines (`chosen`: a byte a candidate line, non-zero to keep it), each
    followed by b"\n", and the lines and bytes kept of each group."""
    out, per_group, at = [], defaultdict(Counter), 0
    for number, item in enumerate(items, first):
        try:
            record = parse(item, number, fields)
        except BadRecord:
            continue  # the first pass stopped at it or counted it
        for block in blocks(record.text):
            lines = _candidates(block.split("\n"), max_bytes)
            picked = list(compress(lines, chosen[at : at + len(lines)]))
            at += len(lines)
            if picked:
                out.append(b"\n".join(picked) + b"\n")
                per_group[record.group]["selected_lines"] += len(picked)
                per_group[record.group]["selected_bytes"] += sum(map(len, picked)) + len(picked)
    if at != len(chosen):
        raise PipelineError(
            f"the batch from line {first:,}: {at:,} candidate lines now, {len(chosen):,} in the first pass: "
            "the file changed while the stage read it; rerun"
        )
    return b"".join(out), per_group


def _count(
    raw: list[Path], fields: Fields, max_bytes: int, on_bad_record: str, workers: int, batch_bytes: int
) -> tuple[CorpusStats, list[int]]:
    """First pass: the documents, lines and candidate lines, in all and a batch (selection sampling
    needs their total; the second pass, each batch's)."""
    readers = [open_reader(path, fields) for path in raw]  # every file opened (and checked) before any work
    stats, batch_candidates = CorpusStats(), []
    executor = pool(count_batch, workers, memory.return_large_frees, hint=WORKER_DIED_HINT)
    try:
        for batch, bad in in_order(
            executor,
            readers,
            batch_bytes,
            workers,
            f"corpus {raw[0].name} (count)",
            lambda file_index, first, items: (file_index, first, items, fields, max_bytes),
        ):
            if bad and on_bad_record == "error":
                file_index, number, _, message = bad[0]
                reader = readers[file_index]
                raise PipelineError(bad_record_message(reader.path, reader.unit, number, message))
            stats.add(batch)
            batch_candidates.append(batch.candidate_lines)
    finally:
        executor.close()
    return stats, batch_candidates


class _Selection:
    """Knuth's selection sampling, a batch at a time: each candidate line is kept with probability
    (still needed) / (still to see); once every line left is needed, the rest are kept without drawing
    (the same lines). It decides from counts alone, so a worker gets a batch and its choices."""

    def __init__(
        self, seed: str, candidates: int, quota: int, batch_candidates: list[int], fields: Fields, max_bytes: int
    ):
        self.rng = random.Random(seed)
        self.remaining, self.needed = candidates, quota
        self.batch_candidates = iter(batch_candidates)
        self.fields, self.max_bytes = fields, max_bytes

    def task(self, file_index: int, first: int, items: list) -> tuple:
        """select_batch's arguments for the next batch, its lines chosen."""
        n = next(self.batch_candidates)
        chosen = bytearray(n)
        for i in range(n):
            if self.remaining <= self.needed:
                chosen[i:] = b"\x01" * (n - i)
                self.remaining, self.needed = self.remaining - (n - i), self.needed - (n - i)
                break
            if self.rng.random() * self.remaining < self.needed:
                chosen[i] = 1
                self.needed -= 1
            self.remaining -= 1
        return first, items, self.fields, self.max_bytes, bytes(chosen)


def _select(
    raw: list[Path],
    fields: Fields,
    tmp: Path,
    selection: _Selection,
    workers: int,
    batch_bytes: int,
    stats: CorpusStats,
) -> None:
    """Second pass: the chosen lines, written in the shard's order."""
    readers = [open_reader(path, fields) for path in raw]
    executor = pool(select_batch, workers, memory.return_large_frees, hint=WORKER_DIED_HINT)
    try:
        with open(tmp, "wb") as out:
            for text, per_group in in_order(
                executor, readers, batch_bytes, workers, f"corpus {raw[0].name} (sample)", selection.task
            ):
                out.write(text)
                for group, counts in per_group.items():
                    stats.per_group[group].update(counts)
                    stats.selected_lines += counts["selected_lines"]
                    stats.selected_bytes += counts["selected_bytes"]
    finally:
        executor.close()


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
        p.corpus.workers or usable_cores(),
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
