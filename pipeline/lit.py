"""The LightningModule that wires the GPT to its data (loss, optimizer, schedule), and the callbacks
that report on training: throughput and MFU through Lightning's own meter, and a progress bar in steps."""

import math
import time

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.throughput import Throughput, get_available_flops
from torch import nn

from pipeline import progress
from pipeline.data import samples_per_step, tokens_per_step
from pipeline.errors import PipelineError
from pipeline.model import GPT, GPTConfig, cross_entropy
from pipeline.params import TrainParams


def lr_factor(step: int, p: TrainParams) -> float:
    """Linear warm-up to 1, cosine down to min_lr / lr at decay_steps, flat after: a pure function of step."""
    if step < p.warmup_steps:
        return (step + 1) / (p.warmup_steps + 1)
    if step >= p.decay_steps:
        return p.min_lr / p.lr
    progress = (step - p.warmup_steps) / max(1, p.decay_steps - p.warmup_steps)
    return (p.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (p.lr - p.min_lr)) / p.lr


def is_report_step(step: int, p: TrainParams) -> bool:
    """Whether optimizer step `step` (0-based, about to be taken) is one whose result leaves the run:
    a log line, a checkpoint, a validation or the final weights follow it. Only these steps wait for
    the device to say whether the loss stayed finite, so ordinary steps cost no host round trip."""
    after = step + 1
    return (
        step % p.log_every == 0
        or after % p.checkpoint_every == 0
        or after % p.val_check_interval == 0
        or after >= p.max_steps
    )


class GPTModule(pl.LightningModule):
    def __init__(self, config: GPTConfig, train: TrainParams):
        super().__init__()
        self.config, self.train_params = config, train
        self.model = GPT(config)
        self.flops_per_token = self.model.flops_per_token()
        self.validated_at: int | None = None  # the step of the latest validation
        self._finite: torch.Tensor | None = None  # on the device: every loss since the last check was finite
        self._first_bad_step: torch.Tensor | None = None

    def configure_model(self) -> None:
        if self.train_params.compile:
            self.model.compile()  # in place: state-dict keys keep their names

    def training_step(self, batch, batch_idx):
        x, y = batch  # (b, t) each
        loss = cross_entropy(self.model(x), y)
        finite = torch.isfinite(loss.detach())
        if self._finite is None:
            self._finite = torch.ones((), dtype=torch.bool, device=loss.device)
            self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        newly_bad = ~finite & self._finite
        self._first_bad_step = torch.where(newly_bad, self.global_step, self._first_bad_step)
        self._finite = self._finite & finite
        self.log("train/loss", loss)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Stop before a non-finite loss reaches the weights of anything written (see is_report_step);
        every rank agrees, so all stop together."""
        if self._finite is None or not is_report_step(self.global_step, self.train_params):
            return
        finite = bool(self._finite.item())
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            step = int(self._first_bad_step.item()) if not finite else self.global_step
            raise PipelineError(
                f"train: the loss became nan or inf at step {step}; stopping. The last good "
                "checkpoint is untouched: lower train.lr or raise warmup_steps and rerun"
            )
        self._finite = None

    def tokens_seen(self) -> int:
        return self.global_step * tokens_per_step(self.train_params, self.config.block_size, self.trainer.world_size)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", cross_entropy(self.model(x), y), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log("val/tokens", float(self.tokens_seen()), rank_zero_only=True)  # the x of the loss curve
        self.validated_at = self.global_step

    def configure_optimizers(self):
        p = self.train_params
        if p.optimizer == "adamw":
            optimizer = torch.optim.AdamW(
                self.model.optimizer_groups(p.weight_decay),
                lr=p.lr,
                betas=(p.beta1, p.beta2),
                fused=self.device.type == "cuda",
            )
        else:
            optimizer = MuonWithAdamW(self.model, p, fused=self.device.type == "cuda")
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, p))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng" in checkpoint:
            torch.set_rng_state(checkpoint["rng"]["torch"])
            if checkpoint["rng"]["cuda"]:
                torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon on the model's hidden matrices and AdamW on the rest, as one optimizer for Lightning: one
    step steps both, the warm-up/cosine schedule scales every group's own peak (train.muon_lr, train.lr),
    gradient clipping sees every parameter, and a checkpoint holds both states."""

    def __init__(self, model: nn.Module, p: TrainParams, fused: bool = False):
        hidden = {id(w) for w in model.hidden_matrices()}
        self.muon = torch.optim.Muon(
            [w for w in model.parameters() if id(w) in hidden],
            lr=p.muon_lr,
            weight_decay=p.weight_decay,
            momentum=p.muon_momentum,
            adjust_lr_fn="original",  # the lr scaled by sqrt(max(1, rows / columns)), as Muon's authors do
        )
        rest = [
            {"params": [w for w in group["params"] if id(w) not in hidden], "weight_decay": group["weight_decay"]}
            for group in model.optimizer_groups(p.weight_decay)
        ]
        self.adamw = torch.optim.AdamW(
            [group for group in rest if group["params"]], lr=p.lr, betas=(p.beta1, p.beta2), fused=fused
        )
        # deliberately not Optimizer.__init__: param_groups are the inner optimizers' own dicts, read
        # afresh each time (loading a state replaces them), so an lr the schedule sets is the lr they use
        self.defaults = {}
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict:
        return {**self.muon.state, **self.adamw.state}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype matmuls run in under a Lightning precision setting (what the device's peak depends on)."""
    return torch.bfloat16 if "bf16" in precision else torch.float16 if "16" in precision else torch.float32


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
    """Every `log_every` steps: tokens seen, tokens/s since the last log point and, where the device's
    peak FLOP/s is known, MFU, measured by Lightning's `Throughput` over all devices. The peak comes from
    train.peak_flops, else Lightning's table of GPUs; on CPU there is no MFU rather than a wrong one.
    Time spent validating is not counted as training time."""

    def __init__(self, train: TrainParams, block_size: int, flops_per_token: float):
        self.train, self.block_size, self.flops_per_token = train, block_size, flops_per_token
        self.peak: float | None = None

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
        if "device/items_per_sec" in rates:
            metrics["train/tokens_per_s"] = rates["device/items_per_sec"] * trainer.world_size
        if "device/mfu" in rates:
            metrics["train/mfu"] = rates["device/mfu"]
        pl_module.log_dict(metrics, rank_zero_only=True)


class MixtureReport(pl.Callback):
    """With train.mixture, every `log_every` steps: the samples and tokens drawn from each group so far
    (logged, so in metrics/train/metrics.json and W&B), and a line when a group has drawn all its
    windows and starts a new epoch of its own."""

    def __init__(self, train: TrainParams, block_size: int):
        self.train, self.block_size = train, block_size

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.per_step = samples_per_step(self.train, trainer.world_size)
        self.data = trainer.datamodule.train_set  # a pipeline.data.MixedWindows
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
