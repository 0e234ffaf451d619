"""What SentencePiece 0.2.3's trainer makes of its flags, and the model file it writes.

The exact BPE trainer (pipeline.tokenizer.exact_bpe) starts and ends where spm_train does: flags
become a TrainerSpec and a NormalizerSpec as `SentencePieceTrainer.train(**flags)` builds them
(every value turned into a string, lists into one CSV row, only the flags given set on the
proto), the spec is checked with spm's own rules and messages, the meta pieces (unk, bos, eos,
pad, control and user-defined symbols, byte pieces) take their ids, and the final pieces are
serialized into the same ModelProto, `.model` and `.vocab` that spm_train writes.
"""

import csv
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from pipeline.config.spm_flags import EXACT_TRAINER_REFUSES
from pipeline.core import files
from pipeline.core.errors import PipelineError

SentencePiece = pb.ModelProto.SentencePiece
NORMALIZER_FIELDS = {"add_dummy_prefix", "remove_extra_whitespaces", "escape_whitespaces", "normalization_rule_tsv"}


class TrainerError(PipelineError):
    """What spm_train would refuse, in its own words (without its `INTERNAL: file(line)` prefix)."""


@dataclass(frozen=True)
class Specs:
    trainer: pb.TrainerSpec
    normalizer: pb.NormalizerSpec
    meta: dict[int, tuple[str, int]]
    """id -> (piece, type) of every meta piece: unk, bos, eos, pad, control, user-defined, bytes."""
    denormalizer: pb.NormalizerSpec | None = None
    """The compiled denormalization_rule_tsv, which the model carries for decoding; None without one."""


def as_flag(value: Any) -> str:
    """A flag's value as SentencePiece's Python wrapper passes it on: a string, a list as one CSV row."""
    if isinstance(value, (list, tuple)):
        row = io.StringIO()
        csv.writer(row, lineterminator="").writerow([str(item) for item in value])
        return row.getvalue()
    return str(value)


def split_csv(text: str) -> list[str]:
    """SentencePiece's split of a repeated flag: at commas; a field opening with a quote runs to the
    closing quote (two quotes inside are one), the rest up to the comma is dropped."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text[i] == '"':
            i, field = i + 1, []
            while i < n:
                if text[i] == '"':
                    i += 1
                    if i >= n or text[i] != '"':
                        break
                field.append(text[i])
                i += 1
            comma = text.find(",", i)
            i = n if comma < 0 else comma
            out.append("".join(field))
        else:
            comma = text.find(",", i)
            comma = n if comma < 0 else comma
            out.append(text[i:comma])
            i = comma
        i += 1
    return out


def _boolean(value: str) -> bool:
    lowered = (value or "true").strip().lower()
    if lowered in ("true", "t", "yes", "y", "1"):
        return True
    if lowered in ("false", "f", "no", "n", "0"):
        return False
    raise TrainerError(f'cannot parse "{value}" as bool.')


def _is_default(name: str, value: str) -> bool:
    """Whether a TrainerSpec flag's value is the field's default (`--enable_differential_privacy=false`)."""
    scratch = pb.TrainerSpec()
    return _set(scratch, name, value) and scratch == pb.TrainerSpec(**{name: getattr(pb.TrainerSpec(), name)})


def _set(message, name: str, value: str) -> bool:
    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        return False
    try:
        if field.is_repeated:
            getattr(message, name).extend(split_csv(value))
        elif field.type == field.TYPE_BOOL:
            setattr(message, name, _boolean(value))
        elif field.type in (field.TYPE_INT32, field.TYPE_INT64, field.TYPE_UINT64):
            setattr(message, name, int(value.strip()))
        elif field.type in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
            setattr(message, name, float(value))
        elif field.type == field.TYPE_ENUM:
            setattr(message, name, field.enum_type.values_by_name[value.upper()].number)
        elif field.type == field.TYPE_BYTES:
            setattr(message, name, value.encode())
        else:
            setattr(message, name, value)
    except (ValueError, KeyError):
        raise TrainerError(f"cannot parse {value!r} as the value of --{name}") from None
    return True


def specs(flags: dict[str, Any]) -> Specs:
    """TrainerSpec, NormalizerSpec and meta pieces of `flags`, checked as spm_train checks them before
    reading a line; a flag the exact trainer cannot honour is refused, naming it."""
    trainer, normalizer, denormalizer = pb.TrainerSpec(), pb.NormalizerSpec(), None
    for name, raw in flags.items():
        value = as_flag(raw)
        if name in EXACT_TRAINER_REFUSES and not _is_default(name, value):
            reason = EXACT_TRAINER_REFUSES[name]
            raise TrainerError(f"--{name}: not supported by the exact trainer ({reason}); use spm_train")
        if name == "normalization_rule_name":
            normalizer.name = value
        elif name == "denormalization_rule_tsv":
            denormalizer = pb.NormalizerSpec(
                normalization_rule_tsv=value, add_dummy_prefix=False, remove_extra_whitespaces=False,
                escape_whitespaces=False,
            )  # fmt: skip
        elif name == "minloglevel":
            continue
        elif not _set(trainer, name, value) and not (name in NORMALIZER_FIELDS and _set(normalizer, name, value)):
            raise TrainerError(f'unknown field name "{name}" in TrainerSpec.')
    for spec in (normalizer, denormalizer):
        if spec is not None and spec.normalization_rule_tsv:
            spec.precompiled_charsmap, spec.name = _compiled(spec.normalization_rule_tsv), "user_defined"
    normalizer.name = normalizer.name or "nmt_nfkc"
    if not normalizer.precompiled_charsmap:  # set even when empty (identity): spm's model has the field
        normalizer.precompiled_charsmap = precompiled_charsmap(normalizer.name)
    _verify(trainer)
    meta = meta_pieces(trainer)
    if not normalizer.escape_whitespaces:
        raise TrainerError("[normalizer_spec_.escape_whitespaces()] ")
    if trainer.model_type != pb.TrainerSpec.BPE:
        raise TrainerError(
            f"--model_type={pb.TrainerSpec.ModelType.Name(trainer.model_type).lower()}: the exact trainer "
            "reproduces bpe only; use spm_train (tokenizer.trainer: spm)"
        )
    if denormalizer is not None and not denormalizer.normalization_rule_tsv:
        denormalizer = None  # an empty rule file name: spm_train records no denormalizer
    return Specs(trainer, normalizer, meta, denormalizer)


def _compiled(rule_tsv: str) -> bytes:
    """A rule file (`source<TAB>target` in hex code points) compiled as spm_train compiles it."""
    compiled = pb.NormalizerSpec()
    try:
        compiled.ParseFromString(spm.SentencePieceNormalizer(rule_tsv=rule_tsv).serialized_normalizer_spec())
    except (RuntimeError, OSError) as exc:
        raise TrainerError(f"{rule_tsv}: {str(exc).splitlines()[0]}") from None
    return compiled.precompiled_charsmap


def precompiled_charsmap(name: str) -> bytes:
    """The compiled normalization rule SentencePiece embeds for a rule name (identity: none)."""
    if name == "identity":
        return b""
    spec = pb.NormalizerSpec()
    try:
        spec.ParseFromString(spm.SentencePieceNormalizer(rule_name=name).serialized_normalizer_spec())
    except RuntimeError as exc:
        raise TrainerError(f"--normalization_rule_name={name}: {str(exc).splitlines()[0]}") from None
    return spec.precompiled_charsmap


def _verify(t: pb.TrainerSpec) -> None:
    """spm's VerifySpec: ranges and combinations of flags (floats compared as C++ does, widened)."""

    def check(ok: bool, condition: str, message: str = "") -> None:
        if not ok:
            raise TrainerError(f"[{condition}] {message}".rstrip())

    check(t.vocab_size > 0, "(trainer_spec.vocab_size()) > (0)")
    check(not t.use_all_vocab, "!trainer_spec.use_all_vocab()", "--use_all_vocab=true is valid for WORD/CHAR model.")
    for name, low, high in (
        ("character_coverage", 0.98, 1.0),
        ("max_sentencepiece_length", 1, 512),
        ("num_sub_iterations", 1, 10),
        ("num_threads", 1, 1024),
        ("shrinking_factor", 0.5, 0.95),
        ("max_sentence_length", 10, 1 << 30),
    ):
        check(low <= getattr(t, name) <= high, f"trainer_spec.{name}() >= {low} && trainer_spec.{name}() <= {high}")
    check(
        t.input_sentence_size <= 0 or t.input_sentence_size > 100,
        "trainer_spec.input_sentence_size() <= 0 || trainer_spec.input_sentence_size() > 100",
    )
    for name in ("unk_piece", "bos_piece", "eos_piece", "pad_piece"):
        check(getattr(t, name) != "", f"!trainer_spec.{name}().empty()")
    if t.input_format not in ("", "text", "tsv"):
        raise TrainerError(f"--input_format={t.input_format}: supported formats are 'text' and 'tsv'.")


def byte_piece(value: int) -> str:
    return f"<0x{value:02X}>"


def meta_pieces(t: pb.TrainerSpec) -> dict[int, tuple[str, int]]:
    """id -> (piece, type): unk, bos, eos and pad at their ids, then control symbols, user-defined
    symbols and (with byte_fallback) the 256 byte pieces at the lowest free ids, as spm assigns them."""
    meta: dict[int, tuple[str, int]] = {}
    has_unk = False
    for what in ("unk", "bos", "eos", "pad"):
        i, piece = getattr(t, f"{what}_id"), getattr(t, f"{what}_piece")
        if i < 0:
            continue
        if i >= t.vocab_size or i in meta or (has_unk and piece == t.unk_piece):
            raise TrainerError(f"[insert_id(trainer_spec_.{what}_id(), trainer_spec_.{what}_piece())]")
        has_unk |= piece == t.unk_piece
        meta[i] = (piece, SentencePiece.UNKNOWN if piece == t.unk_piece else SentencePiece.CONTROL)
    if not t.byte_fallback and not has_unk:
        raise TrainerError(f"[has_unk] {t.unk_piece} must be defined.")
    seen, next_id = set(), 0
    symbols = [(piece, SentencePiece.CONTROL) for piece in t.control_symbols]
    symbols += [(piece, SentencePiece.USER_DEFINED) for piece in t.user_defined_symbols]
    symbols += [(byte_piece(b), SentencePiece.BYTE) for b in range(256)] if t.byte_fallback else []
    for piece, kind in symbols:
        if piece in seen:
            raise TrainerError(f"{piece} is already defined. duplicated symbols are not allowed.")
        seen.add(piece)
        if piece == t.unk_piece:
            raise TrainerError(f"{t.unk_piece} must not be defined with --control_symbols and --user_defined_symbols.")
        special = next(
            (
                getattr(t, f"{w}_id")
                for w in ("bos", "eos", "pad")
                if piece == getattr(t, f"{w}_piece") and getattr(t, f"{w}_id") >= 0
            ),
            -1,
        )
        if special >= 0:
            meta[special] = (meta[special][0], kind)  # the special piece takes this list's type, not a new id
            continue
        while next_id in meta:
            next_id += 1
        meta[next_id] = (piece, kind)
    return meta


def model(pieces: list[str], s: Specs) -> pb.ModelProto:
    """The ModelProto spm_train writes: meta pieces at their ids, the trained pieces in order in the
    other ids with scores 0, -1, -2, ... (the first written -0, as spm's float does)."""
    t = s.trainer
    proto, seen, k = pb.ModelProto(), set(), 0
    for i in range(t.vocab_size):
        if i in s.meta:
            piece, kind = s.meta[i]
            proto.pieces.add(piece=piece, type=kind, score=0.0)
            if len(proto.pieces) - 1 != i:
                raise TrainerError("[(model_proto->pieces_size() - 1) == (it->first)] ")
        elif k < len(pieces):
            piece = pieces[k]
            proto.pieces.add(piece=piece, score=-float(k))
            k += 1
        else:
            continue
        if piece in seen:
            raise TrainerError(f"[dup.insert(piece).second] {piece} is already defined")
        seen.add(piece)
    if k != len(pieces):
        raise TrainerError("[(fid) == (final_pieces_.size())] ")
    proto.trainer_spec.CopyFrom(t)
    proto.normalizer_spec.CopyFrom(s.normalizer)
    if s.denormalizer is not None:
        proto.denormalizer_spec.CopyFrom(s.denormalizer)
    if not t.hard_vocab_limit:
        proto.trainer_spec.vocab_size = len(proto.pieces)
    elif t.vocab_size != len(proto.pieces):
        raise TrainerError(
            "[(trainer_spec_.vocab_size()) == (model_proto->pieces_size())] "
            f"Vocabulary size too high ({t.vocab_size}). Please set it to a value <= {len(proto.pieces)}."
        )
    return proto


def _score(value: float) -> str:
    """A score as spm's .vocab prints it (a float to 6 significant digits: 0, -0, -7736, -1.23457e+06)."""
    return f"{struct.unpack('f', struct.pack('f', value))[0]:g}"


def write(proto: pb.ModelProto, prefix: Path) -> None:
    """`<prefix>.model` and `<prefix>.vocab`, renamed into place together (the model last)."""
    with_score = proto.trainer_spec.vocabulary_output_piece_score
    vocab = "".join(f"{p.piece}\t{_score(p.score)}\n" if with_score else f"{p.piece}\n" for p in proto.pieces)
    model_path, vocab_path = Path(f"{prefix}.model"), Path(f"{prefix}.vocab")
    with files.replacing(vocab_path, model_path) as (vocab_tmp, model_tmp):
        vocab_tmp.write_bytes(vocab.encode("utf-8"))
        model_tmp.write_bytes(proto.SerializeToString())
