"""An encoder that gives exactly SentencePiece's ids, running BPE once per distinct word.

SentencePiece encodes in two steps: normalise the text (spaces become "▁", a "▁" is prefixed, and
so on), then run BPE on the normalised string. BPE only ever merges two symbols into a piece of the
vocabulary; when no piece holds "▁" except as its first character, no merge reaches across the "▁"
that begins each word, so the ids of a text are the ids of its words, one after another. Most of a
corpus's words repeat, so this encoder cuts the normalised text at every "▁", looks each word up
in a bounded cache, and runs BPE (SentencePiece's own, through a copy of the model whose normaliser
does nothing) only on words it has not seen: all of them in one string, cut apart again at the
pieces that begin with "▁".

When a model breaks the property (another model type, or pieces with "▁" inside, as
split_by_whitespace: false, treat_whitespace_as_suffix or whitespace-only pieces make), it says why
and every text goes to plain `encode`. Either way the ids are SentencePiece's own (tested on every
sample document and on generated text).
"""

import itertools
import operator
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

SPACE = "▁"
BPE = sentencepiece_model_pb2.TrainerSpec.BPE
MAX_CACHED_CHARS = 64  # longer "words" (URLs, base64, long runs) rarely repeat: encode them, do not keep them
MAX_ENTRIES = 1 << 20  # about 100-200 MB of cache at most; cleared, not evicted, once past it
JOIN_CHARS = 4096  # unseen words per BPE call, in characters
SEGMENT_CHARS = 1 << 20  # a longer text is encoded a slice of words at a time


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
    return None


class WordCacheEncoder:
    def __init__(self, model: Path, dtype: str = "uint16", max_entries: int = MAX_ENTRIES):
        self.processor = spm.SentencePieceProcessor(model_file=str(model))
        self.dtype = np.dtype(dtype).newbyteorder("<")
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(Path(model).read_bytes())
        self.fallback_reason = word_boundary_problem(proto)
        self.bpe_only = None
        if self.fallback_reason is None:
            spec = proto.normalizer_spec
            # identity with a dummy prefix and no whitespace clean-up is "▁" + spaces as "▁": no call needed
            self.plain_spaces = (
                spec.name == "identity"
                and not spec.normalization_rule_tsv
                and spec.add_dummy_prefix
                and not spec.remove_extra_whitespaces
            )
            spec.name, spec.precompiled_charsmap, spec.normalization_rule_tsv = "identity", b"", ""
            spec.add_dummy_prefix = spec.remove_extra_whitespaces = spec.escape_whitespaces = False
            self.bpe_only = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
            self.starts_word = np.array(
                [self.bpe_only.id_to_piece(i).startswith(SPACE) for i in range(self.bpe_only.get_piece_size())]
            )
        self.max_entries = max_entries
        self.cache: dict[str, bytes] = {}  # word without its leading ▁ -> ids of ▁ + word, as array bytes
        self.words = self.misses = 0

    def encode(self, texts: list[str]) -> list[bytes]:
        """For each text, the ids `SentencePieceProcessor.encode` gives, as little-endian `dtype` bytes."""
        if self.bpe_only is None:
            return [self._as_bytes(ids) for ids in self.processor.encode(texts, num_threads=1)]
        if not self.plain_spaces:
            texts = self.processor.normalize(texts)
        encoded = self._encode_words([self._words(text) for text in texts if len(text) <= SEGMENT_CHARS])
        for i, text in enumerate(texts):
            if len(text) > SEGMENT_CHARS:  # one segment of words at a time: memory stays near the text's own size
                encoded.insert(i, b"".join(self._encode_words([piece])[0] for piece in self._segments(text)))
        return encoded

    def _words(self, text: str) -> tuple[str, list[str]]:
        """(the part before the first word, which BPE sees alone; the words, each to be read as ▁ + word)."""
        if self.plain_spaces:  # SentencePiece itself would add the ▁ before the first word
            return "", text.split(" ") if text else []
        head, *words = text.split(SPACE)
        return head, words

    def _segments(self, text: str) -> Iterator[tuple[str, list[str]]]:
        """`_words(text)` in pieces of about SEGMENT_CHARS, cut between words."""
        separator = " " if self.plain_spaces else SPACE
        head, start = "", 0
        if not self.plain_spaces:
            first = text.find(SPACE)
            if first < 0:
                yield text, []
                return
            head, start = text[:first], first + 1
        while True:
            end = text.find(separator, start + SEGMENT_CHARS)
            if end < 0:
                yield head, text[start:].split(separator)
                return
            yield head, text[start:end].split(separator)
            head, start = "", end + 1

    def _encode_words(self, pieces: list[tuple[str, list[str]]]) -> list[bytes]:
        heads, docs = [head for head, _ in pieces], [words for _, words in pieces]
        cache = self.cache
        looked = [list(map(cache.get, words)) for words in docs]  # per-word loops stay in C: map, compress, join
        unseen = list(
            set(
                itertools.chain.from_iterable(
                    itertools.compress(words, map(operator.not_, ids)) for words, ids in zip(docs, looked)
                )
            )
        )
        if unseen:
            cache.update(zip(unseen, self._bpe_words(unseen)))
            looked = [
                ids if None not in ids else list(map(cache.__getitem__, words)) for words, ids in zip(docs, looked)
            ]
        self.words += sum(map(len, docs))
        self.misses += len(unseen)
        encoded = [
            self._as_bytes(self.bpe_only.encode(head)) + b"".join(ids) if head else b"".join(ids)
            for head, ids in zip(heads, looked)
        ]
        if len(cache) > self.max_entries:
            cache.clear()  # after the batch is built: its hits were read from the cache
        else:
            for word in unseen:
                if len(word) > MAX_CACHED_CHARS:
                    del cache[word]
        return encoded

    def _as_bytes(self, ids: list[int]) -> bytes:
        return np.asarray(ids, dtype=self.dtype).tobytes()

    def _bpe_words(self, words: list[str]) -> list[bytes]:
        """BPE of ▁ + word for each word: a few thousand characters per call (BPE slows down on long
        strings, and each call costs), the ids cut apart where a piece starts with ▁."""
        groups, group, size = [], [], 0
        for word in words:
            group.append(word)
            size += len(word) + 1
            if size >= JOIN_CHARS:
                groups.append(group)
                group, size = [], 0
        if group:
            groups.append(group)
        joined = self.bpe_only.encode([SPACE + SPACE.join(group) for group in groups], num_threads=1)
        out = []
        width = self.dtype.itemsize
        for group, ids in zip(groups, joined):
            starts = np.flatnonzero(self.starts_word[ids]).tolist()
            if len(starts) != len(group):  # cannot happen under word_boundary_problem's checks; stay exact anyway
                out += map(self._as_bytes, self.bpe_only.encode([SPACE + word for word in group], num_threads=1))
                continue
            data = self._as_bytes(ids)
            out += [data[a * width : b * width] for a, b in zip(starts, starts[1:] + [len(ids)])]
        return out

    def describe(self) -> str:
        if self.bpe_only is None:
            return f"plain SentencePiece encode ({self.fallback_reason})"
        hit_rate = 1 - self.misses / self.words if self.words else 0.0
        return f"word cache ({hit_rate:.1%} of {self.words:,} words found in the cache)"
