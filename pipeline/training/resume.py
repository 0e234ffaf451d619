"""Whether a run continues from its last checkpoint or starts afresh, and why.

A checkpoint directory holds `run.json`, which records the trajectory that made its checkpoints:
everything that decides the weights at a given step (the model's shape, the train params that are
not mere settings, the training arrays). `resume: auto` continues from `last.ckpt` only under the
same trajectory; otherwise the directory is cleared and the summary says which params changed.
"""

import dataclasses
import json
import shutil
import uuid
from pathlib import Path

import torch

from pipeline.config.schema import ModelParams, TrainParams
from pipeline.core import files, progress
from pipeline.core.errors import PipelineError

# Settings that do not change the weights a run arrives at: a resume may differ in these.
NOT_TRAJECTORY = {
    "max_steps",
    "val_check_interval",
    "val_windows",
    "checkpoint_every",
    "log_every",
    "resume",
    "num_workers",
    "peak_flops",
    "wandb",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "compile",
    "num_threads",
}


def trajectory(model: ModelParams, train: TrainParams, arrays: list[tuple[Path, str]], metas: list[dict]) -> dict:
    """Everything that decides the weights at a given step: the model, the train params that are not
    settings, and each training array ((path, group) in `arrays`, its metadata in `metas`)."""
    return {
        "model": dataclasses.asdict(model),
        "train": {k: v for k, v in dataclasses.asdict(train).items() if k not in NOT_TRAJECTORY},
        "data": [
            {**{k: meta[k] for k in ("source", "n_tokens", "tokenizer_sha256")}, "group": group}
            for (_, group), meta in zip(arrays, metas)
        ],
    }


def previous_run(
    directory: Path, current: dict, resume: str, rank_zero: bool, dvclive_dir: Path
) -> tuple[Path | None, str]:
    """(checkpoint to resume from, W&B run id). Rank zero clears another run's checkpoints, saying why.

    The decision reads only run.json and last.ckpt, and rank zero's clearing cannot change it, so
    every rank of a distributed run reaches the same one whenever it looks.
    """
    last, run_file = directory / "last.ckpt", directory / "run.json"
    previous = json.loads(run_file.read_text()) if run_file.exists() else None
    if resume == "auto" and previous and previous["trajectory"] == current and last.exists():
        step = check_loads_safely(last)
        if rank_zero:
            rewind_dvclive(dvclive_dir, step)
            progress.note(f"train: resuming from {last} at step {step:,}")
        return last, previous["wandb_id"]
    run_id = uuid.uuid4().hex[:8]
    if not rank_zero:
        return None, run_id
    if directory.exists() and any(directory.iterdir()):
        if resume == "never":
            why = "train.resume is never"
        elif previous is None:
            why = "they carry no run.json"
        elif previous["trajectory"] != current:
            why = "they belong to other params: " + ", ".join(changed(previous["trajectory"], current))
        else:
            why = "there is no last.ckpt"
        print(f"train: starting afresh and clearing {directory}: {why}", flush=True)
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files.write_json_atomic(run_file, {"trajectory": current, "wandb_id": run_id})
    return None, run_id


def check_loads_safely(checkpoint: Path) -> int:
    """Refuse a checkpoint that needs more than tensors and plain data to load: it could run code.
    Return its step."""
    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception as exc:  # torch raises several types for a refused or damaged pickle
        raise PipelineError(
            f"{checkpoint}: refused: it does not load as plain tensors and data "
            f"(weights_only=True: {str(exc).splitlines()[0]}); it may hold code. Delete it, "
            "or set train.resume: never to start afresh"
        ) from None


def rewind_dvclive(directory: Path, step: int) -> None:
    """Bring DVCLive's files back to the checkpoint's step before a resume appends to them.

    A killed run may have logged steps past its last checkpoint (the resumed run logs them again,
    identically) or died mid-write; DVCLive would then read half a metrics.json, or append to half a line.
    """
    for tsv in directory.glob("plots/**/*.tsv"):
        lines = tsv.read_text().split("\n")
        complete = lines[:-1]  # text after the last newline is a line cut short
        kept = complete[:1] + [row for row in complete[1:] if int(row.split("\t")[0]) < step]
        tsv.write_text("".join(row + "\n" for row in kept))
    summary = directory / "metrics.json"
    try:
        json.loads(summary.read_text())
    except FileNotFoundError:
        pass
    except ValueError:
        summary.unlink()  # rewritten at the next log


def changed(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested dicts."""
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out
