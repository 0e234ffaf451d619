"""Corpus stage vs the limit: the real `corpus.build` on a sample shard, side by side with a bare loop
of python-zstandard's stream reader and `json.loads` over the same file (best of 3 runs each).

    python bench/corpus.py

Writes bench/results/corpus.json and prints a table for bench/README.md.
"""

import io
import json
import tempfile
from pathlib import Path

import zstandard
from common import REPO, save, timed

from pipeline.config.load import load_params
from pipeline.tokenizer import corpus

SHARD = REPO / "data/sample/train/00.jsonl.zst"


def bare(path: Path) -> None:
    """Decompress and parse every line, keeping nothing: what reading a shard costs at least."""
    with open(path, "rb") as f:
        for line in io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f)):
            json.loads(line)


def main() -> None:
    p = load_params()
    quota = corpus.quota(p.corpus.max_lines, p.corpus.shards, "00")
    with open(SHARD, "rb") as f:
        size = sum(map(len, io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f))))
    with tempfile.TemporaryDirectory() as tmp:

        def stage():
            return corpus.build(
                [SHARD], Path(tmp) / "00.txt", quota, f"{p.corpus.seed}:00", p.max_sentence_length, p.data.on_bad_record
            )

        stats = stage()
        t_stage = min(timed(stage) for _ in range(3))
    t_bare = min(timed(lambda: bare(SHARD)) for _ in range(3))
    passes = 2 if stats.candidate_lines > quota else 1
    results = {
        "jsonl_mb": size / 1e6,
        "stage_mb_s": size / 1e6 / t_stage,
        "bare_mb_s": size / 1e6 / t_bare,
        "stage_vs_bare": t_bare / t_stage,
        "passes": passes,
        "lines": stats.candidate_lines,
        "quota": quota,
    }
    save("corpus", results)
    print(f"""| measure | result |
|---|---|
| bare zstd stream + `json.loads`, train/00 ({size / 1e6:.1f} MB of JSON lines) | {results["bare_mb_s"]:.1f} MB/s |
| corpus stage (`corpus.build`, {passes} pass{"es" if passes > 1 else ""}: {stats.candidate_lines:,} lines, quota {quota:,}) | {results["stage_mb_s"]:.1f} MB/s (**{results["stage_vs_bare"]:.2f}x** the bare loop) |""")


if __name__ == "__main__":
    main()
