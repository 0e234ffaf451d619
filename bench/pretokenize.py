"""Pretokenization benchmarks: ratios measured side by side in one run, on the same documents.

The input is a shard of at least 200 MB of text built from the sample's train documents: the
documents repeated, in order, with about one word in twenty made novel by appending a Zipf-
distributed number (`build_shard`), so the word cache keeps meeting words it has never seen, as it
does on a Pile shard (a real shard's hit rate is higher than the sample's: 98% here, ~90% on one
copy of the sample).

1. encoders, one core, in memory, one pass (each cache starts cold and warms as it goes, as in the
   stage): plain `SentencePieceProcessor.encode`, the word cache over SentencePiece's BPE, the
   compiled BPE; the ids of all three compared; then the compiled BPE over the same documents
   again, all hits, for the cost of a hit and (by difference) of a first sighting;
2. the pretokenize stage (read, decompress, parse, encode, write), with 1 worker and with every core,
   on the shard and on one four times its size (the same recipe, continued), where each worker's
   fixed start (~1 s: numba's import, loading the kernels) weighs a quarter as much;
3. memory: the stage's peak RSS (its whole process tree) on the shard and on its first quarter;
4. the machine's own ceiling for scaling: as many processes as cores, each encoding the quarter
   shard in memory with the compiled BPE at the same time, against one alone (nothing shared, no
   reading, no pipes: what no pool of workers can beat);
5. the cost of Megatron's index (`--index`, alone or with the rest): the stage with every core, with
   the index written and with its writer swapped for one that writes nothing, alternating, and the
   index step alone on the shard's own document lengths, timed against the stage.

    python bench/pretokenize.py [--mb 200]   # needs data/tokenizer/spm.model (dvc repro tokenizer)
    python bench/pretokenize.py --model M --quick --results pretokenize-50k   # 1-2 with another model
    python bench/pretokenize.py --index-only  # 5 alone, into the results file's "index" entry

Writes bench/results/pretokenize.json and prints a table for bench/README.md.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm
import zstandard
from common import REPO, RESULTS, child_peak, save, timed, usable_cores

from pipeline.encode import megatron_index
from pipeline.encode.encoder import WordCacheEncoder
from pipeline.ingest.documents import records
from pipeline.ingest.records import PILE_FIELDS

MODEL = REPO / "data/tokenizer/spm.model"
SHARDS = [REPO / "data/sample/train/00.jsonl.zst", REPO / "data/sample/train/01.jsonl.zst"]
NOVEL = 0.05  # the share of words given a number
ZIPF = 1.3  # the numbers' Zipf exponent: small ones repeat, large ones are new
SEED = 0
BATCH_BYTES = 1 << 20  # what the stage hands a worker at a time (pretokenize.batch_bytes)


def build_shard(path: Path, mb: float) -> tuple[int, int]:
    """Write the benchmark shard; return (documents, bytes of text)."""
    sample = [(r.text, r.group) for shard in SHARDS for r in records(shard, PILE_FIELDS, "error")]
    rng = np.random.default_rng(SEED)
    n_docs = n_bytes = 0
    with open(path, "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
        while n_bytes < mb * 1e6:
            for text, group in sample:
                words = text.split(" ")
                novel = np.flatnonzero(rng.random(len(words)) < NOVEL)
                for i, number in zip(novel, rng.zipf(ZIPF, len(novel))):
                    words[i] += str(number)
                text = " ".join(words)
                out.write(json.dumps({"text": text, "meta": {"pile_set_name": group}}).encode() + b"\n")
                n_docs, n_bytes = n_docs + 1, n_bytes + len(text.encode())
                if n_bytes >= mb * 1e6:
                    break
    return n_docs, n_bytes


def batches(texts: list[str]) -> list[list[str]]:
    out, batch, size = [], [], 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= BATCH_BYTES:
            out.append(batch)
            batch, size = [], 0
    return out + [batch] if batch else out


def encoders(texts: list[str]) -> dict:
    """One core, in memory: each encoder over every document once, its ids hashed for comparison."""
    plain = spm.SentencePieceProcessor(model_file=str(MODEL))
    eos = plain.eos_id()
    groups = batches(texts)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    digests = {}

    def run_plain():
        digest = hashlib.sha256()
        for batch in groups:
            for ids in plain.encode(batch, num_threads=1):
                digest.update(np.asarray(ids + [eos], dtype="<u2").tobytes())
        digests["plain"] = digest.hexdigest()

    def run(name, encoder):
        def go():
            digest = hashlib.sha256()
            for batch in groups:
                digest.update(encoder.encode_documents(batch, eos)[0].tobytes())
            digests[name] = digest.hexdigest()

        return go

    WordCacheEncoder(MODEL).encode_documents(texts[:10])  # compiles the kernels (once per install), untimed
    word_cache, compiled = WordCacheEncoder(MODEL, compiled=False), WordCacheEncoder(MODEL)
    seconds = {
        "plain": timed(run_plain),
        "word_cache": timed(run("word_cache", word_cache)),
        "compiled": timed(run("compiled", compiled)),
    }
    words, misses, compiled_path = compiled.words, compiled.misses, compiled.describe()
    again = timed(run("compiled_again", compiled))  # every word seen: hits, but for the uncached long ones
    long_words = compiled.misses - misses
    hit_us = again / (words - long_words) * 1e6
    return {
        "hit_us": hit_us,
        "first_sighting_us": (seconds["compiled"] - again) / (misses - long_words) * 1e6 + hit_us,
        "plain_us_per_word": seconds["plain"] / words * 1e6,
        "text_mb": mb,
        **{f"{name}_mb_s": mb / s for name, s in seconds.items()},
        "word_cache_vs_plain": seconds["plain"] / seconds["word_cache"],
        "compiled_vs_plain": seconds["plain"] / seconds["compiled"],
        "compiled_vs_word_cache": seconds["word_cache"] / seconds["compiled"],
        "same_ids": len(set(digests.values())) == 1,
        "word_cache_path": word_cache.describe(),
        "compiled_path": compiled_path,
    }


NO_INDEX = (  # what the stage would cost without Megatron's index: its writer, swapped for one that writes nothing
    "from pipeline.encode import megatron_index; "
    "megatron_index.IndexWriter = type('NoIndex', (), {'__init__': lambda self, *a: None, "
    "'add': lambda self, lengths: None, 'finish': lambda self: None}); "
)


def stage(shard: Path, workers: int, setup: str = "") -> dict:
    """The real stage in a child process: MB/s, CPU seconds, and the peak RSS of its whole process tree."""
    code = (
        setup + "import resource, sys, time; from pathlib import Path; from pipeline.encode import pretokenize; "
        "from pipeline.config.schema import PretokenizeParams; t = time.perf_counter(); "
        f"m = pretokenize.run([Path(sys.argv[1])], Path(sys.argv[2]), Path(sys.argv[3]), "
        f"PretokenizeParams(workers={workers}, batch_bytes={BATCH_BYTES})); "
        "cpu = [sum(resource.getrusage(who)[:2]) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]; "
        "print(m['encoder']); print(m['n_bytes'], time.perf_counter() - t, *cpu)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out, _, peak = child_peak([sys.executable, "-c", code, str(shard), str(MODEL), f"{tmp}/out.bin"])
        digest = hashlib.sha256(Path(f"{tmp}/out.bin").read_bytes()).hexdigest()
    path, numbers = out.strip().splitlines()[-2:]
    n_bytes, seconds, main_cpu, workers_cpu = numbers.split()
    return {
        "mb_s": int(n_bytes) / 1e6 / float(seconds),
        "seconds": float(seconds),
        "peak_rss_mb": peak / 1e6,
        "cpu_s_main": float(main_cpu),
        "cpu_s_workers": float(workers_cpu),
        "encoder": path,
        "sha256": digest,
    }


def ceiling(shard: Path, processes: int) -> dict:
    """Throughput of `processes` independent encoders running at once, over one alone (the same work each)."""
    code = (
        "import sys, time; from pathlib import Path; from pipeline.ingest.documents import records; "
        "from pipeline.ingest.records import PILE_FIELDS; from pipeline.encode.encoder import WordCacheEncoder; "
        "texts = [r.text for r in records(Path(sys.argv[1]), PILE_FIELDS, 'error')]; "
        "encoder = WordCacheEncoder(Path(sys.argv[2])); encoder.encode_documents(texts[:10]); "
        "t = time.perf_counter(); [encoder.encode_documents(texts[i : i + 100], 2) for i in range(0, len(texts), 100)]; "
        "print(time.perf_counter() - t)"
    )

    def at_once(n: int) -> list[float]:
        children = [
            subprocess.Popen([sys.executable, "-c", code, str(shard), str(MODEL)], cwd=REPO, stdout=subprocess.PIPE)
            for _ in range(n)
        ]
        return [float(child.communicate()[0]) for child in children]

    alone, together = at_once(1)[0], at_once(processes)
    return {"seconds_alone": alone, "seconds_together": together, "ceiling": processes * alone / max(together)}


def index_writing(lengths: np.ndarray, per_batch: int, directory: Path) -> float:
    """Seconds to write the index of documents of these lengths, handed over in batches as the stage does."""
    started = time.perf_counter()
    with open(directory / "index.idx", "w+b") as f:
        writer = megatron_index.IndexWriter(f, "uint16", directory / "index.idx")
        for first in range(0, len(lengths), per_batch):
            writer.add(lengths[first : first + per_batch])
        writer.finish()
    return time.perf_counter() - started


def index_cost(shard: Path, workers: int, rounds: int = 3) -> dict:
    """The stage with and without the index, alternating (`rounds` of each); the index step alone."""
    with_index, without = [], []
    for _ in range(rounds):
        with_index.append(stage(shard, workers))
        without.append(stage(shard, workers, NO_INDEX))
    with tempfile.TemporaryDirectory() as tmp:
        code = "import sys; from pipeline.encode import pretokenize; from pathlib import Path; " + (
            "from pipeline.config.schema import PretokenizeParams; "
            f"pretokenize.run([Path(sys.argv[1])], Path(sys.argv[2]), Path(sys.argv[3]), PretokenizeParams(workers={workers}))"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(shard), str(MODEL), f"{tmp}/out.bin"],
            cwd=REPO,
            check=True,
            env={**os.environ, "PILE_GPT_PROGRESS": "0"},
        )
        lengths = np.asarray(megatron_index.read(Path(f"{tmp}/out.idx")).lengths)
        batches = max(1, round(with_index[0]["mb_s"] * with_index[0]["seconds"] * 1e6 / BATCH_BYTES))
        alone = min(index_writing(lengths, max(1, len(lengths) // batches), Path(tmp)) for _ in range(5))
    median = lambda runs: sorted(r["mb_s"] for r in runs)[len(runs) // 2]  # noqa: E731
    seconds = sorted(r["seconds"] for r in with_index)[rounds // 2]
    return {
        "workers": workers,
        "model": str(MODEL),
        "documents": int(len(lengths)),
        "index_bytes": megatron_index.size(len(lengths), len(lengths) + 1),
        "mb_s_with_index": [r["mb_s"] for r in with_index],
        "mb_s_without_index": [r["mb_s"] for r in without],
        "median_ratio": median(with_index) / median(without),
        "same_bin": len({r["sha256"] for r in with_index + without}) == 1,
        "index_step_s": alone,
        "index_step_share_of_stage": alone / seconds,
    }


def main() -> None:
    global MODEL  # the functions above read it: another model for this run, when given
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=200, help="text in the benchmark shard (default 200 MB)")
    parser.add_argument("--model", type=Path, default=MODEL, help="the SentencePiece model (default: the pipeline's)")
    parser.add_argument("--quick", action="store_true", help="1-2 only, on the shard: no 4x shard, no ceiling")
    parser.add_argument("--results", default="pretokenize", help="name of the results file in bench/results/")
    parser.add_argument("--index", action="store_true", help="5 as well: the cost of Megatron's index")
    parser.add_argument("--index-only", action="store_true", help="5 alone, into the existing results file")
    args = parser.parse_args()
    MODEL = args.model.resolve()
    if not MODEL.exists():
        sys.exit(f"error: {MODEL}: missing; run `dvc repro tokenizer` first")
    cores = usable_cores()
    if args.index_only:
        with tempfile.TemporaryDirectory() as tmp:
            shard = Path(tmp) / "big.jsonl.zst"
            build_shard(shard, args.mb)
            index = index_cost(shard, cores)
        results = json.loads((RESULTS / f"{args.results}.json").read_text())
        results.pop("machine", None)
        save(args.results, {**results, "index": index})
        print_index(index)
        return
    with tempfile.TemporaryDirectory() as tmp:
        shard, quarter = Path(tmp) / "big.jsonl.zst", Path(tmp) / "quarter.jsonl.zst"
        n_docs, n_bytes = build_shard(shard, args.mb)
        build_shard(quarter, args.mb / 4)  # the same seed: the big shard's first quarter
        texts = [r.text for r in records(shard, PILE_FIELDS, "error")]
        results = {"shard": {"documents": n_docs, "text_mb": n_bytes / 1e6, "novel": NOVEL, "zipf": ZIPF}}
        results["encoders"] = encoders(texts)
        del texts
        one, every = stage(shard, 1), stage(shard, cores)
        results["model"] = {
            "path": str(MODEL),
            "pieces": spm.SentencePieceProcessor(model_file=str(MODEL)).get_piece_size(),
        }
        if args.quick:
            e = results["encoders"]
            results["stage"] = {
                "workers_1": one,
                f"workers_{cores}": every,
                "workers_1_vs_plain": one["mb_s"] / e["plain_mb_s"],
            }
            save(args.results, results)
            print(
                f"{results['model']['pieces']:,} pieces: plain encode {e['plain_mb_s']:.2f} MB/s, compiled BPE "
                f"{e['compiled_mb_s']:.2f} MB/s ({e['compiled_vs_plain']:.2f}x), stage 1 worker {one['mb_s']:.2f} MB/s "
                f"({results['stage']['workers_1_vs_plain']:.2f}x plain), {cores} workers {every['mb_s']:.2f} MB/s"
            )
            return
        small = stage(quarter, cores)
        big = Path(tmp) / "x4.jsonl.zst"
        build_shard(big, 4 * args.mb)
        big_one, big_every = stage(big, 1), stage(big, cores)
        results["machine_ceiling"] = ceiling(quarter, cores)
        if args.index:
            results["index"] = index_cost(shard, cores)
    e = results["encoders"]
    results["stage"] = {
        "workers_1": one,
        f"workers_{cores}": every,
        "workers_1_vs_plain": one["mb_s"] / e["plain_mb_s"],
        "scaling": every["mb_s"] / one["mb_s"],
        "x4_workers_1": big_one,
        f"x4_workers_{cores}": big_every,
        "scaling_x4": big_every["mb_s"] / big_one["mb_s"],
        "same_array_1_and_all_workers": one["sha256"] == every["sha256"],
    }
    results["memory"] = {
        "peak_rss_mb_quarter": small["peak_rss_mb"],
        "peak_rss_mb_full": every["peak_rss_mb"],
        "ratio": every["peak_rss_mb"] / small["peak_rss_mb"],
    }
    save(args.results, results)
    s, m, c = results["stage"], results["memory"], results["machine_ceiling"]
    print(f"""shard: {n_docs:,} documents, {n_bytes / 1e6:.0f} MB of text; ids identical across encoders: {e["same_ids"]}, \
arrays identical with 1 and {cores} workers: {s["same_array_1_and_all_workers"]}

| measure | result |
|---|---|
| plain `encode`, 1 core | {e["plain_mb_s"]:.2f} MB/s |
| word cache over SentencePiece's BPE, 1 core | {e["word_cache_mb_s"]:.2f} MB/s (**{e["word_cache_vs_plain"]:.2f}x** plain; {e["word_cache_path"]}) |
| compiled BPE, 1 core | {e["compiled_mb_s"]:.2f} MB/s (**{e["compiled_vs_plain"]:.2f}x** plain, {e["compiled_vs_word_cache"]:.2f}x the word cache; {e["compiled_path"]}) |
| compiled BPE, per word | {e["hit_us"]:.3f} us a hit (the same documents again), {e["first_sighting_us"]:.2f} us a first sighting; plain `encode`: {e["plain_us_per_word"]:.2f} us a word |
| pretokenize stage, 1 worker | {one["mb_s"]:.2f} MB/s (**{s["workers_1_vs_plain"]:.2f}x** plain `encode`; {one["seconds"]:.1f} s, {one["cpu_s_main"]:.1f} CPU s) |
| pretokenize stage, {cores} workers | {every["mb_s"]:.2f} MB/s (**{s["scaling"]:.2f}x** 1 worker; CPU s: {every["cpu_s_main"]:.1f} main + {every["cpu_s_workers"]:.1f} workers) |
| the same at 4x the size, 1 worker and {cores} | {big_one["mb_s"]:.2f} and {big_every["mb_s"]:.2f} MB/s (**{s["scaling_x4"]:.2f}x**; CPU s: {big_one["cpu_s_main"]:.1f} vs {big_every["cpu_s_main"]:.1f} main + {big_every["cpu_s_workers"]:.1f} workers) |
| the machine's ceiling: {cores} encoders at once vs 1 | **{c["ceiling"]:.2f}x** ({c["seconds_alone"]:.1f} s alone, {max(c["seconds_together"]):.1f} s together) |
| peak RSS, {cores} workers, quarter vs whole shard | {m["peak_rss_mb_quarter"]:.0f} MB vs {m["peak_rss_mb_full"]:.0f} MB (**{m["ratio"]:.2f}x**) |""")  # noqa: E501
    if "index" in results:
        print_index(results["index"])


def print_index(index: dict) -> None:
    print(
        f"| Megatron's index: the stage with it vs without, {index['workers']} workers, alternating | "
        f"{', '.join(f'{x:.2f}' for x in index['mb_s_with_index'])} vs "
        f"{', '.join(f'{x:.2f}' for x in index['mb_s_without_index'])} MB/s (median ratio **{index['median_ratio']:.3f}**) |\n"
        f"| the index step alone ({index['documents']:,} documents, {index['index_bytes']:,} bytes) | "
        f"{index['index_step_s'] * 1e3:.1f} ms, **{index['index_step_share_of_stage']:.4%}** of the stage's time |"
    )


if __name__ == "__main__":
    main()
