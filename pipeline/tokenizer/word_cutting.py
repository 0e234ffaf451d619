"""Word cutting: one line as spm_train 0.2.3 sees it -> its words, exactly.

Once it has loaded its lines, spm_train's BPE depends only on the table of (normalized word, count)
and on the character counts, which are sums over it. A line goes through what spm_train does to it:

- loading: empty lines, lines over max_sentence_length bytes and lines holding the bytes of U+2585
  are skipped, by reason; input_format=tsv lines are `text<TAB>count`;
- normalizing: SentencePiece's own normalizer for the rule (with remove_extra_whitespaces,
  add_dummy_prefix, escape_whitespaces; treat_whitespace_as_suffix puts the marker at the end),
  a malformed UTF-8 byte read as U+FFFD and looked up in no rule (pure Python, for those lines
  alone); then every meta piece (unk, bos, eos, pad, control and user-defined symbols, byte pieces)
  and the pretokenization delimiter become U+001F, which no piece may hold;
- cutting: words at U+2581 as spm_train cuts them (split_by_whitespace, treat_whitespace_as_suffix,
  allow_whitespace_only_pieces); without split_by_whitespace a line is one word.

`count_batch` is what a counting worker runs (pipeline.tokenizer.word_counts): its batch's table,
sorted and compact. Workers never load numba, only the main process merges tables.
"""

import re
from collections import Counter

import sentencepiece as spm

from pipeline.tokenizer.pieces import SPACE
from pipeline.tokenizer.spm_spec import TrainerError, specs
from pipeline.tokenizer.word_table import Table, table_of

BOUNDARY = "\x1f"  # what a meta piece or the pretokenization delimiter becomes: no piece holds it
RESERVED = "\u2585".encode()  # spm drops a line holding it: it is its mark for a rare character
MALFORMED = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, read with surrogateescape


class Cutter:
    """One line as spm_train sees it -> its words (or None: a line spm_train does not load)."""

    def __init__(self, flags: dict):
        s = specs(flags)
        t, n = s.trainer, s.normalizer
        self.max_bytes, self.tsv = t.max_sentence_length, t.input_format == "tsv"
        self.suffix, self.split, self.whitespace_only = (
            t.treat_whitespace_as_suffix,
            t.split_by_whitespace,
            t.allow_whitespace_only_pieces,
        )
        self.dummy_at_end = n.add_dummy_prefix and self.suffix
        as_given = type(n)()
        as_given.CopyFrom(n)
        as_given.add_dummy_prefix = n.add_dummy_prefix and not self.suffix  # the marker goes at the end instead
        self.normalizer = spm.SentencePieceNormalizer(normalizer_spec=as_given)
        self.exact = _PythonNormalizer(as_given)
        pieces = sorted({piece for piece, _ in s.meta.values()}, key=lambda p: (-len(p), p))
        self.meta = re.compile("|".join(map(re.escape, pieces))) if pieces else None
        self.delimiter = t.pretokenization_delimiter

    def cut(self, line: bytes) -> tuple[list[str], int] | str:
        """(words, count) of a line, or why spm_train skips it: `empty`, `too long`, `reserved`."""
        count = 1
        if self.tsv:
            fields = line.split(b"\t")
            if len(fields) != 2:
                raise TrainerError(f"Input format must be: word <tab> freq. {line[:80].decode('utf-8', 'replace')}")
            line = fields[0]
            try:
                count = int(fields[1].strip())
            except ValueError:
                raise TrainerError("Could not parse the frequency") from None
            if count < 1:
                raise TrainerError("[freq >= 1]")
        if not line:
            return "empty"
        if len(line) > self.max_bytes:
            return "too long"
        if RESERVED in line:
            return "reserved"
        text = line.decode("utf-8", "surrogateescape")
        normal = self.exact.normalize(text) if MALFORMED.search(text) else self.normalizer.normalize(text)
        if self.dummy_at_end and normal:
            normal += SPACE
        if self.meta is not None:
            normal = self.meta.sub(BOUNDARY, normal)
        if self.delimiter:
            normal = normal.replace(self.delimiter, BOUNDARY)
        if not normal:
            return "empty after normalization"
        return split_words(normal, self.split, self.suffix, self.whitespace_only), count


def split_words(text: str, split: bool, suffix: bool, whitespace_only: bool) -> list[str]:
    """spm's SplitIntoWords: a word begins at each U+2581 (suffix mode: ends after one); with
    allow_whitespace_only_pieces a run of them stays together. Without split_by_whitespace the
    line is one word."""
    if not split:
        return [text]
    if not suffix and not whitespace_only:  # the common case, in C
        head, *rest = text.split(SPACE)
        return ([head] if head else []) + [SPACE + word for word in rest]
    words: list[str] = []
    if suffix:
        in_space = False
        for i, char in enumerate(text):
            space = char == SPACE
            if not words or (in_space and not space and whitespace_only):
                words.append("")
            in_space = space or (in_space and whitespace_only and space)
            words[-1] += char
            if space and not whitespace_only and i + 1 < len(text):
                words.append("")
        return words
    in_space = False
    for i, char in enumerate(text):
        space = char == SPACE
        if i == 0 or (space and (not in_space or not whitespace_only)):
            words.append("")
            in_space = True
        if in_space and not space:
            in_space = False
        words[-1] += char
    return words


class _PythonNormalizer:
    """SentencePiece's normalizer over its decompiled rules, for lines holding malformed UTF-8: spm
    reads each bad byte as U+FFFD and looks it up in no rule, which its Python binding cannot be given."""

    def __init__(self, spec):
        self.rules = (
            dict(spm.SentencePieceNormalizer(normalizer_spec=spec).Decompile()) if spec.precompiled_charsmap else {}
        )
        self.longest: dict[str, list[int]] = {}
        for key in self.rules:
            self.longest.setdefault(key[0], []).append(len(key))
        self.longest = {char: sorted(set(n), reverse=True) for char, n in self.longest.items()}
        self.dummy, self.collapse = spec.add_dummy_prefix, spec.remove_extra_whitespaces
        self.space = SPACE if spec.escape_whitespaces else " "

    def _prefix(self, text: str, i: int) -> tuple[str, int]:
        if "\udc80" <= text[i] <= "\udcff":
            return "\ufffd", 1
        for n in self.longest.get(text[i], ()):
            found = self.rules.get(text[i : i + n])
            if found is not None:
                return found, n
        return text[i], 1

    def normalize(self, text: str) -> str:
        i, n = 0, len(text)
        while self.collapse and i < n:
            replaced, k = self._prefix(text, i)
            if replaced != " ":
                break
            i += k
        if i >= n:
            return ""
        out = [self.space] if self.dummy else []
        after_space = self.collapse
        while i < n:
            replaced, k = self._prefix(text, i)
            if after_space:
                replaced = replaced.lstrip(" ")
            if replaced:
                out.append(replaced.replace(" ", self.space))
                after_space = replaced.endswith(" ")
            i += k
            if not self.collapse:
                after_space = False
        normal = "".join(out)
        while self.collapse and normal.endswith(self.space):
            normal = normal[: -len(self.space)]
        return normal


_cutter: Cutter | None = None


def load_cutter(flags: dict) -> None:
    """A worker's start: the cutter for these flags, which count_batch uses."""
    global _cutter
    _cutter = Cutter(flags)


def count_batch(lines: list[bytes]) -> tuple[Table, Counter]:
    """The words of a batch of lines as a table (sorted, compact: cheap to send and to merge), and
    the lines: `loaded` (spm_train keeps them) and those skipped, by reason."""
    counts: Counter = Counter()
    tally: Counter = Counter()
    for line in lines:
        cut = _cutter.cut(line)
        if isinstance(cut, str):
            tally[cut] += 1
            tally["loaded"] += cut == "empty after normalization"  # loaded, then dropped as empty
            continue
        tally["loaded"] += 1
        words, count = cut
        if count == 1:
            counts.update(words)
        else:
            for word in words:
                counts[word] += count
    return table_of(counts), tally
