"""params.yaml's sections as typed dataclasses; every field's docstring is its documentation.

Declarations only: every field must be in the params file (pipeline.config.load refuses a missing
one), so no default written here decides an output."""

from dataclasses import dataclass
from typing import Any, ClassVar, Literal


@dataclass(frozen=True)
class Shard:
    """One DVC stage's worth of a corpus: a file on the mirror, or a numbered run of files.

    Only `path` must be given; the other fields' absence has a fixed meaning, so today's params and
    presets stay valid."""

    path: str
    """Path under the mirror root, ending in one of FORMATS (`sample/10BT/000_00000.parquet`);
    without one it means `.jsonl.zst` (`train/07` is train/07.jsonl.zst). With `numbers`, a pattern whose `{}`
    (or `{:08d}`) takes each number: `train/chunk1/example_train_{}.jsonl.zst`. Ending in `.bin`: an
    existing Megatron pair, PREFIX.bin and PREFIX.idx, whose ids become this key's array as they are
    (docs/interop.md); it needs `tokenizer`."""
    sha256: str | None = None
    """Expected sha256 of the file (of the .bin of a Megatron pair); a download that does not match is
    deleted. Only for a single file."""
    numbers: tuple[int, ...] | None = None
    """[first, stop): this key covers the files path.format(n) for n in range(first, stop), one stage for all."""
    split: Literal["train", "val", "test"] | None = None
    """What the shard is for; absent: `val` or `test` for the keys of those names, `train` for every other key."""
    group: str | None = None
    """A training shard's group in train.mixture; absent: `train`."""
    tokenizer: str | None = None
    """For a Megatron pair only: the tokenizer model it was made with (a SentencePiece .model or a
    tokenizer.json), under the same root. Its vocabulary must be the pipeline's tokenizer's, id for id."""
    source: str | None = None
    """This shard's mirror root, instead of data.source (the same forms): where a team keeps its own files."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"sha256", "numbers", "split", "group", "tokenizer", "source"})


@dataclass(frozen=True)
class DataParams:
    source: str
    """Mirror root: a local directory, file://..., or http(s)://... holding the files of data.shards."""
    shards: dict[str, Shard]
    """Stage key (download@KEY, pretokenize@KEY) -> its file(s); the key names the outputs."""
    text_field: str = "text"
    """Dotted path of a document's text in a JSON record or parquet (struct) column."""
    group_field: str | None = "meta.pile_set_name"
    """Dotted path of a document's group, which evaluation reports bits per byte by; null: no groups."""
    on_bad_record: Literal["error", "skip"] = "error"
    """What a malformed record does in every stage that reads shards: stop with its file and line, or
    skip it and count it by kind in the stage's stats."""


@dataclass(frozen=True)
class DownloadParams:
    retries: int = 8
    """Attempts after a 5xx, 429, timeout or dropped connection before giving up."""
    backoff_s: float = 1.0
    """Wait before the first retry; it doubles each time, capped at 60 s (a Retry-After header wins)."""
    timeout_s: float = 60.0
    """Seconds without a byte from the server before the connection counts as dropped."""
    auth_token_env: str = "HF_TOKEN"
    """Environment variable whose value, when set, is sent as `Authorization: Bearer ...` (never logged)."""


@dataclass(frozen=True)
class CorpusParams:
    shards: tuple[str, ...]
    """Train shard keys whose text trains the tokenizer (the original setup used 11 and 22)."""
    max_lines: int = 1_000_000
    """Most lines in the tokenizer corpus, over all shards; SentencePiece then loads them all."""
    seed: int = 1234
    """Seed of the line sample, so the same shards and params give the same corpus."""


@dataclass(frozen=True)
class PretokenizeParams:
    workers: int = 0
    """Encoder processes; one shard's documents are spread over them in order. 0: every usable core."""
    dtype: Literal["uint16", "uint32"] = "uint16"
    """Token dtype on disk; uint16 holds vocabularies up to 65,536 pieces."""
    batch_bytes: int = 1 << 20
    """Text per batch sent to a worker: large enough to amortise the hand-off, small for memory."""


@dataclass(frozen=True)
class ModelParams:
    """The GPT's shape; pipeline.model.gpt.GPTConfig adds vocab_size, which comes from the tokenizer."""

    block_size: int = 256
    """Context length in tokens."""
    n_layer: int = 4
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads per block; n_embd must divide by it."""
    n_embd: int = 128
    """Width of the residual stream."""
    dropout: float = 0.0
    """Dropout on attention weights and residual branches; 0 for pretraining, as in nanoGPT."""
    bias: bool = False
    """Biases in Linear and LayerNorm layers; without is slightly better and faster."""
    vocab_multiple: int = 64
    """Pad the embedding to a multiple of this so matmuls hit tensor-core-friendly sizes."""
    arch: Literal["gpt2", "modern"] = "gpt2"
    """gpt2: GPT-2 exactly (the pieces below at their GPT-2 values, checked); modern: the pieces are free
    to choose, one at a time, and there are no biases."""
    position: Literal["learned", "rope"] = "learned"
    """Where a token is: a learned table added to the input (GPT-2), or rotary embeddings turning queries
    and keys in every layer (RoPE: relative positions)."""
    rope_theta: float = 10000.0
    """RoPE's base: the slowest of its rotations has this period in tokens (times 2 pi)."""
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    """LayerNorm (GPT-2) or RMSNorm (no mean subtraction, no shift: cheaper, as good)."""
    mlp: Literal["gelu", "swiglu", "relu2"] = "gelu"
    """gelu: 4x wide, GELU (GPT-2); swiglu: gated SiLU, 8/3x wide (rounded up to 32) for the same
    parameters; relu2: 4x wide, ReLU squared (modded-nanogpt)."""
    qk_norm: bool = False
    """RMSNorm on each head's queries and keys before attention: bounded attention logits, steadier
    at high learning rates."""
    tie_embeddings: bool = True
    """One matrix reads and writes tokens (GPT-2); False gives the output head its own."""
    zero_init: bool = False
    """Start the residual output projections (attention's and the MLP's) and an untied head at zero: each
    block starts as the identity, the first predictions uniform. A tied head keeps its normal init."""


@dataclass(frozen=True)
class WandbParams:
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline writes ./wandb/offline-run-* for a later `wandb sync`; online needs WANDB_API_KEY."""
    project: str = "pile-gpt"
    """W&B project name."""
    entity: str | None = None
    """W&B team or user; None uses the key's default."""


@dataclass(frozen=True)
class TrainParams:
    seed: int = 1337
    """Seeds the weights and the order of training windows."""
    mixture: dict[str, float] | None = None
    """Weight of each group of training shards (a shard's `group`, default `train`), e.g. {web: 0.7,
    code: 0.3}; every stretch of samples holds each group in its share. None: every training window
    alike, so each shard in proportion to its tokens."""
    batch_size: int = 16
    """Sequences per device per micro-step."""
    grad_accum: int = 1
    """Micro-steps per optimizer step; one step sees batch_size x grad_accum x devices sequences."""
    max_steps: int = 1000
    """Optimizer steps to train for; raising it later resumes and continues the same run."""
    optimizer: Literal["adamw", "muon"] = "adamw"
    """adamw: AdamW on every weight. muon: Muon (momentum, then each update orthogonalised by
    Newton-Schulz) on the blocks' 2-D matrices, AdamW on embeddings, head, gains and biases."""
    lr: float = 1e-3
    """Peak learning rate of AdamW (with muon: AdamW's share), reached at the end of warm-up."""
    muon_lr: float = 0.02
    """Peak learning rate of Muon's matrices (train.optimizer: muon); the same schedule as lr."""
    muon_momentum: float = 0.95
    """Muon's Nesterov momentum (after its warm-up)."""
    muon_split_qkv: bool = False
    """Muon orthogonalises each attention's Q, K and V weights apart (three n_embd x n_embd blocks), not
    as one stacked 3 * n_embd x n_embd matrix (train.optimizer: muon)."""
    muon_momentum_start: float = 0.85
    """Muon's momentum at step 0, rising linearly to muon_momentum over muon_momentum_warmup_steps."""
    muon_momentum_warmup_steps: int = 0
    """Steps of Muon's momentum warm-up; 0: muon_momentum from the first step."""
    embedding_lr: float | None = None
    """Peak learning rate (AdamW) of the token and position embeddings, and of a tied head; None: lr."""
    head_lr: float | None = None
    """Peak learning rate (AdamW) of an untied output head; None: lr. A tied head takes embedding_lr."""
    min_lr: float = 1e-4
    """Learning rate at the end of the decay (cosine: at and after decay_steps; wsd: at max_steps)."""
    schedule: Literal["cosine", "wsd"] = "cosine"
    """cosine: warm-up, then a cosine to min_lr at decay_steps. wsd (warmup-stable-decay): warm-up, the
    peak held, a linear cooldown to min_lr over the last `cooldown` share of max_steps; a run extends
    from, or cools down at, any checkpoint before its cooldown (docs/training.md)."""
    warmup_steps: int = 100
    """Steps of linear warm-up from 0 to lr."""
    decay_steps: int = 1000
    """cosine: the step at which it reaches min_lr; kept in params so a resume cannot change the schedule."""
    cooldown: float = 0.2
    """wsd: the share of max_steps, at its end, over which the learning rate falls to min_lr."""
    stop_at_val_bpb: float | None = None
    """End the run at the first validation whose bits per byte (the validation windows' loss over the
    val array's bytes per token) is at or below this, exporting that step's weights. None: to max_steps."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices; biases and LayerNorm gains get none."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 turns clipping off."""
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    """32-true on CPU (bf16 is ~9x slower there); bf16-mixed on GPUs that have it."""
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    """Lightning accelerator."""
    devices: int = 1
    """Devices per node; -1 uses every visible one."""
    num_nodes: int = 1
    """Machines; launch with torchrun or SLURM's srun (README)."""
    strategy: Literal["auto", "ddp", "fsdp", "deepspeed_stage_2"] = "auto"
    """Lightning strategy; fsdp shards one transformer block a unit; deepspeed_stage_2 needs the `deepspeed` extra."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass instead of keeping them: about a third
    more compute for a fraction of the activation memory (larger models or batches on the same GPUs)."""
    compile: bool = False
    """torch.compile the model in place (checkpoint keys stay loadable)."""
    val_check_interval: int = 100
    """Validate every this many optimizer steps."""
    val_windows: int = 64
    """Validation windows read from val.bin, the same fixed set every time."""
    checkpoint_every: int = 100
    """Write the `last` checkpoint every this many steps (and keep the best by validation loss)."""
    log_every: int = 10
    """Log loss, learning rate, tokens/s and MFU every this many steps."""
    resume: Literal["auto", "never"] = "auto"
    """auto: continue from data/model/checkpoints/last.ckpt when it belongs to these params."""
    num_threads: int = 0
    """torch CPU threads; 0 leaves torch's default."""
    num_workers: int = 1
    """DataLoader worker processes."""
    record_windows: bool = False
    """Write which windows every micro-batch trained, by step and rank, to data/model/checkpoints/windows/
    (to trace a loss spike to its documents, or audit the data order across resumes)."""
    peak_flops: float | None = None
    """Peak FLOP/s of one device for MFU; None looks the GPU up in a table (no MFU on CPU)."""
    wandb: WandbParams = WandbParams()
    """Weights & Biases logging."""


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 16
    """Windows of block_size tokens per forward pass."""
    splits: tuple[str, ...] = ("val", "test")
    """Shard keys evaluated in full (loss, perplexity, bits per byte, per group)."""


@dataclass(frozen=True)
class Params:
    data: DataParams
    download: DownloadParams
    corpus: CorpusParams
    tokenizer: dict[str, Any]
    """`trainer` (exact or spm), then SentencePiece trainer flags under their own names, verbatim."""
    pretokenize: PretokenizeParams
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()

    @property
    def tokenizer_trainer(self) -> str:
        """`exact`: the exact BPE trainer over word-count tables; `spm`: SentencePiece's spm_train."""
        return self.tokenizer.get("trainer", "exact")

    @property
    def sentencepiece_flags(self) -> dict[str, Any]:
        """The tokenizer's flags as spm_train takes them (everything under `tokenizer:` but `trainer`)."""
        return {name: value for name, value in self.tokenizer.items() if name != "trainer"}

    @property
    def max_sentence_length(self) -> int:
        """Longest corpus line in bytes: SentencePiece skips longer ones, so the corpus splits them."""
        return self.tokenizer["max_sentence_length"]
