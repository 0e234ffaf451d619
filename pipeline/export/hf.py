"""The trained model as a Hugging Face `transformers` model, proved equal to ours before it is written.

`data/model/hf/` loads offline with `AutoModelForCausalLM` and `AutoTokenizer`, no trust_remote_code:

- the weights as a stock class: `LlamaForCausalLM` for a modern model with RoPE, RMSNorm and SwiGLU
  (`Qwen3ForCausalLM` with QK-norm; any other modern mix is refused, naming the option), or, for arch
  gpt2, `GPT2LMHeadModel`: Linear weights transposed to GPT-2's Conv1D layout,
  zeros for the biases and LayerNorm shifts our model does without, the embedding cut from the
  padded vocabulary to the tokenizer's (so the softmax runs over real pieces only, as ours does),
  input and output embeddings tied, `activation_function: gelu` (the exact erf GELU of F.gelu);
- a tokenizer that gives SentencePiece's ids: `tokenizer.json`, a fast BPE built from the model's
  pieces (merges ordered by the merged piece's score, byte fallback, the dummy prefix and spaces as
  `▁` done by normalizers, which, unlike the usual Metaspace pre-tokenizer, also prefix text that
  starts with a space), when the model's normalisation is the identity; otherwise (nmt_nfkc and
  other rules, which `tokenizers` reproduces only approximately) a stock SentencePiece-backed class
  reading the model itself. Special pieces in text are text, as for SentencePiece
  (`split_special_tokens`), and nothing is added around a text.

Before anything is written the export is checked: logits on validation windows within LOGITS_ATOL of
ours, and the tokenizer's ids equal to `SentencePieceProcessor.encode` on every validation and test
document and on hostile strings. A fast tokenizer that misses any falls back to the exact class;
a check that still fails stops the stage.
"""

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from pipeline.config import layout
from pipeline.config.layout import MODEL_DIR, STATS_DIR
from pipeline.config.schema import Params
from pipeline.core import files, progress
from pipeline.core.errors import PipelineError
from pipeline.encode import token_files
from pipeline.model.gpt import GPT, RMS_EPS, GPTConfig, swiglu_width
from pipeline.tokenizer import pieces
from pipeline.tokenizer.pieces import SPACE

HF_DIR = MODEL_DIR / "hf"
EXPORT_STATS = STATS_DIR / "export.json"
LOGITS_ATOL = 1e-4  # fp32: the same arithmetic in another order differs by ~1e-6
CHECK_WINDOWS = 8  # validation windows of block_size tokens compared logit by logit
SENTENCEPIECE_CLASS = "BertGenerationTokenizer"  # stock, SentencePiece-backed, adds no tokens around a text
SENTENCEPIECE_FILE = "spiece.model"  # the name that class reads its model from
HOSTILE_TEXTS = [  # what spm -> tokenizers conversions get wrong: leading, repeated and odd whitespace, ...
    "",
    " ",
    "  ",
    " leading space",
    "  two leading",
    "trailing ",
    "a  b   c",
    "\ttab\tand\ttabs",
    "\n\nnew\nlines\n",
    "crlf\r\nline",
    "line\u2028separator\u2029paragraph",
    "no\u00a0break",
    "zero\u200bwidth\u200djoiner\ufeff",
    "emoji 😀👍🏽👨‍👩‍👧",
    "combining e\u0301 a\u0308",
    "mixed Ελληνικά русский 中文 العربية தமிழ் ಕನ್ನಡ",
    "literal ▁ marker ▁▁",
    "▁",
    "<|endoftext|> [PAD] [UNK] <s> </s>",
    "x" * 300,
    "word " * 200,
    "\x00\x01 control \x7f",
    "\U0010fffd private use",
]


@dataclass(frozen=True)
class ExportReport:
    architecture: str
    tokenizer: str
    """`tokenizer.json (fast)` or the SentencePiece-backed class used, and why."""
    logits_max_abs_diff: float
    windows_checked: int
    texts_checked: int
    """Texts whose exported ids were compared with SentencePiece's: every validation and test
    document and the hostile strings; all matched, or nothing was exported."""


def special_ids(eos_id: int, pad_id: int, unk_id: int) -> dict:
    """The tokenizer's special ids as every exported config states them, and the weights' dtype."""
    return {
        "bos_token_id": eos_id,  # a document starts after a separator, as in our training stream
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "unk_token_id": unk_id,
        "torch_dtype": "float32",
    }


def architecture(config: GPTConfig) -> str:
    """The stock transformers class our model is exactly: GPT-2 for arch gpt2; RoPE + RMSNorm + SwiGLU is
    Llama, and with QK-norm Qwen3 (which normalises each head's queries and keys before RoPE, as we do).
    Any other mix has no stock class: PipelineError naming the option."""
    if config.arch == "gpt2":
        return "GPT2LMHeadModel"
    needs = {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu"}
    for name, value in needs.items():
        if getattr(config, name) != value:
            raise PipelineError(
                f"export: model.{name}: {getattr(config, name)} has no stock transformers equivalent in a modern "
                f"model (Llama and Qwen3 need {name} {value}); GPT.from_pretrained('data/model') still loads it"
            )
    return "Qwen3ForCausalLM" if config.qk_norm else "LlamaForCausalLM"


def llama_config(model: GPT, eos_id: int, pad_id: int, unk_id: int) -> dict:
    """A LlamaConfig, or a Qwen3Config with QK-norm (as a dict), for a modern model."""
    c = model.config
    name = architecture(c)
    return {
        "architectures": [name],
        "model_type": "qwen3" if name.startswith("Qwen3") else "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "intermediate_size": swiglu_width(c.n_embd),
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_head,
        "head_dim": c.n_embd // c.n_head,
        "hidden_act": "silu",
        "max_position_embeddings": c.block_size,
        "rms_norm_eps": RMS_EPS,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": c.dropout,
        "use_sliding_window": False,
        "tie_word_embeddings": c.tie_embeddings,
        **special_ids(eos_id, pad_id, unk_id),
    }


def llama_weights(model: GPT) -> dict[str, torch.Tensor]:
    """Our state dict under LlamaForCausalLM's (and Qwen3ForCausalLM's) names; the fused qkv split in three."""
    c = model.config
    state = model.state_dict()
    out = {
        "model.embed_tokens.weight": state["token_embedding.weight"][: c.vocab_size],
        "model.norm.weight": state["ln_final.weight"],
    }
    if not c.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"][: c.vocab_size]
    for i in range(c.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = state[f"{ours}attn.qkv.weight"].chunk(3, dim=0)  # rows: (three h d), as the forward reads them
        out |= {
            f"{theirs}input_layernorm.weight": state[f"{ours}ln_attn.weight"],
            f"{theirs}self_attn.q_proj.weight": q,
            f"{theirs}self_attn.k_proj.weight": k,
            f"{theirs}self_attn.v_proj.weight": v,
            f"{theirs}self_attn.o_proj.weight": state[f"{ours}attn.proj.weight"],
            f"{theirs}post_attention_layernorm.weight": state[f"{ours}ln_mlp.weight"],
            f"{theirs}mlp.gate_proj.weight": state[f"{ours}mlp.gate.weight"],
            f"{theirs}mlp.up_proj.weight": state[f"{ours}mlp.up.weight"],
            f"{theirs}mlp.down_proj.weight": state[f"{ours}mlp.down.weight"],
        }
        if c.qk_norm:
            out[f"{theirs}self_attn.q_norm.weight"] = state[f"{ours}attn.q_norm.weight"]
            out[f"{theirs}self_attn.k_norm.weight"] = state[f"{ours}attn.k_norm.weight"]
    return {name: tensor.detach().to(torch.float32).contiguous().clone() for name, tensor in out.items()}


def gpt2_config(model: GPT, eos_id: int, pad_id: int, unk_id: int) -> dict:
    """A GPT2Config (as a dict) describing our model with the tokenizer's vocabulary."""
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": 4 * c.n_embd,
        "activation_function": "gelu",  # exact erf GELU, as F.gelu; GPT-2's own default is the tanh approximation
        "layer_norm_epsilon": 1e-5,  # nn.LayerNorm's default
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        **special_ids(eos_id, pad_id, unk_id),
    }


def gpt2_weights(model: GPT) -> dict[str, torch.Tensor]:
    """Our state dict under GPT2LMHeadModel's names and layouts."""
    c = model.config
    state = model.state_dict()
    zeros = lambda n: torch.zeros(n, dtype=torch.float32)  # noqa: E731
    out = {
        "transformer.wte.weight": state["token_embedding.weight"][: c.vocab_size],
        "transformer.wpe.weight": state["position_embedding.weight"],
        "transformer.ln_f.weight": state["ln_final.weight"],
        "transformer.ln_f.bias": state.get("ln_final.bias", zeros(c.n_embd)),
    }
    for i in range(c.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        pairs = {"ln_1": "ln_attn", "ln_2": "ln_mlp"}
        for their, our in pairs.items():
            out[f"{theirs}{their}.weight"] = state[f"{ours}{our}.weight"]
            out[f"{theirs}{their}.bias"] = state.get(f"{ours}{our}.bias", zeros(c.n_embd))
        linears = {
            "attn.c_attn": "attn.qkv",
            "attn.c_proj": "attn.proj",
            "mlp.c_fc": "mlp.up",
            "mlp.c_proj": "mlp.down",
        }
        for their, our in linears.items():
            weight = state[f"{ours}{our}.weight"]  # Linear: (out, in); Conv1D: (in, out)
            out[f"{theirs}{their}.weight"] = weight.t().contiguous()
            out[f"{theirs}{their}.bias"] = state.get(f"{ours}{our}.bias", zeros(weight.shape[0]))
    return {name: tensor.detach().to(torch.float32).contiguous().clone() for name, tensor in out.items()}


def fast_tokenizer(model_file: Path):
    """A `tokenizers.Tokenizer` equal to the SentencePiece BPE model under identity normalisation."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    proto = pieces.read(model_file)
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    # a stock BPE cannot split a piece back, so it merges only into pieces SentencePiece keeps
    mergeable = {piece.piece: (piece.score, i) for i, piece in enumerate(proto.pieces) if piece.type in pieces.KEPT}
    # every way a piece is two pieces, earliest for the piece SentencePiece merges first (highest score)
    merges = sorted(
        (-score, i, cut, piece[:cut], piece[cut:])
        for piece, (score, i) in mergeable.items()
        for cut in range(1, len(piece))
        if piece[:cut] in mergeable and piece[cut:] in mergeable
    )
    trainer = proto.trainer_spec
    tokenizer = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[(left, right) for *_, left, right in merges],
            unk_token=proto.pieces[trainer.unk_id].piece,
            fuse_unk=False,
            byte_fallback=trainer.byte_fallback,
        )
    )
    spec = proto.normalizer_spec
    prefix = [normalizers.Prepend(SPACE)] if spec.add_dummy_prefix else []
    tokenizer.normalizer = normalizers.Sequence(prefix + [normalizers.Replace(" ", SPACE)])
    # words begin at ▁; BPE never merges across one (the property pipeline/tokenizer/pieces.py checks)
    tokenizer.pre_tokenizer = pre_tokenizers.Split(SPACE, behavior="merged_with_next")
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if spec.add_dummy_prefix else []))
    return tokenizer


def fast_is_possible(model_file: Path) -> str | None:
    """Why a fast tokenizer cannot be exact for this model, or None when it can be tried."""
    proto = pieces.read(model_file)
    spec = proto.normalizer_spec
    if not pieces.normalizes_nothing(spec):
        return f"normalization_rule_name {spec.name!r} is reproduced only approximately by `tokenizers`"
    if spec.remove_extra_whitespaces or not spec.escape_whitespaces:
        return "whitespace handling (remove_extra_whitespaces / escape_whitespaces) differs in `tokenizers`"
    return pieces.word_boundary_problem(proto)


def tokenizer_config(processor: spm.SentencePieceProcessor, block_size: int, tokenizer_class: str) -> dict:
    piece = lambda i: processor.id_to_piece(i) if i >= 0 else None  # noqa: E731
    return {
        "tokenizer_class": tokenizer_class,
        "eos_token": piece(processor.eos_id()),
        "pad_token": piece(processor.pad_id()),
        "unk_token": piece(processor.unk_id()),
        "bos_token": piece(processor.bos_id()),
        "sep_token": None,
        "cls_token": None,
        "mask_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "split_special_tokens": True,  # "<|endoftext|>" inside a text is text, as SentencePiece encodes it
        "clean_up_tokenization_spaces": False,
        "model_max_length": block_size,
    }


def write_tokenizer(directory: Path, model_file: Path, processor, block_size: int, fast: bool) -> None:
    shutil.copyfile(model_file, directory / "tokenizer.model")
    if fast:
        fast_tokenizer(model_file).save(str(directory / "tokenizer.json"))
        config = tokenizer_config(processor, block_size, "PreTrainedTokenizerFast")
    else:
        shutil.copyfile(model_file, directory / SENTENCEPIECE_FILE)
        config = tokenizer_config(processor, block_size, SENTENCEPIECE_CLASS)
    files.write_json(directory / "tokenizer_config.json", config)


def tokenizer_mismatches(directory: Path, processor, texts: list[str]) -> list[str]:
    """Texts whose ids from the exported tokenizer differ from SentencePiece's."""
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(str(directory))
    ids = exported(texts, add_special_tokens=False)["input_ids"]
    return [text for text, got in zip(texts, ids) if got != processor.encode(text)]


def logits_difference(model: GPT, directory: Path, windows: np.ndarray) -> float:
    """Largest absolute difference between our logits and the exported model's, in fp32."""
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32).eval()
    x = torch.from_numpy(windows.astype(np.int64))
    with torch.no_grad():
        theirs = exported(x).logits
        ours = model.eval()(x)
    if theirs.shape != ours.shape:
        raise PipelineError(f"export: logits of shape {tuple(theirs.shape)}, ours {tuple(ours.shape)}")
    return float((theirs - ours).abs().max())


def check_texts(token_paths: list[Path], processor) -> list[str]:
    """Every document of the arrays, decoded, and the hostile strings: what the tokenizer check encodes."""
    texts = list(HOSTILE_TEXTS)
    for path in token_paths:
        ids = token_files.open_tokens(path)
        bounds = list(token_files.open_documents(path).starts) + [len(ids)]
        texts += [processor.decode(ids[a : b - 1].tolist()) for a, b in zip(bounds, bounds[1:])]  # without the eos
    return texts


def val_windows(val_path: Path, block_size: int, count: int = CHECK_WINDOWS) -> np.ndarray:
    ids = token_files.open_tokens(val_path)
    n = max(1, min(count, (len(ids) - 1) // block_size))
    starts = np.linspace(0, len(ids) - block_size - 1, num=n).astype(np.int64)
    return np.stack([np.asarray(ids[s : s + block_size]) for s in starts])


def export(model_dir: Path, output: Path, val_path: Path, check_paths: list[Path]) -> ExportReport:
    """Write `output` (a directory) whole or not at all, after proving it equal to the model in `model_dir`."""
    from transformers.utils import logging as transformers_logging

    # the checks encode whole documents, longer than the model's context, and load weights: no notices
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    model = GPT.from_pretrained(model_dir)
    name = architecture(model.config)  # before any work: a model without a stock class is refused
    model_file = model_dir / "tokenizer.model"
    processor = pieces.processor(model_file)
    if processor.get_piece_size() != model.config.vocab_size:
        raise PipelineError(
            f"{model_file}: {processor.get_piece_size()} pieces, but the model has {model.config.vocab_size}: "
            "not the tokenizer it was trained with"
        )
    texts = check_texts(check_paths, processor)
    windows = val_windows(val_path, model.config.block_size)
    with files.replacing_directory(output) as tmp:
        write_model(tmp, model, name, processor)
        tokenizer = write_checked_tokenizer(tmp, model_file, processor, model.config.block_size, texts)
        difference = logits_difference(model, tmp, windows)
        if not difference <= LOGITS_ATOL:
            raise PipelineError(
                f"export: logits differ from ours by up to {difference:.3g} (allowed {LOGITS_ATOL}); "
                "nothing was exported"
            )
    return ExportReport(name, tokenizer, difference, len(windows), len(texts))


def write_model(directory: Path, model: GPT, name: str, processor: spm.SentencePieceProcessor) -> None:
    """config.json, model.safetensors and generation_config.json of the stock class `name`."""
    from safetensors.torch import save_file

    ids = (processor.eos_id(), processor.pad_id(), processor.unk_id())
    gpt2 = name == "GPT2LMHeadModel"
    files.write_json(directory / "config.json", gpt2_config(model, *ids) if gpt2 else llama_config(model, *ids))
    weights = gpt2_weights(model) if gpt2 else llama_weights(model)
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    generation = {
        "eos_token_id": processor.eos_id(),
        "pad_token_id": processor.pad_id(),
        "bos_token_id": processor.eos_id(),
        "do_sample": False,
    }
    files.write_json(directory / "generation_config.json", generation)


def write_checked_tokenizer(directory: Path, model_file: Path, processor, block_size: int, texts: list[str]) -> str:
    """The fast tokenizer where it can be exact and gives SentencePiece's ids on every text, else the
    SentencePiece-backed class; PipelineError when even that misses a text. Returns what was written."""
    why_not_fast = fast_is_possible(model_file)
    write_tokenizer(directory, model_file, processor, block_size, fast=why_not_fast is None)
    missed = tokenizer_mismatches(directory, processor, texts)
    if why_not_fast is None and missed:
        why_not_fast = f"the fast tokenizer gave other ids than SentencePiece on {len(missed)} of {len(texts)} texts"
        (directory / "tokenizer.json").unlink()
        write_tokenizer(directory, model_file, processor, block_size, fast=False)
        missed = tokenizer_mismatches(directory, processor, texts)
    if missed:
        raise PipelineError(
            f"export: the exported tokenizer gives other ids than SentencePiece on {len(missed)} "
            f"of {len(texts)} texts, e.g. {missed[0][:80]!r}; nothing was exported"
        )
    if why_not_fast is None:
        return "tokenizer.json (fast, exact)"
    return f"{SENTENCEPIECE_CLASS} backed by SentencePiece ({why_not_fast})"


def run_stage(p: Params) -> None:
    """The export stage: data/model/hf from data/model, checked, with its stats and a summary."""
    started = time.monotonic()
    token_files.check_folder(layout.TOKENS_DIR, list(p.data.shards), "export")
    report = export(MODEL_DIR, HF_DIR, layout.tokens_path("val"), [layout.tokens_path(k) for k in p.evaluate.splits])
    files.write_json_atomic(EXPORT_STATS, asdict(report))
    progress.summary(
        "export",
        {
            "to": f"{HF_DIR}/ (transformers: AutoModelForCausalLM, AutoTokenizer; offline, no remote code)",
            "model": f"{report.architecture}, logits within {report.logits_max_abs_diff:.2g} of ours "
            f"on {report.windows_checked} validation windows (allowed {LOGITS_ATOL})",
            "tokenizer": report.tokenizer,
            "tokenizer check": f"SentencePiece's ids on all {report.texts_checked:,} texts (every document of "
            f"{', '.join(p.evaluate.splits)} and {len(HOSTILE_TEXTS)} hostile strings)",
            "time": f"{time.monotonic() - started:.1f} s",
        },
    )
