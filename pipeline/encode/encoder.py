"""An encoder that gives exactly SentencePiece's ids, running BPE once per distinct word.

SentencePiece encodes in two steps: normalise the text (spaces become "▁", a "▁" is prefixed, and
so on), then run BPE on the normalised string. BPE only ever merges two symbols into a piece of the
vocabulary; when no piece holds "▁" except as its first character, no merge reaches across the "▁"
that begins each word, so the ids of a text are the ids of its words, one after another. Most of a
corpus's words repeat, so this encoder cuts the normalised text at every "▁", looks each word up
in a bounded cache, and runs BPE only on words it has not seen.

Three paths, the fastest the model allows (pipeline.tokenizer.pieces.path; `describe()` says which ran):
- compiled (pipeline.encode.compiled_bpe): the cut, the cache and the BPE itself in numba, no Python per
  word; loaded only on this path (numba takes ~110 MB and half a second to import);
- word cache: the cut and cache in Python, the BPE SentencePiece's own (through a copy of the model
  whose normaliser does nothing), all unseen words of a batch in one string, cut apart again at
  the pieces that begin with "▁"; for models pieces.compiled_problem names;
- plain `encode`: when a model breaks the property (another model type, or pieces with "▁" inside,
  as split_by_whitespace: false, treat_whitespace_as_suffix or whitespace-only pieces make).
Every path gives SentencePiece's own ids (tested on every sample document and on generated text).
"""

import itertools
import operator
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm

from pipeline.tokenizer import pieces
from pipeline.tokenizer.pieces import SPACE

MAX_CACHED_CHARS = 64  # longer "words" (URLs, base64, long runs) rarely repeat: encode them, do not keep them
MAX_ENTRIES = 1 << 20  # about 100-200 MB of cache at most; cleared, not evicted, once past it
JOIN_CHARS = 4096  # unseen words per BPE call, in characters
SEGMENT_CHARS = 1 << 20  # a longer text is encoded a slice of words at a time


class WordCacheEncoder:
    def __init__(self, model: Path, dtype: str = "uint16", max_entries: int = MAX_ENTRIES, compiled: bool = True):
        """`compiled=False` keeps SentencePiece's BPE behind the word cache (benchmarks compare the two)."""
        self.processor = spm.SentencePieceProcessor(model_file=str(model))
        self.dtype = np.dtype(dtype).newbyteorder("<")
        proto = pieces.read(model)
        self.path = pieces.path(proto, compiled)
        self.fallback_reason = self.path.reason if self.path.name == pieces.PLAIN else None
        self.bpe_only = self.compiled = None
        if self.path.name == pieces.COMPILED:
            from pipeline.encode import compiled_bpe

            self.compiled = compiled_bpe.CompiledEncoder(proto, max_entries)
        spec = proto.normalizer_spec
        # identity with a dummy prefix and no whitespace clean-up is "▁" + spaces as "▁": no call needed
        self.plain_spaces = (
            pieces.normalizes_nothing(spec) and spec.add_dummy_prefix and not spec.remove_extra_whitespaces
        )
        if self.path.name == pieces.WORD_CACHE:  # SentencePiece's BPE alone: its normaliser doing nothing
            spec.name, spec.precompiled_charsmap, spec.normalization_rule_tsv = "identity", b"", ""
            spec.add_dummy_prefix = spec.remove_extra_whitespaces = spec.escape_whitespaces = False
            self.bpe_only = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
            self.starts_word = np.array(
                [self.bpe_only.id_to_piece(i).startswith(SPACE) for i in range(self.bpe_only.get_piece_size())]
            )
        self.max_entries = max_entries
        self.cache: dict[str, bytes] = {}  # word without its leading ▁ -> ids of ▁ + word, as array bytes
        self.words = self.misses = 0

    def encode_documents(self, texts: list[str], eos: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """The ids `SentencePieceProcessor.encode` gives every text, in one `dtype` array, each text's
        followed by `eos` (none when negative); and how many ids each text got, eos included."""
        tail = np.array([eos] if eos >= 0 else [], self.dtype)
        if self.compiled is None:
            encoded = self.encode(texts)
            ids = b"".join(itertools.chain.from_iterable((text, tail.tobytes()) for text in encoded))
            counts = [len(text) // self.dtype.itemsize + len(tail) for text in encoded]
            return np.frombuffer(ids, self.dtype), np.array(counts, np.uint64)
        if not self.plain_spaces:
            texts = self.processor.normalize(texts)
        words, misses = self.compiled.words, self.compiled.misses
        parts = []
        for start, end in _runs(texts):
            if end - start == 1 and len(texts[start]) > SEGMENT_CHARS:  # a slice of words at a time
                slices = [self._compiled([part], -1, i == 0)[0] for i, part in enumerate(self._slices(texts[start]))]
                ids = np.concatenate(slices + [tail])
                parts.append((ids, np.array([len(ids)], np.uint64)))
            else:
                parts.append(self._compiled(texts[start:end], eos, True))
        self.words += self.compiled.words - words
        self.misses += self.compiled.misses - misses
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([tail[:0]] + [ids for ids, _ in parts]), np.array(
            [n for _, counts in parts for n in counts], np.uint64
        )

    def _compiled(self, texts: list[str], eos: int, starts_text: bool) -> tuple[np.ndarray, np.ndarray]:
        """The compiled path on normalised texts (`starts_text`: each is a text's start, not a later slice).
        With plain_spaces the kernel reads spaces as ▁ and each text gets the normaliser's "▁" in front
        as a space: one join, no copy of each text."""
        if self.plain_spaces and starts_text:
            joined = " ".join([""] + [text for text in texts if text])  # empty texts get nothing, not "▁"
            lengths = [len(text) + 1 if text else 0 for text in texts]
        else:
            joined, lengths = "".join(texts), list(map(len, texts))
        cps = np.frombuffer(joined.encode("utf-32-le"), "<u4")
        return self.compiled.encode(cps, np.cumsum(lengths, dtype=np.int64), eos, self.dtype, self.plain_spaces)

    def _slices(self, text: str) -> Iterator[str]:
        """A long normalised text in slices of about SEGMENT_CHARS, each after the first starting at a word."""
        separator = " " if self.plain_spaces else SPACE
        start = 0
        while (end := text.find(separator, start + SEGMENT_CHARS)) >= 0:
            yield text[start:end]
            start = end
        yield text[start:]

    def encode(self, texts: list[str]) -> list[bytes]:
        """For each text, the ids `SentencePieceProcessor.encode` gives, as little-endian `dtype` bytes."""
        if self.compiled is not None:
            ids, counts = self.encode_documents(texts)
            return [part.tobytes() for part in np.split(ids, np.cumsum(counts)[:-1].astype(np.int64))]
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
        return self.path.describe(self.words, self.misses)


def _runs(texts: list[str]) -> Iterator[tuple[int, int]]:
    """(start, end) of the texts to encode together: runs of short ones; each longer than SEGMENT_CHARS alone."""
    start = 0
    for i, text in enumerate(texts):
        if len(text) > SEGMENT_CHARS:
            if start < i:
                yield start, i
            yield i, i + 1
            start = i + 1
    if start < len(texts) or not texts:
        yield start, len(texts)
