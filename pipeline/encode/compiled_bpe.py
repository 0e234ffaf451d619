"""SentencePiece's BPE encoding, compiled with numba: exactly SentencePiece's ids, in a fraction of its time.

The input is text SentencePiece has already normalised (spaces as "▁"), as an array of code points.
Words begin at each "▁" and never merge with each other (pipeline.tokenizer.pieces checks the model for
that property), so every word is encoded on its own, and a word seen before is copied from a cache
of words and their ids held in flat arrays: no Python runs per word, hit or miss.

A word that misses goes through SentencePiece's own algorithm (bpe_model.cc), step for step:
- the word is split into characters, except that the longest user-defined piece starting at a
  position is taken whole and never merged further;
- every pair of neighbouring symbols whose concatenation is a normal, user-defined or unused piece
  is a candidate; the candidate whose merged piece scores highest is merged first, the leftmost one
  on ties, and its new neighbours become candidates (a heap, as SentencePiece's agenda);
- unused pieces in the result are split back into the two pieces that made them, recursively;
- a character that is no piece gives the unknown id (one for a run of them), or with byte_fallback
  its UTF-8 bytes as "<0xXX>" pieces.
pipeline.tokenizer.pieces.compiled_problem says why a model falls outside what this reproduces; such a
model keeps SentencePiece's own BPE (pipeline.encode.encoder). tests/test_word_cache.py compares this
with SentencePiece's `encode` on every sample document and word, and on generated words and texts
under six models (lossless, the seed's flags, byte fallback and unknowns everywhere, user-defined
and unused pieces).
"""

import numpy as np
from numba import njit
from sentencepiece import sentencepiece_model_pb2

from pipeline.tokenizer.pieces import MERGEABLE, SentencePiece, two_piece_splits

MARK = 0x2581  # "▁", where every word but a text's first begins
SPACE_CHAR = 0x20
MAX_CACHED_CHARS = 64  # longer "words" (URLs, base64, long runs) rarely repeat: encode them, do not keep them
MAX_ENTRIES = 1 << 20  # words in the cache (~100 MB with its pools); cleared, not evicted, once full
POOL_CHARS_PER_ENTRY = 12  # the cache's character and id pools, sized for words longer than average
POOL_IDS_PER_ENTRY = 6
EMPTY = -1
TRIE_RADIX = 0x110000  # trie edge key: node * TRIE_RADIX + code point


@njit(cache=True, inline="always")
def _slot(key: np.int64, mask: np.int64) -> np.int64:
    mixed = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64((mixed ^ (mixed >> np.uint64(29))) & np.uint64(mask))


@njit(cache=True)
def _insert_all(keys, values, new_keys, new_values):
    mask = keys.shape[0] - 1
    for key, value in zip(new_keys, new_values):
        slot = _slot(key, mask)
        while keys[slot] != EMPTY and keys[slot] != key:
            slot = (slot + 1) & mask
        keys[slot] = key
        values[slot] = value


@njit(cache=True, inline="always")
def _find(keys, values, key):
    mask = keys.shape[0] - 1
    slot = _slot(key, mask)
    while True:
        found = keys[slot]
        if found == key:
            return values[slot]
        if found == EMPTY:
            return EMPTY
        slot = (slot + 1) & mask


def _table(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """An open-addressing hash table of (key, value) pairs (int64 keys, int32 values), at most half full."""
    size = 1 << max(4, (2 * len(pairs)).bit_length())
    keys, values = np.full(size, EMPTY, np.int64), np.full(size, EMPTY, np.int32)
    new = np.array(pairs, np.int64).reshape(-1, 2)
    _insert_all(keys, values, new[:, 0].copy(), new[:, 1].astype(np.int32))
    return keys, values


# Rows of Tables.chars (one column per code point) and Tables.splits (one column per piece)
MERGING, ALONE = 0, 1  # the piece a character is while merging (or EMPTY); its id when left alone
LEFT, RIGHT = 0, 1  # the two pieces an unused piece splits back into (EMPTY for every other piece)


class Tables:
    """A model's pieces as flat arrays, the arguments of the compiled kernels (`arrays()`)."""

    def __init__(self, proto: sentencepiece_model_pb2.ModelProto):
        pieces = proto.pieces
        n = len(pieces)
        mergeable = {piece.piece: i for i, piece in enumerate(pieces) if piece.type in MERGEABLE}
        by_string = {piece.piece: i for i, piece in enumerate(pieces)}  # SentencePiece's PieceToId
        self.unk_id = next(i for i, piece in enumerate(pieces) if piece.type == SentencePiece.UNKNOWN)
        self.scores = np.array([piece.score for piece in pieces], np.float32)
        singles = [name for name in by_string if len(name) == 1]
        self.chars = np.full((2, max((ord(name) for name in singles), default=0) + 1), EMPTY, np.int32)
        self.chars[ALONE] = self.unk_id
        for name in singles:
            self.chars[ALONE, ord(name)] = by_string[name]
            self.chars[MERGING, ord(name)] = mergeable.get(name, EMPTY)
        merges, self.splits = [], np.full((2, n), EMPTY, np.int32)
        for name, i in mergeable.items():
            splits = two_piece_splits(name, mergeable)
            merges += [(left * n + right, i) for left, right in splits]
            if pieces[i].type == SentencePiece.UNUSED and splits:  # one split only: word_boundary_problem checks
                self.splits[:, i] = splits[0]
        self.merge_keys, self.merged = _table(merges)
        self.byte_fallback = bool(proto.trainer_spec.byte_fallback)
        self.byte_ids = np.array([by_string.get(f"<0x{b:02X}>", self.unk_id) for b in range(256)], np.int32)
        edges, terminal = {}, [EMPTY]  # a trie of the user-defined pieces: (node, code point) -> node
        for i, piece in enumerate(pieces):
            if piece.type == SentencePiece.USER_DEFINED:
                node = 0
                for char in piece.piece:
                    if (node, ord(char)) not in edges:
                        edges[node, ord(char)] = len(terminal)
                        terminal.append(EMPTY)
                    node = edges[node, ord(char)]
                terminal[node] = i
        self.trie_keys, self.trie_next = _table(
            [(node * TRIE_RADIX + cp, child) for (node, cp), child in edges.items()]
        )
        self.trie_piece = np.array(terminal, np.int32)

    def arrays(self) -> tuple:
        return (
            self.chars,
            self.splits,
            self.scores,
            self.merge_keys,
            self.merged,
            self.trie_keys,
            self.trie_next,
            self.trie_piece,
            self.byte_ids,
            self.unk_id,
            self.byte_fallback,
        )


# The kernels take arrays one by one and call no helper that takes arrays, apart from the small
# ones LLVM inlines: numba counts references to arrays passed to functions it cannot inline with
# atomic operations, which cost more than the work itself on a word's few characters.
# Rows of _bpe's int32 work array: its symbols (one column each), then the candidate merges, then
# the pairs of neighbours still to look at
PIECE, LENGTH, FIRST, FROZEN, PREV, NEXT, HEAP, CAND_LEFT, CAND_RIGHT, CAND_SIZE, CAND_PIECE, TODO_LEFT, TODO_RIGHT = (
    range(13)
)
WORK_ROWS = 13


@njit(cache=True)
def work_columns(chars: int) -> int:
    """Columns of the work array for a word of `chars` characters: the first pairs, then two per merge."""
    return 3 * chars + 1


@njit(cache=True)
def _char(cps, i, spaces):
    """The code point at i; with `spaces`, a space is read as ▁ (the normaliser's escape, done here)."""
    cp = cps[i]
    return MARK if spaces and cp == SPACE_CHAR else cp


@njit(cache=True)
def _bpe(
    cps, start, end, spaces, out, pos, work,
    chars, splits, scores, merge_keys, merged, trie_keys, trie_next, trie_piece, byte_ids, unk_id, byte_fallback,
):  # fmt: skip
    """SentencePiece's BPE of cps[start:end] into out[pos:]; returns the new end of out. `work` has
    work_columns(end - start) columns."""
    n = 0
    i = start
    while i < end:  # the symbols: characters, and user-defined pieces taken whole (frozen)
        size, found, node, j = 1, EMPTY, 0, i
        while trie_piece.shape[0] > 1 and j < end:  # the longest user-defined piece starting at i
            node = _find(trie_keys, trie_next, np.int64(node) * TRIE_RADIX + _char(cps, j, spaces))
            if node == EMPTY:
                break
            j += 1
            if trie_piece[node] != EMPTY:
                size, found = j - i, trie_piece[node]
        cp = _char(cps, i, spaces)
        if found != EMPTY:
            work[PIECE, n], work[FROZEN, n] = found, 1
        else:
            work[PIECE, n] = chars[MERGING, cp] if cp < chars.shape[1] else EMPTY
            work[FROZEN, n] = 0
        work[LENGTH, n], work[FIRST, n], work[PREV, n], work[NEXT, n] = size, i, n - 1, n + 1
        work[TODO_LEFT, n], work[TODO_RIGHT, n] = n - 1, n  # every pair of neighbours, to look at first
        n += 1
        i += size
    work[NEXT, n - 1] = EMPTY

    todo, heap_size, n_cand = n, 0, 0  # todo[0] is the pair (EMPTY, 0): nothing
    while todo or heap_size:
        if todo:  # a pair of neighbours becomes a candidate if their concatenation is a mergeable piece
            todo -= 1
            left, right = work[TODO_LEFT, todo], work[TODO_RIGHT, todo]
            if left == EMPTY or right == EMPTY or work[FROZEN, left] or work[FROZEN, right]:
                continue
            if work[PIECE, left] == EMPTY or work[PIECE, right] == EMPTY:
                continue
            m = _find(merge_keys, merged, np.int64(work[PIECE, left]) * scores.shape[0] + work[PIECE, right])
            if m == EMPTY:
                continue
            work[CAND_LEFT, n_cand], work[CAND_RIGHT, n_cand], work[CAND_PIECE, n_cand] = left, right, m
            work[CAND_SIZE, n_cand] = work[LENGTH, left] + work[LENGTH, right]
            k = heap_size  # onto the heap: the highest score on top, then the leftmost
            while k > 0:
                parent = work[HEAP, (k - 1) >> 1]
                score, parent_score = scores[m], scores[work[CAND_PIECE, parent]]
                if score < parent_score or (score == parent_score and left > work[CAND_LEFT, parent]):
                    break
                work[HEAP, k] = parent
                k = (k - 1) >> 1
            work[HEAP, k] = n_cand
            heap_size += 1
            n_cand += 1
            continue

        top = work[HEAP, 0]  # off the heap: the best candidate
        heap_size -= 1
        last, k = work[HEAP, heap_size], 0
        while True:
            child = 2 * k + 1
            if child >= heap_size:
                break
            if child + 1 < heap_size:
                a, b = work[HEAP, child], work[HEAP, child + 1]
                score_a, score_b = scores[work[CAND_PIECE, a]], scores[work[CAND_PIECE, b]]
                if score_b > score_a or (score_b == score_a and work[CAND_LEFT, b] < work[CAND_LEFT, a]):
                    child += 1
            best = work[HEAP, child]
            score, best_score = scores[work[CAND_PIECE, last]], scores[work[CAND_PIECE, best]]
            if score > best_score or (score == best_score and work[CAND_LEFT, last] < work[CAND_LEFT, best]):
                break
            work[HEAP, k] = best
            k = child
        work[HEAP, k] = last

        left, right = work[CAND_LEFT, top], work[CAND_RIGHT, top]
        if work[LENGTH, left] == 0 or work[LENGTH, right] == 0:
            continue  # made stale by an earlier merge: one side was merged away
        if work[LENGTH, left] + work[LENGTH, right] != work[CAND_SIZE, top]:
            continue  # or one side grew
        work[PIECE, left] = work[CAND_PIECE, top]
        work[LENGTH, left] += work[LENGTH, right]
        work[LENGTH, right] = 0
        after = work[NEXT, right]
        work[NEXT, left] = after
        if after != EMPTY:
            work[PREV, after] = left
        work[TODO_LEFT, 0], work[TODO_RIGHT, 0] = work[PREV, left], left  # the merged symbol's new pairs
        work[TODO_LEFT, 1], work[TODO_RIGHT, 1] = left, after
        todo = 2

    k, after_unknown = 0, False  # the first symbol is never merged away: merges keep the left one
    while k != EMPTY:
        unknown = False
        if work[FROZEN, k]:
            out[pos] = work[PIECE, k]
            pos += 1
        elif work[LENGTH, k] == 1:  # a character left alone: its id, or its UTF-8 bytes' ids if unknown
            cp = _char(cps, work[FIRST, k], spaces)
            alone = chars[ALONE, cp] if cp < chars.shape[1] else unk_id
            unknown = alone == unk_id
            if not unknown or not byte_fallback:
                if not (unknown and after_unknown):  # a run of unknown characters is one unknown piece
                    out[pos] = alone
                    pos += 1
            else:
                n_bytes = 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
                lead = (0, 0, 0xC0, 0xE0, 0xF0)[n_bytes]
                for b in range(n_bytes):
                    shift = 6 * (n_bytes - 1 - b)
                    out[pos + b] = byte_ids[(lead | (cp >> shift)) if b == 0 else (0x80 | ((cp >> shift) & 0x3F))]
                pos += n_bytes
        else:  # unused pieces split back, depth first, left before right (the HEAP row is free again)
            work[HEAP, 0], depth = work[PIECE, k], 1
            while depth:
                depth -= 1
                top = work[HEAP, depth]
                if splits[LEFT, top] != EMPTY:
                    work[HEAP, depth], work[HEAP, depth + 1] = splits[RIGHT, top], splits[LEFT, top]
                    depth += 2
                else:
                    out[pos] = top
                    pos += 1
        after_unknown = unknown
        k = work[NEXT, k]
    return pos


@njit(cache=True)
def _word_hash(cps, start, end):
    h = np.uint64(0xCBF29CE484222325)  # FNV-1a over code points
    for i in range(start, end):
        h = (h ^ np.uint64(cps[i])) * np.uint64(0x100000001B3)
    return np.int64(h >> np.uint64(1))


# The cache's counters: entries, characters and ids it holds; words seen; BPE runs; clears
ENTRIES, CHARS, IDS, WORDS, MISSES, CLEARS = range(6)
# Columns of the cache's entries
HASH, AT_CHAR, N_CHARS, AT_ID, N_IDS = range(5)


@njit(cache=True)
def _encode(
    cps, ends, spaces, first_doc, pos, eos, out, doc_tokens, work,
    slots, entries, char_pool, id_pool, counters,
    chars, splits, scores, merge_keys, merged, trie_keys, trie_next, trie_piece, byte_ids, unk_id, byte_fallback,
):  # fmt: skip
    """Encode documents first_doc, ... (cps[ends[d - 1]:ends[d]], spaces read as ▁ when `spaces`) into
    out from pos, each followed by eos (unless eos < 0), with doc_tokens[d] its count. Returns
    (documents done, end of out, 0), or, at a word too long for `work`, (the documents done before
    it, their end in out, the columns it needs)."""
    mask = slots.shape[0] - 1
    for d in range(first_doc, ends.shape[0]):
        start = ends[d - 1] if d else 0
        end, doc_start, words, misses = ends[d], pos, counters[WORDS], counters[MISSES]
        word = start
        while word < end:
            word_end = word + 1
            while word_end < end and _char(cps, word_end, spaces) != MARK:
                word_end += 1
            size = word_end - word
            counters[WORDS] += 1
            h, slot, cached = np.int64(0), np.int64(0), size <= MAX_CACHED_CHARS
            if cached:
                h = _word_hash(cps, word, word_end)
                slot, hit = h & mask, EMPTY
                while hit == EMPTY and slots[slot] != EMPTY:
                    e = slots[slot]
                    if entries[e, HASH] == h and entries[e, N_CHARS] == size:
                        hit = e
                        for k in range(size):
                            if char_pool[entries[e, AT_CHAR] + k] != cps[word + k]:
                                hit = EMPTY
                                break
                    slot = (slot + 1) & mask
                if hit != EMPTY:
                    at, n_ids = entries[hit, AT_ID], entries[hit, N_IDS]
                    for k in range(n_ids):
                        out[pos + k] = id_pool[at + k]
                    pos += n_ids
                    word = word_end
                    continue
            if work_columns(size) > work.shape[1]:
                counters[WORDS], counters[MISSES] = words, misses
                return d, doc_start, work_columns(size)
            counters[MISSES] += 1
            new_pos = _bpe(
                cps, word, word_end, spaces, out, pos, work,
                chars, splits, scores, merge_keys, merged, trie_keys, trie_next, trie_piece, byte_ids, unk_id,
                byte_fallback,
            )  # fmt: skip
            n_ids = new_pos - pos
            if cached:
                if (
                    counters[ENTRIES] == entries.shape[0]
                    or counters[CHARS] + size > char_pool.shape[0]
                    or counters[IDS] + n_ids > id_pool.shape[0]
                ):
                    slots[:] = EMPTY
                    counters[ENTRIES] = counters[CHARS] = counters[IDS] = 0
                    counters[CLEARS] += 1
                    slot = h & mask
                    while slots[slot] != EMPTY:
                        slot = (slot + 1) & mask
                e = counters[ENTRIES]
                entries[e, HASH], entries[e, AT_CHAR], entries[e, N_CHARS] = h, counters[CHARS], size
                entries[e, AT_ID], entries[e, N_IDS] = counters[IDS], n_ids
                for k in range(size):
                    char_pool[counters[CHARS] + k] = cps[word + k]
                for k in range(n_ids):
                    id_pool[counters[IDS] + k] = out[pos + k]
                slots[slot] = e
                counters[ENTRIES] += 1
                counters[CHARS] += size
                counters[IDS] += n_ids
            pos = new_pos
            word = word_end
        if eos >= 0:
            out[pos] = eos
            pos += 1
        doc_tokens[d] = pos - doc_start
    return ends.shape[0], pos, 0


class CompiledEncoder:
    """Encodes normalised documents (code points, words marked with ▁) with a model's Tables and a
    bounded cache of words: `max_entries` words, then cleared."""

    def __init__(self, proto: sentencepiece_model_pb2.ModelProto, max_entries: int = MAX_ENTRIES):
        self.tables = Tables(proto).arrays()
        self.cache = (
            np.full(1 << (2 * max_entries - 1).bit_length(), EMPTY, np.int32),  # slots: at most half full
            np.empty((max_entries, 5), np.int64),
            # room for any one cached word, so that a word always fits after a clear
            np.empty(max(max_entries * POOL_CHARS_PER_ENTRY, MAX_CACHED_CHARS), np.uint32),
            np.empty(max(max_entries * POOL_IDS_PER_ENTRY, 4 * MAX_CACHED_CHARS), np.int32),
            np.zeros(6, np.int64),
        )
        self.work = np.empty((WORK_ROWS, work_columns(MAX_CACHED_CHARS)), np.int32)

    def encode(
        self, cps: np.ndarray, ends: np.ndarray, eos: int, dtype: np.dtype, spaces: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(the ids of every document, each followed by eos unless eos < 0; each document's count).
        `spaces`: read spaces as ▁, so that a text normalised only by escaping its spaces need not be."""
        out = np.empty(4 * len(cps) + len(ends), dtype)  # at most 4 byte-fallback ids per character
        doc_tokens = np.empty(len(ends), np.uint64)
        done = pos = 0
        while done < len(ends):
            done, pos, needed = _encode(
                cps, ends, spaces, done, pos, eos, out, doc_tokens, self.work, *self.cache, *self.tables
            )
            if needed:  # a long word (a URL, base64, a run without spaces): a work array for it alone
                self.work = np.empty((WORK_ROWS, needed), np.int32)
        if self.work.shape[1] > work_columns(MAX_CACHED_CHARS):
            self.work = np.empty((WORK_ROWS, work_columns(MAX_CACHED_CHARS)), np.int32)
        return out[:pos].copy(), doc_tokens

    @property
    def words(self) -> int:
        return int(self.cache[4][WORDS])

    @property
    def misses(self) -> int:
        return int(self.cache[4][MISSES])
