"""What a run records of itself, and whether a job continues it or starts afresh, and why.

A checkpoint folder holds `run.json`, which records what made its checkpoints: the trajectory
(everything that decides the weights at a given step: the model's shape, the train params that are
not mere settings, the global batch, the training and validation arrays by content) and the code
(the source of every module of the stage that can change an output); every job that trained it (its
world size, its accumulation, the step it began at); and whether the run finished. Every checkpoint
records how far the data went: the samples consumed and the batch that consumed them.

`resume: auto` continues from `last.ckpt` only a run of the same trajectory and code that stopped
short of train.max_steps: one that was interrupted, preempted, or one that finished at a smaller
max_steps (raising it continues the same run, bit for bit what an uninterrupted run gives), or below
a train.stop_at_val_bpb that is now lower. Under the wsd schedule a checkpoint continues only where
it saw the learning rates this job's max_steps gives (pipeline.training.schedule): `last.ckpt`, else
`stable.ckpt`, the last step before the cooldown, from which a run is extended or cooled down anew.
Anything else starts afresh, and says why: a finished run of the same max_steps is trained again
from scratch, so a rerun shows what the code makes, never old weights.

The global batch (sequences per optimizer step, over every device) belongs to the run. A job on
another number of devices keeps it by accumulating over more or fewer micro-batches and starts at
exactly the next sample; where the batch does not split among its devices, it is refused, naming the
settings that would work. `plan` only reads files, so every rank of a job can make it at once; what
changes the folder (`begin_job`) runs on rank zero once the ranks agree (pipeline.training.distributed).
"""

import dataclasses
import hashlib
import json
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

from pipeline.config.schema import ModelParams, TrainParams
from pipeline.core import files, sources
from pipeline.core.errors import PipelineError
from pipeline.training.schedule import continues_exactly

RUN_FILE = "run.json"
LAST = "last.ckpt"
STABLE = "stable.ckpt"  # wsd: the last step before the cooldown, where a run is extended or cooled down anew
POSITION_KEY = "data_position"  # where a checkpoint records the samples consumed and the batch (TokenDataModule)
LIGHTNING_SLURM_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # what Lightning's SLURM handling writes and loads by itself

# Settings that do not change the weights a run arrives at: a resume may differ in these. How the
# global batch is made (batch_size, grad_accum, devices, nodes) is a setting; the global batch is not.
NOT_TRAJECTORY = {
    "batch_size",
    "grad_accum",
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
    "activation_checkpointing",
    "compile",
    "num_threads",
    "record_windows",
    "stop_at_val_bpb",
}
IRRELEVANT = {"cosine": {"cooldown"}, "wsd": {"decay_steps"}}  # a schedule's fields that the other one ignores


@dataclass(frozen=True)
class Batch:
    """How the run's global batch is made on this job's devices."""

    global_batch: int
    """Sequences per optimizer step over every device: fixed for the life of a run."""
    batch_size: int
    """Sequences per device per micro-step (train.batch_size)."""
    grad_accum: int
    """Micro-steps per optimizer step on this job: global_batch / (batch_size x world_size)."""
    world_size: int
    """Processes (devices) of this job."""


def fresh_batch(train: TrainParams, world_size: int) -> Batch:
    """The batch a new run takes from params on this job's devices."""
    return Batch(train.batch_size * train.grad_accum * world_size, train.batch_size, train.grad_accum, world_size)


def asked_global_batch(train: TrainParams, origin: dict | None, world_size: int) -> int:
    """The global batch these params ask for. A job whose batch settings are those the run began with
    asks for the run's own, on any number of devices (a requeue on other GPUs changes the machine, not
    the run); changed settings ask for batch_size x grad_accum x this job's devices."""
    if origin is not None and (train.batch_size, train.grad_accum) == (origin["batch_size"], origin["grad_accum"]):
        return origin["global_batch"]
    return train.batch_size * train.grad_accum * world_size


def job_batch(global_batch: int, batch_size: int, world_size: int, origin: dict) -> Batch:
    """The run's global batch on `world_size` devices of `batch_size`, or a refusal naming what would work."""
    per_micro_step = batch_size * world_size
    if global_batch % per_micro_step == 0:
        return Batch(global_batch, batch_size, global_batch // per_micro_step, world_size)
    devices = [d for d in range(1, global_batch // batch_size + 1) if global_batch % (batch_size * d) == 0]
    sizes = [b for b in range(1, global_batch // world_size + 1) if global_batch % (b * world_size) == 0]
    began = (
        f"batch_size {origin['batch_size']} x grad_accum {origin['grad_accum']} x {origin['world_size']} "
        f"device{'s' if origin['world_size'] > 1 else ''}"
    )
    ways = [f"resume it on {_or(devices)} devices with train.batch_size {batch_size}"]
    if sizes:
        ways.append(f"on these {world_size} devices with train.batch_size {_or(sorted(sizes, reverse=True)[:4])}")
    raise PipelineError(
        f"train: the run in its checkpoint folder began on {origin['world_size']} device"
        f"{'s' if origin['world_size'] > 1 else ''} with a global batch of {global_batch} sequences ({began}); "
        f"this job has {world_size} device{'s' if world_size > 1 else ''} of batch_size {batch_size}, and "
        f"{global_batch} does not split into {per_micro_step} sequences a micro-step. To continue it, "
        + "; or ".join(ways)
        + " (the global batch is kept, so no sample is replayed or skipped); train.resume: never starts afresh"
    )


def _or(values: list[int]) -> str:
    shown = [f"{v:,}" for v in values[:8]] + (["..."] if len(values) > 8 else [])
    return ", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else shown[0]


def trajectory(
    model: ModelParams, train: TrainParams, global_batch: int, arrays: list[tuple[Path, str]], metas: list[dict]
) -> dict:
    """Everything that decides the weights at a given step: the model, the train params that are not
    settings, the global batch, and each array read ((path, group) in `arrays`, the validation array
    last, with group `val`; its metadata in `metas`), by content."""
    return {
        "model": dataclasses.asdict(model),
        "train": {
            **{
                k: v
                for k, v in dataclasses.asdict(train).items()
                if k not in NOT_TRAJECTORY and k not in IRRELEVANT[train.schedule]
            },
            "global_batch": global_batch,
        },
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
    """The optimizer step training starts from."""
    samples: int
    """Training samples consumed before that step: where this job's data begins."""
    batch: Batch
    """The global batch and how this job makes it."""
    why: str
    """For the summary: what the run continues, or why it starts afresh."""
    wandb_id: str
    record: dict
    """run.json as this job begins it (the trajectory, the code, the run's first batch, its jobs so far)."""
    run_file_sha256: str | None
    """What run.json held when the decision was read (None: no run.json): ranks compare it."""

    def view(self) -> dict:
        """What every rank of a job must see alike."""
        return {
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "step": self.step,
            "samples": self.samples,
            "global_batch": self.batch.global_batch,
            "grad_accum": self.batch.grad_accum,
            "run.json": self.run_file_sha256,
        }

    def describe(self) -> str:
        if self.checkpoint is None:
            return self.why
        return f"resume from {self.checkpoint} at step {self.step:,} (sample {self.samples:,})"


def plan(
    directory: Path,
    model: ModelParams,
    train: TrainParams,
    arrays: list[tuple[Path, str]],
    metas: list[dict],
    world_size: int,
) -> Decision:
    """Continue or start afresh (see the module's docstring), from the files alone: nothing is written.
    `arrays` and `metas` as trajectory() takes them; `world_size`: this job's processes."""
    last, run_file = directory / LAST, directory / RUN_FILE
    foreign = sorted(directory.glob(LIGHTNING_SLURM_CHECKPOINTS))
    if foreign:
        raise PipelineError(
            f"{foreign[-1]}: a checkpoint of Lightning's own SLURM handling, which Lightning would load by itself, "
            "past every check of the run it belongs to; this pipeline never writes one (its preemption checkpoint "
            f"is {last}). Delete it and rerun"
        )
    run_bytes = run_file.read_bytes() if run_file.exists() else None
    previous = _read_run(run_file, run_bytes)
    digest = hashlib.sha256(run_bytes).hexdigest() if run_bytes is not None else None
    origin = (previous or {}).get("batch")
    global_batch = asked_global_batch(train, origin, world_size)
    current = {"trajectory": trajectory(model, train, global_batch, arrays, metas), "code": code()}
    has_checkpoints = any(path.exists() for path in (last, directory / STABLE))
    why_not = _why_not_resume(previous, current, train, has_checkpoints)
    found = _continuation(directory, train) if why_not is None else None
    if isinstance(found, str):
        why_not = found
    if why_not is None:
        checkpoint, step, samples, saved = found
        if saved["global_batch"] != global_batch or samples != step * global_batch:
            raise PipelineError(
                f"{checkpoint}: its data position ({samples:,} samples at step {step:,}, global batch "
                f"{saved['global_batch']}) does not match its run ({global_batch} sequences a step, "
                f"{RUN_FILE}); delete the folder or set train.resume: never to start afresh"
            )
        batch = job_batch(global_batch, train.batch_size, world_size, origin)
        why = f"resumed from {checkpoint} at step {step:,}" + _regrouped(saved, batch)
        return Decision(checkpoint, step, samples, batch, why, previous["wandb_id"], previous, digest)
    batch = fresh_batch(train, world_size)
    run_id = uuid.uuid4().hex[:8]
    record = {
        "trajectory": trajectory(model, train, batch.global_batch, arrays, metas),
        "code": current["code"],
        "wandb_id": run_id,
        "finished_at": None,
        "batch": dataclasses.asdict(batch),
        "jobs": [],
    }
    return Decision(None, 0, 0, batch, f"fresh ({why_not})", run_id, record, digest)


def _regrouped(saved: dict, batch: Batch) -> str:
    if (saved["world_size"], saved["grad_accum"]) == (batch.world_size, batch.grad_accum):
        return ""
    return (
        f", on {batch.world_size} device{'s' if batch.world_size > 1 else ''} (was {saved['world_size']}): "
        f"grad_accum {batch.grad_accum} keeps the global batch of {batch.global_batch}"
    )


def _read_run(run_file: Path, data: bytes | None) -> dict | None:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise PipelineError(
            f"{run_file}: not valid JSON ({exc}); it records what made the checkpoints beside it. "
            "Delete the folder, or set train.resume: never to start afresh"
        ) from None


def _why_not_resume(previous: dict | None, current: dict, train: TrainParams, has_checkpoints: bool) -> str | None:
    """Why the run in the folder is not this job's to continue, or None."""
    if train.resume == "never":
        return "train.resume is never"
    if previous is None:
        return "no earlier run here" if not has_checkpoints else f"its checkpoints carry no {RUN_FILE}"
    if previous["trajectory"] != current["trajectory"]:
        return "the checkpoints belong to other params: " + ", ".join(
            changed(previous["trajectory"], current["trajectory"])
        )
    if previous.get("code") != current["code"]:
        return "the checkpoints were made by other code: " + ", ".join(
            changed(previous.get("code") or {}, current["code"])
        )
    finished, reached = previous.get("finished_at"), previous.get("finished_val_bpb")
    if reached is not None and train.stop_at_val_bpb is not None and reached <= train.stop_at_val_bpb:
        return (
            f"the run reached train.stop_at_val_bpb at step {finished:,} (val BPB {reached:.4f}): a rerun trains "
            "it again from scratch (a lower target, or none, continues it instead)"
        )
    if reached is None and finished is not None and finished >= train.max_steps:
        return (
            f"the run finished at step {finished:,}: a rerun trains it again from scratch "
            "(a larger train.max_steps continues it instead)"
        )
    return None


def _continuation(directory: Path, train: TrainParams) -> tuple[Path, int, int, dict] | str:
    """The checkpoint this job continues from, with its step, samples consumed and batch: last.ckpt,
    else (wsd) the one before the cooldown, if its learning rates are this job's; else why not."""
    tried = []
    for name in (LAST, STABLE):
        checkpoint = directory / name
        if not checkpoint.exists():
            continue
        step, samples, saved = saved_position(checkpoint)
        if continues_exactly(step, saved["max_steps"], train):
            return checkpoint, step, samples, saved
        tried.append(f"{name} at step {step:,} (toward max_steps {saved['max_steps']:,})")
    if not tried:
        return f"there is no {LAST}"
    return (
        f"no checkpoint saw the learning rates of a wsd run toward max_steps {train.max_steps:,}: "
        + ", ".join(tried)
        + "; a wsd run continues from a checkpoint before both cooldowns"
    )


def begin_job(directory: Path, decision: Decision, world_size: int, host: str) -> str:
    """On rank zero, once every rank agrees: clear another run's checkpoints (saying why) for a fresh
    start, and record this job in run.json. Returns the job's id, which every rank then looks for to
    prove it reads the same folder."""
    job = uuid.uuid4().hex
    if decision.checkpoint is None and directory.exists() and any(directory.iterdir()):
        print(f"train: starting afresh and clearing {directory}: {decision.why.removeprefix('fresh (')[:-1]}")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entry = {
        "id": job,
        "began": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host,
        "from_step": decision.step,
        "world_size": world_size,
        "grad_accum": decision.batch.grad_accum,
        "batch_size": decision.batch.batch_size,
    }
    record = {
        **decision.record,
        "finished_at": None,
        "finished_val_bpb": None,
        "jobs": decision.record.get("jobs", []) + [entry],
    }
    files.write_json_atomic(directory / RUN_FILE, record)
    return job


def last_job(directory: Path) -> str | None:
    """The id of the latest job run.json records, or None when there is none to read."""
    try:
        return json.loads((directory / RUN_FILE).read_text())["jobs"][-1]["id"]
    except (OSError, ValueError, KeyError, IndexError):
        return None


def note_job_end(directory: Path, how: str, step: int) -> None:
    """Record in run.json how this job ended (`preempted by SIGUSR1`, ...) and at which step."""
    run_file = directory / RUN_FILE
    record = json.loads(run_file.read_text())
    record["jobs"][-1].update({"ended": how, "at_step": step})
    files.write_json_atomic(run_file, record)


def mark_finished(directory: Path, step: int, val_bpb: float | None = None) -> None:
    """Record in run.json that the run ended at `step`: at train.max_steps, or (with `val_bpb`) at
    the validation that reached train.stop_at_val_bpb."""
    run_file = directory / RUN_FILE
    record = json.loads(run_file.read_text())
    files.write_json_atomic(run_file, {**record, "finished_at": step, "finished_val_bpb": val_bpb})


def saved_position(checkpoint: Path) -> tuple[int, int, dict]:
    """(step, samples consumed, the batch that consumed them and its horizon) of a checkpoint, loaded as
    plain tensors and data only (anything else could run code, and is refused)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for a refused or damaged pickle
        raise PipelineError(
            f"{checkpoint}: refused: it does not load as plain tensors and data "
            f"(weights_only=True: {str(exc).splitlines()[0]}); it may hold code. Delete it, "
            "or set train.resume: never to start afresh"
        ) from None
    position = state.get(POSITION_KEY)
    if position is None:
        raise PipelineError(
            f"{checkpoint}: records no data position (samples consumed, global batch); it was not written by "
            "this train stage. Delete it, or set train.resume: never to start afresh"
        )
    return int(state["global_step"]), int(position["samples"]), position


class DataPosition(pl.Callback):
    """Writes into every checkpoint how far the data went (samples consumed, the batch that consumed
    them, on how many devices) and the max_steps its learning rates followed, and, on a resume with
    another accumulation, brings Lightning's micro-batch counts to this job's."""

    def __init__(self, decision: Decision):
        self.decision = decision

    def samples_at(self, step: int) -> int:
        """Samples consumed before optimizer step `step` of this job."""
        return self.decision.samples + (step - self.decision.step) * self.decision.batch.global_batch

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[POSITION_KEY] = {
            "samples": self.samples_at(trainer.global_step),
            **dataclasses.asdict(self.decision.batch),
            "max_steps": trainer.max_steps,  # the horizon its learning rates followed (pipeline.training.schedule)
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        regroup_micro_batches(checkpoint, self.decision.batch.grad_accum)


def regroup_micro_batches(checkpoint: dict, grad_accum: int) -> None:
    """Lightning counts micro-batches (to know when to step, log and validate); a checkpoint written at
    a step boundary by a job accumulating over k of them counts step x k (the last one not yet marked
    completed when the checkpoint is written at its end). A job that makes the same global batch of
    another number of micro-batches continues from step x grad_accum, each count keeping its offset."""
    position = checkpoint[POSITION_KEY]
    step, saved = checkpoint["global_step"], position["grad_accum"]
    if saved == grad_accum:
        return
    progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    for counts in (progress["total"], progress["current"]):
        offsets = {name: value - step * saved for name, value in counts.items()}
        if any(offset not in (-1, 0) for offset in offsets.values()):
            raise PipelineError(
                f"the checkpoint at step {step:,} was written between the micro-batches of a step "
                f"({counts}); only a checkpoint at a step boundary continues on another number of devices"
            )
        counts.update({name: step * grad_accum + offset for name, offset in offsets.items()})


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
