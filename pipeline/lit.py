"""The LightningModule that wires the GPT to its data: loss, optimizer, schedule, throughput, MFU."""

import math
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from einops import rearrange

from pipeline.errors import PipelineError
from pipeline.model import GPT, GPTConfig
from pipeline.params import TrainParams

# Dense peak FLOP/s per device by precision, from the vendors' data sheets (SXM parts where both exist).
PEAK_FLOPS = {
    "H200": {"bf16": 989e12, "tf32": 494e12},
    "H100": {"bf16": 989e12, "tf32": 494e12},
    "A100": {"bf16": 312e12, "tf32": 156e12},
    "A10G": {"bf16": 70e12, "tf32": 35e12},
    "L40S": {"bf16": 362e12, "tf32": 183e12},
    "L4": {"bf16": 121e12, "tf32": 60e12},
    "RTX 4090": {"bf16": 165e12, "tf32": 82.6e12},
    "RTX 3090": {"bf16": 71e12, "tf32": 35.6e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
}


def lr_factor(step: int, p: TrainParams) -> float:
    """Linear warm-up to 1, cosine down to min_lr / lr at decay_steps, flat after: a pure function of step."""
    if step < p.warmup_steps:
        return (step + 1) / (p.warmup_steps + 1)
    if step >= p.decay_steps:
        return p.min_lr / p.lr
    progress = (step - p.warmup_steps) / max(1, p.decay_steps - p.warmup_steps)
    return (p.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (p.lr - p.min_lr)) / p.lr


def peak_flops(device: torch.device, precision: str, override: float | None) -> float | None:
    """One device's peak for MFU: the override, else the table for a known GPU; None on CPU or unknown."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    kind = "bf16" if "bf16" in precision else "fp16" if "16" in precision else "tf32"
    for model, peaks in PEAK_FLOPS.items():
        if model in name:
            return peaks.get(kind) or peaks.get({"tf32": "fp32", "bf16": "fp16"}.get(kind, ""), None)
    return None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(rearrange(logits, "b t v -> (b t) v").float(), rearrange(targets, "b t -> (b t)"),
                           reduction=reduction)


class GPTModule(pl.LightningModule):
    def __init__(self, config: GPTConfig, train: TrainParams):
        super().__init__()
        self.config, self.train_params = config, train
        self.model = GPT(config)
        self.flops_per_token = self.model.flops_per_token()
        self._clock: tuple[float, int] | None = None

    def configure_model(self) -> None:
        if self.train_params.compile:
            self.model.compile()  # in place: state-dict keys keep their names

    def training_step(self, batch, batch_idx):
        x, y = batch  # (b, t) each
        loss = cross_entropy(self.model(x), y)
        finite = torch.isfinite(loss.detach()).all().item()
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            raise PipelineError(f"train: loss is {loss.item()} at step {self.global_step}; stopping. The last "
                                "good checkpoint is untouched: lower train.lr or raise warmup_steps and rerun")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", cross_entropy(self.model(x), y), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        p = self.train_params
        optimizer = torch.optim.AdamW(self.model.optimizer_groups(p.weight_decay), lr=p.lr,
                                      betas=(p.beta1, p.beta2), fused=self.device.type == "cuda")
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, p))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.global_step
        if step % self.train_params.log_every or (self._clock and self._clock[1] == step):
            return
        now = time.perf_counter()
        tokens_per_step = self.train_params.batch_size * self.train_params.grad_accum * self.trainer.world_size * self.config.block_size
        tokens_seen = step * tokens_per_step
        metrics = {"train/lr": self.trainer.optimizers[0].param_groups[0]["lr"], "train/tokens": float(tokens_seen)}
        if self._clock is not None:
            seconds, steps = now - self._clock[0], step - self._clock[1]
            tokens_per_s = steps * tokens_per_step / seconds
            metrics["train/tokens_per_s"] = tokens_per_s
            peak = peak_flops(self.device, str(self.trainer.precision), self.train_params.peak_flops)
            if peak:
                metrics["train/mfu"] = tokens_per_s * self.flops_per_token / (peak * self.trainer.world_size)
        self._clock = (now, step)
        self.log_dict(metrics, rank_zero_only=True)

    def on_validation_end(self) -> None:
        self._clock = (time.perf_counter(), self.global_step)  # tokens/s measures training, not validation

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng"] = {"torch": torch.get_rng_state(),
                             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng" in checkpoint:
            torch.set_rng_state(checkpoint["rng"]["torch"])
            if checkpoint["rng"]["cuda"]:
                torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
