"""A long document's memory goes back to the system when it is freed, not into a fragmented heap.

glibc serves a large allocation from a mapping of its own, unmapped when freed, but raises that
threshold to the largest such block freed so far (up to 32 MB). After one 21 MB document, the next
ones' copies come from the heap, whose freed holes stay in the process: the corpus stage's peak grew
from 91 to 131 MB in its second pass over that one document. A fixed threshold ends that.
"""

import ctypes

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
LARGE_ALLOCATION = 4 << 20  # bytes; smaller blocks (a decompressed chunk, a block of lines) stay in the heap


def return_large_frees() -> bool:
    """Serve allocations of LARGE_ALLOCATION bytes or more from their own mappings for the rest of the
    process; True where the C library took the setting (glibc), False elsewhere (nothing changes)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_MMAP_THRESHOLD, LARGE_ALLOCATION) == 1
