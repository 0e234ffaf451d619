"""Muon on the hidden matrices and AdamW on the rest, as one optimizer for Lightning."""

import torch
from torch import nn

from pipeline.config.schema import TrainParams
from pipeline.training.muon import Muon


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon on the model's hidden matrices and AdamW on the rest, as one optimizer for Lightning: one
    step steps both, the warm-up/cosine schedule scales every group's own peak (train.muon_lr, train.lr,
    train.embedding_lr, train.head_lr), gradient clipping sees every parameter, and a checkpoint holds
    both states; Muon reads its momentum from its group each step (train.muon_momentum's warm-up)."""

    def __init__(self, model: nn.Module, p: TrainParams, fused: bool = False):
        hidden = {id(w) for w in model.hidden_matrices()}
        self.muon = Muon(
            [{"name": "muon", "params": [w for w in model.parameters() if id(w) in hidden]}],
            lr=p.muon_lr,
            weight_decay=p.weight_decay,
            momentum=p.muon_momentum,
            blocks={w: 3 for w in model.qkv_matrices()} if p.muon_split_qkv else None,  # Q, K and V apart
        )
        rest = [
            {**group, "params": [w for w in group["params"] if id(w) not in hidden]}
            for group in model.optimizer_groups(p.weight_decay, p.embedding_lr, p.head_lr)
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
