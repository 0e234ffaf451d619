"""The GPT: causal, tied, padded, initialised as GPT-2, exportable without Lightning."""

import dataclasses
import json
import math
import subprocess
import sys

import pytest
import torch

from pipeline.config.schema import TrainParams
from pipeline.model.gpt import GPT, GPTConfig, cross_entropy, rope_tables, rotate
from pipeline.training.schedule import lr_factor
from tests.helpers import REPO

CONFIG = GPTConfig(vocab_size=1000, block_size=32, n_layer=3, n_head=2, n_embd=32)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


def test_changing_a_later_token_never_changes_an_earlier_logit(model):
    idx = torch.randint(0, CONFIG.vocab_size, (2, 20))
    changed = idx.clone()
    changed[:, 12:] = torch.randint(0, CONFIG.vocab_size, (2, 8))
    a, b = model(idx), model(changed)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_vocabulary_is_padded_for_matmuls_but_padding_is_never_predicted(model):
    assert CONFIG.padded_vocab_size == 1024 and model.token_embedding.weight.shape[0] == 1024
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 1000)


def test_embeddings_are_tied_and_residual_projections_are_scaled_down(model):
    assert model.lm_head.weight is model.token_embedding.weight
    projections = torch.cat(
        [b.attn.proj.weight.flatten() for b in model.blocks] + [b.mlp.down.weight.flatten() for b in model.blocks]
    )
    assert projections.std().item() == pytest.approx(0.02 / math.sqrt(2 * CONFIG.n_layer), rel=0.1)
    assert model.blocks[0].mlp.up.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_flops_per_token_is_six_n_plus_attention(model):
    d, L, V, T = CONFIG.n_embd, CONFIG.n_layer, CONFIG.padded_vocab_size, CONFIG.block_size
    per_block = 3 * d * d + d * d + 4 * d * d * 2 + 2 * d  # qkv, proj, mlp up and down, two LayerNorm gains
    n = V * d + L * per_block + d  # tied embedding, blocks, final LayerNorm
    assert model.n_params() == n
    assert model.flops_per_token() == 6 * n + 12 * L * d * T


def test_weight_decay_applies_to_matrices_only(model):
    groups = {group["name"]: group for group in model.optimizer_groups(0.1)}
    assert list(groups) == ["embedding", "decay", "no_decay"]  # tied: the head is the token embedding
    assert groups["embedding"]["params"] == [model.token_embedding.weight, model.position_embedding.weight]
    assert all(g["weight_decay"] == 0.1 for g in (groups["embedding"], groups["decay"]))
    assert all(p.dim() == 2 for p in groups["decay"]["params"]) and groups["no_decay"]["weight_decay"] == 0.0
    assert all(p.dim() == 1 for p in groups["no_decay"]["params"])
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
    assert all("lr" not in g for g in groups.values())  # no lr of their own: the optimizer's


def test_export_loads_without_lightning_and_gives_the_same_logits(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = GPT.from_pretrained(tmp_path)
    idx = torch.randint(0, 1000, (2, 16))
    assert torch.equal(model(idx), loaded(idx))
    assert loaded.lm_head.weight is loaded.token_embedding.weight


def test_sampling_follows_its_seed_and_temperature_and_greedy_is_the_argmax(model):
    start = torch.zeros(1, 1, dtype=torch.long)

    def sample(seed: int, temperature: float = 1.0, top_k: int | None = None) -> list[int]:
        return model.generate(start, 20, temperature, top_k, torch.Generator().manual_seed(seed))[0].tolist()

    greedy = model.generate(start, 20, 0.0)[0].tolist()
    assert sample(1) == sample(1) and len(sample(1)) == 21  # the seed decides
    assert len({tuple(sample(seed)) for seed in range(4)}) == 4  # another seed, another text
    assert all(sample(seed) != greedy for seed in range(4))  # temperature 1 is not the argmax
    assert all(sample(seed, temperature=1e-4) == greedy for seed in range(4))  # near 0 it is
    assert all(sample(seed, top_k=1) == greedy for seed in range(4))  # as is keeping one candidate
    logits = model(torch.tensor([greedy[:-1]]))[0]
    assert greedy[1:] == logits.argmax(-1).tolist()  # each greedy token is the likeliest after its prefix


def test_learning_rate_warms_up_decays_to_min_and_stays():
    p = TrainParams(lr=1.0, min_lr=0.1, warmup_steps=10, decay_steps=110)
    factors = [lr_factor(step, p) for step in range(200)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11)
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.55)
    assert factors[110] == factors[199] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


VARIANTS = {
    "gpt2": {},
    "modern": {"arch": "modern", "position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True},
    "modern-relu2-untied": {
        "arch": "modern",
        "position": "rope",
        "norm": "rmsnorm",
        "mlp": "relu2",
        "tie_embeddings": False,
    },
    "modern-learned-layernorm": {"arch": "modern", "mlp": "swiglu"},
}


def variant(name: str) -> GPT:
    torch.manual_seed(0)
    return GPT(dataclasses.replace(CONFIG, **VARIANTS[name])).eval()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_is_causal_and_compiles_whole_with_the_same_outputs_and_gradients(name):
    model = variant(name)
    idx = torch.randint(0, CONFIG.vocab_size, (2, 20))
    changed = idx.clone()
    changed[:, 12:] = torch.randint(0, CONFIG.vocab_size, (2, 8))
    eager = model(idx)
    assert torch.equal(eager[:, :12], model(changed)[:, :12])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # one graph: no breaks in any variant
    assert torch.allclose(compiled(idx), eager, atol=1e-5)
    compiled(idx).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_rope_makes_attention_scores_depend_on_relative_positions_only():
    cos, sin = rope_tables(16, 16, 10000.0, "cpu")
    q, k = torch.randn(16), torch.randn(16)
    q_at = lambda t: rotate(q.expand(1, 1, 16, 16), cos, sin)[0, 0, t]  # noqa: E731 - q placed at position t
    k_at = lambda t: rotate(k.expand(1, 1, 16, 16), cos, sin)[0, 0, t]  # noqa: E731
    assert torch.allclose(q_at(5) @ k_at(3), q_at(12) @ k_at(10), atol=1e-5)  # two apart, anywhere
    assert not torch.allclose(q_at(5) @ k_at(3), q_at(5) @ k_at(1), atol=1e-3)


def test_untied_head_and_swiglu_width_and_their_flops():
    tied, untied = variant("modern"), variant("modern-relu2-untied")
    assert (
        tied.lm_head.weight is tied.token_embedding.weight
        and untied.lm_head.weight is not untied.token_embedding.weight
    )
    assert tied.blocks[0].mlp.up.out_features == 96  # 8/3 x 32 = 85.3, rounded up to 32
    assert tied.position_embedding is None
    embedding = untied.token_embedding.weight.numel()
    assert untied.n_params() == untied.n_params(non_embedding=False) - embedding  # a lookup does no matmul
    c = tied.config
    rope = 9 * 2 * c.n_embd * c.n_layer
    assert tied.flops_per_token() == 6 * tied.n_params() + 12 * c.n_layer * c.n_embd * c.block_size + rope


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    from pipeline.training.optimizers import MuonWithAdamW

    model = variant("modern")
    optimizer = MuonWithAdamW(model, TrainParams(optimizer="muon", lr=0.003, muon_lr=0.02))
    muon = {id(p) for group in optimizer.muon.param_groups for p in group["params"]}
    adamw = {id(p) for group in optimizer.adamw.param_groups for p in group["params"]}
    assert not muon & adamw and muon | adamw == {id(p) for p in model.parameters()}
    assert muon == {id(p) for p in model.blocks.parameters() if p.dim() == 2}
    assert id(model.token_embedding.weight) in adamw
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    optimizer.load_state_dict(optimizer.state_dict())  # loading replaces the inner groups: the schedule must follow
    optimizer.step()
    schedule.step()
    assert {g["lr"] for g in optimizer.muon.param_groups} == {0.01} and {
        g["lr"] for g in optimizer.adamw.param_groups
    } == {0.0015}


def test_muon_split_qkv_orthogonalises_each_attentions_q_k_and_v_apart():
    """The same model and gradients stepped with and without train.muon_split_qkv: every attention's
    qkv weight moves differently, every other weight the same."""
    from pipeline.training.optimizers import MuonWithAdamW

    models = {split: variant("modern") for split in (False, True)}
    idx = torch.randint(0, CONFIG.vocab_size, (2, 20))
    for split, model in models.items():
        model(idx).square().mean().backward()  # any loss: both models get the same gradients
        MuonWithAdamW(model, TrainParams(optimizer="muon", muon_split_qkv=split)).step()
    qkv = {name for name, p in models[True].named_parameters() if name.endswith("attn.qkv.weight")}
    assert len(qkv) == CONFIG.n_layer
    apart, whole = dict(models[True].named_parameters()), dict(models[False].named_parameters())
    assert {name for name in apart if not torch.equal(apart[name], whole[name])} == qkv


def zeroed(model: GPT) -> list[torch.Tensor]:
    """What model.zero_init starts at zero: every residual output projection, then an untied head."""
    projections = [w for b in model.blocks for w in (b.attn.proj.weight, b.mlp.down.weight)]
    return projections + ([] if model.config.tie_embeddings else [model.lm_head.weight])


def test_zero_init_starts_projections_and_an_untied_head_at_zero_and_the_first_steps_train_them():
    from pipeline.training.optimizers import MuonWithAdamW

    torch.manual_seed(0)
    model = GPT(dataclasses.replace(CONFIG, **VARIANTS["modern-relu2-untied"], zero_init=True))
    weights = zeroed(model)
    assert len(weights) == 2 * CONFIG.n_layer + 1 and not any(w.any() for w in weights)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)  # the rest as before
    assert model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.1)
    optimizer = MuonWithAdamW(model, TrainParams(optimizer="muon", lr=0.003, muon_lr=0.02))
    idx = torch.randint(0, CONFIG.vocab_size, (8, CONFIG.block_size + 1))
    losses, gradients = [], []
    for _ in range(10):
        loss = cross_entropy(model(idx[:, :-1]), idx[:, 1:])
        loss.backward()
        losses.append(loss.item())
        gradients.append([w.grad.abs().sum().item() for w in weights])
        optimizer.step()
        optimizer.zero_grad()
    assert losses[0] == pytest.approx(math.log(CONFIG.vocab_size))  # uniform first predictions
    assert gradients[0][-1] > 0 and not any(gradients[0][:-1])  # step 0: only the head learns
    assert all(g > 0 for g in gradients[1])  # then the head passes gradients into every projection
    assert not any(w.eq(0).all() for w in weights) and losses[-1] < losses[0] - 0.5


def test_zero_init_leaves_a_tied_head_its_init_and_the_export_its_keys_and_shapes(tmp_path):
    from pipeline.export.hf import llama_config, llama_weights

    torch.manual_seed(0)
    tied = GPT(dataclasses.replace(CONFIG, zero_init=True))
    assert not any(w.any() for w in zeroed(tied))
    assert tied.lm_head.weight is tied.token_embedding.weight  # the token embedding: never zeroed
    assert tied.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.1)
    pieces = {**VARIANTS["modern"], "tie_embeddings": False}
    plain, zero = (GPT(dataclasses.replace(CONFIG, **pieces, zero_init=z)) for z in (False, True))
    shapes = lambda state: {k: v.shape for k, v in state.items()}  # noqa: E731
    assert shapes(zero.state_dict()) == shapes(plain.state_dict())
    assert shapes(llama_weights(zero)) == shapes(llama_weights(plain))
    assert llama_config(zero, 2, 0, 1) == llama_config(plain, 2, 0, 1)  # a stock Qwen3 either way
    zero.save_pretrained(tmp_path)
    loaded = GPT.from_pretrained(tmp_path)
    assert loaded.config == zero.config and loaded.config.zero_init
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), zero.state_dict().values()))


FSDP_CHECK = """
import json, os, socket, sys, dataclasses, torch, torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from pipeline.model.gpt import GPT, Block
from tests.test_model import CONFIG, VARIANTS
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(s.getsockname()[1]))
dist.init_process_group("gloo", rank=0, world_size=1)
equal = {}
for name, pieces in VARIANTS.items():
    torch.manual_seed(0)
    eager = GPT(dataclasses.replace(CONFIG, **pieces))
    torch.manual_seed(0)
    wrapped = FullyShardedDataParallel(  # as Lightning's fsdp strategy wraps: one unit per block
        GPT(dataclasses.replace(CONFIG, **pieces)), auto_wrap_policy=ModuleWrapPolicy({Block}),
        device_id=torch.device("cpu"), use_orig_params=True,
    )
    idx = torch.randint(0, CONFIG.vocab_size, (2, 16))
    out = wrapped(idx)
    out.logsumexp(-1).mean().backward()
    equal[name] = bool(torch.allclose(out, eager(idx), atol=1e-6)) and all(
        p.grad is not None for p in wrapped.parameters()
    )
dist.destroy_process_group()
print(json.dumps(equal))
"""


def test_every_variant_wraps_in_fsdp_with_the_same_outputs():
    """FSDP's CPU path with gloo, one process: the wrapping, not the sharding across devices."""
    result = subprocess.run(
        [sys.executable, "-c", FSDP_CHECK], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    )
    assert json.loads(result.stdout.splitlines()[-1]) == dict.fromkeys(VARIANTS, True)
