"""Bits per byte: every token scored once, summed per document and per pile_set_name."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.core import files
from pipeline.encode import token_files
from pipeline.evaluation import evaluate
from pipeline.model.gpt import GPT, GPTConfig

EOS = 2


def write_tokens(tmp_path, docs, n_bytes, groups):
    """The documents, each followed by EOS, as the pretokenize stage writes them (TokenWriter)."""
    stream = [t for doc in docs for t in doc + [EOS]]
    path = tmp_path / "val.bin"
    with token_files.TokenWriter(path, "uint16") as writer:
        writer.add(np.array(stream, dtype=np.uint16), np.array([len(d) + 1 for d in docs]), np.array(n_bytes), groups)
    files.write_json_atomic(token_files.metadata_path(path), writer.metadata(vocab_size=50, eos_id=EOS))
    return path, stream


def by_hand(model, stream, block):
    """Each token's loss, window by window over [eos] + stream, one position at a time."""
    virtual = [EOS] + stream
    losses = []
    for start in range(0, len(stream), block):
        x = torch.tensor([virtual[start : start + block]])
        with torch.no_grad():
            logp = F.log_softmax(model(x)[0], dim=-1)
        for i in range(x.shape[1]):
            if start + i < len(stream):
                losses.append(-logp[i, stream[start + i]].item())
    return losses


@pytest.mark.parametrize("batch_size", [1, 3])
def test_bits_per_byte_equals_a_hand_computation(tmp_path, batch_size):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=1, n_embd=16)).eval()
    docs = [[5, 6, 7], [8] * 11, [9, 10, 11, 12, 13, 14, 15, 16, 17]]
    path, stream = write_tokens(tmp_path, docs, [10, 30, 25], ["prose", "code", "prose"])
    result = evaluate.evaluate_array(model, path, batch_size)
    losses = by_hand(model, stream, 8)
    assert len(losses) == len(stream) == result["tokens"]
    assert result["bpb"] == pytest.approx(sum(losses) / 65 / math.log(2), rel=1e-6)
    assert result["loss"] == pytest.approx(sum(losses) / len(stream), rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    first, second = sum(losses[:4]), sum(losses[4:16])  # document 1 holds tokens 0-3, its separator included
    prose = sum(losses) - second
    assert result["per_group"]["prose"]["bpb"] == pytest.approx(prose / 35 / math.log(2), rel=1e-6)
    assert result["per_group"]["code"]["bpb"] == pytest.approx(second / 30 / math.log(2), rel=1e-6)
    assert result["per_group"]["prose"]["tokens"] == 4 + 10 and first > 0
