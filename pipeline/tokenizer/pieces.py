"""What a SentencePiece model's pieces let an encoder assume, read off the model file alone: the one
home of SentencePiece's facts (its whitespace marker, the piece types BPE builds, how a model file
is read, which normalisers do nothing).

Two properties decide how pipeline.encode.encoder may encode: whether a text's ids are its words' ids one
after another (`word_boundary_problem`), and whether pipeline.encode.compiled_bpe reproduces the model's
BPE exactly (`compiled_problem`). `path` turns them into the encoder's path and the reason for it.
No numba here: the pretokenize stage's main process asks which path its workers will take without
loading the compiler.
"""

from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from pipeline.core.errors import PipelineError

SPACE = "▁"
BPE = sentencepiece_model_pb2.TrainerSpec.BPE
SentencePiece = sentencepiece_model_pb2.ModelProto.SentencePiece
MERGEABLE = (SentencePiece.NORMAL, SentencePiece.USER_DEFINED, SentencePiece.UNUSED)  # what BPE may build
# what BPE may build and keep: an unused piece is built, then split back into the two that made it
KEPT = (SentencePiece.NORMAL, SentencePiece.USER_DEFINED)

COMPILED = "compiled BPE"
WORD_CACHE = "word cache with SentencePiece's BPE"
PLAIN = "plain SentencePiece encode"


def read(model: Path) -> sentencepiece_model_pb2.ModelProto:
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(model).read_bytes())
    return proto


def processor(model: Path) -> spm.SentencePieceProcessor:
    """The model, loaded; a missing or unreadable file is a PipelineError naming it, not a traceback."""
    if not Path(model).is_file():
        raise PipelineError(f"{model}: missing; run `dvc repro tokenizer` (or `dvc pull tokenizer`) first")
    try:
        return spm.SentencePieceProcessor(model_file=str(model))
    except RuntimeError as exc:
        raise PipelineError(f"{model}: not a SentencePiece model ({str(exc).splitlines()[0]})") from None


def normalizes_nothing(spec: sentencepiece_model_pb2.NormalizerSpec) -> bool:
    """Whether the normaliser's rule maps every character to itself (whitespace handling aside)."""
    return spec.name == "identity" and not spec.normalization_rule_tsv and not spec.precompiled_charsmap


def two_piece_splits(piece: str, ids: dict[str, int]) -> list[tuple[int, int]]:
    """Every way `piece` is the concatenation of two pieces of `ids`, as their ids."""
    return [(ids[piece[:k]], ids[piece[k:]]) for k in range(1, len(piece)) if piece[:k] in ids and piece[k:] in ids]


def word_boundary_problem(proto: sentencepiece_model_pb2.ModelProto) -> str | None:
    """Why a model's ids are not the concatenation of its words' ids, or None when they are."""
    if proto.trainer_spec.model_type != BPE:
        return "the model type is not bpe"
    if not proto.normalizer_spec.escape_whitespaces:
        return "escape_whitespaces is off, so words are not marked with ▁"
    if not any(piece.piece == SPACE for piece in proto.pieces):
        return "▁ is not a piece of its own"
    for piece in proto.pieces:
        if SPACE in piece.piece[1:]:
            return f"the piece {piece.piece!r} holds ▁ past its start, so pieces can span words"
    mergeable = {piece.piece: i for i, piece in enumerate(proto.pieces) if piece.type in MERGEABLE}
    for piece in proto.pieces:
        # SentencePiece splits an unused piece back the way the last candidate for it anywhere in
        # the text was made: with two ways, a word's ids depend on other words
        if piece.type == SentencePiece.UNUSED and len(two_piece_splits(piece.piece, mergeable)) > 1:
            return f"the unused piece {piece.piece!r} splits back two ways, depending on the words around it"
    return None


def compiled_problem(proto: sentencepiece_model_pb2.ModelProto) -> str | None:
    """Why pipeline.encode.compiled_bpe cannot promise SentencePiece's ids for a model that has no
    word_boundary_problem, or None when it can."""
    names = [piece.piece for piece in proto.pieces]
    if len(set(names)) != len(names):
        return "two pieces share a string"
    mergeable = {piece.piece for piece in proto.pieces if piece.type in MERGEABLE}
    for piece in proto.pieces:
        if piece.type in MERGEABLE and len(piece.piece) > 1:
            # such a character is no symbol the compiled merge table knows, yet SentencePiece may merge it
            stray = next((char for char in piece.piece if char not in mergeable), None)
            if stray is not None:
                return f"the piece {piece.piece!r} holds {stray!r}, which is no piece of its own"
    if proto.trainer_spec.byte_fallback and sum(piece.type == SentencePiece.BYTE for piece in proto.pieces) != 256:
        return "byte_fallback is on but the model lacks some of the 256 byte pieces"
    return None


@dataclass(frozen=True)
class EncoderPath:
    name: str
    """COMPILED, WORD_CACHE or PLAIN."""
    reason: str | None
    """Why no faster path (None on the compiled one)."""

    def describe(self, words: int, misses: int) -> str:
        """One line for a summary: the path, its cache's hit rate, and why no faster path."""
        if self.name == PLAIN:
            return f"{PLAIN} ({self.reason})"
        found = f"{1 - misses / words if words else 0.0:.1%} of {words:,} words found in the cache"
        return f"{self.name} ({found})" + (f"; not compiled: {self.reason}" if self.reason else "")


def path(proto: sentencepiece_model_pb2.ModelProto, compiled: bool = True) -> EncoderPath:
    """The fastest exact path for a model (`compiled=False`: never the compiled one)."""
    if reason := word_boundary_problem(proto):
        return EncoderPath(PLAIN, reason)
    reason = compiled_problem(proto) if compiled else "turned off"
    return EncoderPath(WORD_CACHE if reason else COMPILED, reason)
