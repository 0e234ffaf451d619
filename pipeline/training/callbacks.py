"""Callbacks that watch and report on training: weights that overflow, a target reached, each group's
draws in a mixture, and a progress bar in steps (throughput: pipeline.training.throughput)."""

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from pipeline.config.schema import TrainParams
from pipeline.core import progress
from pipeline.core.errors import PipelineError
from pipeline.training.module import is_report_step


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


class StopAtTarget(pl.Callback):
    """With train.stop_at_val_bpb, ends training at the first validation inside it whose bits per byte
    reach the target (every rank reads the same, synchronised value); `reached` is (step, val BPB)."""

    def __init__(self, target: float | None):
        self.target, self.reached = target, None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bpb = trainer.callback_metrics.get("val/bpb")
        if self.target is None or bpb is None or trainer.state.fn != TrainerFn.FITTING:
            return
        if float(bpb) <= self.target:
            self.reached = (trainer.global_step, float(bpb))
            trainer.should_stop = True


class MixtureReport(pl.Callback):
    """With train.mixture, every `log_every` steps: the samples and tokens drawn from each group so far
    (logged, so in metrics/train/metrics.json and W&B), and a line when a group has drawn all its
    windows and starts a new epoch of its own."""

    def __init__(self, train: TrainParams):
        self.train = train

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.per_step, self.block_size = pl_module.global_batch, pl_module.config.block_size
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
