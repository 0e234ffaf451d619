"""Pretokenization benchmarks, each a ratio measured side by side in one run on the same input.

1. encoders: plain SentencePieceProcessor.encode vs the word-cache encoder, in memory, one core,
   on every train document of the sample (cold cache, then the same documents again warm);
2. the pretokenize stage (read, parse, encode, write) vs the bare encoder loop, with 1 worker;
3. scaling: the stage with 1 worker vs with every core;
4. memory: peak RSS of the stage on a shard vs on the same shard repeated 4 times.

    python bench/pretokenize.py     # needs data/tokenizer/spm.model (dvc repro tokenizer)

Writes bench/results/pretokenize.json and prints a table for bench/README.md.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import sentencepiece as spm
import zstandard

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.jsonl import ShardReader, parse_record  # noqa: E402
from pipeline.params import usable_cores  # noqa: E402
from pipeline.word_cache import WordCacheEncoder  # noqa: E402

MODEL = REPO / "data/tokenizer/spm.model"
SHARDS = [REPO / "data/sample/train/00.jsonl.zst", REPO / "data/sample/train/01.jsonl.zst"]
BATCH = 64


def documents(path: Path) -> list[str]:
    return [parse_record(line, n).text for n, line in ShardReader(path).lines()]


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def encoders(texts: list[str]) -> dict:
    plain = spm.SentencePieceProcessor(model_file=str(MODEL))
    cached = WordCacheEncoder(MODEL)
    batches = [texts[i: i + BATCH] for i in range(0, len(texts), BATCH)]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    t_plain = timed(lambda: [np.asarray(ids, dtype="<u2").tobytes() for b in batches
                             for ids in plain.encode(b, num_threads=1)])
    t_cold = timed(lambda: [cached.encode(b) for b in batches])
    cold_note = cached.describe()
    t_warm = timed(lambda: [cached.encode(b) for b in batches])
    return {"text_mb": mb, "plain_mb_s": mb / t_plain, "word_cache_cold_mb_s": mb / t_cold,
            "word_cache_warm_mb_s": mb / t_warm, "speedup_cold": t_plain / t_cold, "speedup_warm": t_plain / t_warm,
            "cold_cache": cold_note}


def stage(shard: Path, workers: int) -> dict:
    """The real stage in a child process: MB/s, and the peak RSS of its whole process tree (sampled)."""
    code = ("import sys, time; from pathlib import Path; from pipeline import pretokenize; "
            "from pipeline.params import PretokenizeParams; t = time.perf_counter(); "
            f"m = pretokenize.run(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), PretokenizeParams(workers={workers})); "
            "print(m['n_bytes'], time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as tmp:
        child = subprocess.Popen([sys.executable, "-c", code, str(shard), str(MODEL), f"{tmp}/out.bin"], cwd=REPO,
                                 stdout=subprocess.PIPE, text=True, env={**os.environ, "PILE_GPT_PROGRESS": "0"})
        tree, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                peak = max(peak, sum(p.memory_info().rss for p in [tree] + tree.children(recursive=True)))
            except psutil.Error:
                pass
            time.sleep(0.02)
        n_bytes, seconds = child.stdout.read().split()[-2:]
    return {"mb_s": int(n_bytes) / 1e6 / float(seconds), "seconds": float(seconds), "peak_rss_mb": peak / 1e6}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cores": usable_cores(), "cpu": cpu, "python": platform.python_version(),
            "sentencepiece": spm.__version__, "numpy": np.__version__, "zstandard": zstandard.__version__}


def main() -> None:
    if not MODEL.exists():
        sys.exit(f"error: {MODEL}: missing; run `dvc repro tokenizer` first")
    texts = [t for shard in SHARDS for t in documents(shard)]
    results = {"machine": machine(), "encoders": encoders(texts)}
    bare = encoders(documents(SHARDS[0]))  # the same shard the stage reads, with a cache as cold as the stage's
    one, every = stage(SHARDS[0], 1), stage(SHARDS[0], usable_cores())
    results["stage"] = {"workers_1": one, f"workers_{usable_cores()}": every,
                        "bare_word_cache_cold_mb_s": bare["word_cache_cold_mb_s"],
                        "overhead_vs_bare_word_cache": 1 - one["mb_s"] / bare["word_cache_cold_mb_s"],
                        "scaling": every["mb_s"] / one["mb_s"]}
    with tempfile.TemporaryDirectory() as tmp:
        four = Path(tmp) / "four.jsonl.zst"
        four.write_bytes(SHARDS[0].read_bytes() * 4)  # four concatenated zstd frames: a valid 4x shard
        big = stage(four, usable_cores())
    results["memory"] = {"peak_rss_mb_1x": every["peak_rss_mb"], "peak_rss_mb_4x": big["peak_rss_mb"],
                         "ratio": big["peak_rss_mb"] / every["peak_rss_mb"]}
    out = REPO / "bench/results/pretokenize.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    e, s, m = results["encoders"], results["stage"], results["memory"]
    print(f"""| measure | result |
|---|---|
| plain `encode`, 1 core | {e['plain_mb_s']:.2f} MB/s |
| word cache, 1 core, cold (first pass over {e['text_mb']:.1f} MB) | {e['word_cache_cold_mb_s']:.2f} MB/s (**{e['speedup_cold']:.2f}x**) |
| word cache, 1 core, warm (same documents again) | {e['word_cache_warm_mb_s']:.2f} MB/s (**{e['speedup_warm']:.2f}x**) |
| pretokenize stage, 1 worker, train/00 | {s['workers_1']['mb_s']:.2f} MB/s vs {s['bare_word_cache_cold_mb_s']:.2f} MB/s for the bare encoder loop on the same documents ({s['overhead_vs_bare_word_cache']:.1%} overhead) |
| pretokenize stage, {usable_cores()} workers | {s['scaling']:.2f}x the 1-worker rate |
| peak RSS, shard vs shard x4 | {m['peak_rss_mb_1x']:.0f} MB vs {m['peak_rss_mb_4x']:.0f} MB ({m['ratio']:.2f}x) |""")


if __name__ == "__main__":
    main()
