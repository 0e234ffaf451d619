"""What tests share that is not a fixture: paths, tokenizer flags, shard writers, a child environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import zstandard

from pipeline.ingest.jsonl import JsonLinesReader, parse_line
from pipeline.ingest.records import PILE_FIELDS

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
LOSSLESS_FLAGS = {
    "model_type": "bpe",
    "vocab_size": 1000,
    "pad_id": 0,
    "unk_id": 1,
    "bos_id": -1,
    "eos_id": 2,
    "pad_piece": "[PAD]",
    "unk_piece": "[UNK]",
    "eos_piece": "<|endoftext|>",
    "input_sentence_size": 0,
    "max_sentence_length": 4192,
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "byte_fallback": True,
    "num_threads": 2,
}


def write_shard(path: Path, records=(), raw_lines: list[bytes] | None = None, frames: int = 1) -> Path:
    """A .jsonl.zst file from records (dicts) or raw lines, split over `frames` zstd frames."""
    lines = raw_lines if raw_lines is not None else [json.dumps(r).encode() for r in records]
    data = b"".join(line + b"\n" for line in lines)
    step = -(-len(data) // frames) or 1
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(compressor.compress(data[i : i + step]) for i in range(0, max(len(data), 1), step)))
    return path


def doc(text: str, set_name: str = "Test set") -> dict:
    return {"text": text, "meta": {"pile_set_name": set_name}}


def sample_documents(name: str) -> list[str]:
    """Every document text of a sample shard, e.g. `val` or `train/00`."""
    reader = JsonLinesReader(SAMPLE / f"{name}.jsonl.zst")
    return [parse_line(line, number, PILE_FIELDS).text for number, line in reader.items()]


def child_env() -> dict:
    """Environment for subprocesses: this interpreter's bin first, so `python` and `dvc` are ours, and
    this checkout first on PYTHONPATH, so every stage a test starts, directly or through dvc, runs the
    code under test, whichever checkout the environment has installed."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PILE_GPT_PROGRESS"] = "0"
    return env


PEAK_REPORT = """
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak": int(hwm.split()[1]) * 1024, **answer}))
"""


def peak_rss(script: str, *args) -> dict:
    """Run `script` in a fresh interpreter (`args` in sys.argv[1:]); it imports json and sets `answer`, a
    dict. Returns the answer with "peak", the process's peak RSS in bytes (VmHWM, not ru_maxrss: exec
    keeps the parent's)."""
    result = subprocess.run(
        [sys.executable, "-c", script + PEAK_REPORT, *map(str, args)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])
