"""Peer comparison: the same documents tokenized the way nanoGPT's data/openwebtext/prepare.py does it
(a Hugging Face `datasets` map over the documents, here with this project's SentencePiece model,
then one uint16 memmap written from the mapped lengths) vs this project's pretokenize stage, both with
every core: wall time and peak RSS of the whole process tree, on a sample shard and on the same shard
repeated 4 times. The `datasets` cache goes to a temporary directory; its size on disk is reported.

    pip install -c requirements.lock '.[bench]'   # datasets
    python bench/peers.py

Writes bench/results/peers.json and prints a table for bench/README.md.
"""

import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import REPO, child_peak, save, usable_cores

MODEL = REPO / "data/tokenizer/spm.model"
SHARD = REPO / "data/sample/train/00.jsonl.zst"

# The nanoGPT way, written out for a SentencePiece model and a local .jsonl.zst file.
DATASETS_MAP = """
import sys
import numpy as np
import sentencepiece as spm
from datasets import load_dataset

shard, model, out, workers, cache = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
processor = None

def tokenize(example):
    global processor
    if processor is None:
        processor = spm.SentencePieceProcessor(model_file=model)
    ids = processor.encode(example["text"]) + [processor.eos_id()]
    return {"ids": ids, "len": len(ids)}

data = load_dataset("json", data_files=shard, split="train", cache_dir=cache)
tokenized = data.map(tokenize, remove_columns=data.column_names, num_proc=workers, desc="tokenizing")
total = int(np.sum(tokenized["len"], dtype=np.uint64))
array = np.memmap(out, dtype=np.uint16, mode="w+", shape=(total,))
offset, shards = 0, 16
for index in range(shards):
    batch = tokenized.shard(num_shards=shards, index=index, contiguous=True).with_format("numpy")
    ids = np.concatenate(batch["ids"])
    array[offset: offset + len(ids)] = ids
    offset += len(ids)
array.flush()
print(total)
"""

STAGE = """
import sys
from pathlib import Path
from pipeline.encode import pretokenize
from pipeline.config.schema import PretokenizeParams
meta = pretokenize.run([Path(sys.argv[1])], Path(sys.argv[2]), Path(sys.argv[3]), PretokenizeParams(workers=int(sys.argv[4])))
print(meta["n_tokens"])
"""


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def compare(shard: Path, tmp: Path, label: str) -> dict:
    workers = usable_cores()
    cache = tmp / f"hf-cache-{label}"
    peer_out, stage_out = tmp / f"peer-{label}.bin", tmp / f"stage-{label}.bin"
    peer_tokens, peer_s, peer_peak = child_peak(
        [sys.executable, "-c", DATASETS_MAP, str(shard), str(MODEL), str(peer_out), str(workers), str(cache)],
        {"HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"},
    )
    stage_tokens, stage_s, stage_peak = child_peak(
        [sys.executable, "-c", STAGE, str(shard), str(MODEL), str(stage_out), str(workers)]
    )
    same = np.array_equal(np.fromfile(peer_out, dtype=np.uint16), np.fromfile(stage_out, dtype="<u2"))
    return {
        "workers": workers,
        "datasets_map_s": peer_s,
        "stage_s": stage_s,
        "speedup": peer_s / stage_s,
        "datasets_map_peak_rss_mb": peer_peak / 1e6,
        "stage_peak_rss_mb": stage_peak / 1e6,
        "datasets_cache_mb": directory_bytes(cache) / 1e6,
        "identical_tokens": bool(same),
        "tokens": int(stage_tokens.split()[-1]),
        "peer_tokens": int(peer_tokens.split()[-1]),
    }


def main() -> None:
    if not MODEL.exists():
        sys.exit(f"error: {MODEL}: missing; run `dvc repro tokenizer` first")
    if importlib.util.find_spec("datasets") is None:
        sys.exit("error: the peer comparison needs Hugging Face datasets: pip install -c requirements.lock '.[bench]'")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        four = tmp / "four.jsonl.zst"
        four.write_bytes(SHARD.read_bytes() * 4)  # four concatenated zstd frames: a valid 4x shard
        results = {"shard": compare(SHARD, tmp, "1x"), "shard_x4": compare(four, tmp, "4x")}
    save("peers", results)
    one, four = results["shard"], results["shard_x4"]
    print(f"""| measure ({one["workers"]} workers) | `datasets` map + memmap (nanoGPT's way) | pretokenize stage |
|---|---|---|
| wall time, train/00 | {one["datasets_map_s"]:.1f} s | {one["stage_s"]:.1f} s (**{one["speedup"]:.2f}x** faster) |
| wall time, train/00 x4 | {four["datasets_map_s"]:.1f} s | {four["stage_s"]:.1f} s (**{four["speedup"]:.2f}x** faster) |
| peak RSS, train/00 -> x4 | {one["datasets_map_peak_rss_mb"]:.0f} -> {four["datasets_map_peak_rss_mb"]:.0f} MB | {one["stage_peak_rss_mb"]:.0f} -> {four["stage_peak_rss_mb"]:.0f} MB |
| extra disk (the `datasets` cache), x4 | {four["datasets_cache_mb"]:.0f} MB | none |
| same token ids | {"yes" if one["identical_tokens"] and four["identical_tokens"] else "NO"} | |""")


if __name__ == "__main__":
    main()
