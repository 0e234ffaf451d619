"""Whether a run continues from its last checkpoint or starts afresh, and why.

A checkpoint directory holds `run.json`, which records what made its checkpoints: the trajectory
(everything that decides the weights at a given step: the model's shape, the train params that are
not mere settings, the training and validation arrays by content) and the code (the source of
every module of the stage that can change an output), and whether the run finished. `resume:
auto` continues from `last.ckpt` only a run of the same trajectory and code that stopped short of
train.max_steps: one that was interrupted, or one that finished at a smaller max_steps (raising it
continues the same run, bit for bit what an uninterrupted run gives). Anything else starts afresh,
and says why: a finished run of the same max_steps is trained again from scratch, so a rerun
shows what the code makes, never old weights.
"""

import dataclasses
import json
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config.schema import ModelParams, TrainParams
from pipeline.core import files, progress, sources
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
    settings, and each array read ((path, group) in `arrays`, the validation array last, with group
    `val`; its metadata in `metas`), by content."""
    return {
        "model": dataclasses.asdict(model),
        "train": {k: v for k, v in dataclasses.asdict(train).items() if k not in NOT_TRAJECTORY},
        "data": [
            {**{k: meta[k] for k in ("source", "n_tokens", "sha256", "tokenizer_sha256")}, "group": group}
            for (_, group), meta in zip(arrays, metas)
        ],
    }


def code() -> dict[str, str]:
    """The sha256 of the stage script that runs and of every module of its closure that can change an
    output: the files dvc.yaml lists as its code deps (pipeline.core.sources)."""
    return sources.fingerprint(Path(sys.modules["__main__"].__file__))


@dataclass(frozen=True)
class Decision:
    checkpoint: Path | None
    """last.ckpt to continue from, or None for a fresh start."""
    step: int
    """The step training starts from."""
    why: str
    """For the summary: what the run continues, or why it starts afresh."""
    wandb_id: str


def previous_run(
    directory: Path, current: dict, max_steps: int, resume: str, rank_zero: bool, dvclive_dir: Path
) -> Decision:
    """Continue or start afresh (see the module's docstring); rank zero clears another run's
    checkpoints, saying why. `current` is {"trajectory": ..., "code": ...} of this run.

    The decision reads only run.json and last.ckpt, and rank zero's clearing cannot change it, so
    every rank of a distributed run reaches the same one whenever it looks.
    """
    last, run_file = directory / "last.ckpt", directory / "run.json"
    previous = json.loads(run_file.read_text()) if run_file.exists() else None
    why_not = _why_not_resume(previous, current, max_steps, resume, last.exists())
    if why_not is None:
        step = check_loads_safely(last)
        if rank_zero:
            rewind_dvclive(dvclive_dir, step)
            progress.note(f"train: resuming from {last} at step {step:,}")
        return Decision(last, step, f"resumed from {last} at step {step:,}", previous["wandb_id"])
    run_id = uuid.uuid4().hex[:8]
    if rank_zero:
        if directory.exists() and any(directory.iterdir()):
            print(f"train: starting afresh and clearing {directory}: {why_not}", flush=True)
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files.write_json_atomic(run_file, {**current, "wandb_id": run_id, "finished_at": None})
    return Decision(None, 0, f"fresh ({why_not})", run_id)


def _why_not_resume(previous: dict | None, current: dict, max_steps: int, resume: str, has_last: bool) -> str | None:
    if resume == "never":
        return "train.resume is never"
    if previous is None:
        return "no earlier run here" if not has_last else "its checkpoints carry no run.json"
    if previous["trajectory"] != current["trajectory"]:
        return "the checkpoints belong to other params: " + ", ".join(
            changed(previous["trajectory"], current["trajectory"])
        )
    if previous.get("code") != current["code"]:
        return "the checkpoints were made by other code: " + ", ".join(
            changed(previous.get("code") or {}, current["code"])
        )
    finished = previous.get("finished_at")
    if finished is not None and finished >= max_steps:
        return (
            f"the run finished at step {finished:,}: a rerun trains it again from scratch "
            "(a larger train.max_steps continues it instead)"
        )
    if not has_last:
        return "there is no last.ckpt"
    return None


def mark_finished(directory: Path, step: int) -> None:
    """Record in run.json that the run reached train.max_steps at `step`."""
    run_file = directory / "run.json"
    files.write_json_atomic(run_file, {**json.loads(run_file.read_text()), "finished_at": step})


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
