"""The exact trainer: SentencePiece 0.2.3's BPE from word-count tables, the model spm_train makes.

From the merged table of (word, count) of every corpus part (pipeline.tokenizer.word_counts):

1. the characters' counts, summed over the words (U+0000 does not count);
2. the alphabet, chosen as spm_train chooses it: required characters first, then by count, then
   by code point, taken while the share of the characters covered, as a float32, is below
   character_coverage; U+001F (a meta piece's mark) counts but is never taken;
3. every other character becomes U+2585, which no pair may hold;
4. the merge loop, compiled (pipeline.tokenizer.bpe_kernel), for vocab_size minus the meta pieces
   and the alphabet;
5. the pieces: the merges in order, then the alphabet by count, then code point; the meta pieces
   take their ids and the model is serialized as spm_train serializes it
   (pipeline.tokenizer.spm_spec).

The words go from the table's UTF-8 straight into the kernel's layout (4 bytes a code point and
12 a word), never through Python strings, so memory follows the table's distinct words, not the
corpus's lines: RAM_FIXED + RAM_PER_POSITION x (code points + words), measured (bench/README.md).
Training runs in a watched child process (`train_watched`); the compiled code (numba, ~75 MB) loads
there only, not in the stage or command that waits for it.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import progress
from pipeline.core.errors import PipelineError
from pipeline.core.workers import OrderedPool
from pipeline.tokenizer import spm_spec, word_table
from pipeline.tokenizer.spm_spec import Specs, TrainerError

UNKNOWN_CHAR = 0x2585  # what a character outside the alphabet becomes
BOUNDARY = 0x1F
SPACE = 0x2581
NUL = 0x0
# Peak memory of the tokenizer stage's training (its whole process tree), measured at 1-8 M lines of
# real text (bench/README.md, 11): 258 MB (Python, numba and the compiled kernel) + 7.8 bytes per
# position of the layout (a code point, or a word's sentinel: the layout itself, the pairs, their
# places and the heap). Planned with a margin of about 15%.
RAM_FIXED = 300_000_000
RAM_PER_POSITION = 9
MAX_POSITIONS = 2**31 - 2  # the kernel's positions are int32


@dataclass(frozen=True)
class Prepared:
    syms: np.ndarray
    """The kernel's layout, code points (rare ones already U+2585)."""
    counts: np.ndarray
    alphabet: list[tuple[int, int]]
    """(code point, count) of the characters kept, in the order of the final pieces."""


def alphabet(chars: np.ndarray, s: Specs) -> list[tuple[int, int]]:
    """The characters spm_train keeps, (code point, count), in the order of the final pieces; raises
    spm_train's errors when there is no character or too many for vocab_size."""
    t = s.trainer
    required = {ord(char) for char in t.required_chars if char != "\0"}
    candidates = {int(cp) for cp in np.flatnonzero(chars) if cp not in (NUL, 0x20)} | required
    total = sum(int(chars[cp]) for cp in candidates)
    if total <= 0:
        raise TrainerError("[all_chars_count > 0] no character to train on")
    order = sorted(candidates, key=lambda cp: (cp not in required, -int(chars[cp]), cp))
    kept, covered, limit = [], 0, np.float32(t.character_coverage)
    for cp in order:
        if np.float32(covered / total) >= limit:
            break
        covered += int(chars[cp])
        if cp != BOUNDARY:
            kept.append((cp, int(chars[cp])))
    if any(cp == UNKNOWN_CHAR for cp, _ in kept):
        raise TrainerError("[!required_chars_.contains(kUNKChar)]")
    if len(kept) + len(s.meta) > t.vocab_size:
        raise TrainerError(
            "[static_cast<int>(required_chars_.size() + meta_pieces_.size()) <= trainer_spec_.vocab_size()] "
            f"Vocabulary size is smaller than required_chars. {t.vocab_size} vs {len(kept) + len(s.meta)}. "
            "Increase vocab_size or decrease character_coverage with --character_coverage option."
        )
    if chars[SPACE] and SPACE not in {cp for cp, _ in kept}:
        raise TrainerError(
            "U+2581 falls outside the alphabet (character_coverage): the exact trainer does not reproduce "
            "spm_train's words then; raise character_coverage or use spm_train"
        )
    return sorted(kept, key=lambda item: (-item[1], item[0]))


def prepare(table: word_table.Table, s: Specs) -> Prepared:
    """The table as the kernel's layout, with the alphabet chosen and every other character U+2585."""
    from pipeline.tokenizer import bpe_kernel  # compiled: loads in the training process only

    chars = np.zeros(0x110000, np.int64)
    code_points = int(np.count_nonzero((table.blob & 0xC0) != 0x80))  # UTF-8 bytes that start a character
    if code_points + len(table) + 1 > MAX_POSITIONS:
        raise TrainerError(
            f"{len(table):,} distinct words of {code_points:,} code points in all: the exact trainer takes at most "
            f"{MAX_POSITIONS:,} code points and words; lower corpus.max_lines"
        )
    syms = np.empty(code_points + len(table) + 1, np.int32)
    bpe_kernel.table_layout(table.blob, np.cumsum(table.lengths, dtype=np.int64), syms, chars, table.counts)
    kept = alphabet(chars, s)
    in_alphabet = np.zeros(0x110000, np.bool_)
    in_alphabet[[cp for cp, _ in kept]] = True
    bpe_kernel.replace_rare(syms, in_alphabet)
    return Prepared(syms, table.counts.copy(), kept)  # a copy: the table's buffers can go


def ram_needed(table_headers: list[dict]) -> int:
    """Bytes a training from tables of these headers needs at its peak (an upper bound: the tables'
    words are counted as if no two shards shared any)."""
    positions = sum(h["utf8_bytes"] + h["words"] + 1 for h in table_headers)
    return RAM_FIXED + RAM_PER_POSITION * positions


def train(tables: list[word_table.Table], flags: dict) -> tuple[spm_spec.pb.ModelProto, int]:
    """The ModelProto spm_train makes from the lines the tables were counted from, under `flags`, and
    the number of distinct words once the tables are merged. Empties `tables`: their memory goes
    before the merge loop's is taken."""
    from pipeline.tokenizer import bpe_kernel, table_merge, unicode_scripts  # compiled: this process only

    s = spm_spec.specs(flags)
    loaded = sum(table.header.get("lines_loaded", 0) for table in tables)
    if loaded == 0:
        raise TrainerError("[!sentences_.empty()] no line to train on: every line was empty or skipped")
    t = s.trainer
    if 0 < t.input_sentence_size < loaded:
        raise TrainerError(
            f"--input_sentence_size={t.input_sentence_size} is below the {loaded:,} lines loaded: spm_train "
            "would sample them, and its sampling differs on every run; raise it (or 0: every line)"
        )
    merged = table_merge.merge(tables)
    tables.clear()
    prepared, merged_words = prepare(merged, s), len(merged)
    del merged
    target = t.vocab_size - len(s.meta)
    if target < len(prepared.alphabet):
        raise TrainerError("[target_final_pieces_size >= required_chars_.size()]")
    spec = {name: getattr(t, name) for name in bpe_kernel.FLAGS} | {"max_merges": target - len(prepared.alphabet)}
    with progress.bar(spec["max_merges"], "tokenizer: BPE merges", unit="merge") as bar:
        bpe_kernel.PROGRESS[0] = lambda done: bar.update(done - bar.n)
        try:
            merges = bpe_kernel.train_merges_layout(
                prepared.syms, prepared.counts, unicode_scripts.script_array(), spec
            )
        finally:
            bpe_kernel.PROGRESS[0] = None
        bar.update(len(merges) - bar.n)
    pieces = [piece for piece, _ in merges] + [chr(cp) for cp, _ in prepared.alphabet]
    return spm_spec.model(pieces, s), merged_words


def train_files(table_paths: list[Path], flags: dict, prefix: Path) -> dict:
    """Train from table files and write `<prefix>.model` and `.vocab`; tables counted under other
    params are refused by name. Returns what the summary shows."""
    s = spm_spec.specs(flags)
    tables = [word_table.read(path) for path in table_paths]
    for table, path in zip(tables, table_paths):
        word_table.check_made_by(table, path, s)
    distinct = sum(len(t) for t in tables)
    loaded = sum(table.header.get("lines_loaded", 0) for table in tables)
    proto, merged_words = train(tables, flags)
    spm_spec.write(proto, prefix)
    return {"pieces": len(proto.pieces), "distinct_words": distinct, "merged_words": merged_words,
            "lines_loaded": loaded}  # fmt: skip


def train_watched(table_paths: list[Path], flags: dict, prefix: Path) -> dict:
    """`train_files` in a child process: Ctrl-C or SIGTERM stops it at once, and its death (the OOM
    killer, say) is an error that says so, not a hang; it draws its own progress bar."""
    pool = OrderedPool(
        train_files, 1, hint="the exact trainer needs memory for every distinct word (tokenizer stage: RAM estimate)"
    )
    try:
        pool.submit(table_paths, flags, prefix)
        return pool.next_result()
    finally:
        pool.close()


def check_memory(table_paths: list[Path], available: int) -> int:
    """Refuse, before training, tables whose training would not fit the memory here; the estimate."""
    headers = [word_table.read_header(path) for path in table_paths]
    needed = ram_needed(headers)
    if needed > available:
        words = sum(h["words"] for h in headers)
        raise PipelineError(
            f"tokenizer: training on {words:,} distinct words ({', '.join(map(str, table_paths))}) needs about "
            f"{needed / 1e9:.1f} GB of RAM but {available / 1e9:.1f} GB is available; lower corpus.max_lines or "
            "train on a machine with more memory"
        )
    return needed
