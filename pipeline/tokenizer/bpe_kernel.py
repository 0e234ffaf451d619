"""SentencePiece 0.2.3's BPE merge loop, compiled (numba), on a table of (word, count).

    merges = train_merges_layout(syms, counts, scripts, spec)   # [(piece, frequency), ...]

The accepted merges in order, each with its frequency when it was chosen: exactly spm_train's
(tests/test_exact_bpe.py holds them equal, piece for piece, on real and generated text). The rules
it replays (docs/tokenizer.md): a pair's frequency is the sum of its words' counts over every place
the two symbols are adjacent now, overlaps counted (`aaa` holds `a`+`a` twice); the chosen pair is
the most frequent, then the one of fewer code points, then the smaller string; a pair whose string
was already made is dropped; every valid pair that was ever adjacent, even for a moment inside one
word, stays a candidate (at frequency 0 too) until it is chosen; a pair is valid when its string is
a valid piece (max_sentencepiece_length, the split_by_* rules, where U+2581 may stand); accepting a
pair walks its places in the order they appeared, merging left to right.

Two facts the design rests on: a stale place never becomes live again (the symbol at a position
only grows, a hole stays a hole), and only the order of places inside one word matters (so words
may come in any order, and equal words need not be merged).

Layout (the input, modified in place): one int32 array `syms`, for each word w the sentinel
-(2 + w) then its symbols (first its code points, turned into alphabet ids here); one more
sentinel at the end. A merge writes the new symbol at the left position and HOLE at the right: the
symbol starting at p spans p .. p + len - 1. 4 bytes per code point, 4 + 8 per word (counts).

Symbols (the alphabet, then one per merge) keep their code points (for the tie-break and the set
of strings made) and a summary that makes a pair's validity O(1): flags (a forbidden character, a
digit, where U+2581 stands) and the first and last script state. Pairs are a struct of arrays
(41 bytes each) and an open-addressing table (L, R) -> pair. Each pair's places are a chain of
blocks in one int32 pool: the first scan's places as varint gaps (about 1.4 bytes a place), later
ones in chunks of 14; stale places are compacted away, a list is freed when its pair's frequency
reaches 0. The best pair comes from a binary heap with lazy deletion that holds only the pairs at
or above a threshold (rebuilt, with a new threshold, when it runs dry).

Progress: while it runs, the loop calls pipeline.tokenizer.bpe_kernel.PROGRESS[0](merges done)
every REPORT_EVERY merges (numba's objmode), when one is set.
"""

from __future__ import annotations

import numpy as np
from numba import njit, objmode

WS = 0x2581
UNK = 0x2585

HOLE = -1  # a position whose symbol was merged into the symbol on its left
SENT = -2  # word boundary: -(2 + w) before word w (its count is counts[w]); one more at the end

S_NONE = -1  # script state "passes through" (U+2581, Inherited): symbol has no determining char
S_ANY = -2  # decimal digit with split_by_number=false: resets the state to ANY

F_FORB = 1  # contains U+2585, U+0000, U+001F, U+0020, a surrogate or > U+10FFFF
F_DIGIT = 2  # contains a decimal digit (0-9, fullwidth 0-9)
F_ALLWS = 4  # all U+2581
F_HASWS = 8  # some U+2581
F_WSFIRST = 16  # first char is U+2581
F_WSLAST = 32  # last char is U+2581
F_WSNONFIRST = 64  # a U+2581 at a position > 0
F_WSNONLAST = 128  # a U+2581 at a position < len - 1

REPORT_EVERY = 256  # merges between two progress reports
PROGRESS: list = [None]  # the callable the loop reports to (merges done), set by the caller


def _report(done) -> None:
    if PROGRESS[0] is not None:
        PROGRESS[0](int(done))


FLAGS = dict(  # the trainer flags the loop follows, and spm's defaults
    max_sentencepiece_length=16,
    split_by_unicode_script=True,
    split_by_number=True,
    split_digits=False,
    split_by_whitespace=True,
    treat_whitespace_as_suffix=False,
    allow_whitespace_only_pieces=False,
)


# ------------------------------------------------------------------------------------------------
# small helpers (all compiled)
# ------------------------------------------------------------------------------------------------


@njit(cache=True)
def _grow_i32(a, n):
    b = np.empty(n, np.int32)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def _grow_i64(a, n):
    b = np.empty(n, np.int64)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def _grow_i8(a, n):
    b = np.empty(n, np.int8)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def _h2(a, b, mask):
    # unsigned arithmetic: wrap-around is defined (signed overflow is not, for LLVM)
    h = np.uint64(a) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(b) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x5851F42D4C957F2D)
    h ^= h >> np.uint64(29)
    return np.int64(h & np.uint64(mask))


@njit(cache=True)
def _find(tab, mask, pl, pr, a, b):
    i = _h2(a, b, mask)
    while True:
        e = tab[i]
        if e < 0:
            return -1
        if pl[e] == a and pr[e] == b:
            return e
        i = (i + 1) & mask


@njit(cache=True)
def _insert(tab, mask, a, b, pid):
    i = _h2(a, b, mask)
    while tab[i] >= 0:
        i = (i + 1) & mask
    tab[i] = pid


@njit(cache=True)
def _rehash(npairs, pl, pr, newcap):
    tab = np.full(newcap, -1, np.int32)
    mask = newcap - 1
    for q in range(npairs):
        _insert(tab, mask, pl[q], pr[q], q)
    return tab


@njit(cache=True)
def _valid(a, b, slen, sflag, slead, strail, maxlen, split_script, split_digits, split_ws, suffix, allow_ws_only):
    """is_valid_piece(str(a) + str(b)) from the two symbols' summaries (both are valid pieces or
    single characters, so only what happens at the junction matters)."""
    if slen[a] + slen[b] > maxlen:
        return False
    fa = sflag[a]
    fb = sflag[b]
    if (fa | fb) & F_FORB:
        return False
    if split_digits and ((fa | fb) & F_DIGIT):
        return False
    if not (allow_ws_only and (fa & F_ALLWS) and (fb & F_ALLWS)):
        if suffix:
            if split_ws:
                if (fa & F_HASWS) or (fb & F_WSNONLAST):
                    return False
            elif fa & F_WSFIRST:
                return False
        else:
            if split_ws:
                if (fa & F_WSNONFIRST) or (fb & F_HASWS):
                    return False
            elif fb & F_WSLAST:
                return False
    if split_script:
        x = strail[a] if slead[a] != S_NONE else S_ANY
        y = slead[b]
        if x >= 0 and y >= 0 and x != y:
            return False
    return True


@njit(cache=True)
def _cp_at(k, la, a, b, soff, cps):
    if k < la:
        return cps[soff[a] + k]
    return cps[soff[b] + k - la]


@njit(cache=True)
def _before(fa, qa, fb, qb, pl, pr, slen, soff, cps):
    """Heap order: freq desc, then fewer code points, then smaller string (code point order),
    then shorter left part (the reference's tuple order for two splits of one string)."""
    if fa != fb:
        return fa > fb
    a1 = pl[qa]
    a2 = pr[qa]
    b1 = pl[qb]
    b2 = pr[qb]
    la = slen[a1]
    lb = slen[b1]
    na = la + slen[a2]
    nb = lb + slen[b2]
    if na != nb:
        return na < nb
    for k in range(na):
        ca = _cp_at(k, la, a1, a2, soff, cps)
        cb = _cp_at(k, lb, b1, b2, soff, cps)
        if ca != cb:
            return ca < cb
    return la < lb


@njit(cache=True)
def _sift_up(hf, hp, i, pl, pr, slen, soff, cps):
    f = hf[i]
    q = hp[i]
    while i > 0:
        par = (i - 1) >> 1
        if _before(f, q, hf[par], hp[par], pl, pr, slen, soff, cps):
            hf[i] = hf[par]
            hp[i] = hp[par]
            i = par
        else:
            break
    hf[i] = f
    hp[i] = q


@njit(cache=True)
def _sift_down(hf, hp, i, n, pl, pr, slen, soff, cps):
    f = hf[i]
    q = hp[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and _before(hf[c + 1], hp[c + 1], hf[c], hp[c], pl, pr, slen, soff, cps):
            c += 1
        if _before(hf[c], hp[c], f, q, pl, pr, slen, soff, cps):
            hf[i] = hf[c]
            hp[i] = hp[c]
            i = c
        else:
            break
    hf[i] = f
    hp[i] = q


@njit(cache=True)
def _seq_hash_pair(a, b, slen, soff, cps):
    h = np.uint64(0x345678)
    for k in range(slen[a]):
        h = h * np.uint64(1000003) + np.uint64(cps[soff[a] + k])
    for k in range(slen[b]):
        h = h * np.uint64(1000003) + np.uint64(cps[soff[b] + k])
    return np.int64((h ^ (h >> np.uint64(27))) & np.uint64(0x7FFFFFFFFFFFFFFF))


@njit(cache=True)
def _seq_hash_sym(s, slen, soff, cps):
    h = np.uint64(0x345678)
    for k in range(slen[s]):
        h = h * np.uint64(1000003) + np.uint64(cps[soff[s] + k])
    return np.int64((h ^ (h >> np.uint64(27))) & np.uint64(0x7FFFFFFFFFFFFFFF))


@njit(cache=True)
def _taken(a, b, ttab, tmask, slen, soff, cps):
    """Is str(a)+str(b) the string of an accepted merge?"""
    i = _seq_hash_pair(a, b, slen, soff, cps) & tmask
    la = slen[a]
    n = la + slen[b]
    while True:
        s = ttab[i]
        if s < 0:
            return False
        if slen[s] == n:
            same = True
            o = soff[s]
            for k in range(n):
                if cps[o + k] != _cp_at(k, la, a, b, soff, cps):
                    same = False
                    break
            if same:
                return True
        i = (i + 1) & tmask


# ------------------------------------------------------------------------------------------------
# places: per pair, a chain of blocks in one int32 pool (pb = the same memory as bytes).
# * the first block of a pair found by the first scan holds its initial places, which are in
#   increasing position order, as varint-coded gaps: [next, -nslots, nbytes, nslots data slots];
# * every later place goes to chunks [next, CHUNK, CHUNK positions] (BLK slots), appended at the tail.
# Freed space is cut into BLK-slot chunks on one free list.
# st[0] = free-list head (-1 = empty), st[1] = bump pointer.
# ------------------------------------------------------------------------------------------------

BLK = 16
CHUNK = BLK - 2
LO32 = np.int64(0xFFFFFFFF)
HI32 = ~np.int64(0xFFFFFFFF)


@njit(cache=True)
def _free_region(pool, st, start, size):
    k = 0
    while k + BLK <= size:
        c = start + k
        pool[c] = np.int32(st[0])
        st[0] = c
        k += BLK


@njit(cache=True)
def _free_chain(pool, st, b):
    while b >= 0:
        nxt = pool[b]
        cap = pool[b + 1]
        _free_region(pool, st, b, cap + 2 if cap >= 0 else 3 - cap)
        b = nxt


@njit(cache=True)
def _vlen(d):
    n = 1
    while d >= 128:
        d >>= 7
        n += 1
    return n


@njit(cache=True)
def _vput(pb, o, d):
    while d >= 128:
        pb[o] = np.uint8((d & 127) | 128)
        d >>= 7
        o += 1
    pb[o] = np.uint8(d)
    return o + 1


@njit(cache=True)
def _compact(q, pool, pb, st, head, tail, tailn, pn, pl, pr, syms, slen):
    """Drop pair q's places that are no longer live (they never become live again: the symbol at a
    position only grows, a hole stays a hole), keeping the order; free the space left over."""
    h = head[q]
    if h < 0:
        return
    a = pl[q]
    b = pr[q]
    la = slen[a]
    t = tail[q]
    written = 0
    enc = -1
    first = h  # first chunk
    if pool[h + 1] < 0:
        # the coded initial block: re-code the live places in place (a gap between two survivors
        # never takes more bytes than the gaps it replaces, so writing never overtakes reading)
        base = 4 * (h + 3)
        rp = base
        end = base + pool[h + 2]
        wp = base
        pos = 0
        last = 0
        while rp < end:
            d = 0
            sh = 0
            while True:
                x = np.int64(pb[rp])
                rp += 1
                d |= (x & 127) << sh
                if x < 128:
                    break
                sh += 7
            pos += d
            if syms[pos] == a and syms[pos + la] == b:
                wp = _vput(pb, wp, pos - last)
                last = pos
                written += 1
        first = pool[h]
        nslots = -pool[h + 1]
        if written == 0:
            _free_region(pool, st, h, 3 + nslots)
        else:
            enc = h
            pool[h + 2] = wp - base
            used = (wp - base + 3) // 4
            if nslots - used >= 2 * BLK:
                _free_region(pool, st, h + 3 + used, nslots - used)
                pool[h + 1] = -used
        if h == t:
            t = -1
    wb = -1
    wi = 0
    if first >= 0:
        wb = first
        wcap = pool[first + 1]
        rb = first
        wn = 0
        while True:
            n = tailn[q] if rb == t else pool[rb + 1]
            nxt = pool[rb]
            for k in range(n):
                p = pool[rb + 2 + k]
                if syms[p] == a and syms[p + la] == b:
                    if wi == wcap:
                        wb = pool[wb]
                        wi = 0
                        wcap = pool[wb + 1]
                    pool[wb + 2 + wi] = p
                    wi += 1
                    wn += 1
            if rb == t:
                break
            rb = nxt
        if wn == 0:
            _free_chain(pool, st, first)
            wb = -1
            first = -1
        else:
            if wb != t:
                _free_chain(pool, st, pool[wb])
            pool[wb] = -1
        written += wn
    if enc >= 0:
        pool[enc] = first
        head[q] = enc
    else:
        head[q] = first
    if wb >= 0:
        tail[q] = wb
        tailn[q] = wi
    else:
        tail[q] = enc
        tailn[q] = 0
    pn[q] = written


@njit(cache=True)
def _release(q, pool, st, head, tail, tailn, pn):
    _free_chain(pool, st, head[q])
    head[q] = -1
    tail[q] = -1
    tailn[q] = 0
    pn[q] = 0


# ------------------------------------------------------------------------------------------------
# the kernel. The hot loops live in functions that never rebind an array (numba keeps reference
# counts on array variables that are rebound inside a loop, which made loops ~10x slower); they
# stop and report when a capacity would be exceeded, the driver grows the arrays and resumes them.
# Shared scalars live in the int64 array S:
# ------------------------------------------------------------------------------------------------

S_FREE = 0  # free-list head of the place pool
S_TOP = 1  # bump pointer of the place pool
S_NPAIRS = 2
S_HSIZE = 3
S_T = 4  # heap threshold: every alive pair with freq >= T has a heap entry with freq >= its freq
S_HLIMIT = 5  # rebuild the heap when it grows beyond this
S_NTOUCHED = 6
S_NCOMPACT = 7
S_POOLPEAK = 8
S_NPUSH = 9
S_NINIT = 10
S_RB = 11  # where _accept resumes: block
S_RK = 12  # and entry in the block (byte offset in a coded block)
S_RPOS = 13  # and the last position decoded before it (coded block)
S_LEN = 16


@njit(cache=True)
def _scan_create(
    syms,
    counts,
    start,
    S,
    pl,
    pr,
    pfreq,
    pn,
    plast,
    pbytes,
    tab,
    dense,
    nalpha,
    slen,
    sflag,
    slead,
    strail,
    maxlen,
    split_script,
    split_digits,
    split_ws,
    suffix,
    allow_ws_only,
):
    """First scan from position `start`: create the candidates, sum their freqs, count their places.
    Returns the position to resume from when the pair arrays or the table are full, else -1."""
    npos = syms.shape[0]
    use_dense = dense.shape[0] > 1
    tmask = tab.shape[0] - 1
    cap = pl.shape[0]
    npairs = S[S_NPAIRS]
    ninit = S[S_NINIT]
    j = start
    while syms[j] >= HOLE:
        j -= 1
    c = counts[SENT - syms[j]]
    for i in range(start, npos - 1):
        a = syms[i]
        if a < 0:
            if a <= SENT:
                c = counts[SENT - a]
            continue
        b = syms[i + 1]
        if b < 0:
            continue
        if use_dense:
            q = dense[a * nalpha + b]
            if q == -1:
                continue
        else:
            q = _find(tab, tmask, pl, pr, a, b)
        if q < 0:
            if not _valid(
                a, b, slen, sflag, slead, strail, maxlen, split_script, split_digits, split_ws, suffix, allow_ws_only
            ):
                if use_dense:
                    dense[a * nalpha + b] = -1
                continue
            if npairs == cap or 2 * (npairs + 1) > tab.shape[0]:
                S[S_NPAIRS] = npairs
                S[S_NINIT] = ninit
                return i
            q = npairs
            npairs += 1
            pl[q] = a
            pr[q] = b
            pfreq[q] = 0
            pn[q] = 0
            plast[q] = 0
            pbytes[q] = 0
            _insert(tab, tmask, a, b, q)
            if use_dense:
                dense[a * nalpha + b] = q
        pfreq[q] += c
        pn[q] += 1
        pbytes[q] += _vlen(i - plast[q])
        plast[q] = i
        ninit += 1
    S[S_NPAIRS] = npairs
    S[S_NINIT] = ninit
    return -1


@njit(cache=True)
def _scan_places(
    syms, S, pool, pb, pl, pr, pn, plast, pbytes, head, tail, tailn, plive, pdead, pstamp, tab, dense, nalpha
):
    """Lay out the initial places: one coded block per pair, gaps in position order."""
    npairs = S[S_NPAIRS]
    use_dense = dense.shape[0] > 1
    tmask = tab.shape[0] - 1
    o = 0
    for q in range(npairs):
        nslots = (pbytes[q] + 3) // 4
        head[q] = o
        tail[q] = o
        tailn[q] = 0
        plive[q] = pn[q]
        pdead[q] = 0
        pstamp[q] = -1
        pool[o] = -1
        pool[o + 1] = -nslots
        pool[o + 2] = pbytes[q]
        pbytes[q] = 4 * (o + 3)  # now: write cursor (bytes)
        plast[q] = 0
        o += 3 + nslots
    for i in range(syms.shape[0] - 1):
        a = syms[i]
        b = syms[i + 1]
        if a < 0 or b < 0:
            continue
        if use_dense:
            q = dense[a * nalpha + b]
        else:
            q = _find(tab, tmask, pl, pr, a, b)
        if q < 0:
            continue
        pbytes[q] = _vput(pb, pbytes[q], i - plast[q])
        plast[q] = i


@njit(cache=True)
def _heap_threshold(S, pfreq, pdead, heap_k):
    """Choose T (a power of two, or 0) so that about heap_k alive pairs have freq >= T; return how many."""
    npairs = S[S_NPAIRS]
    hist = np.zeros(66, np.int64)
    for q in range(npairs):
        if pdead[q] == 0:
            f = pfreq[q]
            bl = 0
            while f > 0:
                bl += 1
                f >>= 1
            hist[bl] += 1
    cum = 0
    T = 0
    for bl in range(64, 0, -1):
        cum += hist[bl]
        if cum >= heap_k:
            T = np.int64(1) << (bl - 1)
            break
    if T == 0:
        cum += hist[0]
    S[S_T] = T
    return cum


@njit(cache=True)
def _heap_fill(S, hf, hp, pfreq, pdead, pl, pr, slen, soff, cps, heap_k):
    npairs = S[S_NPAIRS]
    T = S[S_T]
    n = 0
    for q in range(npairs):
        if pdead[q] == 0 and pfreq[q] >= T:
            hf[n] = pfreq[q]
            hp[n] = q
            n += 1
    for i in range((n >> 1) - 1, -1, -1):
        _sift_down(hf, hp, i, n, pl, pr, slen, soff, cps)
    S[S_HSIZE] = n
    S[S_HLIMIT] = max(4 * n, 4 * heap_k)


@njit(cache=True)
def _pop(S, hf, hp, pfreq, pdead, pl, pr, slen, soff, cps, ttab, pool, head, tail, tailn, pn):
    """The best candidate (max freq, then fewer code points, then smaller string, then shorter left
    part), or -1 when the heap must be rebuilt (empty, or too many stale entries)."""
    ttmask = ttab.shape[0] - 1
    T = S[S_T]
    while True:
        hsize = S[S_HSIZE]
        if hsize == 0 or hsize > S[S_HLIMIT]:
            return -1
        f = hf[0]
        q = hp[0]
        hsize -= 1
        if hsize > 0:
            hf[0] = hf[hsize]
            hp[0] = hp[hsize]
            _sift_down(hf, hp, 0, hsize, pl, pr, slen, soff, cps)
        S[S_HSIZE] = hsize
        if pdead[q]:
            continue
        fq = pfreq[q]
        if f != fq:
            # an entry above the current freq (they are not pushed on decrease): put it back with
            # the right freq if it still qualifies; an entry below it is superseded by a later push
            if f > fq and fq >= T:
                hf[hsize] = fq
                hp[hsize] = q
                _sift_up(hf, hp, hsize, pl, pr, slen, soff, cps)
                S[S_HSIZE] = hsize + 1
            continue
        if _taken(pl[q], pr[q], ttab, ttmask, slen, soff, cps):
            pdead[q] = 1  # its string was accepted through another split: dropped
            _release(q, pool, S, head, tail, tailn, pn)
            continue
        return q


@njit(cache=True)
def _push_touched(S, touched, hf, hp, pfreq, pdead, pl, pr, slen, soff, cps):
    T = S[S_T]
    hsize = S[S_HSIZE]
    npush = 0
    for t in range(S[S_NTOUCHED]):
        q = touched[t]
        if pdead[q] == 0 and pfreq[q] >= T:
            hf[hsize] = pfreq[q]
            hp[hsize] = q
            _sift_up(hf, hp, hsize, pl, pr, slen, soff, cps)
            hsize += 1
            npush += 1
    S[S_HSIZE] = hsize
    S[S_NPUSH] += npush


@njit(cache=True)
def _accept(
    best,
    N,
    nm,
    syms,
    counts,
    S,
    pool,
    pb,
    pl,
    pr,
    pfreq,
    pdead,
    head,
    tail,
    tailn,
    pn,
    plive,
    pstamp,
    tab,
    cPL,
    cRX,
    cPN,
    cNX,
    touched,
    slen,
    sflag,
    slead,
    strail,
    maxlen,
    split_script,
    split_digits,
    split_ws,
    suffix,
    allow_ws_only,
):
    """Merge pair `best` into the new symbol N at each of its places, in creation order, starting at
    (S[S_RB], S[S_RK], S[S_RPOS]). Returns 0 when done, 1 when a capacity (pairs, table, touched list, place
    pool) might be exceeded by the next place: the driver grows it and calls again.

    Per-merge caches indexed by a symbol id, valid when their high half equals `stamp`, low half =
    pair id + 1 (0: no such candidate): cPL[s] -> (s, L), cRX[s] -> (R, s), cPN[s] -> (s, N),
    cNX[s] -> (N, s); (N, N) lives in cPN[N]. Pairs with N can only be created during this merge,
    so for them a cache miss means "not created yet"."""
    L = pl[best]
    R = pr[best]
    la = slen[L]
    lr = slen[R]
    stamp = np.int64(nm + 1) << 32
    tmask = tab.shape[0] - 1
    npairs = S[S_NPAIRS]
    pcap = pl.shape[0]
    ntouched = S[S_NTOUCHED]
    tcap = touched.shape[0]
    plen = pool.shape[0]
    ncompact = 0
    btail = tail[best]
    blk = S[S_RB]
    k = S[S_RK]  # entry in a chunk, or byte offset in a coded block
    cpos = S[S_RPOS]  # coded block: the position before byte k
    coded = blk >= 0 and pool[blk + 1] < 0
    end = 0
    nb = 0
    if blk >= 0:
        if coded:
            end = 4 * (blk + 3) + pool[blk + 2]
        else:
            nb = tailn[best] if blk == btail else pool[blk + 1]
    while blk >= 0:
        # ---- the next place, in creation order
        k_here = k
        pos_here = cpos
        if coded:
            if k >= end:
                blk = -1 if blk == btail else pool[blk]
                if blk >= 0:
                    coded = False
                    nb = tailn[best] if blk == btail else pool[blk + 1]
                    k = 0
                continue
            d = 0
            sh = 0
            while True:
                x = np.int64(pb[k])
                k += 1
                d |= (x & 127) << sh
                if x < 128:
                    break
                sh += 7
            cpos += d
            p = cpos
        else:
            if k >= nb:
                blk = -1 if blk == btail else pool[blk]
                if blk >= 0:
                    nb = tailn[best] if blk == btail else pool[blk + 1]
                    k = 0
                continue
            p = pool[blk + 2 + k]
            k += 1
        if syms[p] != L:
            continue
        rp = p + la
        if syms[rp] != R:
            continue
        # room for this place: 2 new pairs, 2 touched, 2 chunks
        if npairs + 2 > pcap or 2 * (npairs + 2) > tab.shape[0] or ntouched + 2 > tcap or S[S_TOP] + 2 * BLK > plen:
            S[S_NPAIRS] = npairs
            S[S_NTOUCHED] = ntouched
            S[S_NCOMPACT] += ncompact
            S[S_RB] = blk
            S[S_RK] = k_here
            S[S_RPOS] = pos_here
            return 1
        if True:
            pp = p - 1
            while syms[pp] == HOLE:
                pp -= 1
            P = syms[pp]
            j = pp
            while syms[j] >= HOLE:
                j -= 1
            c = counts[SENT - syms[j]]
            X = syms[rp + lr]
            syms[p] = N
            syms[rp] = HOLE
            # the two neighbouring pairs lose this occurrence
            for side in range(2):
                if side == 0:
                    if P < 0:
                        continue
                    if P == N:  # (N, L): made earlier in this merge, or not at all
                        v = cNX[L]
                        q = np.int64((v & LO32) - 1) if (v & HI32) == stamp else np.int64(-1)
                    else:
                        v = cPL[P]
                        if (v & HI32) == stamp:
                            q = np.int64((v & LO32) - 1)
                        else:
                            q = np.int64(_find(tab, tmask, pl, pr, P, L))
                            cPL[P] = stamp | (q + 1)
                else:
                    if X < 0:
                        continue
                    if X == N:  # (R, N)
                        v = cPN[R]
                        q = np.int64((v & LO32) - 1) if (v & HI32) == stamp else np.int64(-1)
                    else:
                        v = cRX[X]
                        if (v & HI32) == stamp:
                            q = np.int64((v & LO32) - 1)
                        else:
                            q = np.int64(_find(tab, tmask, pl, pr, R, X))
                            cRX[X] = stamp | (q + 1)
                if q >= 0 and q != best and pdead[q] == 0:
                    pfreq[q] -= c
                    plive[q] -= 1
                    if pfreq[q] == 0:
                        _release(q, pool, S, head, tail, tailn, pn)
                    elif pn[q] >= 4 * plive[q] + 4 * BLK:
                        _compact(q, pool, pb, S, head, tail, tailn, pn, pl, pr, syms, slen)
                        ncompact += 1
            # the two new pairs
            for side in range(2):
                if side == 0:
                    if P < 0:
                        continue
                    a = P
                    b = N
                    pos = pp
                    v = cPN[P]
                else:
                    if X < 0:
                        continue
                    a = N
                    b = X
                    pos = p
                    v = cPN[N] if X == N else cNX[X]
                if (v & HI32) == stamp:
                    q = np.int64((v & LO32) - 1)
                    if q < 0:
                        continue
                else:
                    if not _valid(
                        a,
                        b,
                        slen,
                        sflag,
                        slead,
                        strail,
                        maxlen,
                        split_script,
                        split_digits,
                        split_ws,
                        suffix,
                        allow_ws_only,
                    ):
                        q = np.int64(-1)
                    else:
                        q = np.int64(npairs)
                        npairs += 1
                        pl[q] = a
                        pr[q] = b
                        pfreq[q] = 0
                        pdead[q] = 0
                        head[q] = -1
                        tail[q] = -1
                        tailn[q] = 0
                        pn[q] = 0
                        plive[q] = 0
                        pstamp[q] = -1
                        _insert(tab, tmask, a, b, q)
                    if side == 0:
                        cPN[P] = stamp | (q + 1)
                    elif X == N:
                        cPN[N] = stamp | (q + 1)
                    else:
                        cNX[X] = stamp | (q + 1)
                    if q < 0:
                        continue
                if pdead[q]:
                    continue
                pfreq[q] += c
                # append the place (after dropping stale places if they are the majority)
                t = tail[q]
                if t >= 0 and (pool[t + 1] < 0 or tailn[q] == pool[t + 1]):
                    if pn[q] - plive[q] >= max(plive[q], CHUNK):
                        _compact(q, pool, pb, S, head, tail, tailn, pn, pl, pr, syms, slen)
                        ncompact += 1
                        t = tail[q]
                if t < 0 or pool[t + 1] < 0 or tailn[q] == pool[t + 1]:
                    nbk = S[S_FREE]
                    if nbk >= 0:
                        S[S_FREE] = pool[nbk]
                    else:
                        nbk = S[S_TOP]
                        S[S_TOP] = nbk + BLK
                    pool[nbk] = -1
                    pool[nbk + 1] = CHUNK
                    if t < 0:
                        head[q] = nbk
                    else:
                        pool[t] = nbk
                    tail[q] = nbk
                    tailn[q] = 0
                    t = nbk
                pool[t + 2 + tailn[q]] = pos
                tailn[q] += 1
                pn[q] += 1
                plive[q] += 1
                if pstamp[q] != nm:
                    pstamp[q] = nm
                    touched[ntouched] = q
                    ntouched += 1
    S[S_NPAIRS] = npairs
    S[S_NTOUCHED] = ntouched
    S[S_NCOMPACT] += ncompact
    if S[S_TOP] > S[S_POOLPEAK]:
        S[S_POOLPEAK] = S[S_TOP]
    return 0


@njit(cache=True)
def _new_symbol(N, L, R, slen, soff, sflag, slead, strail, cps, cps_top, ttab):
    """Symbol N = L + R: code points, summaries for the validity rule; enter it in the set of
    accepted strings. Returns the new top of the code point pool (the caller made room)."""
    la = slen[L]
    lr = slen[R]
    slen[N] = la + lr
    soff[N] = cps_top
    for k in range(la):
        cps[cps_top + k] = cps[soff[L] + k]
    for k in range(lr):
        cps[cps_top + la + k] = cps[soff[R] + k]
    fa = sflag[L]
    fb = sflag[R]
    fl = (fa | fb) & (F_FORB | F_DIGIT | F_HASWS)
    if (fa & F_ALLWS) and (fb & F_ALLWS):
        fl |= F_ALLWS
    fl |= fa & F_WSFIRST
    fl |= fb & F_WSLAST
    if (fa & F_WSNONFIRST) or (fb & F_HASWS):
        fl |= F_WSNONFIRST
    if (fa & F_HASWS) or (fb & F_WSNONLAST):
        fl |= F_WSNONLAST
    sflag[N] = fl
    slead[N] = slead[L] if slead[L] != S_NONE else slead[R]
    strail[N] = strail[R] if slead[R] != S_NONE else strail[L]
    ttmask = ttab.shape[0] - 1
    i = _seq_hash_sym(N, slen, soff, cps) & ttmask
    while ttab[i] >= 0:
        i = (i + 1) & ttmask
    ttab[i] = N
    return cps_top + la + lr


@njit(cache=True)
def _kernel(
    syms,
    counts,
    nalpha,
    a_cp,
    a_flag,
    a_lead,
    a_trail,
    max_merges,
    maxlen,
    split_script,
    split_digits,
    split_ws,
    suffix,
    allow_ws_only,
    heap_k,
    stats,
):
    """syms: int32 array: for each word w, the sentinel -(2+w) then its symbol ids (alphabet ids
    0..nalpha-1); one more sentinel (<= -2) at the end. Modified in place (merges write the new
    symbol at the left position and HOLE at the right one). counts: int64 per word.
    Returns (merge_left, merge_right, merge_freq) for the accepted merges."""
    S = np.zeros(S_LEN, np.int64)
    small = stats[15] != 0  # debug: tiny initial capacities, to exercise every growth path
    cap0 = 2 if small else 1024

    # ---- symbols: alphabet, then one per accepted merge
    nsym_cap = nalpha + max_merges + 1
    slen = np.empty(nsym_cap, np.int32)
    soff = np.empty(nsym_cap, np.int64)
    sflag = np.empty(nsym_cap, np.int32)
    slead = np.empty(nsym_cap, np.int32)
    strail = np.empty(nsym_cap, np.int32)
    cps = np.empty(max(16, nalpha * 2 + 8 * max_merges), np.int32)
    for s in range(nalpha):
        slen[s] = 1
        soff[s] = s
        cps[s] = a_cp[s]
        sflag[s] = a_flag[s]
        slead[s] = a_lead[s]
        strail[s] = a_trail[s]
    cps_top = nalpha

    # ---- pairs (struct of arrays), hash table (L, R) -> pair
    pcapa = cap0
    pl = np.empty(pcapa, np.int32)
    pr = np.empty(pcapa, np.int32)
    pfreq = np.zeros(pcapa, np.int64)
    pn = np.zeros(pcapa, np.int32)  # places stored
    plast = np.zeros(pcapa, np.int32)  # first scan: last place of the pair
    pbytes = np.zeros(pcapa, np.int64)  # first scan: bytes of its coded places
    tab = np.full(2 * cap0, -1, np.int32)

    # ---- first scan (resumable: grows the pair arrays / the table when they are full)
    dense = np.full(nalpha * nalpha if nalpha <= 2048 else 1, -2, np.int32)  # -2 unknown, -1 invalid
    pos = 0
    while True:
        pos = _scan_create(
            syms,
            counts,
            pos,
            S,
            pl,
            pr,
            pfreq,
            pn,
            plast,
            pbytes,
            tab,
            dense,
            nalpha,
            slen,
            sflag,
            slead,
            strail,
            maxlen,
            split_script,
            split_digits,
            split_ws,
            suffix,
            allow_ws_only,
        )
        if pos < 0:
            break
        if S[S_NPAIRS] == pcapa:
            pcapa *= 2
            pl = _grow_i32(pl, pcapa)
            pr = _grow_i32(pr, pcapa)
            pfreq = _grow_i64(pfreq, pcapa)
            pn = _grow_i32(pn, pcapa)
            plast = _grow_i32(plast, pcapa)
            pbytes = _grow_i64(pbytes, pcapa)
        if 2 * (S[S_NPAIRS] + 1) > tab.shape[0]:
            tab = _rehash(S[S_NPAIRS], pl, pr, 2 * tab.shape[0])
    pdead = np.zeros(pcapa, np.int8)
    head = np.empty(pcapa, np.int32)
    tail = np.empty(pcapa, np.int32)
    tailn = np.empty(pcapa, np.int32)
    plive = np.empty(pcapa, np.int32)  # places live (= adjacent occurrences now)
    pstamp = np.empty(pcapa, np.int32)
    o = 0
    for q in range(S[S_NPAIRS]):
        o += 3 + (pbytes[q] + 3) // 4
    o = (o + BLK - 1) // BLK * BLK
    # generous: pages never written cost no memory (chunks are recycled, so the top rarely moves far)
    pool = np.empty(o + (2 * BLK if small else o + 1024 * BLK), np.int32)
    S[S_FREE] = -1
    S[S_TOP] = o
    S[S_POOLPEAK] = o
    pb = pool.view(np.uint8)
    _scan_places(
        syms, S, pool, pb, pl, pr, pn, plast, pbytes, head, tail, tailn, plive, pdead, pstamp, tab, dense, nalpha
    )
    dense = np.empty(1, np.int32)  # release them
    plast = np.empty(1, np.int32)
    pbytes = np.empty(1, np.int64)
    stats[0] = S[S_NPAIRS]
    stats[1] = S[S_NINIT]

    # ---- accepted strings
    ttcap = 16
    while ttcap < 4 * (max_merges + 1):
        ttcap *= 2
    ttab = np.full(ttcap, -1, np.int32)

    # ---- heap (lazy, thresholded)
    hf = np.empty(cap0, np.int64)
    hp = np.empty(cap0, np.int32)
    S[S_HSIZE] = 0

    touched = np.empty(cap0, np.int32)
    cPL = np.zeros(nsym_cap, np.int64)
    cRX = np.zeros(nsym_cap, np.int64)
    cPN = np.zeros(nsym_cap, np.int64)
    cNX = np.zeros(nsym_cap, np.int64)

    m_l = np.empty(max_merges, np.int32)
    m_r = np.empty(max_merges, np.int32)
    m_f = np.empty(max_merges, np.int64)
    nm = 0
    nrebuild = 0

    while nm < max_merges:
        best = _pop(S, hf, hp, pfreq, pdead, pl, pr, slen, soff, cps, ttab, pool, head, tail, tailn, pn)
        if best < 0:
            n = _heap_threshold(S, pfreq, pdead, heap_k)
            if n == 0:
                break  # no candidate left
            if n > hf.shape[0]:
                hf = np.empty(n + n // 2, np.int64)
                hp = np.empty(n + n // 2, np.int32)
            _heap_fill(S, hf, hp, pfreq, pdead, pl, pr, slen, soff, cps, heap_k)
            nrebuild += 1
            continue
        L = pl[best]
        R = pr[best]
        m_l[nm] = L
        m_r[nm] = R
        m_f[nm] = pfreq[best]
        N = nalpha + nm
        if cps_top + slen[L] + slen[R] > cps.shape[0]:
            cps = _grow_i32(cps, 2 * cps.shape[0] + slen[L] + slen[R])
        cps_top = _new_symbol(N, L, R, slen, soff, sflag, slead, strail, cps, cps_top, ttab)

        S[S_NTOUCHED] = 0
        S[S_RB] = head[best]
        S[S_RK] = 4 * (head[best] + 3) if head[best] >= 0 and pool[head[best] + 1] < 0 else 0
        S[S_RPOS] = 0
        while _accept(
            best,
            N,
            nm,
            syms,
            counts,
            S,
            pool,
            pb,
            pl,
            pr,
            pfreq,
            pdead,
            head,
            tail,
            tailn,
            pn,
            plive,
            pstamp,
            tab,
            cPL,
            cRX,
            cPN,
            cNX,
            touched,
            slen,
            sflag,
            slead,
            strail,
            maxlen,
            split_script,
            split_digits,
            split_ws,
            suffix,
            allow_ws_only,
        ):
            npairs = S[S_NPAIRS]
            if npairs + 2 > pcapa:
                pcapa *= 2
                pl = _grow_i32(pl, pcapa)
                pr = _grow_i32(pr, pcapa)
                pfreq = _grow_i64(pfreq, pcapa)
                pn = _grow_i32(pn, pcapa)
                pdead = _grow_i8(pdead, pcapa)
                head = _grow_i32(head, pcapa)
                tail = _grow_i32(tail, pcapa)
                tailn = _grow_i32(tailn, pcapa)
                plive = _grow_i32(plive, pcapa)
                pstamp = _grow_i32(pstamp, pcapa)
            if 2 * (npairs + 2) > tab.shape[0]:
                tab = _rehash(npairs, pl, pr, 2 * tab.shape[0])
            if S[S_NTOUCHED] + 2 > touched.shape[0]:
                touched = _grow_i32(touched, 2 * touched.shape[0])
            if S[S_TOP] + 2 * BLK > pool.shape[0]:
                more = max(2 * BLK, pool.shape[0] // 16) if small else pool.shape[0] // 4 + 1024 * BLK
                newlen = pool.shape[0] + more
                if newlen >= 2147483647:
                    raise ValueError("place pool exceeds 2^31 entries")
                pool = _grow_i32(pool, newlen)
                pb = pool.view(np.uint8)
        pdead[best] = 1
        _release(best, pool, S, head, tail, tailn, pn)
        if S[S_HSIZE] + S[S_NTOUCHED] > hf.shape[0]:
            n = 2 * (S[S_HSIZE] + S[S_NTOUCHED])
            hf = _grow_i64(hf, n)
            hp = _grow_i32(hp, n)
        _push_touched(S, touched, hf, hp, pfreq, pdead, pl, pr, slen, soff, cps)
        nm += 1
        if nm % REPORT_EVERY == 0:
            with objmode():
                _report(nm)

    stats[2] = S[S_NPAIRS]
    stats[3] = nrebuild
    stats[4] = S[S_NPUSH]
    stats[5] = pool.shape[0]
    stats[6] = S[S_POOLPEAK]
    stats[7] = tab.shape[0]
    stats[8] = hf.shape[0]
    stats[9] = pcapa
    stats[10] = S[S_NCOMPACT]
    return m_l[:nm].copy(), m_r[:nm].copy(), m_f[:nm].copy()


@njit(cache=True)
def _fill_layout(syms, o, w0, cps, lengths, prefix_cp):
    """Append words (code points `cps`, split by `lengths`) at syms[o:], each after its sentinel
    -(2 + w) (w counted from w0), optionally prefixed by prefix_cp. Returns the new o."""
    k = 0
    for j in range(lengths.shape[0]):
        syms[o] = SENT - (w0 + j)
        o += 1
        if prefix_cp >= 0:
            syms[o] = prefix_cp
            o += 1
        for _ in range(lengths[j]):
            syms[o] = cps[k]
            o += 1
            k += 1
    return o


@njit(cache=True)
def _mark_cps(syms):
    seen = np.zeros(0x110000, np.bool_)
    for i in range(syms.shape[0]):
        v = syms[i]
        if v >= 0:
            seen[v] = True
    return np.flatnonzero(seen).astype(np.int32)


@njit(cache=True)
def _to_ids(syms, lut):
    for i in range(syms.shape[0]):
        v = syms[i]
        if v >= 0:
            syms[i] = lut[v]


def build_layout(words, prefix_cp=-1, batch=1 << 16):
    """list[str] -> the kernel's layout with code points: per word its sentinel -(2+w), then
    (prefix_cp if >= 0, then) its code points; a final sentinel. Built batch by batch."""
    nw = len(words)
    total = sum(map(len, words)) + nw * (2 if prefix_cp >= 0 else 1) + 1
    if total >= 2**31 - 1:
        raise ValueError("table too large for int32 positions")
    syms = np.empty(total, np.int32)
    o = 0
    for s in range(0, nw, batch):
        chunk = words[s : s + batch]
        cps = np.frombuffer("".join(chunk).encode("utf-32-le", "surrogatepass"), dtype=np.int32)
        lengths = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
        o = _fill_layout(syms, o, s, cps, lengths, prefix_cp)
    syms[o] = SENT - nw
    assert o + 1 == total
    return syms


# ------------------------------------------------------------------------------------------------
# Python glue
# ------------------------------------------------------------------------------------------------


def _get(spec, name):
    if isinstance(spec, dict):
        if name in spec:
            return spec[name]
    elif hasattr(spec, name):
        return getattr(spec, name)
    if name in FLAGS:
        return FLAGS[name]
    raise KeyError(name)


def _is_decimal(c):
    return 0x30 <= c <= 0x39 or 0xFF10 <= c <= 0xFF19


def _char_class(cp, scripts, names, split_by_number):
    """Script state of one character for the script rule: S_NONE (passes the state through:
    Inherited), S_ANY (a decimal digit with split_by_number=false), or a script id >= 0. `scripts`
    is pipeline.tokenizer.unicode_scripts.script_array(): -1 for Inherited, Hiragana, Katakana and
    U+30FC already folded into Han."""
    if not split_by_number and _is_decimal(cp):
        return S_ANY
    script = int(scripts[cp])
    return S_NONE if script == -1 else names.setdefault(script, len(names))


def _alphabet_props(alpha, scripts, spec):
    split_by_number = bool(_get(spec, "split_by_number"))
    names: dict = {}
    n = len(alpha)
    flag = np.zeros(n, np.int32)
    lead = np.empty(n, np.int32)
    for i, cp in enumerate(alpha.tolist()):
        f = 0
        if cp in (UNK, 0, 0x1F, 0x20) or 0xD800 <= cp < 0xE000 or cp > 0x10FFFF:
            f |= F_FORB
        if _is_decimal(cp):
            f |= F_DIGIT
        if cp == WS:
            f |= F_ALLWS | F_HASWS | F_WSFIRST | F_WSLAST
            lead[i] = S_NONE
        elif f & F_FORB:
            lead[i] = S_NONE  # never part of a valid pair anyway
        else:
            lead[i] = _char_class(cp, scripts, names, split_by_number)
        flag[i] = f
    return flag, lead, lead.copy()


def train_merges_layout(syms, counts, scripts, spec, heap_k=1 << 16, stats=None, tiny_start=False):
    """The kernel on a prepared layout (see build_layout; code points, modified in place).
    `tiny_start`: every array starts at a few entries, so that every growth path runs (tests)."""
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    max_merges = int(_get(spec, "max_merges"))
    if counts.shape[0] == 0 or max_merges <= 0:
        return []
    alpha = _mark_cps(syms)
    if alpha.size == 0:
        return []
    lut = np.full(int(alpha[-1]) + 1, -1, np.int32)
    lut[alpha] = np.arange(alpha.size, dtype=np.int32)
    _to_ids(syms, lut)
    del lut
    flag, lead, trail = _alphabet_props(alpha, scripts, spec)
    st = np.zeros(16, np.int64)
    st[15] = 1 if tiny_start else 0
    ml, mr, mf = _kernel(
        syms,
        counts,
        alpha.size,
        alpha,
        flag,
        lead,
        trail,
        max_merges,
        int(_get(spec, "max_sentencepiece_length")),
        bool(_get(spec, "split_by_unicode_script")),
        bool(_get(spec, "split_digits")),
        bool(_get(spec, "split_by_whitespace")),
        bool(_get(spec, "treat_whitespace_as_suffix")),
        bool(_get(spec, "allow_whitespace_only_pieces")),
        int(heap_k),
        st,
    )
    if stats is not None:
        stats.update(
            pairs_initial=int(st[0]),
            places_initial=int(st[1]),
            pairs=int(st[2]),
            heap_builds=int(st[3]),
            heap_pushes=int(st[4]),
            pool_len=int(st[5]),
            pool_peak=int(st[6]),
            table_cap=int(st[7]),
            heap_cap=int(st[8]),
            pair_cap=int(st[9]),
            compactions=int(st[10]),
            positions=int(syms.shape[0]),
            words=int(counts.shape[0]),
            alphabet=int(alpha.size),
        )
    strs = [chr(c) for c in alpha.tolist()]
    out = []
    for a, b, f in zip(ml.tolist(), mr.tolist(), mf.tolist()):
        s = strs[a] + strs[b]
        strs.append(s)
        out.append((s, f))
    return out


def train_merges_arrays(cps, lengths, counts, scripts, spec, heap_k=1 << 16, stats=None, tiny_start=False):
    """cps: code points of all words, concatenated; lengths: code points per word; counts: per word."""
    cps = np.ascontiguousarray(cps, dtype=np.int32)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    nw = lengths.shape[0]
    total = cps.shape[0] + nw + 1
    if total >= 2**31 - 1:
        raise ValueError("table too large for int32 positions")
    syms = np.empty(total, np.int32)
    o = _fill_layout(syms, 0, 0, cps, lengths, -1)
    syms[o] = SENT - nw
    return train_merges_layout(syms, counts, scripts, spec, heap_k=heap_k, stats=stats, tiny_start=tiny_start)


def train_merges(words, counts, scripts, spec, heap_k=1 << 16, stats=None, tiny_start=False):
    """See the module docstring."""
    words = words if isinstance(words, list) else list(words)
    syms = build_layout(words)
    return train_merges_layout(syms, counts, scripts, spec, heap_k=heap_k, stats=stats, tiny_start=tiny_start)


# ---- from a word-count table (pipeline.tokenizer.word_table) to the layout --------------------------


@njit(cache=True)
def table_layout(blob, ends, syms, chars, counts):
    """The table's words (UTF-8 in `blob`, word w ends at ends[w]) into the layout `syms` (sentinel
    -(2 + w), then the code points; a last sentinel); each character's count (weighted by its
    word's) added into `chars`."""
    o = 0
    start = 0
    for w in range(ends.shape[0]):
        syms[o] = -2 - w
        o += 1
        i = start
        while i < ends[w]:
            b = blob[i]
            if b < 0x80:
                cp, n = np.int32(b), 1
            elif b < 0xE0:
                cp, n = np.int32(b & 0x1F), 2
            elif b < 0xF0:
                cp, n = np.int32(b & 0x0F), 3
            else:
                cp, n = np.int32(b & 0x07), 4
            for k in range(1, n):
                cp = (cp << 6) | np.int32(blob[i + k] & 0x3F)
            syms[o] = cp
            chars[cp] += counts[w]
            o += 1
            i += n
        start = ends[w]
    syms[o] = -2 - ends.shape[0]
    return o + 1


@njit(cache=True)
def replace_rare(syms, kept):
    for i in range(syms.shape[0]):
        if syms[i] >= 0 and not kept[syms[i]]:
            syms[i] = UNK
