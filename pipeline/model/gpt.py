"""A decoder-only GPT, in the spirit of nanoGPT's model.py, with the shapes written in einops.

Two families (model.arch). `gpt2`: pre-LayerNorm blocks, a GELU MLP, learned positions, input and
output embeddings tied, GPT-2 initialisation with residual projections scaled by 1/sqrt(2 * n_layer).
`modern`: the same skeleton with each piece chosen in params, one at a time: rotary position
embeddings (computed once per forward, applied to queries and keys in every layer), RMSNorm,
a SwiGLU or squared-ReLU MLP, RMSNorm on queries and keys, an untied head, no biases. Attention
goes through scaled_dot_product_attention (flash kernels on GPU) either way. Knows nothing of Lightning.
"""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from pipeline.config.schema import ModelParams
from pipeline.core import files
from pipeline.model.loss import CHUNK_ROWS, linear_cross_entropy


@dataclass(frozen=True, kw_only=True)
class GPTConfig(ModelParams):
    """The model's shape from params, plus the vocabulary size read from the tokenizer."""

    vocab_size: int
    """Pieces in the tokenizer; never typed in params."""

    @property
    def padded_vocab_size(self) -> int:
        return math.ceil(self.vocab_size / self.vocab_multiple) * self.vocab_multiple


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token loss in nats, computed in fp32 whatever the logits' dtype: logits (b, t, v), targets (b, t)."""
    return F.cross_entropy(
        rearrange(logits, "b t v -> (b t) v").float(), rearrange(targets, "b t -> (b t)"), reduction=reduction
    )


RMS_EPS = 1e-6  # RMSNorm's epsilon, here and in the exported Llama/Qwen3 config


def norm(config: GPTConfig, dim: int) -> nn.Module:
    return nn.LayerNorm(dim, bias=config.bias) if config.norm == "layernorm" else nn.RMSNorm(dim, eps=RMS_EPS)


def rope_tables(t: int, head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (t, head_dim) of RoPE's angles: position x frequency, each frequency on two dimensions
    half a head apart (the `rotate_half` layout that Llama and Qwen3 use, so weights export as they are)."""
    frequencies = theta ** -(torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(t, device=device, dtype=torch.float32), frequencies)  # (t, head_dim / 2)
    angles = torch.cat((angles, angles), dim=-1)  # (t, head_dim)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn each pair (x_i, x_{i + d/2}) of x (b, h, t, d) by its position's angle."""
    first, second = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat((-second, first), dim=-1) * sin.to(x.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj.residual = True
        self.resid_dropout = nn.Dropout(config.dropout)
        head_dim = config.n_embd // config.n_head
        self.q_norm = nn.RMSNorm(head_dim, eps=RMS_EPS) if config.qk_norm else None
        self.k_norm = nn.RMSNorm(head_dim, eps=RMS_EPS) if config.qk_norm else None

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.n_head)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # (b, h, t, d), each head's vectors to unit RMS
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # (b, h, t, d)
        y = rearrange(y, "b h t d -> b t (h d)")
        return self.resid_dropout(self.proj(y))


def swiglu_width(n_embd: int) -> int:
    """SwiGLU's hidden width: 2/3 of 4 x n_embd, so its three matrices hold what GELU's two do, rounded up to 32."""
    return -(-8 * n_embd // 3 // 32) * 32


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.kind = config.mlp
        hidden = swiglu_width(config.n_embd) if self.kind == "swiglu" else 4 * config.n_embd
        self.up = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.gate = nn.Linear(config.n_embd, hidden, bias=config.bias) if self.kind == "swiglu" else None
        self.down = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.down.residual = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "gelu":
            hidden = F.gelu(self.up(x))
        elif self.kind == "relu2":
            hidden = F.relu(self.up(x)).square()
        else:
            hidden = F.silu(self.gate(x)) * self.up(x)  # (b, t, hidden)
        return self.dropout(self.down(hidden))  # (b, t, n_embd)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_attn = norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_mlp = norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x), rope)
        return x + self.mlp(self.ln_mlp(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.padded_vocab_size, config.n_embd)
        learned = config.position == "learned"
        self.position_embedding = nn.Embedding(config.block_size, config.n_embd) if learned else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_final = norm(config, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight  # tied: one matrix reads and writes tokens
        self.checkpoint_activations = False
        """Recompute each block's activations in the backward pass (training only): a setting of the
        run, not of the model, so it is no field of the config and changes no weight or key."""
        self.loss_chunk_rows = CHUNK_ROWS
        """Tokens whose logits the loss holds at once (pipeline/model/loss.py); like the above, no weight."""
        self.apply(self._init_weights)
        if config.zero_init and not config.tie_embeddings:
            # a tied head is the token embedding: zeroed, every input would be the same zero vector and no
            # gradient could reach it, so only an untied head starts at zero (uniform first predictions)
            nn.init.zeros_(self.lm_head.weight)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            residual = getattr(module, "residual", False)
            if residual and self.config.zero_init:
                nn.init.zeros_(module.weight)  # each block starts as the identity; the head's gradient wakes it
            else:
                # GPT-2: residual projections scaled down so the residual stream's variance stays put with depth
                std = 0.02 / math.sqrt(2 * self.config.n_layer) if residual else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (b, t) -> the final normalised hidden states (b, t, n_embd) that the head reads."""
        b, t = idx.shape
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens exceeds block_size {self.config.block_size}")
        x = self.token_embedding(idx)  # (b, t, n_embd)
        rope = None
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(t, device=idx.device))
        else:
            head_dim = self.config.n_embd // self.config.n_head
            rope = rope_tables(t, head_dim, self.config.rope_theta, idx.device)  # once, for every layer
        x = self.dropout(x)
        recompute = self.checkpoint_activations and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, rope, use_reentrant=False) if recompute else block(x, rope)
        return self.ln_final(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (b, t) -> logits (b, t, vocab_size); with targets (b, t), the mean next-token loss
        instead (nats, in fp32), computed a chunk of tokens at a time (loss.py): inside a compiled
        forward, and never holding the whole logits. The head's padding rows are never multiplied."""
        x = self.hidden_states(idx)
        head = self.lm_head.weight[: self.config.vocab_size]  # (vocab_size, n_embd): a view, no copy
        if targets is None:
            return F.linear(x, head)  # (b, t, vocab_size)
        return linear_cross_entropy(
            rearrange(x, "b t d -> (b t) d"), head, rearrange(targets, "b t -> (b t)"), self.loss_chunk_rows
        )

    def n_params(self, non_embedding: bool = True) -> int:
        """Parameters; by default without those that do no matmul (position table, an untied input
        embedding: a lookup), as in the usual FLOPs count."""
        n = sum(p.numel() for p in self.parameters())
        if not non_embedding:
            return n
        if self.position_embedding is not None:
            n -= self.position_embedding.weight.numel()
        if not self.config.tie_embeddings:
            n -= self.token_embedding.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward and backward): 6N plus attention, as in PaLM's appendix B,
        plus RoPE's turns of queries and keys (3 FLOPs an element, 3x for the backward pass). A gated
        MLP's third matrix is in N."""
        c = self.config
        rope = 9 * 2 * c.n_embd * c.n_layer if c.position == "rope" else 0
        return 6 * self.n_params() + 12 * c.n_layer * c.n_embd * c.block_size + rope

    def optimizer_groups(
        self, weight_decay: float, embedding_lr: float | None = None, head_lr: float | None = None
    ) -> list[dict]:
        """Matrices decay; biases, norm gains and nothing else do not. The token (and position) embedding
        and an untied head are groups of their own, at `embedding_lr` and `head_lr` where given (None:
        the optimizer's lr); a tied head is the token embedding, in `embedding`. Each group is named (for
        its lr in the logs); a group with no parameters is left out."""
        embedding = [self.token_embedding.weight] + (
            [self.position_embedding.weight] if self.position_embedding is not None else []
        )
        head = [] if self.config.tie_embeddings else [self.lm_head.weight]
        own = {id(w) for w in embedding + head}
        rest = [w for w in self.parameters() if w.requires_grad and id(w) not in own]

        def group(name: str, params: list, decay: float, lr: float | None = None) -> dict:
            return {"name": name, "params": params, "weight_decay": decay} | ({"lr": lr} if lr is not None else {})

        groups = [
            group("embedding", embedding, weight_decay, embedding_lr),
            group("head", head, weight_decay, head_lr),
            group("decay", [w for w in rest if w.dim() >= 2], weight_decay),
            group("no_decay", [w for w in rest if w.dim() < 2], 0.0),
        ]
        return [g for g in groups if g["params"]]

    def hidden_matrices(self) -> list[nn.Parameter]:
        """The 2-D weights inside the blocks (attention and MLP): what Muon orthogonalises. Embeddings,
        the head, gains and biases are not hidden matrices."""
        return [p for p in self.blocks.parameters() if p.requires_grad and p.dim() == 2]

    def qkv_matrices(self) -> list[nn.Parameter]:
        """Each attention's query, key and value weights, stacked by rows in one [3 * n_embd, n_embd]
        matrix (Muon can orthogonalise the three apart)."""
        return [block.attn.qkv.weight for block in self.blocks if block.attn.qkv.weight.requires_grad]

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append `max_new_tokens` sampled tokens to idx (b, t); temperature 0 means greedy."""
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size :]
            logits = self(context)[:, -1, :]  # (b, vocab)
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, next_id], dim=1)
        return idx

    def save_pretrained(self, directory: Path) -> None:
        """model.safetensors and config.json, written under temporary names and renamed."""
        from safetensors.torch import save_model

        with files.replacing(directory / "model.safetensors", directory / "config.json") as (weights, config):
            save_model(self, str(weights))
            files.write_json(config, asdict(self.config))

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> "GPT":
        """Load an exported model without Lightning: `GPT.from_pretrained("data/model")`."""
        from safetensors.torch import load_model

        directory = Path(directory)
        model = cls(GPTConfig(**json.loads((directory / "config.json").read_text())))
        load_model(model, str(directory / "model.safetensors"), device=device)
        return model.to(device).eval()
