"""Merging word-count tables, compiled: the table of several parts is the merge of theirs.

Both tables are in UTF-8 byte order; one pass walks them side by side, copying the smaller word
and summing the counts of a word both hold. numba lives here, apart from the table format
(pipeline.tokenizer.word_table), so that counting workers, which only make tables, never load it.
"""

import numpy as np
from numba import njit

from pipeline.tokenizer.word_table import Table, table_of


@njit(cache=True)
def _order(blob_a, start_a, len_a, blob_b, start_b, len_b):
    """-1, 0 or 1 as word a sorts before, equal to or after word b (UTF-8 bytes, a prefix first)."""
    for k in range(min(len_a, len_b)):
        x, y = blob_a[start_a + k], blob_b[start_b + k]
        if x != y:
            return -1 if x < y else 1
    return 0 if len_a == len_b else (-1 if len_a < len_b else 1)


@njit(cache=True)
def _merge_two(blob_a, len_a, count_a, blob_b, len_b, count_b, blob, lengths, counts, write):
    """Two tables in byte order -> their merge, equal words summed; returns (words, bytes). With
    `write` false it only counts them, so that the output is allocated at its exact size."""
    i = j = n = o = 0
    start_a = start_b = 0
    na, nb = len_a.shape[0], len_b.shape[0]
    while i < na or j < nb:
        if j >= nb:
            order = -1
        elif i >= na:
            order = 1
        else:
            order = _order(blob_a, start_a, len_a[i], blob_b, start_b, len_b[j])
        if order <= 0:
            size, total = len_a[i], count_a[i] + (count_b[j] if order == 0 else 0)
            if write:
                blob[o : o + size] = blob_a[start_a : start_a + size]
            start_a += size
            i += 1
            if order == 0:
                start_b += len_b[j]
                j += 1
        else:
            size, total = len_b[j], count_b[j]
            if write:
                blob[o : o + size] = blob_b[start_b : start_b + size]
            start_b += size
            j += 1
        if write:
            lengths[n] = size
            counts[n] = total
        o += size
        n += 1
    return n, o


def merge(tables: list[Table], header: dict | None = None) -> Table:
    """The tables' words with their counts summed, in byte order (pairs merged, smallest first).
    Each merge takes only its output's memory beside its inputs."""
    tables = sorted(tables, key=len)  # a new list: the caller's may be emptied meanwhile
    if not tables:
        return table_of({}, header)
    while len(tables) > 1:
        a, b = tables.pop(0), tables.pop(0)
        inputs = (a.blob, a.lengths, a.counts, b.blob, b.lengths, b.counts)
        n, o = _merge_two(*inputs, np.empty(0, np.uint8), np.empty(0, np.uint32), np.empty(0, np.int64), False)
        merged = Table(np.empty(n, np.int64), np.empty(n, np.uint32), np.empty(o, np.uint8))
        _merge_two(*inputs, merged.blob, merged.lengths, merged.counts, True)
        del a, b, inputs
        tables.insert(next((k for k, t in enumerate(tables) if len(t) >= n), len(tables)), merged)
    return Table(tables[0].counts, tables[0].lengths, tables[0].blob, dict(header or {}))
