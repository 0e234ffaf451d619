"""Pretokenization benchmarks, each a ratio measured side by side in one run on the same input.

1. encoders: plain SentencePieceProcessor.encode vs the word-cache encoder, in memory, one core,
   on every train document of the sample (cold cache, then the same documents again warm);
2. the pretokenize stage (read, parse, encode, write) vs the bare encoder loop, with 1 worker;
3. scaling: the stage with 1 worker vs with every core, on a shard and on the same shard repeated 4 times;
4. memory: peak RSS of the stage on a shard vs on the same shard repeated 4 times.

    python bench/pretokenize.py     # needs data/tokenizer/spm.model (dvc repro tokenizer)

Writes bench/results/pretokenize.json and prints a table for bench/README.md.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import sentencepiece as spm
from common import REPO, child_peak, save, timed, usable_cores

from pipeline.jsonl import JsonLinesReader, parse_line
from pipeline.records import PILE_FIELDS
from pipeline.word_cache import WordCacheEncoder

MODEL = REPO / "data/tokenizer/spm.model"
SHARDS = [REPO / "data/sample/train/00.jsonl.zst", REPO / "data/sample/train/01.jsonl.zst"]
BATCH = 64


def documents(path: Path) -> list[str]:
    return [parse_line(line, n, PILE_FIELDS).text for n, line in JsonLinesReader(path).items()]


def encoders(texts: list[str]) -> dict:
    plain = spm.SentencePieceProcessor(model_file=str(MODEL))
    cached = WordCacheEncoder(MODEL)
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    t_plain = timed(
        lambda: [np.asarray(ids, dtype="<u2").tobytes() for b in batches for ids in plain.encode(b, num_threads=1)]
    )
    t_cold = timed(lambda: [cached.encode(b) for b in batches])
    cold_note = cached.describe()
    t_warm = timed(lambda: [cached.encode(b) for b in batches])
    return {
        "text_mb": mb,
        "plain_mb_s": mb / t_plain,
        "word_cache_cold_mb_s": mb / t_cold,
        "word_cache_warm_mb_s": mb / t_warm,
        "speedup_cold": t_plain / t_cold,
        "speedup_warm": t_plain / t_warm,
        "cold_cache": cold_note,
    }


def stage(shard: Path, workers: int) -> dict:
    """The real stage in a child process: MB/s, and the peak RSS of its whole process tree."""
    code = (
        "import resource, sys, time; from pathlib import Path; from pipeline import pretokenize; "
        "from pipeline.params import PretokenizeParams; t = time.perf_counter(); "
        f"m = pretokenize.run([Path(sys.argv[1])], Path(sys.argv[2]), Path(sys.argv[3]), PretokenizeParams(workers={workers})); "
        "cpu = [sum(resource.getrusage(who)[:2]) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]; "
        "print(m['n_bytes'], time.perf_counter() - t, *cpu)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out, _, peak = child_peak([sys.executable, "-c", code, str(shard), str(MODEL), f"{tmp}/out.bin"])
    n_bytes, seconds, main_cpu, workers_cpu = out.split()[-4:]
    return {
        "mb_s": int(n_bytes) / 1e6 / float(seconds),
        "seconds": float(seconds),
        "peak_rss_mb": peak / 1e6,
        "cpu_s_main": float(main_cpu),
        "cpu_s_workers": float(workers_cpu),
    }


def main() -> None:
    if not MODEL.exists():
        sys.exit(f"error: {MODEL}: missing; run `dvc repro tokenizer` first")
    texts = [t for shard in SHARDS for t in documents(shard)]
    results = {"encoders": encoders(texts)}
    bare = encoders(documents(SHARDS[0]))  # the same shard the stage reads, with a cache as cold as the stage's
    one, every = stage(SHARDS[0], 1), stage(SHARDS[0], usable_cores())
    with tempfile.TemporaryDirectory() as tmp:
        four = Path(tmp) / "four.jsonl.zst"
        four.write_bytes(SHARDS[0].read_bytes() * 4)  # four concatenated zstd frames: a valid 4x shard
        big_one, big = stage(four, 1), stage(four, usable_cores())
    results["stage"] = {
        "workers_1": one,
        f"workers_{usable_cores()}": every,
        "bare_word_cache_cold_mb_s": bare["word_cache_cold_mb_s"],
        "overhead_vs_bare_word_cache": 1 - one["mb_s"] / bare["word_cache_cold_mb_s"],
        "scaling": every["mb_s"] / one["mb_s"],
        "x4_workers_1": big_one,
        f"x4_workers_{usable_cores()}": big,
        "scaling_x4": big["mb_s"] / big_one["mb_s"],
    }
    results["memory"] = {
        "peak_rss_mb_1x": every["peak_rss_mb"],
        "peak_rss_mb_4x": big["peak_rss_mb"],
        "ratio": big["peak_rss_mb"] / every["peak_rss_mb"],
    }
    save("pretokenize", results)
    big = results["stage"][f"x4_workers_{usable_cores()}"]
    e, s, m = results["encoders"], results["stage"], results["memory"]
    print(f"""| measure | result |
|---|---|
| plain `encode`, 1 core | {e["plain_mb_s"]:.2f} MB/s |
| word cache, 1 core, cold (first pass over {e["text_mb"]:.1f} MB) | {e["word_cache_cold_mb_s"]:.2f} MB/s (**{e["speedup_cold"]:.2f}x**) |
| word cache, 1 core, warm (same documents again) | {e["word_cache_warm_mb_s"]:.2f} MB/s (**{e["speedup_warm"]:.2f}x**) |
| pretokenize stage, 1 worker, train/00 | {s["workers_1"]["mb_s"]:.2f} MB/s vs {s["bare_word_cache_cold_mb_s"]:.2f} MB/s for the bare encoder loop on the same documents ({s["overhead_vs_bare_word_cache"]:.1%} overhead) |
| pretokenize stage, {usable_cores()} workers vs 1 | {s["scaling"]:.2f}x on train/00 ({s["workers_1"]["seconds"]:.1f} s with 1 worker), {s["scaling_x4"]:.2f}x on train/00 x4 ({s["x4_workers_1"]["seconds"]:.1f} s); CPU seconds x4: {s["x4_workers_1"]["cpu_s_main"]:.1f} with 1 worker, {big["cpu_s_main"]:.1f} + {big["cpu_s_workers"]:.1f} with {usable_cores()} |
| peak RSS, shard vs shard x4 | {m["peak_rss_mb_1x"]:.0f} MB vs {m["peak_rss_mb_4x"]:.0f} MB ({m["ratio"]:.2f}x) |""")


if __name__ == "__main__":
    main()
