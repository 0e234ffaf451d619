"""Muon whose Newton-Schulz work is shared across ranks.

Each step every rank updates every momentum buffer (cheap, elementwise, on gradients DDP has already
all-reduced), orthogonalises only its own share of the matrices (the expensive part), and the
orthogonalised updates are all-gathered, so every rank applies every update and ends with the same
weights. On one process the math is torch.optim.Muon's with adjust_lr_fn="original", to the bit.

Every rank keeps every momentum buffer, so a checkpoint (rank 0's state) is the whole optimizer
whatever the world size, and a run resumed on another number of processes continues exactly.
"""

import math

import torch
import torch.distributed as dist
from einops import rearrange

# Keller Jordan's quintic Newton-Schulz coefficients and step count, as torch.optim.Muon uses them
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7


def newton_schulz(update: torch.Tensor, steps: int = NS_STEPS, eps: float = EPS) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to `update`, roughly (singular values land in ~[0.5, 1.5]),
    by a quintic Newton-Schulz iteration in bfloat16; the same operations as torch.optim.Muon's."""
    a, b, c = NS_COEFFICIENTS
    x = update.bfloat16()
    tall = update.size(0) > update.size(1)
    if tall:  # iterate on the wide orientation: the Gram matrix is the smaller one
        x = x.T
    x.div_(x.norm().clamp(min=eps))  # spectral norm <= Frobenius norm <= 1: inside the iteration's basin
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def orthogonalise(update: torch.Tensor, blocks: int) -> torch.Tensor:
    """Newton-Schulz on each of `blocks` row blocks of the matrix apart (the attention's Q, K and V
    stacked in one weight), the blocks stacked back in place; blocks 1: the whole matrix."""
    if blocks == 1:
        return newton_schulz(update)
    parts = rearrange(update, "(blocks rows) cols -> blocks rows cols", blocks=blocks)
    return rearrange(torch.stack([newton_schulz(part) for part in parts]), "blocks rows cols -> (blocks rows) cols")


def adjusted_lr(lr: float, shape: torch.Size, blocks: int) -> float:
    """Muon's authors' scale (torch's adjust_lr_fn="original"): lr * sqrt(max(1, rows / columns)) of
    each orthogonalised block, so a tall block's update has the RMS of a square one's."""
    rows, cols = shape
    return lr * math.sqrt(max(1, rows // blocks / cols))


def shares(sizes: list[int], world: int) -> list[int]:
    """The rank that orthogonalises each matrix: largest first, each to the least loaded rank (the
    lowest on a tie); the same on every rank, and loads within one matrix of each other."""
    loads, owner = [0] * world, [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        owner[i] = min(range(world), key=lambda rank: (loads[rank], rank))
        loads[owner[i]] += sizes[i]
    return owner


def gather_updates(updates: dict[int, torch.Tensor], owner: list[int], like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every matrix's update on every rank, from the ones this rank made: each rank's updates flat in
    one buffer, padded to the largest rank's, all-gathered once, then cut back into matrices."""
    rank, world = dist.get_rank(), dist.get_world_size()
    loads = [sum(m.numel() for i, m in enumerate(like) if owner[i] == r) for r in range(world)]
    mine = [updates[i].flatten() for i in sorted(updates)]
    # Newton-Schulz's bfloat16: half the bytes of the weights, and each rank applies the exact update
    buffer = torch.zeros(max(loads), dtype=torch.bfloat16, device=like[0].device)
    if mine:
        torch.cat(mine, out=buffer[: loads[rank]])
    gathered = [torch.empty_like(buffer) for _ in range(world)]
    dist.all_gather(gathered, buffer)
    offsets, out = [0] * world, []
    for i, matrix in enumerate(like):
        start = offsets[owner[i]]
        out.append(gathered[owner[i]][start : start + matrix.numel()].view_as(matrix))
        offsets[owner[i]] += matrix.numel()
    return out


class Muon(torch.optim.Optimizer):
    """Muon (Nesterov momentum, each update orthogonalised by Newton-Schulz, decoupled weight decay) on
    2-D matrices, its Newton-Schulz shared across the ranks of an initialised process group. `blocks`
    maps a parameter to how many row blocks it is orthogonalised as (Q, K and V apart: 3); others: 1.
    Its state dict is torch.optim.Muon's: each parameter's momentum_buffer, and the same group keys."""

    def __init__(
        self,
        params,
        lr: float,
        weight_decay: float,
        momentum: float,
        blocks: dict[torch.Tensor, int] | None = None,
    ):
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": True,
            "ns_coefficients": NS_COEFFICIENTS,
            "eps": EPS,
            "ns_steps": NS_STEPS,
            "adjust_lr_fn": "original",
        }
        super().__init__(params, defaults)
        if any(p.dim() != 2 for group in self.param_groups for p in group["params"]):
            raise ValueError("Muon orthogonalises 2-D matrices only")
        # by id: a parameter's row blocks are a fact of the model, not state a checkpoint carries
        self.blocks = {id(p): n for p, n in (blocks or {}).items()}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        shared = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:  # every rank keeps every buffer: a checkpoint is whole on any world size
                self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)).lerp_(p.grad, 1 - group["momentum"])
            if shared:
                owner = shares([p.numel() for p in params], dist.get_world_size())
                mine = {i: self.orthogonalised(p, group) for i, p in enumerate(params) if owner[i] == dist.get_rank()}
                updates = gather_updates(mine, owner, params)
            else:
                updates = [self.orthogonalised(p, group) for p in params]
            for p, update in zip(params, updates):
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-adjusted_lr(group["lr"], p.shape, self.blocks.get(id(p), 1)))
        return loss

    def orthogonalised(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        """p's Nesterov momentum (the gradient pulled toward its updated buffer), orthogonalised."""
        nesterov = p.grad.lerp(self.state[p]["momentum_buffer"], group["momentum"])
        return orthogonalise(nesterov, self.blocks.get(id(p), 1))
