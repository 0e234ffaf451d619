"""The loss inside the forward (pipeline/model/loss.py): the same loss and gradients as the logits
sliced from the padded head and cross_entropy in fp32, eager and compiled, without ever keeping a
[tokens, vocabulary] tensor for the backward pass."""

import dataclasses

import pytest
import torch

from pipeline.model.gpt import GPT, GPTConfig, cross_entropy

# 1000 pieces padded to 1024; 2 x 20 = 40 tokens, in chunks of 16: two whole chunks and a short one
CONFIG = GPTConfig(
    vocab_size=1000, block_size=32, n_layer=2, n_head=2, n_embd=32, arch="modern", position="rope", norm="rmsnorm"
)
CHUNK = 16
HEADS = {"tied": True, "untied": False}


def model_with(head: str, chunk_rows: int = CHUNK) -> GPT:
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(CONFIG, tie_embeddings=HEADS[head]))
    model.loss_chunk_rows = chunk_rows
    return model


def batch(b: int = 2, t: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return tuple(torch.randint(0, CONFIG.vocab_size, (2, b, t), generator=generator))


def old_loss(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training step's loss before: every padded logit, sliced, then fp32 cross-entropy outside."""
    return cross_entropy(model.lm_head(model.hidden_states(x))[..., : model.config.vocab_size], y)


def loss_and_gradients(model: GPT, loss_fn, x, y) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(x, y)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same(new: tuple, old: tuple, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    (new_loss, new_grads), (old_loss_, old_grads) = new, old
    assert new_loss.dtype == torch.float32
    assert abs(new_loss.item() - old_loss_.item()) <= 1e-5
    assert new_grads.keys() == old_grads.keys()
    for name in old_grads:
        torch.testing.assert_close(new_grads[name], old_grads[name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_the_loss_and_every_gradient_are_those_of_the_sliced_logits_in_fp32(head, compiled):
    model = model_with(head)
    x, y = batch()
    old = loss_and_gradients(model, lambda x, y: old_loss(model, x, y), x, y)
    forward = torch.compile(model, fullgraph=True, backend="aot_eager") if compiled else model
    assert_same(loss_and_gradients(model, forward, x, y), old)


@pytest.mark.parametrize("chunk_rows", [1, 7, 40, 4096])
def test_any_chunk_size_gives_the_same_loss_and_gradients(chunk_rows):
    model = model_with("untied", chunk_rows)
    x, y = batch()
    old = loss_and_gradients(model, lambda x, y: old_loss(model, x, y), x, y)
    assert_same(loss_and_gradients(model, model, x, y), old)


def test_without_gradients_the_loss_is_the_same_and_the_logits_are_unchanged():
    model = model_with("tied").eval()
    x, y = batch()
    with torch.no_grad():
        assert abs(model(x, y).item() - old_loss(model, x, y).item()) <= 1e-5
        logits = model(x)
        assert logits.shape == (2, 20, CONFIG.vocab_size)
        torch.testing.assert_close(logits, model.lm_head(model.hidden_states(x))[..., : CONFIG.vocab_size])


def test_under_bf16_autocast_the_loss_and_gradients_match_the_old_path_to_bf16_precision():
    model = model_with("untied")
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        old = loss_and_gradients(model, lambda x, y: old_loss(model, x, y), x, y)
        new = loss_and_gradients(model, model, x, y)
    assert_same(new, old, rtol=2e-2, atol=1e-4)


def saved_for_backward(fn) -> list[torch.Size]:
    """The shapes of every tensor autograd keeps for the backward pass while fn runs."""
    shapes = []

    def pack(tensor):
        shapes.append(tensor.shape)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return shapes


def test_no_tensor_of_every_tokens_logits_is_kept_for_the_backward_pass():
    model = model_with("tied")
    x, y = batch(4, 32)
    whole = x.numel() * CONFIG.vocab_size  # one fp32 logit per token and piece
    old = saved_for_backward(lambda: old_loss(model, x, y))
    assert max(shape.numel() for shape in old) >= whole  # the check sees what the old way keeps
    new = saved_for_backward(lambda: model(x, y))
    assert max(shape.numel() for shape in new) < whole / 2, new
