"""Word counts: the lines of corpus files counted into the table of (word, count) spm_train sees.

Counting runs in `workers` processes, a batch of lines each, cut as spm_train cuts them
(pipeline.tokenizer.word_cutting), each batch's words sent back as a sorted table; the main process
merges the tables (pipeline.tokenizer.table_merge), and when what it holds outgrows SPILL_BYTES it
writes it out as a sorted run and starts afresh; at the end the runs are merged a piece at a time
straight into the table file (pipeline.tokenizer.word_table), which appears whole or not at all.
Memory is bounded by SPILL_BYTES and the workers, never by the lines nor by the distinct words. The
stages: word-rules (what decides a table) and words@KEY (one corpus part's table).
"""

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline.config.layout import CORPUS_DIR, STATS_DIR, WORD_RULES, words_path
from pipeline.config.schema import Params
from pipeline.core import files, progress
from pipeline.core.errors import PipelineError
from pipeline.core.machine import usable_cores
from pipeline.core.workers import OrderedPool
from pipeline.tokenizer import table_merge, word_table
from pipeline.tokenizer.spm_spec import specs
from pipeline.tokenizer.word_cutting import count_batch, load_cutter
from pipeline.tokenizer.word_table import Table

SPILL_BYTES = 256 << 20  # tables held in memory before they go to disk as one sorted run
BATCH_BYTES = 1 << 20  # lines handed to a worker at once (more only costs the workers memory)
FAN_IN = 64  # runs merged at once (each holds three open files and their zstd windows); more merge in passes


def batches(paths: list[Path], batch_bytes: int = BATCH_BYTES) -> Iterator[tuple[list[bytes], int]]:
    """(lines, bytes read so far) of the files, in order, split at b"\\n" only; a last line without
    one counts, as spm_train reads it."""
    done = 0
    for path in paths:
        with open(path, "rb") as f:
            rest = b""
            while chunk := f.read(batch_bytes):
                done += len(chunk)
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                yield lines, done
            if rest:
                yield [rest], done


def count(
    paths: list[Path],
    flags: dict,
    runs_dir: Path,
    workers: int = 0,
    spill_bytes: int = SPILL_BYTES,
    batch_bytes: int = BATCH_BYTES,
) -> Table:
    """The word-count table of the lines of `paths` under `flags` (spm_train's flags), in memory: for
    tables that fit (tests, benchmarks); the words stage writes its table with `count_to_file`."""
    try:
        held, runs, tally = _count_runs(paths, flags, runs_dir, workers, spill_bytes, batch_bytes)
        merged = table_merge.merge(held)
        held.clear()
        for run in runs:
            reader = word_table.RunReader(run)
            merged = table_merge.merge([merged, reader.read(reader.left)])
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    merged.header = _header(flags, tally, len(runs))
    return merged


def count_to_file(
    paths: list[Path],
    flags: dict,
    output: Path,
    runs_dir: Path,
    workers: int = 0,
    spill_bytes: int = SPILL_BYTES,
    batch_bytes: int = BATCH_BYTES,
    header: dict | None = None,
    fan_in: int = FAN_IN,
) -> dict:
    """The word-count table of the lines of `paths` straight to the table file `output` (whole or not
    at all); returns its header. Memory stays bounded by the spill budget whatever the distinct
    words: once a count has spilled, its runs are merged a piece at a time into the file, never held
    whole (the whole table of an unsampled Pile shard is GBs)."""
    try:
        held, runs, tally = _count_runs(paths, flags, runs_dir, workers, spill_bytes, batch_bytes)
        full = _header(flags, tally, len(runs)) | (header or {})
        if not runs:
            table = table_merge.merge(held)
            table.header = full
            word_table.write(table, output)
            return word_table.read_header(output)
        if held:  # what was held last goes to disk too: then every run is read a piece at a time
            runs.append(runs_dir / f"run{len(runs)}.words")
            word_table.write_run(table_merge.merge(held), runs[-1])
            held.clear()
        made = len(runs)
        while len(runs) > fan_in:  # too many to open at once: merge them in groups into longer runs first
            group, runs = runs[:fan_in], runs[fan_in:]
            longer = word_table.StreamedTable(runs_dir, "longer")
            merge_runs([word_table.RunReader(run) for run in group], longer, spill_bytes)
            runs.append(runs_dir / f"run{made}.words")
            made += 1
            longer.finish_run(runs[-1])
            for run in group:
                run.unlink()
        streamed = word_table.StreamedTable(runs_dir)
        merge_runs([word_table.RunReader(run) for run in runs], streamed, spill_bytes)
        return streamed.finish(output, full)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)


def merge_runs(readers: list[word_table.RunReader], into: word_table.StreamedTable, budget: int) -> None:
    """Sorted runs merged into one table, a piece at a time: each run lends a piece of its words;
    every word up to the smallest last word among the pieces of runs not yet exhausted is final
    (no run holds it further on), so those are merged and written, and the pieces emptied are
    refilled. Memory: about `budget` of pieces, whatever the runs' length."""
    piece = max(16, budget // (32 * len(readers)))  # words a piece: ~32 bytes each, budget over the runs
    pieces = [reader.read(piece) for reader in readers]
    total = sum(len(p) + reader.left for p, reader in zip(pieces, readers))
    with progress.bar(total, "words: merging the sorted runs", unit="word") as bar:
        while any(len(p) for p in pieces):
            open_runs = [p for p, reader in zip(pieces, readers) if not reader.done and len(p)]
            bound = min((_last_word(p) for p in open_runs), default=None)
            final = []
            for i, p in enumerate(pieces):
                cut = len(p) if bound is None else _words_up_to(p, bound)
                if cut:
                    final.append(_head(p, cut))
                    pieces[i] = _tail(p, cut)
                    bar.update(cut)
            into.add(table_merge.merge(final))
            for i, reader in enumerate(readers):
                if not len(pieces[i]) and not reader.done:
                    pieces[i] = reader.read(piece)


def _last_word(table: Table) -> bytes:
    return table.blob[len(table.blob) - int(table.lengths[-1]) :].tobytes()


def _words_up_to(table: Table, bound: bytes) -> int:
    """How many of the table's words (in UTF-8 byte order) are <= bound: a binary search."""
    ends = np.cumsum(table.lengths, dtype=np.int64)
    low, high = 0, len(table)
    while low < high:
        middle = (low + high) // 2
        end = int(ends[middle])
        if table.blob[end - int(table.lengths[middle]) : end].tobytes() <= bound:
            low = middle + 1
        else:
            high = middle
    return low


def _head(table: Table, n: int) -> Table:
    size = int(table.lengths[:n].sum())
    return Table(table.counts[:n], table.lengths[:n], table.blob[:size])


def _tail(table: Table, n: int) -> Table:
    size = int(table.lengths[:n].sum())
    return Table(table.counts[n:], table.lengths[n:], table.blob[size:])


def _header(flags: dict, tally: Counter, spilled: int) -> dict:
    return {
        "deciding": word_table.deciding(specs(flags)),
        "lines_loaded": tally.pop("loaded", 0),
        "lines_skipped": dict(sorted(tally.items())),
        "spilled_runs": spilled,
    }


def _count_runs(
    paths: list[Path], flags: dict, runs_dir: Path, workers: int, spill_bytes: int, batch_bytes: int
) -> tuple[list[Table], list[Path], Counter]:
    """Count in `workers` processes (0: every usable core), in bounded memory: (the tables held at the
    end, the sorted runs spilled to `runs_dir`, the lines by what became of them).

    Each batch comes back as a sorted table; the tables are merged as a binary counter merges its
    bits (two tables of as many batches each become one), so every word is copied O(log batches)
    times and what is held stays within about twice the distinct words seen. Past `spill_bytes`
    held, the tables are merged into a sorted run in `runs_dir` (a fixed temporary folder, made
    afresh: what a killed run left there goes; the caller removes it at the end)."""
    workers = workers or usable_cores()
    held: list[tuple[int, Table]] = []  # (batches merged into it, table), fewer batches last
    tally: Counter = Counter()
    runs: list[Path] = []
    total = sum(Path(path).stat().st_size for path in paths)
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir(parents=True)
    pool = OrderedPool(count_batch, workers, load_cutter, (flags,), hint="lower tokenizer.num_threads")
    try:
        with progress.bar(total, f"words: counting {', '.join(Path(p).name for p in paths)}") as bar:
            for table, lines, read_so_far in _in_order(pool, batches(paths, batch_bytes), workers):
                tally.update(lines)
                held.append((1, table))
                while len(held) > 1 and held[-2][0] <= held[-1][0]:
                    (older, a), (newer, b) = held.pop(-2), held.pop()
                    held.append((older + newer, table_merge.merge([a, b])))
                in_memory = sum(t.nbytes for _, t in held)
                if in_memory > spill_bytes:  # a sorted run to disk: memory stays bounded
                    runs.append(runs_dir / f"run{len(runs)}.words")
                    word_table.write_run(table_merge.merge([t for _, t in held]), runs[-1])
                    held.clear()
                bar.update(read_so_far - bar.n)
                bar.set_postfix_str(
                    f"{sum(tally.values()):,} lines, {max((len(t) for _, t in held), default=0):,} words "
                    f"in the largest table held, {len(runs)} runs on disk",
                    refresh=False,
                )
        pool.close()
    finally:
        pool.close()
    return [t for _, t in held], runs, tally


def _in_order(pool, source: Iterable[tuple[list[bytes], int]], workers: int):
    """(counts, skipped, bytes read) of every batch, in order; at most 2 x workers in flight."""
    read_so_far: list[int] = []
    for lines, done in source:
        pool.submit(lines)
        read_so_far.append(done)
        if pool.pending() >= 2 * workers:
            yield *pool.next_result(), read_so_far.pop(0)
    while pool.pending():
        yield *pool.next_result(), read_so_far.pop(0)


def workers_for(flags: dict) -> int:
    """Counting processes: tokenizer.num_threads (spm_train's own parallelism), at most the usable cores."""
    return max(1, min(int(flags.get("num_threads", 16)), usable_cores()))


def run_rules_stage(p: Params) -> None:
    """The word-rules stage: what decides a table, from the tokenizer's flags, into WORD_RULES.

    The words stages depend on this file, not on the tokenizer's params: a change of vocab_size (or
    of any flag that does not touch the words) rewrites it with the same bytes, and no shard is
    counted again."""
    rules = word_table.deciding(specs(p.sentencepiece_flags))
    files.write_json_atomic(WORD_RULES, rules)
    progress.summary(
        "word-rules",
        {
            "to": WORD_RULES,
            "rules": f"normalization {rules['normalization_rule_name']}, "
            f"remove_extra_whitespaces {rules['remove_extra_whitespaces']}, "
            f"split_by_whitespace {rules['split_by_whitespace']}, {len(rules['meta_pieces'])} meta pieces",
        },
    )


def check_rules(flags: dict) -> None:
    """Refuse to count under flags other than WORD_RULES records (it would be the stale dependency)."""
    try:
        recorded = json.loads(WORD_RULES.read_text())
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{WORD_RULES}: {exc}; run `dvc repro word-rules` first") from None
    if recorded != json.loads(json.dumps(word_table.deciding(specs(flags)))):
        raise PipelineError(
            f"{WORD_RULES} does not match the tokenizer's flags in params.yaml; run `dvc repro word-rules`"
        )


def run_stage(p: Params, key: str) -> None:
    """The words@KEY stage: the word-count table of corpus part KEY, its stats and a summary."""
    source, output = CORPUS_DIR / f"{key}.txt", words_path(key)
    files.input_size(source)
    flags, workers = p.sentencepiece_flags, workers_for(p.sentencepiece_flags)
    check_rules(flags)
    started = time.monotonic()
    header = count_to_file(
        [source],
        flags,
        output,
        files.temporary(output.with_suffix(".runs")),
        workers,
        header={"source": {"file": str(source), "bytes": source.stat().st_size}},
    )
    seconds = time.monotonic() - started
    stats = {
        "distinct_words": header["words"],
        "word_occurrences": header["occurrences"],
        "utf8_bytes": header["utf8_bytes"],
        "lines_loaded": header["lines_loaded"],
        "lines_skipped": header["lines_skipped"],
        "spilled_runs": header["spilled_runs"],
        "table_bytes": output.stat().st_size,
    }  # no wall-clock figure: dvc.lock hashes this file (the time goes to the summary)
    files.write_json_atomic(STATS_DIR / "words" / f"{key}.json", stats)
    skipped = ", ".join(f"{n:,} {why}" for why, n in stats["lines_skipped"].items()) or "none"
    progress.summary(
        f"words@{key}",
        {
            "from": f"{source} ({stats['lines_loaded']:,} lines as spm_train loads them; skipped: {skipped})",
            "to": f"{output} ({stats['table_bytes'] / 1e6:.1f} MB)",
            "words": f"{stats['distinct_words']:,} distinct, {stats['word_occurrences']:,} in all "
            f"({stats['utf8_bytes'] / 1e6:.1f} MB of UTF-8)",
            "memory": f"{stats['spilled_runs']} sorted runs spilled to disk (at {SPILL_BYTES >> 20} MB of tables held)",
            "time": f"{seconds:.1f} s on {workers} workers "
            f"({source.stat().st_size / max(seconds, 1e-9) / 1e6:.1f} MB/s)",
        },
    )
