"""Callbacks that watch and report on training: weights that overflow, throughput and MFU through
Lightning's own meter, each group's draws in a mixture, and a progress bar in steps."""

import time

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.throughput import Throughput, get_available_flops

from pipeline.config.schema import TrainParams
from pipeline.core import progress
from pipeline.core.errors import PipelineError
from pipeline.training.module import compute_dtype, is_report_step
from pipeline.training.windows import samples_per_step, tokens_per_step


class FiniteWeights(pl.Callback):
    """After a step whose result leaves the run (is_report_step), stop if any weight is nan or inf,
    before a checkpoint or the model is written (Lightning runs checkpoint callbacks last). The loss
    check alone misses a run whose weights overflow while RMSNorm and QK-norm keep its loss finite."""

    def __init__(self, train: TrainParams):
        self.train, self.checked = train, None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step - 1  # the step just taken
        if step < 0 or step == self.checked or not is_report_step(step, self.train):
            return
        self.checked = step
        largest = torch.stack([w.detach().abs().amax().float() for w in pl_module.parameters() if w.numel()])
        if not trainer.strategy.reduce_boolean_decision(bool(largest.isfinite().all()), all=True):
            raise PipelineError(
                f"train: the weights became nan or inf by step {step}; stopping. The last good checkpoint "
                "is untouched: lower train.lr (and train.muon_lr) or raise warmup_steps and rerun"
            )


class TokenThroughput(pl.Callback):
    """Every `log_every` steps: tokens seen and the learning rate to every logger; tokens/s since the
    last log point and, where the device's peak FLOP/s is known, MFU, measured by Lightning's
    `Throughput` over all devices, to the untracked loggers only (W&B): wall-clock figures differ run
    to run, so they stay out of DVCLive's files, which are DVC outputs; the last ones are kept for
    the stage's summary. The peak comes from train.peak_flops, else Lightning's table of GPUs; on CPU
    there is no MFU rather than a wrong one. Time spent validating is not counted as training time."""

    def __init__(self, train: TrainParams, block_size: int, flops_per_token: float):
        self.train, self.block_size, self.flops_per_token = train, block_size, flops_per_token
        self.peak: float | None = None
        self.last: dict[str, float] = {}
        """The latest tokens/s (and MFU), for the summary."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.tokens_per_step = tokens_per_step(self.train, self.block_size, trainer.world_size)
        self.log_every, self.peak_override = self.train.log_every, self.train.peak_flops
        device = trainer.strategy.root_device
        self.peak = self.peak_override or (
            get_available_flops(device, compute_dtype(str(trainer.precision))) if device.type == "cuda" else None
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # window of 2 log points: each rate covers exactly the steps since the previous log line
        self.meter = Throughput(available_flops=self.peak, world_size=trainer.world_size, window_size=2)
        self.first_step, self.last_step = trainer.global_step, None
        self.started, self.paused = time.perf_counter(), 0.0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validation_began = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.training:
            self.paused += time.perf_counter() - self.validation_began

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.log_every or step == self.last_step:
            return
        self.last_step = step
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the clock must see the device's work, not its queue
        steps = step - self.first_step
        per_device = self.tokens_per_step // trainer.world_size
        self.meter.update(
            time=time.perf_counter() - self.started - self.paused,
            batches=steps,
            samples=steps,
            lengths=steps * per_device,
            flops=per_device * self.log_every * self.flops_per_token,
        )
        rates = self.meter.compute()
        metrics = {
            "train/tokens": float(pl_module.tokens_seen()),
            "train/lr": trainer.optimizers[0].param_groups[0]["lr"],
        }
        pl_module.log_dict(metrics, rank_zero_only=True)
        timing = {}
        if "device/items_per_sec" in rates:
            timing["train/tokens_per_s"] = rates["device/items_per_sec"] * trainer.world_size
        if "device/mfu" in rates:
            timing["train/mfu"] = rates["device/mfu"]
        if timing and trainer.is_global_zero:
            self.last = timing
            for logger in trainer.loggers:
                if not getattr(logger, "tracked", False):
                    logger.log_metrics(timing, step=step)


class MixtureReport(pl.Callback):
    """With train.mixture, every `log_every` steps: the samples and tokens drawn from each group so far
    (logged, so in metrics/train/metrics.json and W&B), and a line when a group has drawn all its
    windows and starts a new epoch of its own."""

    def __init__(self, train: TrainParams, block_size: int):
        self.train, self.block_size = train, block_size

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.per_step = samples_per_step(self.train, trainer.world_size)
        self.data = trainer.datamodule.train_set  # a pipeline.training.windows.MixedWindows
        self.epochs = self._epochs(trainer.global_step)
        self.last_step = None

    def _epochs(self, step: int) -> dict[str, int]:
        counts = self.data.mixture.counts(step * self.per_step)
        return {name: max(n - 1, 0) // self.data.sizes[name] for name, n in counts.items()}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.train.log_every or step == self.last_step:
            return
        self.last_step = step
        counts = self.data.mixture.counts(step * self.per_step)
        metrics = {}
        for name, n in counts.items():
            metrics[f"mixture/{name}/samples"] = float(n)
            metrics[f"mixture/{name}/tokens"] = float(n * self.block_size)
        epochs = self._epochs(step)
        for name, epoch in epochs.items():
            if epoch > self.epochs[name] and trainer.is_global_zero:
                progress.note(
                    f"train: step {step:,}: group {name!r} drew all {self.data.sizes[name]:,} of its windows; "
                    f"its epoch {epoch + 1} begins, in a new seeded order"
                )
        self.epochs = epochs
        pl_module.log_dict(metrics, rank_zero_only=True)


class StepProgress(pl.Callback):
    """The project's own progress bar, in optimizer steps towards train.max_steps, with the loss at
    each log point (read only then: no extra host round trip)."""

    def __init__(self, max_steps: int, log_every: int):
        self.max_steps, self.log_every = max_steps, log_every
        self.first_step: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.first_step = trainer.global_step  # where this run's training began (after a resume's restore)
        self.bar = progress.bar(
            self.max_steps, "train", unit="step", initial=trainer.global_step, disable=not trainer.is_global_zero
        )

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        advanced = trainer.global_step - self.bar.n
        if advanced <= 0:
            return
        if trainer.global_step % self.log_every == 0:
            shown = {"loss": f"{float(outputs['loss']):.4f}"}
            if "val/loss" in trainer.callback_metrics:
                shown["val"] = f"{float(trainer.callback_metrics['val/loss']):.4f}"
            self.bar.set_postfix(shown, refresh=False)
        self.bar.update(advanced)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.bar.close()
