"""EleutherAI's lm-evaluation-harness on the exported model, offline, on our own held-out documents.

For each split (evaluate.splits) and each group in it (data.group_field), a local task is written: a
JSON Lines file of the documents and a task file (`loglikelihood_rolling`, metric `bits_per_byte`).
`lm_eval --model hf` then scores `data/model/hf` on them with `--include_path`. A split's overall
bits per byte is the byte-weighted mean of its groups' (the harness's own aggregation of a group
weighs tasks by documents, not bytes). Standard harness tasks (hellaswag, lambada_openai, ...) are
passed through by name, for machines with network access or a local datasets cache.

Why its numbers differ slightly from the evaluate stage's: the harness scores each document alone
(its first token predicted from the separator, then rolling windows of block_size within it), while
evaluate reads the token stream as it was trained on, windows running across documents, and also
scores the separator that ends each document.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

from pipeline.config.layout import METRICS_DIR, MODEL_DIR
from pipeline.core import files, progress
from pipeline.core.errors import PipelineError, describe_exit
from pipeline.ingest import documents
from pipeline.ingest.records import Fields

HARNESS_METRICS = METRICS_DIR / "harness.json"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def task_name(split: str, group: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", group.lower()).strip("_") or "none"
    return f"pile_gpt_{split}__{slug}"


def write_tasks(raw: dict[str, list[Path]], fields: Fields, directory: Path) -> dict[str, dict]:
    """A local task per split (its raw files in `raw`) and group: task name -> {split, group, bytes, docs}."""
    tasks: dict[str, dict] = {}
    for split, paths in raw.items():
        missing = [path for path in paths if not path.exists()]
        if missing:
            raise PipelineError(
                f"{missing[0]}: missing; run `dvc repro download@{split}` (or `dvc pull download@{split}`)"
            )
        by_group: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            # bad records are skipped: the pretokenize stage counted them, and evaluate never saw them either
            for record in documents.records(path, fields, "skip"):
                by_group[record.group].append(record.text)
        for group, texts in sorted(by_group.items()):
            name = task_name(split, group)
            data = directory / f"{name}.jsonl"
            data.write_text("".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in texts))
            task = {
                "task": name,
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(data)}},
                "test_split": "test",
                "output_type": "loglikelihood_rolling",
                "doc_to_text": "",
                "doc_to_target": "{{text}}",
                "metric_list": [{"metric": "bits_per_byte"}],
                "metadata": {"version": 1.0},
            }
            (directory / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
            tasks[name] = {
                "split": split,
                "group": group,
                "docs": len(texts),
                "bytes": sum(len(text.encode("utf-8")) for text in texts),
            }
    return tasks


def command(model_dir: Path, task_dir: Path, tasks: list[str], output: Path, batch_size: int) -> list[str]:
    device = "cuda" if _cuda() else "cpu"
    return [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model_dir},dtype=float32",
        "--tasks",
        ",".join(tasks),
        "--include_path",
        str(task_dir),
        "--device",
        device,
        "--batch_size",
        str(batch_size),
        "--output_path",
        str(output),
    ]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(
    raw: dict[str, list[Path]],
    fields: Fields,
    standard_tasks: list[str],
    batch_size: int = 16,
    model_dir: Path = MODEL_DIR / "hf",
) -> dict:
    """Run the harness on the documents of each split's raw files (`raw`) and on `standard_tasks`; write
    and return {split: {bpb, per_group: {group: bpb}}, tasks: {name: metrics}}."""
    if not (model_dir / "config.json").exists():
        raise PipelineError(f"{model_dir}: no exported model; run `dvc repro export` first")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pile-gpt-harness-") as scratch:
        scratch = Path(scratch)
        local = write_tasks(raw, fields, scratch)
        argv = command(model_dir, scratch, list(local) + standard_tasks, scratch / "out", batch_size)
        finished = subprocess.run(argv, env={**os.environ, **OFFLINE}, capture_output=True, text=True)
        if finished.returncode:
            tail = "\n".join((finished.stderr or finished.stdout).strip().splitlines()[-15:])
            raise PipelineError(f"lm_eval ended with {describe_exit(finished.returncode)}:\n{tail}")
        (result_file,) = sorted((scratch / "out").rglob("results_*.json"))[-1:]
        scores = json.loads(result_file.read_text())["results"]
    results: dict = {}
    for name, task in local.items():
        bpb = scores[name]["bits_per_byte,none"]
        split = results.setdefault(task["split"], {"bpb": 0.0, "bytes": 0, "per_group": {}})
        split["per_group"][task["group"]] = bpb
        split["bpb"] += bpb * task["bytes"]
        split["bytes"] += task["bytes"]
    for split in results.values():
        split["bpb"] /= split["bytes"]
    results["tasks"] = {name: {k: v for k, v in scores[name].items() if k != "alias"} for name in standard_tasks}
    files.write_json_atomic(HARNESS_METRICS, results)
    rows = {}
    for split, r in results.items():
        if split != "tasks":
            rows[split] = f"{r['bpb']:.4f} bits per byte ({r['bytes']:,} bytes)"
            rows.update({f"  {split}: {group}": f"{bpb:.4f} bits per byte" for group, bpb in r["per_group"].items()})
    rows.update({name: json.dumps(values) for name, values in results["tasks"].items()})
    rows["command"] = " ".join(argv[2:]).replace(str(scratch), "<tasks>")
    rows["written"] = str(HARNESS_METRICS)
    rows["time"] = f"{time.monotonic() - started:.0f} s"
    progress.summary("lm-evaluation-harness", rows)
    return results
