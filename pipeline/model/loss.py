"""The next-token loss straight from the final hidden states and the head's weight, a chunk of rows at
a time, so that no [tokens, vocabulary] tensor is ever held whole.

The usual way (logits = head(h); cross_entropy(logits.float(), y)) keeps, for the backward pass, the
logits and their fp32 log-softmax: at 16 x 1024 tokens and 50k pieces, 3.3 GB in fp32 each, more than
the whole model's other activations. Here the forward pass computes, chunk by chunk, the loss and
already its gradients (softmax - one-hot, times the head's weight for the hidden states, times the
hidden states for the weight): the same three matmuls a step does anyway, with one chunk's logits
alive at a time. What the backward pass keeps is the two gradients, (tokens, n_embd) and
(vocab, n_embd), and all it does is scale them by the incoming gradient (1, or 1/grad_accum).
"""

import torch
from einops import rearrange
from torch.autograd.function import once_differentiable

CHUNK_ROWS = 4096
"""Rows (tokens) a chunk. At 50k pieces a chunk's logits are 0.8 GB in fp32 (1.6 GB with their bf16
matmul output and gradient), a quarter of the preset's 16 x 1024 tokens a GPU, while each of its
matmuls (4096 x 768 by 768 x 50k, 0.3 TFLOP) is still large enough to keep a GPU's tensor cores busy."""


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
    """One chunk: (its summed loss in fp32, exp(logits - their row's max) in fp32, the rows' sums of
    those, the matmul's dtype). The exponentials are taken in place, in the fp32 logits' own memory:
    no second [rows, vocab] tensor (logsumexp would make one)."""
    logits = hidden @ weight.T  # (rows, vocab), bf16 under autocast
    wide = logits.float()
    picked = wide.gather(1, rearrange(targets, "n -> n 1"))
    top = wide.amax(dim=-1, keepdim=True)
    exps = wide.sub_(top).exp_()
    sums = exps.sum(dim=-1, keepdim=True)
    return (top + sums.log() - picked).sum(), exps, sums, logits.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    """The mean loss of hidden (n, d) @ weight.T (n, v) against targets (n,), its gradients computed
    in the forward pass (see the module's docstring)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int):
        n = hidden.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)  # summed over chunks in fp32
        for start in range(0, n, chunk_rows):
            h, y = hidden[start : start + chunk_rows], targets[start : start + chunk_rows]
            loss, grad, sums, dtype = _chunk_loss(h, weight, y)
            total = total + loss
            # d(mean loss)/d logits = (softmax - one-hot) / n, in the exponentials' own memory
            grad.div_(sums * n)
            grad.scatter_add_(1, rearrange(y, "n -> n 1"), torch.full_like(grad[:, :1], -1.0 / n))
            grad = grad.to(dtype)
            grad_hidden[start : start + chunk_rows] = grad @ weight
            grad_weight += grad.T @ h
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total / n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss.to(grad_hidden.dtype), grad_weight * grad_loss.to(grad_weight.dtype), None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """Mean next-token loss in nats, accumulated in fp32: hidden (n, d), weight (v, d), targets (n,) in
    [0, v). Equal to cross_entropy((hidden @ weight.T).float(), targets); where no gradient is wanted
    (validation), only the loss is computed, a chunk at a time."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_rows)
    total = sum(_chunk_loss(h, weight, y)[0] for h, y in zip(hidden.split(chunk_rows), targets.split(chunk_rows)))
    return total / hidden.shape[0]
