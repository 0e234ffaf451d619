"""Cross-field rules of params: values that must agree, and names that must stay inside data/."""

import re
from pathlib import PurePosixPath

from pipeline.config import formats, layout
from pipeline.config.schema import Params, Shard
from pipeline.config.spm_flags import DERIVED_FLAGS, EXACT_TRAINER_REFUSES, SENTENCEPIECE_FLAGS, TRAINERS
from pipeline.core.errors import PipelineError

PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
GPT2_PIECES = {"position": "learned", "norm": "layernorm", "mlp": "gelu", "qk_norm": False, "tie_embeddings": True}
MAX_PATH_DEPTH = 8  # directories a file may sit under on the mirror (DCLM's are three deep)


def check(p: Params, file: str) -> None:
    """Cross-field rules: values that must agree, and names that must stay inside data/."""
    fail = lambda key, msg: PipelineError(f"{file}: {key}: {msg}")  # noqa: E731
    _check_source(p.data.source, "data.source", fail)
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
        if key not in layout.keys(p.data, "train"):
            raise fail(f"corpus.shards[{i}]", f"{key!r} is not a train shard in data.shards")
        if formats.is_megatron(p.data.shards[key]):
            raise fail(f"corpus.shards[{i}]", f"{key!r} is a Megatron pair: token ids, no text to train a tokenizer on")
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


def _check_source(source: str, where: str, fail) -> None:
    if not source:
        raise fail(where, "empty; give a directory, file:// or http(s):// mirror root")
    if "://" in source and not source.startswith(("file://", "http://", "https://")):
        raise fail(where, f"{source!r}: only file://, http:// and https:// are supported")


def _check_shard(shard: Shard, where: str, fail) -> None:
    if shard.source is not None:
        _check_source(shard.source, f"{where}.source", fail)
    if formats.is_megatron(shard):
        if shard.numbers is not None:
            raise fail(f"{where}.numbers", "a Megatron pair is one .bin and its .idx: give each pair its own key")
        if shard.tokenizer is None:
            raise fail(
                f"{where}.tokenizer",
                "missing: a Megatron pair needs the tokenizer it was made with (a SentencePiece .model or a "
                "tokenizer.json under the same root), whose vocabulary is checked against the pipeline's",
            )
    elif shard.tokenizer is not None:
        raise fail(f"{where}.tokenizer", f"only a Megatron pair (a path ending in {formats.MEGATRON_SUFFIX}) takes one")
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
    for name in formats.shard_files(shard)[:1] + formats.shard_files(shard)[-1:]:
        parts = PurePosixPath(name).parts
        if not parts or any(not PLAIN_NAME.match(part) for part in parts) or len(parts) > MAX_PATH_DEPTH:
            raise fail(f"{where}.path", f"{name!r} is not a plain relative path such as train/07 or val")
    if shard.sha256 is not None and not SHA256_HEX.match(shard.sha256):
        raise fail(f"{where}.sha256", "expected 64 lower-case hex digits")
    if shard.group is not None and not PLAIN_NAME.match(shard.group):
        raise fail(f"{where}.group", f"{shard.group!r}: a group must be a plain name (letters, digits, _ . -)")


def _check_training(p: Params, fail) -> None:
    _check_model(p.model, fail)
    _check_train(p.train, fail)
    if p.model.tie_embeddings and p.train.head_lr is not None:
        raise fail("train.head_lr", "the head is the token embedding (model.tie_embeddings): set train.embedding_lr")
    _check_splits(p, fail)


def _check_model(m, fail) -> None:
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


def _check_train(t, fail) -> None:
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
    if t.schedule == "cosine" and not 0 <= t.warmup_steps <= t.decay_steps:
        raise fail("train.warmup_steps", f"must be between 0 and train.decay_steps ({t.decay_steps})")
    if not 0 < t.cooldown <= 1:
        raise fail("train.cooldown", f"{t.cooldown} is not a share of max_steps in (0, 1]")
    stable_until = t.max_steps - round(t.cooldown * t.max_steps)
    if t.schedule == "wsd" and not 0 <= t.warmup_steps <= stable_until:
        raise fail(
            "train.warmup_steps",
            f"must be between 0 and the start of the cooldown (step {stable_until:,}: train.max_steps "
            f"{t.max_steps:,} less its {t.cooldown} cooldown)",
        )
    if t.stop_at_val_bpb is not None and not t.stop_at_val_bpb > 0:
        raise fail("train.stop_at_val_bpb", f"{t.stop_at_val_bpb} is no target: give a positive bits per byte, or null")
    if t.num_workers < 0 or t.num_threads < 0:
        raise fail("train.num_workers", "must not be negative")
    if t.optimizer == "muon" and t.strategy in ("fsdp", "deepspeed_stage_2"):
        raise fail(
            "train.optimizer",
            f"muon orthogonalises whole matrices, and train.strategy {t.strategy} shards them; use ddp",
        )
    for name in ("muon_momentum", "muon_momentum_start"):
        if not 0 <= getattr(t, name) < 1:
            raise fail(f"train.{name}", "must be in [0, 1)")
    if t.muon_momentum_warmup_steps < 0:
        raise fail("train.muon_momentum_warmup_steps", "must not be negative")
    for name in ("embedding_lr", "head_lr"):
        if getattr(t, name) is not None and not getattr(t, name) > 0:
            raise fail(
                f"train.{name}", f"{getattr(t, name)} is no learning rate: give a positive one, or null (train.lr)"
            )


def _check_splits(p: Params, fail) -> None:
    """Which shards train, validate and test, and the mixture's groups."""
    t = p.train
    if t.mixture is not None:
        groups = {layout.shard(p.data, key).group or "train" for key in layout.keys(p.data, "train")}
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
    if not layout.keys(p.data, "train"):
        raise fail("data.shards", "has no train shard (every key but val and test, unless its split says otherwise)")
    if "val" not in layout.keys(p.data, "val"):
        raise fail("data.shards", "has no `val` entry with split val: training validates on it")
    for i, key in enumerate(p.evaluate.splits):
        if key not in p.data.shards:
            raise fail(f"evaluate.splits[{i}]", f"{key!r} is not a key of data.shards")
        if key in layout.keys(p.data, "train"):
            raise fail(
                f"evaluate.splits[{i}]",
                f"{key!r} is a training shard: scores on it would flatter the model; give it split: test",
            )
    for key, shard in p.data.shards.items():
        if shard.group is not None and layout.role(key, shard) != "train":
            raise fail(
                f"data.shards.{key}.group",
                f"only training shards have a group; {key!r} is for {layout.role(key, shard)}",
            )
    if p.evaluate.batch_size < 1:
        raise fail("evaluate.batch_size", "must be at least 1")


def _check_tokenizer(p: Params, fail) -> None:
    flags = p.tokenizer
    if p.tokenizer_trainer not in TRAINERS:
        raise fail("tokenizer.trainer", f"expected one of {', '.join(TRAINERS)}, got {p.tokenizer_trainer!r}")
    for name in p.sentencepiece_flags:
        if name in DERIVED_FLAGS:
            raise fail(f"tokenizer.{name}", f"set by the pipeline ({DERIVED_FLAGS[name]}); remove it")
        if name not in SENTENCEPIECE_FLAGS:
            raise fail(f"tokenizer.{name}", "not a SentencePiece 0.2.3 trainer flag")
        if name in EXACT_TRAINER_REFUSES and p.tokenizer_trainer == "exact":
            raise fail(
                f"tokenizer.{name}",
                f"the exact trainer cannot honour it ({EXACT_TRAINER_REFUSES[name]}); set tokenizer.trainer: spm",
            )
    if p.tokenizer_trainer == "exact" and str(flags.get("model_type", "unigram")).lower() != "bpe":
        raise fail(
            "tokenizer.model_type",
            f"the exact trainer reproduces bpe only, got {flags.get('model_type', 'unigram (the default)')!r}; "
            "set model_type: bpe, or tokenizer.trainer: spm",
        )
    vocab_size = flags.get("vocab_size")
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 2:
        raise fail("tokenizer.vocab_size", f"expected an integer of at least 2, got {vocab_size!r}")
    limit = {"uint16": 1 << 16, "uint32": 1 << 31}[p.pretokenize.dtype]
    if vocab_size > limit:
        raise fail(
            "tokenizer.vocab_size",
            f"{vocab_size} pieces do not fit {p.pretokenize.dtype} (at most {limit}"
            + (
                "); set pretokenize.dtype: uint32"
                if p.pretokenize.dtype == "uint16"
                else ": Megatron's index reads uint32 arrays as int32, which holds ids below 2**31)"
            ),
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
