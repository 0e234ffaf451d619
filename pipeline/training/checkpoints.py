"""Where every checkpoint lives and how it is written: `last.ckpt` and `best.ckpt` in the run's folder,
whole or not at all, and the checkpoint a preemption signal asks for, in the same folder, beside the
run.json that every resume checks (never Lightning's own hpc_ckpt_N.ckpt elsewhere)."""

import io
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins import AsyncCheckpointIO, TorchCheckpointIO

from pipeline.config.schema import TrainParams
from pipeline.core import files
from pipeline.core.errors import PipelineError, Stopped
from pipeline.training import resume
from pipeline.training.module import is_report_step
from pipeline.training.schedule import cooldown_start

PREEMPTION_SIGNAL = signal.SIGUSR1  # SLURM's `--signal=USR1@<seconds>`, and Lightning's requeue signal


class BackgroundCheckpointIO(AsyncCheckpointIO):
    """Lightning's AsyncCheckpointIO over the atomic writer: a step waits only for the checkpoint's
    tensors to be copied, not for the file. Once a write fails (a full disk), no later checkpoint is
    written (one queued behind it is dropped), and the failure is raised at the next save, the next
    report step (FailedWrites) or the end of the run, whichever comes first."""

    def __init__(self):
        super().__init__(AtomicCheckpointIO())

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        self.raise_if_failed()
        self._ensure_setup()
        snapshot = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().clone())  # before the next step

        def write() -> None:
            if self._error is not None:
                return
            try:
                self.checkpoint_io.save_checkpoint(snapshot, path, storage_options)
            except BaseException as exc:  # noqa: BLE001  (kept for the training thread, which raises it)
                self._error = exc

        self._executor.submit(write)

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def failed(self) -> bool:
        return self._error is not None


def wait_for_checkpoints(trainer: pl.Trainer) -> None:
    """Block until every checkpoint handed to the background thread is on disk (raising its error, if any)."""
    io = trainer.strategy.checkpoint_io
    if isinstance(io, AsyncCheckpointIO):
        io.teardown()  # joins the writer thread; the next save starts another


class FailedWrites(pl.Callback):
    """At each report step, every rank learns whether rank zero's last checkpoint write failed, and all
    stop together: a full disk is reported within train.log_every steps, not at the next checkpoint."""

    def __init__(self, train: TrainParams):
        self.train, self.checked = train, None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self.checked or not is_report_step(step - 1, self.train):
            return
        self.checked = step
        io = trainer.strategy.checkpoint_io
        failed = isinstance(io, BackgroundCheckpointIO) and io.failed()
        if trainer.strategy.reduce_boolean_decision(failed, all=False):
            if failed:
                io.raise_if_failed()
            raise PipelineError(f"train: rank 0 could not write a checkpoint by step {step:,}; stopping (see rank 0)")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their final name, flushed, then renamed (pipeline.core.files): a write
    cut short by a kill or a full disk never replaces the last good one. Lightning's own save goes
    through the system's temporary directory, and a move from another filesystem is a plain copy."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()  # as Lightning does; writing to the file directly, torch hides ENOSPC in a RuntimeError
        torch.save(checkpoint, buffer)
        with files.replacing(Path(path)) as (tmp,):
            tmp.write_bytes(buffer.getbuffer())


def checkpoint_callbacks(train: TrainParams, directory: Path) -> list[ModelCheckpoint]:
    """`last` (everything a resume needs) every checkpoint_every steps, `best` (the weights alone) by
    validation loss: both in the run's folder."""
    last = ModelCheckpoint(
        dirpath=directory,
        save_top_k=0,
        save_last=True,
        enable_version_counter=False,
        every_n_train_steps=train.checkpoint_every,
    )
    # only validations inside fit choose the best: not the step-0 loss, not the end of an epoch
    best = ModelCheckpoint(
        dirpath=directory,
        filename="best",
        save_weights_only=True,  # what it is for: the best weights; resuming is last.ckpt's job
        monitor="val/loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=False,
    )
    return [last, best]


class Preemption(pl.Callback):
    """SIGUSR1 (SLURM's warning before a time limit or a preemption, `#SBATCH --signal=USR1@120`; or
    `kill -USR1` by hand, on any rank) ends the job with a checkpoint: at the next report step, so
    within train.log_every steps, every rank agrees, last.ckpt is written in the run's folder, run.json
    notes how the job ended, on SLURM the job is requeued, and the stage stops (exit 75). The next
    job resumes from last.ckpt through every check of pipeline.training.resume."""

    def __init__(self, train: TrainParams, directory: Path):
        self.train, self.directory = train, directory
        self.requested: str | None = None
        self.checked: int | None = None
        # from now on, not from the first step: a signal during start-up is kept for the first report step
        # (its default action would end the process with nothing saved and no requeue)
        if threading.current_thread() is threading.main_thread():
            signal.signal(PREEMPTION_SIGNAL, self._request)

    def _request(self, signum, frame) -> None:
        self.requested = signal.Signals(signum).name

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # steps taken; a new value only on the micro-batch that completed one
        if step == self.checked or not is_report_step(step - 1, self.train):
            return
        self.checked = step
        if not trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False):
            return
        last = self.directory / resume.LAST
        trainer.save_checkpoint(last)
        wait_for_checkpoints(trainer)
        how = f"{self.requested or PREEMPTION_SIGNAL.name + ' on another rank'} at step {step:,}"
        requeued = ""
        if trainer.is_global_zero:
            resume.note_job_end(self.directory, f"preempted: {how}", step)
            requeued = requeue() if SLURMEnvironment.detect() else ""
        raise Stopped(f"train: {how}: saved {last} and {self.directory / resume.RUN_FILE}{requeued}; rerun to resume")


def requeue() -> str:
    """Put this SLURM job back in the queue (`scontrol requeue`); what happened, for the message."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"; `scontrol requeue {job}` could not run ({exc}): requeue the job by hand"
    if result.returncode:
        return f"; `scontrol requeue {job}` failed ({result.stderr.strip()[:200]}): requeue the job by hand"
    return f"; requeued SLURM job {job}"


class StableCheckpoint(pl.Callback):
    """Under the wsd schedule, `stable.ckpt` at the cooldown's first step: the last weights of the stable
    phase, from which the run is extended (a larger max_steps) or cooled down anew."""

    def __init__(self, train: TrainParams, directory: Path):
        self.start = cooldown_start(train.max_steps, train.cooldown) if train.schedule == "wsd" else None
        self.directory, self.saved = directory, False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_at_start(trainer)  # a job that begins where its cooldown does (a run cooled down early)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        self._save_at_start(trainer)

    def _save_at_start(self, trainer: pl.Trainer) -> None:
        if self.start is not None and trainer.global_step == self.start and not self.saved:
            trainer.save_checkpoint(self.directory / resume.STABLE)
            self.saved = True
