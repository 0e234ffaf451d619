"""The LightningModule that wires the GPT to its data: loss, optimizer, learning-rate schedule, and
the check that the loss stays finite."""

import math

import pytorch_lightning as pl
import torch

from pipeline.config.schema import TrainParams
from pipeline.core.errors import PipelineError
from pipeline.model.gpt import GPT, GPTConfig
from pipeline.training.optimizers import MuonWithAdamW
from pipeline.training.schedule import lr_factor, muon_momentum


def is_report_step(step: int, p: TrainParams) -> bool:
    """Whether optimizer step `step` (0-based, about to be taken) is one whose result leaves the run:
    a log line (Lightning logs the step after which (step + 1) is a multiple of log_every), a
    checkpoint, a validation or the final weights follow it. Only these steps wait for the device to
    say whether the loss stayed finite, so ordinary steps cost no host round trip."""
    after = step + 1
    return (
        after % p.log_every == 0
        or after % p.checkpoint_every == 0
        or after % p.val_check_interval == 0
        or after >= p.max_steps
    )


class GPTModule(pl.LightningModule):
    def __init__(self, config: GPTConfig, train: TrainParams, global_batch: int, val_tokens_per_byte: float = 0.0):
        """`val_tokens_per_byte`: the validation array's tokens over its documents' bytes, which turns the
        validation loss into bits per byte (val/bpb); 0 logs none."""
        super().__init__()
        self.config, self.train_params, self.global_batch = config, train, global_batch
        self.val_tokens_per_byte = val_tokens_per_byte
        self.model = GPT(config)
        self.flops_per_token = self.model.flops_per_token()
        self.validated_at: int | None = None  # the step of the latest validation
        self._finite: torch.Tensor | None = None  # on the device: every loss since the last check was finite
        self._first_bad_step: torch.Tensor | None = None

    def configure_model(self) -> None:
        # under FSDP, Lightning wraps each block for recomputation inside its shard unit (distributed.strategy)
        t = self.train_params
        self.model.checkpoint_activations = t.activation_checkpointing and t.strategy != "fsdp"
        if self.train_params.compile:
            self.model.compile()  # in place: state-dict keys keep their names

    def training_step(self, batch, batch_idx):
        x, y = batch  # (b, t) each
        loss = self.model(x, y)  # the loss inside the (compiled) forward
        finite = torch.isfinite(loss.detach())
        if self._finite is None:
            self._finite = torch.ones((), dtype=torch.bool, device=loss.device)
            self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        newly_bad = ~finite & self._finite
        self._first_bad_step = torch.where(newly_bad, self.global_step, self._first_bad_step)
        self._finite = self._finite & finite
        self.log("train/loss", loss)
        return loss

    def set_muon_momentum(self) -> None:
        """Muon's momentum for the step about to be taken (schedule.muon_momentum), in every group that has
        one (Muon's: AdamW's groups have betas), which Muon reads afresh each step."""
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                if "momentum" in group:
                    group["momentum"] = muon_momentum(self.global_step, self.train_params)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Set Muon's momentum for this step; then stop before a non-finite loss reaches the weights of
        anything written (see is_report_step); every rank agrees, so all stop together."""
        self.set_muon_momentum()
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

    def tokens_per_step(self) -> int:
        """Tokens one optimizer step trains on, over every device: the one place this is computed."""
        return self.global_batch * self.config.block_size

    def tokens_seen(self) -> int:
        return self.global_step * self.tokens_per_step()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = self.model(x, y)  # the loss inside the (compiled) forward
        self.log("val/loss", loss, sync_dist=True)
        if self.val_tokens_per_byte:
            self.log("val/bpb", loss * self.val_tokens_per_byte / math.log(2), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log("val/tokens", float(self.tokens_seen()), rank_zero_only=True)  # the x of the loss curve
        self.validated_at = self.global_step

    def configure_optimizers(self):
        p = self.train_params
        if p.optimizer == "adamw":
            optimizer = torch.optim.AdamW(
                self.model.optimizer_groups(p.weight_decay, p.embedding_lr, p.head_lr),
                lr=p.lr,
                betas=(p.beta1, p.beta2),
                fused=self.device.type == "cuda",
            )
        else:
            optimizer = MuonWithAdamW(self.model, p, fused=self.device.type == "cuda")
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, p))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_start(self) -> None:
        """A checkpoint holds the learning rate its own job's schedule set for the next step; a job toward
        another horizon (a wsd run extended, or cooled down early) sets this job's, as its scheduler would;
        Muon's momentum too, which a checkpoint holds as it was at its last step."""
        self.set_muon_momentum()
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            groups = scheduler.optimizer.param_groups
            for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * factor(scheduler.last_epoch)

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
