"""Pile-like shards of any size: `.jsonl.zst` documents shaped like the Pile's, from a seed, in constant memory.

The Pile itself cannot be reached from here; bench/scale.py runs the original setup on these instead.
What is the Pile's and what is assumed:

- **Groups** (`meta.pile_set_name`): the Pile's 22 components, drawn so that each holds its share of
  the text as the Pile paper's table states it (weight, epochs included: Pile-CC 18.11%, PubMed
  Central 14.40%, ...), with its published mean document size (Pile-CC 4.33 KiB, Books3 538 KiB).
- **Document lengths**: log-normal around the group's mean, sigma DOC_SIGMA (heavy-tailed: a few
  documents of tens of MB), capped at DOC_CAP times the mean. The sigma is assumed.
- **Lines**: words per line log-normal around the group's mean line length (assumed per group,
  LINE_BYTES below: prose paragraphs one a line, hard-wrapped books and code short), so lines
  pass `max_sentence_length` (4,192 bytes) as long paragraphs do and the corpus stage cuts them;
  blank lines between paragraphs where the group has them; code indented; a few lines of code are
  one base64-like token of up to tens of KB (no whitespace to cut at).
- **Words**: each word's rank drawn from one Zipf-Mandelbrot law, P(r) ~ (r + Q)^-ALPHA, over an
  unbounded vocabulary, so that distinct words grow with occurrences as Heaps' law V = K N^beta
  with beta -> 1 / ALPHA (0.8 at ALPHA 1.25; bench/README.md §12 fits it on this text, the sample
  and real prose). A rank is spelled in syllables of its document's script (ASCII Latin, accented
  Latin, Cyrillic, Greek, CJK without spaces, and digits for numbers): frequent words are short and
  rare ones long, as in real text. Sentences end in a full stop and start with a capital, some
  words carry a comma: the same word in several forms, as the words stage counts them.
- **Beyond ASCII**: every group has words in accented Latin; some documents are wholly Cyrillic,
  Greek, accented Latin or CJK (EuroParl and YoutubeSubtitles mostly so); CJK lines hold no space,
  so a long one is cut inside a run of 3-byte characters.

Deterministic: the same seed and size give the same bytes, whatever the number of processes: the
shard is a sequence of CHUNK_BYTES chunks, each drawn from (seed, its index) with numpy's PCG64 and
compressed as one zstd frame (readers go across frames, as the pipeline's does). Memory is a few
chunks per process whatever the size.

    python bench/pile_like.py OUT.jsonl.zst --gb 20 --seed 11
    python bench/pile_like.py --describe     # its statistics and Heaps' law, with real text's: results/pile_like.json
"""

import argparse
import io
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

ALPHA = 1.25  # Zipf-Mandelbrot exponent of word ranks: Heaps' beta -> 1 / ALPHA = 0.8
Q = 2.7  # Mandelbrot's shift: the most frequent word is ~6% of occurrences (English 'the'), a plain Zipf's 22%
DOC_SIGMA = 1.2  # log-normal sigma of document sizes (assumed): the median document is ~half the mean
DOC_CAP = 40  # no document over 40x its group's mean (Books3: ~21 MB)
WORD_BYTES = 4.8  # mean bytes a word with its separator, to turn LINE_BYTES into words (measured on the output)
TABLE_RANKS = 1 << 18  # ranks spelled once into a table; rarer ones are spelled where they occur

# name: (weight % of the text, mean document KiB: the Pile paper's table 1;
#        mean line bytes, line sigma, blank line between paragraphs, share of numbers,
#        share of documents in another script, line ends in a full stop: assumed)
GROUPS = {
    "Pile-CC": (18.11, 4.33, 200, 1.0, 0.1, 0.03, 0.02, 0.8),
    "PubMed Central": (14.40, 30.55, 700, 0.9, 0.3, 0.06, 0.0, 0.9),
    "Books3": (12.07, 538.36, 350, 1.0, 0.1, 0.005, 0.0, 0.9),
    "OpenWebText2": (10.01, 3.85, 300, 0.9, 1.0, 0.02, 0.0, 0.9),
    "ArXiv": (8.96, 46.61, 80, 1.0, 0.15, 0.08, 0.0, 0.5),
    "Github": (7.59, 5.25, 35, 0.9, 0.15, 0.05, 0.0, 0.05),
    "FreeLaw": (6.12, 15.06, 150, 1.0, 0.3, 0.04, 0.0, 0.8),
    "StackExchange": (5.13, 2.16, 150, 1.0, 0.5, 0.03, 0.0, 0.7),
    "USPTO Backgrounds": (3.65, 4.08, 500, 0.8, 0.5, 0.03, 0.0, 0.9),
    "PubMed Abstracts": (3.07, 1.30, 1200, 0.5, 0.0, 0.03, 0.0, 0.95),
    "Gutenberg (PG-19)": (2.17, 398.73, 65, 0.4, 0.2, 0.005, 0.02, 0.3),
    "OpenSubtitles": (1.55, 30.48, 35, 0.6, 0.0, 0.01, 0.0, 0.6),
    "Wikipedia (en)": (1.53, 1.11, 500, 0.9, 0.5, 0.04, 0.01, 0.95),
    "DM Mathematics": (1.24, 8.00, 40, 0.5, 0.0, 0.5, 0.0, 0.1),
    "Ubuntu IRC": (0.88, 545.48, 60, 0.8, 0.0, 0.03, 0.02, 0.2),
    "BookCorpus2": (0.75, 369.87, 300, 1.0, 0.3, 0.005, 0.0, 0.9),
    "EuroParl": (0.73, 68.87, 250, 0.9, 0.3, 0.01, 0.85, 0.9),
    "HackerNews": (0.62, 4.92, 200, 1.0, 0.5, 0.03, 0.01, 0.8),
    "YoutubeSubtitles": (0.60, 22.55, 40, 0.6, 0.0, 0.02, 0.5, 0.3),
    "PhilPapers": (0.38, 73.37, 150, 1.0, 0.3, 0.02, 0.02, 0.8),
    "NIH ExPorter": (0.30, 2.11, 1500, 0.5, 0.0, 0.02, 0.0, 0.95),
    "Enron Emails": (0.14, 1.78, 60, 1.0, 0.3, 0.03, 0.0, 0.5),
}
NAMES = list(GROUPS)
WEIGHT, DOC_KIB, LINE_BYTES, LINE_SIGMA, BLANK, NUMBERS, FOREIGN, FULL_STOP = (
    np.array([g[i] for g in GROUPS.values()], np.float64) for i in range(8)
)
DOC_P = (WEIGHT / DOC_KIB) / (WEIGHT / DOC_KIB).sum()  # documents drawn so that the bytes follow the weights
CODE = {NAMES.index("Github")}  # indented lines, and now and then a line that is one long token


def _syllables(consonants: list[str], vowels: list[str]) -> list[str]:
    """Consonant-vowel syllables: a string of them reads back one way only, so distinct ranks stay distinct."""
    return [c + v for c in consonants for v in vowels]


LATIN = _syllables(
    "b c d f g h j k l m n p r s t v w z st tr ch th pl gr".split(), "a e i o u ou ea y".split()
)  # 192 syllables
ACCENTED = _syllables("b c d f g l m n p r s t v z ß ç ñ".split(), "a e i o u é è ü ö ä å ø".split())
CYRILLIC = _syllables("б в г д ж з к л м н п р с т ф х ц ч ш".split(), "а е и о у ы я ю э".split())
GREEK = _syllables("β γ δ ζ θ κ λ μ ν ξ π ρ σ τ φ χ".split(), "α ε η ι ο υ ω ά έ ί ό".split())
CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 2500)]  # common ideographs, no case, no spaces
DIGITS = list("0123456789")
SCRIPTS = [LATIN, ACCENTED, CYRILLIC, GREEK, CJK, DIGITS]
LATIN_S, ACCENTED_S, CYRILLIC_S, GREEK_S, CJK_S, DIGITS_S = range(6)
FOREIGN_SCRIPTS, FOREIGN_P = [ACCENTED_S, CYRILLIC_S, GREEK_S, CJK_S], [0.55, 0.2, 0.1, 0.15]
BORROWED = 0.01  # words of a Latin document spelled in accented Latin (names, loanwords)
COMMA = 0.06
SENTENCE_WORDS = 18  # mean words a sentence
BASE64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8)
LONG_TOKEN = 0.001  # lines of code that are one base64-like token
# What follows a word: the separators (the last word of a line takes a line end)
SEPARATORS = [" ", ", ", ". ", "\n", ".\n", "\n\n", ".\n\n", "", "，", "。", "\n    ", "\n        "]
SPACE, COMMA_SP, STOP_SP, NL, STOP_NL, PARA, STOP_PARA, NONE, CJK_COMMA, CJK_STOP, NL_IND1, NL_IND2 = range(12)


class _Script:
    """A script's syllables, lower and capitalized, as UTF-8 bytes in one array."""

    def __init__(self, syllables: list[str]):
        forms = syllables + [s[:1].upper() + s[1:] for s in syllables]
        encoded = [s.encode() for s in forms]
        self.base = len(syllables)
        self.lengths = np.array([len(e) for e in encoded], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.blob = np.frombuffer(b"".join(encoded), np.uint8)

    def spell(self, ranks: np.ndarray, capital: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ranks (>= 1) in bijective base-B numeration, one syllable a digit, the first capitalized where
        asked: (UTF-8 bytes of all the words one after another, each word's length)."""
        b = self.base
        digits = []  # most significant last
        r = ranks.astype(np.int64) - 1
        alive = np.ones(len(r), bool)
        while alive.any():
            digits.append(np.where(alive, r % b, -1))
            r = np.where(alive, r // b - 1, -1)
            alive &= r >= 0
            r = np.maximum(r, 0)
        syl = np.stack(digits[::-1], axis=1)  # (words, most digits); -1 before a short word's first
        present = syl >= 0
        first = np.argmax(present, axis=1)
        rows = np.arange(len(syl))
        syl[rows, first] += np.where(capital, b, 0)
        ids = syl[present]  # row-major: word by word, most significant syllable first
        word_lengths = np.where(present, self.lengths[np.maximum(syl, 0)], 0).sum(axis=1)
        return _gather(self.blob, self.starts[ids], self.lengths[ids]), word_lengths


def _gather(blob: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """blob[starts[0]:starts[0]+lengths[0]] + blob[starts[1]:...] + ..., vectorized."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.uint8)
    ends = np.cumsum(lengths)
    shift = np.repeat(starts - (ends - lengths), lengths)
    return blob[np.arange(total, dtype=np.int64) + shift]


@dataclass
class _Table:
    """A script's words of rank < TABLE_RANKS, lower and capitalized, spelled once."""

    blob: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, script: _Script) -> "_Table":
        ranks = np.tile(np.arange(1, TABLE_RANKS, dtype=np.int64), 2)
        capital = np.repeat([False, True], TABLE_RANKS - 1)
        blob, lengths = script.spell(ranks, capital)
        return cls(blob, np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)

    def entry(self, ranks: np.ndarray, capital: np.ndarray) -> np.ndarray:
        return (ranks - 1) + np.where(capital, TABLE_RANKS - 1, 0)


class Generator:
    """Documents of the Pile's groups, a block at a time, from a seed."""

    def __init__(self, seed: int):
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.scripts = [_Script(s) for s in SCRIPTS]
        self.tables = [_Table.of(s) for s in self.scripts]
        seps = [s.encode() for s in SEPARATORS]
        self.sep_blob = np.frombuffer(b"".join(seps), np.uint8)
        self.sep_lengths = np.array([len(s) for s in seps], np.int64)
        self.sep_starts = np.concatenate([[0], np.cumsum(self.sep_lengths)[:-1]])

    def ranks(self, n: int) -> np.ndarray:
        """Zipf-Mandelbrot ranks >= 1 (continuous approximation, inverse transform); ranks past 2^50
        (astronomically rare words) become fresh random ranks there: each is a new word all the same."""
        u = 1.0 - self.rng.random(n)  # (0, 1]
        r = np.floor((1 + Q) * u ** (-1.0 / (ALPHA - 1.0)) - Q)
        huge = r >= 2.0**50
        out = np.maximum(r, 1).astype(np.float64)
        out[huge] = 2.0**50 + self.rng.integers(0, 2**50, int(huge.sum()))
        return out.astype(np.int64)

    def block(self, n_docs: int = 256) -> Iterator[tuple[str, str]]:
        """(group, text) of the next n_docs documents."""
        rng = self.rng
        groups = rng.choice(len(NAMES), n_docs, p=DOC_P)
        mean = DOC_KIB[groups] * 1024
        size = np.minimum(mean * rng.lognormal(-(DOC_SIGMA**2) / 2, DOC_SIGMA, n_docs), mean * DOC_CAP)
        doc_words = np.maximum(1, (size / WORD_BYTES).astype(np.int64))
        foreign = rng.random(n_docs) < FOREIGN[groups]
        doc_script = np.where(foreign, rng.choice(FOREIGN_SCRIPTS, n_docs, p=FOREIGN_P), LATIN_S)
        # lines: words per line, log-normal around the group's mean, drawn until the document's words are
        # used (the last line cut short; a document that runs out of drawn lines puts the rest in its last)
        m, s = LINE_BYTES[groups] / WORD_BYTES, LINE_SIGMA[groups]
        k = np.maximum(4, (doc_words / m * 1.5).astype(np.int64) + 4)
        draw_doc = np.repeat(np.arange(n_docs), k)
        draw = np.maximum(1, np.rint(rng.lognormal((np.log(m) - s * s / 2)[draw_doc], s[draw_doc]))).astype(np.int64)
        ends = np.cumsum(draw)
        before = ends - draw - np.repeat(np.r_[0, ends[np.cumsum(k)[:-1] - 1]], k)  # words in the doc before it
        keep = before < doc_words[draw_doc]
        line_doc = draw_doc[keep]
        line_words = np.minimum(draw, doc_words[draw_doc] - before)[keep]
        short = doc_words - np.bincount(line_doc, weights=line_words, minlength=n_docs).astype(np.int64)
        line_words[np.cumsum(np.bincount(line_doc, minlength=n_docs)) - 1] += short
        n_lines = len(line_words)
        line_group = groups[line_doc]
        long_token = np.isin(line_group, list(CODE)) & (rng.random(n_lines) < LONG_TOKEN)
        line_words[long_token] = 1
        n = int(line_words.sum())
        word_line = np.repeat(np.arange(n_lines), line_words)
        word_doc = line_doc[word_line]
        word_group = groups[word_doc]
        last_in_line = np.zeros(n, bool)
        last_in_line[np.cumsum(line_words) - 1] = True
        # scripts: the document's; numbers and borrowed words mixed in
        script = doc_script[word_doc].copy()
        latin = script == LATIN_S
        script[latin & (rng.random(n) < BORROWED)] = ACCENTED_S
        script[rng.random(n) < NUMBERS[word_group]] = DIGITS_S
        cjk = script == CJK_S
        # punctuation: a full stop every SENTENCE_WORDS words on average, at a line's end as the group has it
        stop = rng.random(n) < 1.0 / SENTENCE_WORDS
        stop[last_in_line] = rng.random(int(last_in_line.sum())) < FULL_STOP[word_group[last_in_line]]
        comma = ~stop & (rng.random(n) < COMMA)
        sep = np.full(n, SPACE)
        sep[comma] = COMMA_SP
        sep[stop] = STOP_SP
        sep[cjk] = np.where(stop[cjk], CJK_STOP, np.where(comma[cjk], CJK_COMMA, NONE))
        para = rng.random(n) < BLANK[word_group]
        ends = last_in_line
        sep[ends] = np.where(para[ends], np.where(stop[ends], STOP_PARA, PARA), np.where(stop[ends], STOP_NL, NL))
        code = ends & np.isin(word_group, list(CODE))
        indent = rng.integers(0, 3, n)
        sep[code & (indent == 1)] = NL_IND1
        sep[code & (indent == 2)] = NL_IND2
        doc_end = np.zeros(n, bool)
        doc_end[np.flatnonzero(np.diff(word_doc)) if n > 1 else []] = True
        doc_end[-1] = True
        sep[doc_end] = NONE
        capital = np.r_[True, stop[:-1]] & (script != DIGITS_S) & (script != CJK_S)
        capital |= np.r_[True, doc_end[:-1]] & (script != DIGITS_S) & (script != CJK_S)
        ranks = self.ranks(n)
        # the words: table entries for frequent ranks, spelled on the spot for the rest, base64 tokens
        starts = np.empty(n, np.int64)
        lengths = np.empty(n, np.int64)
        sources = []  # blobs, concatenated at the end; starts are offsets into their concatenation
        offset = 0
        for k, table in enumerate(self.tables):
            mine = (script == k) & (ranks < TABLE_RANKS) & ~long_token[word_line]
            entry = table.entry(ranks[mine], capital[mine])
            starts[mine] = table.starts[entry] + offset
            lengths[mine] = table.lengths[entry]
            sources.append(table.blob)
            offset += len(table.blob)
            rare = (script == k) & (ranks >= TABLE_RANKS) & ~long_token[word_line]
            if rare.any():
                blob, each = self.scripts[k].spell(ranks[rare], capital[rare])
                starts[rare] = offset + np.concatenate([[0], np.cumsum(each)[:-1]])
                lengths[rare] = each
                sources.append(blob)
                offset += len(blob)
        tokens = long_token[word_line]
        if tokens.any():
            each = np.minimum(np.rint(rng.lognormal(np.log(1000), 1.2, int(tokens.sum()))), 60000).astype(np.int64) + 8
            blob = BASE64[rng.integers(0, len(BASE64), int(each.sum()))]
            starts[tokens] = offset + np.concatenate([[0], np.cumsum(each)[:-1]])
            lengths[tokens] = each
            sources.append(blob)
            offset += len(blob)
        sources.append(self.sep_blob)
        all_starts = np.empty(2 * n, np.int64)
        all_lengths = np.empty(2 * n, np.int64)
        all_starts[0::2], all_lengths[0::2] = starts, lengths
        all_starts[1::2], all_lengths[1::2] = self.sep_starts[sep] + offset, self.sep_lengths[sep]
        text = _gather(np.concatenate(sources), all_starts, all_lengths)
        doc_bytes = np.bincount(word_doc, weights=lengths + self.sep_lengths[sep], minlength=n_docs).astype(np.int64)
        data = text.tobytes()
        at = 0
        for d in range(n_docs):
            yield NAMES[groups[d]], data[at : at + doc_bytes[d]].decode("utf-8")
            at += doc_bytes[d]


CHUNK_BYTES = 16_000_000  # text a chunk: one zstd frame, drawn from its own seed, so any number of processes agree


_generator: "Generator | None" = None


def _chunk(job: tuple[int, int, int]) -> tuple[bytes, int, int, dict[str, int]]:
    """Chunk `index` of seed `seed`: (its zstd frame, documents, text bytes, text bytes by group)."""
    global _generator
    seed, index, level = job
    if _generator is None:
        _generator = Generator(seed)
    _generator.rng = np.random.Generator(np.random.PCG64([seed, index]))
    lines, written, per_group = [], 0, dict.fromkeys(NAMES, 0)
    while written < CHUNK_BYTES:
        for group, text in _generator.block():
            lines.append(json.dumps({"text": text, "meta": {"pile_set_name": group}}, ensure_ascii=False))
            size = len(text.encode())
            written += size
            per_group[group] += size
            if written >= CHUNK_BYTES:
                break
    data = ("\n".join(lines) + "\n").encode()
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data), len(lines), written, per_group


def write(path: Path, text_bytes: int, seed: int, workers: int = 1, level: int = 3, progress=None) -> dict:
    """A shard of at least `text_bytes` of text at `path` (whole or not at all): CHUNK_BYTES chunks, each a
    zstd frame of whole documents, in order, made by `workers` processes; returns what it holds."""
    chunks = max(1, -(-text_bytes // CHUNK_BYTES))
    tmp = path.with_name(path.name + ".tmp")
    docs = written = 0
    per_group = dict.fromkeys(NAMES, 0)
    jobs = [(seed, i, level) for i in range(chunks)]
    with open(tmp, "wb") as f, multiprocessing.get_context("fork").Pool(workers) as pool:
        for frame, n_docs, n_bytes, groups in pool.imap(_chunk, jobs):
            f.write(frame)
            docs, written = docs + n_docs, written + n_bytes
            for group, size in groups.items():
                per_group[group] += size
            if progress:
                progress(written)
    tmp.rename(path)
    return {
        "file": str(path),
        "seed": seed,
        "documents": docs,
        "text_bytes": written,
        "compressed_bytes": path.stat().st_size,
        "group_share": {g: round(b / written, 5) for g, b in per_group.items()},
    }


def largest(path: Path, marks_gb: list[float]) -> dict:
    """The largest document of a shard this module wrote, and of each shorter shard of the same seed
    (`--gb` one of `marks_gb`): those are its first chunks, as a chunk depends only on (seed, index).
    A stage that holds one document at a time peaks with the largest: its text's UTF-8 bytes, and
    the Python string's own size (1, 2 or 4 bytes a character, by its widest character)."""
    chunks: list[dict] = []
    chunk = {"text_bytes": 0, "largest_bytes": 0, "largest_str_bytes": 0, "group": None}
    with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True) as raw:
        for line in io.BufferedReader(raw, 1 << 24):
            record = json.loads(line)
            text = record["text"]
            size = len(text.encode())
            if size > chunk["largest_bytes"]:
                chunk.update(
                    largest_bytes=size, largest_str_bytes=sys.getsizeof(text), group=record["meta"]["pile_set_name"]
                )
            chunk["text_bytes"] += size
            if chunk["text_bytes"] >= CHUNK_BYTES:  # where _chunk ended it
                chunks.append(chunk)
                chunk = {"text_bytes": 0, "largest_bytes": 0, "largest_str_bytes": 0, "group": None}
    if chunk["text_bytes"]:
        chunks.append(chunk)
    found = {}
    for gb in marks_gb:
        first = chunks[: max(1, -(-int(gb * 1e9) // CHUNK_BYTES))]
        top = max(first, key=lambda c: c["largest_bytes"])
        found[f"{gb:g}"] = {
            "chunks": len(first),
            "text_bytes": sum(c["text_bytes"] for c in first),
            "largest_document_bytes": top["largest_bytes"],
            "largest_document_str_bytes": top["largest_str_bytes"],
            "group": top["group"],
        }
    return {"file": str(path), "chunks": len(chunks), "shards": found}


def heaps_curve(tokens, points: list[int]) -> list[tuple[int, int]]:
    """(occurrences, distinct words) at each of `points` occurrences of a stream of words."""
    seen: set = set()
    curve, todo, n = [], list(points), 0
    for token in tokens:
        n += 1
        seen.add(token)
        if n == todo[0]:
            curve.append((n, len(seen)))
            todo.pop(0)
            if not todo:
                break
    return curve


def heaps_fit(curve: list[tuple[int, int]]) -> dict:
    """V = K N^beta, least squares in log-log."""
    beta, log_k = np.polyfit(np.log([n for n, _ in curve]), np.log([v for _, v in curve]), 1)
    return {"K": round(float(np.exp(log_k)), 3), "beta": round(float(beta), 4), "points": curve}


def heaps(seed: int = 5) -> dict:
    """Heaps' law on this generator's text and on the real text at hand, words cut at whitespace (the
    words spm_train counts, case and punctuation kept), documents in a seeded random order."""
    import glob
    import random

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pipeline.ingest.documents import records
    from pipeline.ingest.records import PILE_FIELDS

    steps = [10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6, 3 * 10**6, 10**7, 3 * 10**7]

    def words(texts):
        for text in texts:
            yield from text.split()

    def fit(texts: list[str]) -> dict:
        total = sum(len(t.split()) for t in texts)
        return heaps_fit(heaps_curve(words(texts), [n for n in steps if n <= total]))

    def generated():
        gen = Generator(seed)
        while True:
            for _, text in gen.block():
                yield from text.split()

    sample = [
        (r.group, r.text)
        for path in sorted((Path(__file__).resolve().parent.parent / "data/sample").rglob("*.jsonl.zst"))
        for r in records(path, PILE_FIELDS, "error")
    ]
    random.Random(0).shuffle(sample)
    vim = [
        Path(f).read_text(encoding="utf-8", errors="replace")
        for f in sorted(glob.glob("/usr/share/vim/vim*/doc/*.txt"))
    ]
    random.Random(0).shuffle(vim)
    out = {
        "method": "words cut at whitespace (case and punctuation kept, as spm_train's words), documents shuffled (seed 0)",
        "this generator": heaps_fit(heaps_curve(generated(), steps)),
        "the sample, all documents": fit([t for _, t in sample]),
        "the sample's English prose (Django docs)": fit([t for g, t in sample if g == "Django docs"]),
        "the sample's code (Django code)": fit([t for g, t in sample if g == "Django code"]),
        "the sample's translations (~100 languages)": fit([t for g, t in sample if g == "Django translations"]),
    }
    if vim:
        out["English prose: vim's manual (/usr/share/vim)"] = fit(vim)
    return out


def describe(seed: int = 5, chunks: int = 4) -> dict:
    """The text's statistics over a few chunks: what a line, a word and a document look like."""
    lines = line_bytes = words = long_lines = docs = text_bytes = compressed = 0
    non_ascii = 0
    for index in range(chunks):
        frame, n_docs, n_bytes, _ = _chunk((seed, index, 3))
        docs, text_bytes, compressed = docs + n_docs, text_bytes + n_bytes, compressed + len(frame)
        for record in zstandard.ZstdDecompressor().decompressobj().decompress(frame).split(b"\n"):
            if not record:
                continue
            text = json.loads(record)["text"]
            for line in text.split("\n"):
                if line:
                    size = len(line.encode())
                    lines, line_bytes, words = lines + 1, line_bytes + size, words + len(line.split())
                    long_lines += size > 4192
            non_ascii += sum(1 for char in text if ord(char) > 127)
    return {
        "documents": docs,
        "text_bytes": text_bytes,
        "mean_document_bytes": round(text_bytes / docs),
        "non_empty_lines": lines,
        "mean_line_bytes": round(line_bytes / lines, 1),
        "words_per_line": round(words / lines, 2),
        "text_bytes_per_word": round(text_bytes / words, 2),
        "lines_over_4192_bytes": round(long_lines / lines, 5),
        "non_ascii_characters_share": round(non_ascii / text_bytes, 4),
        "compressed_per_text_byte": round(compressed / text_bytes, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, nargs="?", help="the shard to write")
    parser.add_argument("--gb", type=float, help="text to write, in GB (10^9 bytes of UTF-8)")
    parser.add_argument(
        "--describe",
        action="store_true",
        help="the text's statistics and Heaps' law fits, to bench/results/pile_like.json",
    )
    parser.add_argument(
        "--largest",
        nargs="+",
        type=float,
        metavar="GB",
        help="read the shard instead: its largest document, and that of its shorter versions of these sizes",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (the bytes do not depend on it)")
    args = parser.parse_args()
    if args.describe:
        results = Path(__file__).resolve().parent / "results" / "pile_like.json"
        found = {"text": describe(), "heaps": heaps(), "alpha": ALPHA, "q": Q}
        results.write_text(json.dumps(found, indent=2) + "\n")
        print(json.dumps(found, indent=2))
        return
    if args.largest:
        print(json.dumps(largest(args.output, args.largest), indent=2))
        return
    if args.output is None or args.gb is None:
        parser.error("give the shard to write and --gb")
    started = time.monotonic()

    def show(done: int) -> None:
        rate = done / max(time.monotonic() - started, 1e-9) / 1e6
        print(f"{done / 1e9:.2f} of {args.gb:g} GB ({rate:.0f} MB/s)", file=sys.stderr, flush=True)

    print(json.dumps(write(args.output, int(args.gb * 1e9), args.seed, args.workers, progress=show), indent=2))


if __name__ == "__main__":
    main()
