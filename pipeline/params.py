"""params.yaml, loaded once into typed, validated, documented dataclasses.

Every field's docstring is its documentation. A wrong key or value fails at start-up with a message
that names it; values that must agree across sections are checked here, before any work starts.
"""

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

import yaml

from pipeline.errors import PipelineError

PARAMS_FILE = Path("params.yaml")
RAW_DIR = Path("data/raw")
CORPUS_DIR = Path("data/corpus")
TOKENIZER_DIR = Path("data/tokenizer")
TOKENS_DIR = Path("data/tokens")
MODEL_DIR = Path("data/model")
METRICS_DIR = Path("metrics")  # headline numbers (DVC metrics) and pictures (DVC plots)
STATS_DIR = Path("stats")  # everything else a stage counts: versioned with git, shown on demand
FORMATS = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".parquet")
"""The suffixes a corpus file may have (pipeline.documents reads each)."""
DEFAULT_SUFFIX = ".jsonl.zst"  # of a shard path without a format suffix (the Pile's)

# Flags of SentencePiece 0.2.3's trainer (TrainerSpec and NormalizerSpec), passed through verbatim.
SENTENCEPIECE_FLAGS = frozenset(
    {
        "accept_language",
        "add_dummy_prefix",
        "allow_whitespace_only_pieces",
        "bos_id",
        "bos_piece",
        "byte_fallback",
        "character_coverage",
        "control_symbols",
        "denormalization_rule_tsv",
        "differential_privacy_clipping_threshold",
        "differential_privacy_noise_level",
        "enable_differential_privacy",
        "eos_id",
        "eos_piece",
        "escape_whitespaces",
        "hard_vocab_limit",
        "input_format",
        "input_sentence_size",
        "max_sentence_length",
        "max_sentencepiece_length",
        "mining_sentence_size",
        "model_type",
        "normalization_rule_name",
        "normalization_rule_tsv",
        "num_sub_iterations",
        "num_threads",
        "pad_id",
        "pad_piece",
        "pretokenization_delimiter",
        "remove_extra_whitespaces",
        "required_chars",
        "seed_sentencepiece_size",
        "self_test_sample_size",
        "shrinking_factor",
        "shuffle_input_sentence",
        "split_by_number",
        "split_by_unicode_script",
        "split_by_whitespace",
        "split_digits",
        "train_extremely_large_corpus",
        "training_sentence_size",
        "treat_whitespace_as_suffix",
        "unk_id",
        "unk_piece",
        "unk_surface",
        "use_all_vocab",
        "user_defined_symbols",
        "vocab_size",
        "vocabulary_output_piece_score",
    }
)
# Derived from the pipeline's paths, so a params file cannot point them elsewhere.
DERIVED_FLAGS = {"input": "data/corpus/<shard>.txt", "model_prefix": "data/tokenizer/spm"}


def format_suffix(name: str) -> str | None:
    """The format suffix `name` ends with, or None."""
    return max((s for s in FORMATS if name.endswith(s)), key=len, default=None)


PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
GPT2_PIECES = {"position": "learned", "norm": "layernorm", "mlp": "gelu", "qk_norm": False, "tie_embeddings": True}
MAX_PATH_DEPTH = 8  # directories a file may sit under on the mirror (DCLM's are three deep)


@dataclass(frozen=True)
class Shard:
    """One DVC stage's worth of a corpus: a file on the mirror, or a numbered run of files.

    Only `path` must be given; the other fields' absence has a fixed meaning, so today's params and
    presets stay valid."""

    path: str
    """Path under the mirror root, ending in one of FORMATS (`sample/10BT/000_00000.parquet`);
    without one it means `.jsonl.zst` (`train/07` is train/07.jsonl.zst). With `numbers`, a pattern whose `{}`
    (or `{:08d}`) takes each number: `train/chunk1/example_train_{}.jsonl.zst`."""
    sha256: str | None = None
    """Expected sha256 of the file; a download that does not match is deleted. Only for a single file."""
    numbers: tuple[int, ...] | None = None
    """[first, stop): this key covers the files path.format(n) for n in range(first, stop), one stage for all."""
    split: Literal["train", "val", "test"] | None = None
    """What the shard is for; absent: `val` or `test` for the keys of those names, `train` for every other key."""
    group: str | None = None
    """A training shard's group in train.mixture; absent: `train`."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"sha256", "numbers", "split", "group"})

    def role(self, key: str) -> str:
        """`train`, `val` or `test`."""
        return self.split or (key if key in ("val", "test") else "train")

    def files(self) -> list[str]:
        """The files under the mirror root, in order, with their format suffix."""
        names = [self.path.format(n) for n in range(*self.numbers)] if self.numbers else [self.path]
        return [name if format_suffix(name) else name + DEFAULT_SUFFIX for name in names]


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

    def raw_files(self, key: str) -> list[Path]:
        """The key's downloaded files, in order: data/raw/KEY/<path on the mirror>."""
        return [RAW_DIR / key / name for name in self.shard(key).files()]

    def tokens_path(self, key: str) -> Path:
        return TOKENS_DIR / f"{key}.bin"

    def keys(self, role: str) -> list[str]:
        """The keys of the shards for `train`, `val` or `test`, in the order of data.shards."""
        return [key for key, shard in self.shards.items() if shard.role(key) == role]

    def shard(self, key: str) -> Shard:
        if key not in self.shards:
            raise PipelineError(f"params.yaml: data.shards has no entry {key!r} (known: {', '.join(self.shards)})")
        return self.shards[key]


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
    """The GPT's shape; pipeline.model.GPTConfig adds vocab_size, which comes from the tokenizer."""

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
    """Muon's Nesterov momentum."""
    min_lr: float = 1e-4
    """Learning rate at and after the end of the cosine decay."""
    warmup_steps: int = 100
    """Steps of linear warm-up from 0 to lr."""
    decay_steps: int = 1000
    """Step at which the cosine reaches min_lr; kept in params so a resume cannot change the schedule."""
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
    """Lightning strategy; deepspeed_stage_2 needs the `deepspeed` extra."""
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
    """SentencePiece trainer flags under their own names, passed through verbatim."""
    pretokenize: PretokenizeParams
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()

    @property
    def max_sentence_length(self) -> int:
        """Longest corpus line in bytes: SentencePiece skips longer ones, so the corpus splits them."""
        return self.tokenizer["max_sentence_length"]


def load(path: Path = PARAMS_FILE) -> Params:
    """Read and validate a params file; raise PipelineError naming the first bad key or value."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None
    params = _build(Params, raw, str(path), "")
    _check(params, str(path))
    return params


def _build(cls: type, raw: Any, file: str, where: str) -> Any:
    """Turn nested YAML into the dataclass `cls`, checking keys and types on the way down.

    Every field must be in the file: the loader is no stage's dependency in dvc.yaml, so a default
    written here must never decide an output (a changed default would not rerun the stage). Defaults
    in the dataclasses serve library callers and document a sensible value."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{file}: {where or 'top level'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise PipelineError(f"{file}: {where}{unknown[0]}: unknown key (expected one of: {', '.join(fields)})")
    values = {}
    for name in fields:
        key = f"{where}{name}"
        if name not in raw and name in getattr(cls, "OPTIONAL", ()):
            values[name] = next(f.default for f in dataclasses.fields(cls) if f.name == name)
            continue
        if name not in raw:
            raise PipelineError(
                f"{file}: {key}: missing; every field must be set in the params file "
                "(its meaning and a sensible value: pipeline/params.py)"
            )
        values[name] = _convert(hints[name], raw[name], file, key)
    return cls(**values)


def _convert(hint: Any, value: Any, file: str, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, file, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, file, key)
    if origin is Literal:
        if value not in args:
            raise PipelineError(f"{file}: {key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise PipelineError(f"{file}: {key}: expected a list, got {value!r}")
        return tuple(_convert(args[0], item, file, f"{key}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise PipelineError(f"{file}: {key}: expected a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, file, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise PipelineError(f"{file}: {key}: expected {hint.__name__}, got {value!r}")
    return value


def _check(p: Params, file: str) -> None:
    """Cross-field rules: values that must agree, and names that must stay inside data/."""
    fail = lambda key, msg: PipelineError(f"{file}: {key}: {msg}")  # noqa: E731
    if not p.data.source:
        raise fail("data.source", "empty; give a directory, file:// or http(s):// mirror root")
    if "://" in p.data.source and not p.data.source.startswith(("file://", "http://", "https://")):
        raise fail("data.source", f"{p.data.source!r}: only file://, http:// and https:// are supported")
    if not p.data.shards:
        raise fail("data.shards", "empty; list at least one file")
    for key, shard in p.data.shards.items():
        if not PLAIN_NAME.match(key):
            raise fail(f"data.shards.{key}", "a key must be a plain name (letters, digits, _ . -)")
        _check_shard(shard, f"data.shards.{key}", fail)
    for key in ("text_field",) + (("group_field",) if p.data.group_field is not None else ()):
        dotted = getattr(p.data, key)
        if not dotted or any(not part for part in dotted.split(".")):
            raise fail(f"data.{key}", f"{dotted!r} is not a dotted field path such as text or meta.pile_set_name")
    for name in ("retries", "backoff_s", "timeout_s"):
        if getattr(p.download, name) < 0 or (name == "timeout_s" and p.download.timeout_s == 0):
            raise fail(f"download.{name}", "must be positive")
    if not p.corpus.shards:
        raise fail("corpus.shards", "empty; name at least one train shard")
    for i, key in enumerate(p.corpus.shards):
        if key not in p.data.keys("train"):
            raise fail(f"corpus.shards[{i}]", f"{key!r} is not a train shard in data.shards")
    if len(set(p.corpus.shards)) != len(p.corpus.shards):
        raise fail("corpus.shards", "lists a shard twice")
    if p.corpus.max_lines < len(p.corpus.shards):
        raise fail("corpus.max_lines", "must be at least one line per shard")
    _check_tokenizer(p, fail)
    if p.pretokenize.workers < 0:
        raise fail("pretokenize.workers", "must be 0 (every usable core) or more")
    if p.pretokenize.batch_bytes < 1:
        raise fail("pretokenize.batch_bytes", "must be positive")
    _check_training(p, fail)


def _check_shard(shard: Shard, where: str, fail) -> None:
    if shard.numbers is not None:
        if len(shard.numbers) != 2 or not 0 <= shard.numbers[0] < shard.numbers[1]:
            raise fail(f"{where}.numbers", f"{list(shard.numbers)} is not [first, stop) with 0 <= first < stop")
        if shard.sha256 is not None:
            raise fail(f"{where}.sha256", "checks one file; a shard of numbered files has none (null)")
        try:
            names = {shard.path.format(n) for n in shard.numbers}
        except (ValueError, IndexError, KeyError):
            names = set()
        if len(names) != 2:
            raise fail(f"{where}.path", f"{shard.path!r} has no {{}} (or {{:08d}}) for the numbers to fill")
    elif "{" in shard.path or "}" in shard.path:
        raise fail(f"{where}.path", f"{shard.path!r} is a pattern: give the numbers it takes ([first, stop))")
    for name in shard.files()[:1] + shard.files()[-1:]:
        parts = PurePosixPath(name).parts
        if not parts or any(not PLAIN_NAME.match(part) for part in parts) or len(parts) > MAX_PATH_DEPTH:
            raise fail(f"{where}.path", f"{name!r} is not a plain relative path such as train/07 or val")
    if shard.sha256 is not None and not SHA256_HEX.match(shard.sha256):
        raise fail(f"{where}.sha256", "expected 64 lower-case hex digits")
    if shard.group is not None and not PLAIN_NAME.match(shard.group):
        raise fail(f"{where}.group", f"{shard.group!r}: a group must be a plain name (letters, digits, _ . -)")


def _check_training(p: Params, fail) -> None:
    m, t = p.model, p.train
    for name in ("block_size", "n_layer", "n_head", "n_embd", "vocab_multiple"):
        if getattr(m, name) < 1:
            raise fail(f"model.{name}", "must be at least 1")
    if m.n_embd % m.n_head:
        raise fail("model.n_embd", f"{m.n_embd} is not a multiple of model.n_head ({m.n_head})")
    if not 0 <= m.dropout < 1:
        raise fail("model.dropout", "must be in [0, 1)")
    if m.arch == "gpt2":
        for name, value in GPT2_PIECES.items():
            if getattr(m, name) != value:
                raise fail(
                    f"model.{name}",
                    f"{getattr(m, name)!r} is not GPT-2's ({value!r}); set model.arch: modern to change it",
                )
    elif m.bias:
        raise fail("model.bias", "the modern arch has no biases; set it to false")
    if m.position == "rope" and (m.n_embd // m.n_head) % 2:
        raise fail("model.n_head", f"RoPE turns pairs of a head's {m.n_embd // m.n_head} dimensions: make it even")
    if m.rope_theta <= 0:
        raise fail("model.rope_theta", "must be positive")
    for name in (
        "batch_size",
        "grad_accum",
        "max_steps",
        "val_check_interval",
        "val_windows",
        "checkpoint_every",
        "log_every",
        "num_nodes",
    ):
        if getattr(t, name) < 1:
            raise fail(f"train.{name}", "must be at least 1")
    if t.devices == 0 or t.devices < -1:
        raise fail("train.devices", "must be a positive count, or -1 for every visible device")
    if not 0 <= t.min_lr <= t.lr:
        raise fail("train.min_lr", f"must be between 0 and train.lr ({t.lr})")
    if not 0 <= t.warmup_steps <= t.decay_steps:
        raise fail("train.warmup_steps", f"must be between 0 and train.decay_steps ({t.decay_steps})")
    if t.num_workers < 0 or t.num_threads < 0:
        raise fail("train.num_workers", "must not be negative")
    if t.optimizer == "muon" and t.strategy in ("fsdp", "deepspeed_stage_2"):
        raise fail(
            "train.optimizer",
            f"muon orthogonalises whole matrices, and train.strategy {t.strategy} shards them; use ddp",
        )
    if not 0 <= t.muon_momentum < 1:
        raise fail("train.muon_momentum", "must be in [0, 1)")
    if t.mixture is not None:
        groups = {p.data.shard(key).group or "train" for key in p.data.keys("train")}
        for name, weight in t.mixture.items():
            if name not in groups:
                raise fail(
                    f"train.mixture.{name}",
                    f"no training shard has group {name!r} (groups: {', '.join(sorted(groups))})",
                )
            if not 0 < weight < float("inf"):
                raise fail(f"train.mixture.{name}", f"{weight} is not a positive weight")
        if groups - set(t.mixture):
            raise fail("train.mixture", f"gives no weight to group {sorted(groups - set(t.mixture))[0]!r}")
    if not p.data.keys("train"):
        raise fail("data.shards", "has no train shard (every key but val and test, unless its split says otherwise)")
    if "val" not in p.data.keys("val"):
        raise fail("data.shards", "has no `val` entry with split val: training validates on it")
    for i, key in enumerate(p.evaluate.splits):
        if key not in p.data.shards:
            raise fail(f"evaluate.splits[{i}]", f"{key!r} is not a key of data.shards")
        if key in p.data.keys("train"):
            raise fail(
                f"evaluate.splits[{i}]",
                f"{key!r} is a training shard: scores on it would flatter the model; give it split: test",
            )
    for key, shard in p.data.shards.items():
        if shard.group is not None and shard.role(key) != "train":
            raise fail(
                f"data.shards.{key}.group", f"only training shards have a group; {key!r} is for {shard.role(key)}"
            )
    if p.evaluate.batch_size < 1:
        raise fail("evaluate.batch_size", "must be at least 1")


def _check_tokenizer(p: Params, fail) -> None:
    flags = p.tokenizer
    for name in flags:
        if name in DERIVED_FLAGS:
            raise fail(f"tokenizer.{name}", f"set by the pipeline ({DERIVED_FLAGS[name]}); remove it")
        if name not in SENTENCEPIECE_FLAGS:
            raise fail(f"tokenizer.{name}", "not a SentencePiece 0.2.3 trainer flag")
    vocab_size = flags.get("vocab_size")
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 2:
        raise fail("tokenizer.vocab_size", f"expected an integer of at least 2, got {vocab_size!r}")
    limit = {"uint16": 1 << 16, "uint32": 1 << 32}[p.pretokenize.dtype]
    if vocab_size > limit:
        raise fail(
            "tokenizer.vocab_size",
            f"{vocab_size} pieces do not fit {p.pretokenize.dtype} (at most {limit}); set pretokenize.dtype: uint32",
        )
    sentence_size = flags.get("input_sentence_size", 0)
    if sentence_size and sentence_size < p.corpus.max_lines:
        raise fail(
            "tokenizer.input_sentence_size",
            f"{sentence_size} is below corpus.max_lines "
            f"({p.corpus.max_lines}): SentencePiece would sample, and its sampling is not "
            "reproducible; lower corpus.max_lines or raise input_sentence_size (0 = all)",
        )
    max_length = flags.get("max_sentence_length")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 16:
        raise fail(
            "tokenizer.max_sentence_length",
            f"expected an integer of at least 16 bytes, got {max_length!r} "
            "(required: the corpus stage splits longer lines, which SentencePiece would skip)",
        )
