"""Tokenizer training benchmark: the exact trainer vs spm_train 0.2.3 vs Hugging Face tokenizers.

The text: lines of the source and documentation files (.py .pyi .md .rst .txt, valid UTF-8) of
the packages installed in this environment, in sorted path order (real text no one here wrote, the same on
every machine with requirements.lock): the first 1 M, 2 M, 4 M, ... lines, empty lines included
(every trainer skips them). Each trainer runs in a fresh process with 2 threads, one run at a time;
the peak RSS is its whole process tree's, sampled.

1. the curve: spm_train, the exact trainer and HF's BpeTrainer at 50,000 pieces with the lossless
   flags, at each size; for the exact trainer, its two stages apart (counting the words into a
   table, as the words stage does; training from the table in a watched child, as the tokenizer
   stage does): time of each, peak of each, and the whole;
2. identity: at 4 M lines, the exact trainer's .model and .vocab against spm_train's under the
   lossless and the original flags, at 8,000 and 50,000 pieces (byte for byte, spm's input path
   and model prefix aside);
3. the training peak against the table's size (code points + words), from which
   pipeline/tokenizer/exact_bpe.py takes its RAM estimate;
4. growth: distinct words against word occurrences (Heaps' law, V = K N^beta) on text whose parts
   come in a seeded random order, as a shard's documents do: the packages' files shuffled, and the
   sample's documents (prose, code and translations) shuffled. (In sorted path order each new
   package brings its own names, and V grows linearly: no corpus to plan from.)

    python bench/tokenizer.py [--lines 1,2,4,8] [--hf-up-to 4]   # millions of lines
    python bench/tokenizer.py --growth-only

Writes bench/results/tokenizer.json and prints the tables for bench/README.md.
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, RESULTS, child_peak, save

LOSSLESS = {  # params.yaml's flags, 50,000 pieces
    "model_type": "bpe", "vocab_size": 50000, "pad_id": 0, "unk_id": 1, "bos_id": -1, "eos_id": 2,
    "pad_piece": "[PAD]", "unk_piece": "[UNK]", "eos_piece": "<|endoftext|>", "input_sentence_size": 0,
    "max_sentence_length": 4192, "normalization_rule_name": "identity", "remove_extra_whitespaces": False,
    "byte_fallback": True, "num_threads": 2,
}  # fmt: skip
ORIGINAL = {  # the original spm_train command's (presets/pile-original.yaml)
    "model_type": "bpe", "vocab_size": 50000, "pad_id": 0, "unk_id": 1, "bos_id": -1, "eos_id": -1,
    "pad_piece": "[PAD]", "unk_piece": "[UNK]", "input_sentence_size": 0, "num_threads": 2,
}  # fmt: skip
SUFFIXES = {".py", ".pyi", ".md", ".rst", ".txt"}
SPM = """
import json, sys, sentencepiece as spm
flags = json.loads(sys.argv[1])
spm.SentencePieceTrainer.train(minloglevel=2, **flags)
"""
COUNT = """
import json, sys
from pathlib import Path
from pipeline.tokenizer import word_counts, word_table
flags, text, table = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
word_table.write(word_counts.count([text], flags, table.with_suffix(".runs.tmp"), workers=2), table)
"""
TRAIN = """
import json, sys
from pathlib import Path
from pipeline.core import machine
from pipeline.tokenizer import exact_bpe
flags, table, prefix = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
exact_bpe.check_memory([table], machine.available_memory())
exact_bpe.train_watched([table], flags, prefix)
"""
HF = """
import json, os, sys
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
flags, text = json.loads(sys.argv[1]), sys.argv[2]
tokenizer = Tokenizer(models.BPE(unk_token="[UNK]", byte_fallback=True))
tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
trainer = trainers.BpeTrainer(vocab_size=flags["vocab_size"], special_tokens=["[PAD]", "[UNK]", "<|endoftext|>"],
                              show_progress=False)
tokenizer.train([text], trainer)
print(tokenizer.get_vocab_size())
"""


def build_text(path: Path, lines: int, seed: int | None = None) -> int:
    """The first `lines` lines of the installed packages' text files, in sorted path order (or, with
    a seed, in a random order of the files)."""
    site = Path(np.__file__).resolve().parent.parent
    paths = sorted(p for p in site.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    if seed is not None:
        random.Random(seed).shuffle(paths)
    written = 0
    with open(path, "wb") as out:
        for file in paths:
            data = file.read_bytes()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue  # HF's trainer refuses what is not UTF-8 (the others take it)
            for line in data.splitlines():
                out.write(line.replace(b"\r", b"") + b"\n")
                written += 1
                if written == lines:
                    return written
    return written


def run(code: str, *args: str, env: dict | None = None) -> tuple[str, float, int]:
    return child_peak([sys.executable, "-c", code, *args], env={"PYTHONPATH": str(REPO), **(env or {})})


def spm_train(text: Path, flags: dict, prefix: Path) -> dict:
    _, seconds, peak = run(SPM, json.dumps({**flags, "input": str(text), "model_prefix": str(prefix)}))
    return {"seconds": round(seconds, 2), "peak_mb": round(peak / 1e6)}


def exact(text: Path, flags: dict, prefix: Path) -> dict:
    table = prefix.with_suffix(".words")
    _, count_s, count_peak = run(COUNT, json.dumps(flags), str(text), str(table))
    _, train_s, train_peak = run(TRAIN, json.dumps(flags), str(table), str(prefix))
    from pipeline.tokenizer import word_table

    header = word_table.read_header(table)
    return {
        "seconds": round(count_s + train_s, 2),
        "peak_mb": round(max(count_peak, train_peak) / 1e6),
        "count_seconds": round(count_s, 2),
        "count_peak_mb": round(count_peak / 1e6),
        "train_seconds": round(train_s, 2),
        "train_peak_mb": round(train_peak / 1e6),
        "distinct_words": header["words"],
        "lines_loaded": header["lines_loaded"],
        "positions": header["utf8_bytes"] + header["words"] + 1,
        "table_mb": round(table.stat().st_size / 1e6, 1),
    }


def hf(text: Path, flags: dict) -> dict:
    _, seconds, peak = run(HF, json.dumps(flags), str(text), env={"RAYON_NUM_THREADS": "2"})
    return {"seconds": round(seconds, 2), "peak_mb": round(peak / 1e6)}


def same_model(ours: Path, theirs: Path) -> bool:
    from sentencepiece import sentencepiece_model_pb2 as pb

    protos = [pb.ModelProto.FromString(Path(f"{prefix}.model").read_bytes()) for prefix in (ours, theirs)]
    for proto in protos:
        proto.trainer_spec.ClearField("input")
        proto.trainer_spec.ClearField("model_prefix")
    vocabs = [Path(f"{prefix}.vocab").read_bytes() for prefix in (ours, theirs)]
    return protos[0] == protos[1] and vocabs[0] == vocabs[1]


def heaps(points: list[tuple[int, int]]) -> dict:
    """V = K N^beta, least squares in log-log."""
    n, v = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    beta, log_k = np.polyfit(n, v, 1)
    return {"K": round(float(np.exp(log_k)), 3), "beta": round(float(beta), 4)}


def growth_point(text: Path, work: Path) -> dict:
    """Lines, word occurrences, distinct words and their mean UTF-8 size, counted as the words stage does."""
    from pipeline.tokenizer import word_counts

    table = word_counts.count([text], LOSSLESS, work / "growth.runs.tmp", workers=2)
    return {
        "lines": table.header["lines_loaded"],
        "text_mb": round(text.stat().st_size / 1e6, 1),
        "occurrences": int(table.counts.sum()),
        "distinct_words": len(table),
        "utf8_bytes_per_distinct_word": round(len(table.blob) / len(table), 2),
    }


def growth(work: Path, sizes: list[int]) -> dict:
    """Heaps' law on shuffled text: the packages' files, and the sample's documents."""
    from pipeline.ingest.documents import records
    from pipeline.ingest.records import PILE_FIELDS

    out = {}
    points = []
    for lines in sizes:
        text = work / f"shuffled-{lines}.txt"
        build_text(text, lines, seed=0)
        points.append(growth_point(text, work))
        print(json.dumps(points[-1]), flush=True)
    out["packages, files shuffled"] = {
        "points": points,
        "fit": heaps([(p["occurrences"], p["distinct_words"]) for p in points]),
    }
    documents = [
        r.text
        for path in sorted((REPO / "data/sample").rglob("*.jsonl.zst"))
        for r in records(path, PILE_FIELDS, "error")
    ]
    random.Random(0).shuffle(documents)
    lines = [line for text in documents for line in text.split("\n")]
    points = []
    for share in (8, 4, 2, 1):
        text = work / f"sample-{share}.txt"
        text.write_text("\n".join(lines[: len(lines) // share]) + "\n", encoding="utf-8")
        points.append(growth_point(text, work))
        print(json.dumps(points[-1]), flush=True)
    out["the sample, documents shuffled"] = {
        "points": points,
        "fit": heaps([(p["occurrences"], p["distinct_words"]) for p in points]),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", default="1,2,4,8", help="sizes, in millions of lines (default 1,2,4,8)")
    parser.add_argument("--hf-up-to", type=float, default=4, help="largest size HF's trainer runs at (millions)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the text and models (default: temporary)")
    parser.add_argument("--growth-only", action="store_true", help="4 alone, added to the existing results file")
    args = parser.parse_args()
    sizes = [int(float(x) * 1_000_000) for x in args.lines.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-tokenizer-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.growth_only:
        results = json.loads((RESULTS / "tokenizer.json").read_text())
        results.pop("machine", None)
        results["growth"] = growth(work, sizes)
        save("tokenizer", results)
        print(json.dumps({name: part["fit"] for name, part in results["growth"].items()}))
        return
    curve, identity = [], []
    for lines in sizes:
        text = work / f"text-{lines // 1_000_000}M.txt"
        got = build_text(text, lines)
        if got < lines:
            raise SystemExit(f"the installed packages hold only {got:,} lines of text; lower --lines")
        row = {"lines": lines, "mb": round(text.stat().st_size / 1e6, 1)}
        row["spm"] = spm_train(text, LOSSLESS, work / f"spm-{lines}")
        row["exact"] = exact(text, LOSSLESS, work / f"exact-{lines}")
        row["identical"] = same_model(work / f"exact-{lines}", work / f"spm-{lines}")
        if lines <= args.hf_up_to * 1_000_000:
            row["hf"] = hf(text, LOSSLESS)
        row["memory_ratio"] = round(row["exact"]["peak_mb"] / row["spm"]["peak_mb"], 3)
        row["time_ratio"] = round(row["exact"]["seconds"] / row["spm"]["seconds"], 3)
        curve.append(row)
        print(json.dumps(row), flush=True)
        if lines == 4_000_000:
            for name, flags in (("lossless", LOSSLESS), ("original", ORIGINAL)):
                for vocab in (8000, 50000):
                    if name == "lossless" and vocab == 50000:
                        identity.append({"flags": name, "vocab_size": vocab, "identical": row["identical"]})
                        continue
                    case = {**flags, "vocab_size": vocab}
                    tag = f"{name}-{vocab}"
                    spm_train(text, case, work / f"spm-{tag}")
                    exact(text, case, work / f"exact-{tag}")
                    identity.append(
                        {
                            "flags": name,
                            "vocab_size": vocab,
                            "identical": same_model(work / f"exact-{tag}", work / f"spm-{tag}"),
                        }
                    )
                    print(json.dumps(identity[-1]), flush=True)
    per_position = [
        (row["exact"]["train_peak_mb"] * 1e6, row["exact"]["positions"]) for row in curve
    ]  # the training stage's peak against the table it trains from
    slope, intercept = np.polyfit([p for _, p in per_position], [m for m, _ in per_position], 1)
    results = {
        "text": "source and docs of the installed packages (.py .pyi .md .rst .txt), sorted paths, first N lines",
        "threads": 2,
        "curve": curve,
        "identity_at_4M": identity,
        "growth": growth(work, sizes),
        "train_peak_fit": {"bytes_fixed": round(float(intercept)), "bytes_per_position": round(float(slope), 2)},
        "seconds": round(time.time() - started),
    }
    save("tokenizer", results)
    print(
        "\n| lines | text | spm_train: time, peak | exact: time (count + train), peak (count / train) | HF: time, peak "
        "| exact/spm memory, time | identical |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in curve:
        e, s = row["exact"], row["spm"]
        h = f"{row['hf']['seconds']:.1f} s, {row['hf']['peak_mb']:,} MB" if "hf" in row else "-"
        print(
            f"| {row['lines'] / 1e6:g} M | {row['mb']} MB | {s['seconds']:.1f} s, {s['peak_mb']:,} MB | "
            f"{e['seconds']:.1f} s ({e['count_seconds']:.1f} + {e['train_seconds']:.1f}), {e['peak_mb']:,} MB "
            f"({e['count_peak_mb']:,} / {e['train_peak_mb']:,}) | {h} | {row['memory_ratio']:.2f}x, "
            f"{row['time_ratio']:.2f}x | {'yes' if row['identical'] else 'NO'} |"
        )
    print(f"\ntraining peak = {intercept / 1e6:.0f} MB + {slope:.1f} B a position")
    print(json.dumps({name: part["fit"] for name, part in results["growth"].items()}))
    print(json.dumps(identity))


if __name__ == "__main__":
    main()
