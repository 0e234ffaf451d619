"""Tokens per second and MFU, honestly: the time that counts (training, not the validations inside
it), the FLOPs the model does per token (GPT.flops_per_token), and the dense peak of the device it
runs on, from the vendors' data sheets.

Data sheets state tensor-core peaks "with sparsity" (2:4 structured sparsity, which a dense GPT
never uses) beside or instead of the dense figure; an MFU against a sparse peak reads half of what
it is. Lightning's own table holds such figures for some GPUs (H200, H100 NVL), and reads an L40S as
an L4. The table below is dense, in bf16 (fp16's is the same on every GPU listed), and each entry
names its source.
"""

import time
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn


@dataclass(frozen=True)
class Peak:
    flops: float
    """Dense bf16 tensor-core FLOP/s of one device."""
    source: str
    """Where the figure is stated (a sparse figure is halved, and the source says so)."""


# Matched against torch.cuda.get_device_name(), lower-cased, first match wins: order matters where
# one name holds another (l40s before l40; h200 nvl before h200; gh200 before h200).
DENSE_BF16_PEAKS: list[tuple[tuple[str, ...], str, Peak]] = [
    (
        ("h100", "nvl"),
        "H100 NVL",
        Peak(835.5e12, "nvidia.com/en-us/data-center/h100 datasheet: BF16 1,671 TFLOPS with sparsity"),
    ),
    (
        ("h100", "pcie"),
        "H100 PCIe",
        Peak(756.5e12, "nvidia.com/en-us/data-center/h100 datasheet: BF16 1,513 TFLOPS with sparsity"),
    ),
    (
        ("h100", "hbm3"),
        "H100 SXM",
        Peak(989.5e12, "nvidia.com/en-us/data-center/h100 datasheet: BF16 1,979 TFLOPS with sparsity"),
    ),
    (
        ("h100", "sxm"),
        "H100 SXM",
        Peak(989.5e12, "nvidia.com/en-us/data-center/h100 datasheet: BF16 1,979 TFLOPS with sparsity"),
    ),
    (
        ("gh200",),
        "GH200",
        Peak(989.5e12, "nvidia.com/en-us/data-center/grace-hopper-superchip: the H100's 989.5"),
    ),
    (
        ("h200", "nvl"),
        "H200 NVL",
        Peak(835.5e12, "nvidia.com/en-us/data-center/h200 datasheet: BF16 1,671 TFLOPS with sparsity"),
    ),
    (
        ("h200",),
        "H200 SXM",
        Peak(989.5e12, "nvidia.com/en-us/data-center/h200 datasheet: BF16 1,979 TFLOPS with sparsity"),
    ),
    (
        ("a100",),
        "A100",
        Peak(312e12, "nvidia.com/en-us/data-center/a100 datasheet: BF16 312 TFLOPS dense, 624 sparse"),
    ),
    (
        ("l40s",),
        "L40S",
        Peak(362.05e12, "nvidia.com/en-us/data-center/l40s datasheet: BF16 362.05 TFLOPS dense, 733 sparse"),
    ),
    (
        ("b200",),
        "B200",
        Peak(2.25e15, "nvidia.com/en-us/data-center/hgx, HGX B200 per GPU: BF16 4.5 PFLOPS with sparsity"),
    ),
    (
        ("mi300x",),
        "MI300X",
        Peak(1307.4e12, "amd.com, AMD Instinct MI300X data sheet: BF16 1,307.4 TFLOPS dense, 2,614.9 sparse"),
    ),
    (
        ("mi325x",),
        "MI325X",
        Peak(1307.4e12, "amd.com, AMD Instinct MI325X data sheet: BF16 1,307.4 TFLOPS dense, 2,614.9 sparse"),
    ),
]
TENSOR_CORE_PRECISIONS = ("bf16-mixed", "bf16-true", "16-mixed", "16-true")


def dense_peak(device_name: str) -> tuple[str, Peak] | None:
    """(the GPU's name in the table, its dense bf16 peak) for a name as torch reports it
    (`NVIDIA H100 80GB HBM3`, `NVIDIA H200`, `AMD Instinct MI300X`), or None if it is not listed."""
    name = device_name.lower()
    for words, label, peak in DENSE_BF16_PEAKS:
        if all(word in name for word in words):
            return label, peak
    return None


def device_peak_flops(device: torch.device, precision: str) -> float | None:
    """The dense peak FLOP/s MFU is measured against on `device` under a Lightning precision, or None:
    not a GPU, a GPU not in the table, or 32-bit matmuls (whose peak depends on TF32 settings)."""
    if device.type != "cuda" or precision not in TENSOR_CORE_PRECISIONS:
        return None
    found = dense_peak(torch.cuda.get_device_name(device))
    return found[1].flops if found else None


def rates(tokens: int, seconds: float, flops_per_token: float, world_size: int, peak: float | None) -> dict:
    """tokens/s over every device in `seconds` of training, and MFU where the peak is known: the FLOPs
    those tokens took, over the peak of all `world_size` devices for that time."""
    out = {"train/tokens_per_s": tokens / seconds}
    if peak:
        out["train/mfu"] = tokens * flops_per_token / (seconds * peak * world_size)
    return out


class TokenThroughput(pl.Callback):
    """Every `log_every` steps: tokens seen and the learning rate of every parameter group to every
    logger; tokens/s since the last log point and, where the device's dense peak is known, MFU, to the
    untracked loggers only (W&B): wall-clock figures differ run to run, so they stay out of DVCLive's
    files, which are DVC outputs; the last ones are kept for the stage's summary. The peak comes from
    train.peak_flops, else the table above; on CPU there is no MFU rather than a wrong one. Validations
    inside training are not training time."""

    def __init__(self, log_every: int, peak_flops: float | None):
        self.log_every, self.peak_override = log_every, peak_flops
        self.peak: float | None = None
        self.last: dict[str, float] = {}
        """The latest tokens/s (and MFU), for the summary."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.peak = self.peak_override or device_peak_flops(trainer.strategy.root_device, str(trainer.precision))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.since, self.since_step, self.validating = time.perf_counter(), trainer.global_step, 0.0
        self.first_step, self.last_step = trainer.global_step, None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validation_began = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # not `trainer.training`: that is False while fit validates
            self.validating += time.perf_counter() - self.validation_began

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.log_every or step == self.last_step:
            return
        self.last_step = step
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the clock must see the device's work, not its queue
        now = time.perf_counter()
        tokens = (step - self.since_step) * pl_module.tokens_per_step()
        seconds = now - self.since - self.validating
        # a job's first interval holds its start-up (DataLoader workers, compilation): no rate from it
        timing = (
            {}
            if self.since_step == self.first_step
            else rates(tokens, seconds, pl_module.flops_per_token, trainer.world_size, self.peak)
        )
        self.since, self.since_step, self.validating = now, step, 0.0
        metrics = {"train/tokens": float(pl_module.tokens_seen())}
        for number, group in enumerate(trainer.optimizers[0].param_groups):
            metrics[f"train/lr/{group.get('name', number)}"] = group["lr"]
            if "momentum" in group:  # Muon's, as its warm-up set it for the step just taken
                metrics[f"train/momentum/{group.get('name', number)}"] = group["momentum"]
        pl_module.log_dict(metrics, rank_zero_only=True)
        if timing and trainer.is_global_zero:
            self.last = timing
            for logger in trainer.loggers:
                if not getattr(logger, "tracked", False):
                    logger.log_metrics(timing, step=step)
