"""``rans.build_model`` of a small tensor's symbols in one compiled call (issue 19).

``build_model`` ranks the 55 token splits by entropy, costs the best few exactly (``_exact``: the quantized
frequencies, their bits, the table's bit string) and then the winner at the other precisions: ~7 ``_exact``
calls of ~6 numpy calls each, ~110-130 us a 4,096-symbol tensor, most of it Python. Here all of it is one
call, built from ``rans_model``'s own compiled pieces (``_split_counts``, ``_floor_freqs``, ``_table_cost``),
with the same float operations in the same order. The three ``log2`` it takes are numpy's (whose SIMD
``log2`` is not libm's), read from tables numpy filled: ``log2(c / N)`` of a count out of the symbols,
``log2(q)`` and ``log2((q + 1) / q)`` of a frequency; sums in numpy's pairwise order
(``gridpoints.pairwise``), the leftover slots' ranking by numpy's stable argsort's rule (descending gain,
ties by token). So the same model and bits as ``rans.build_model``; tests/test_ans_model.py compares them.

Only for fewer than ``SMALL`` symbols (the count table is one entry a symbol).
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np

from ..codecs import rans
from ..codecs import rans_model as rm
from .gridpoints import pairwise

SMALL = 1 << 15
_TOP = max(rm.PROB_BITS_CHOICES)
_Q = np.arange(1 << _TOP, dtype=np.float64) + 1.0  # q = 1 .. 2^top
_LOG_Q = np.r_[-np.inf, np.log2(_Q)]  # log2(q) at q
_LOG_GAIN = np.r_[0.0, np.log2((_Q + 1.0) / _Q)]  # log2((q + 1) / q) at q (numpy's int / int: both floats)
_CHOICES = np.array(sorted(rm.PROB_BITS_CHOICES), np.int64)
_COUNT_LOGS = {}  # N -> log2(c / N) at c = 0 .. N


def _count_log(n: int) -> np.ndarray:
    t = _COUNT_LOGS.get(n)
    if t is None:
        t = np.r_[0.0, np.log2(np.arange(1, n + 1, dtype=np.float64) / n)]
        if len(_COUNT_LOGS) < 64:
            _COUNT_LOGS[n] = t
    return t


@numba.njit(nogil=True, cache=True)
def _exact(c, raw, P, log_q, log_gain, q):
    """``rans_model._exact``'s (total bits, kq, table bits) of counts ``c`` at precision P; ``q[:c.size]``
    gets the frequencies (``quantize_freqs``)."""
    M = np.int64(1) << P
    q[:c.size] = 0
    qq = q[:c.size]
    rest = np.zeros(c.size, np.bool_)
    d = rm._floor_freqs(c, M, qq, rest)
    if d > 0:
        idx = np.flatnonzero(rest)
        neg = np.empty(idx.size)
        for j in range(idx.size):  # -gain: -(c * log2((q + 1) / max(q, 1))), q >= 1 here
            neg[j] = -(np.float64(c[idx[j]]) * log_gain[max(qq[idx[j]], 1)])
        srt = np.argsort(neg, kind="mergesort")  # stable, as numpy's "stable"
        for j in range(d):
            qq[idx[srt[j]]] += 1
    terms = np.empty(c.size)
    k = 0
    for t in range(c.size):
        if c[t] > 0:
            terms[k] = np.float64(c[t]) * (np.float64(P) - log_q[qq[t]])
            k += 1
    bits = (0.0 + pairwise(terms, 0, k)) + np.float64(raw)
    tbits, kq = rm._table_cost(qq)
    x = 12 + (tbits + 7) // 8
    return bits + np.float64(8 * (x + (-x % 4))), kq, tbits


@numba.njit(nogil=True, cache=True)
def _candidates(est, split_s, split_m, n_live, n_splits):
    """The splits to cost exactly: the best ``n_splits`` by (estimate, s, m) (``np.lexsort``'s order; no two
    splits share s, m), then the best two with at most 128 live tokens."""
    S = est.size
    order = np.arange(S)
    for a in range(1, S):  # insertion sort
        v = order[a]
        b = a - 1
        while b >= 0:
            o = order[b]
            if est[o] > est[v] or (est[o] == est[v] and (split_s[o] > split_s[v] or (
                    split_s[o] == split_s[v] and split_m[o] > split_m[v]))):
                order[b + 1] = o
                b -= 1
            else:
                break
        order[b + 1] = v
    cand = np.empty(n_splits + 2, np.int64)
    nc = min(n_splits, S)
    cand[:nc] = order[:nc]
    for j in range(n_splits, S):
        if nc < n_splits + 2 and n_live[order[j]] <= 128:
            cand[nc] = order[j]
            nc += 1
    return cand[:nc]


@numba.njit(nogil=True, cache=True)
def _search(used, h, tok, nb, split_s, split_m, count_log, log_q, log_gain, choices, top, n_splits, q, qbest):
    """``build_model``'s search: (status, split, P, kq, table bits, total bits, tokens); the winner's
    frequencies in ``qbest``. Status 1: no split fits its used tokens in 2^top slots."""
    off, counts, raws, n_live, rep, live = rm._split_counts(used, h, tok, nb, split_s)
    S = rep.size
    ent = np.zeros(S)
    terms = np.empty(live.size + 1)
    pos = 0
    for i in range(S):  # the representatives' entropies (``_ranked``), copied to the splits they stand for
        if rep[i] != i:
            continue
        k = 0
        for t in range(off[i], off[i + 1]):
            if counts[t] > 0:
                terms[k] = live[pos + k] * count_log[counts[t]]
                k += 1
        pos += k
        ent[i] = -(0.0 + pairwise(terms, 0, k))
    est = np.empty(S)
    for i in range(S):
        e = ent[rep[i]] + np.float64(raws[i])
        e = e + np.float64(9 * n_live[i])
        e = e + np.float64(4 * np.int64(off[i + 1] - off[i] > n_live[i]))
        est[i] = e + 96.0
    cand = _candidates(est, split_s, split_m, n_live, n_splits)
    found = False
    bt, bi, bP, bkq, btb = 0.0, 0, 0, 0, 0
    for i in cand:
        if n_live[i] > (np.int64(1) << top):
            continue
        t, kq, tb = _exact(counts[off[i]:off[i + 1]], raws[i], top, log_q, log_gain, q)
        if not found or t < bt or (t == bt and (split_s[i] < split_s[bi] or (
                split_s[i] == split_s[bi] and split_m[i] < split_m[bi]))):
            found = True
            bt, bi, bP, bkq, btb = t, i, top, kq, tb
            qbest[:off[i + 1] - off[i]] = q[:off[i + 1] - off[i]]
    if not found:
        return 1, 0, 0, 0, 0, 0.0, 0
    K = off[bi + 1] - off[bi]
    for P in choices:
        if P != top and n_live[bi] <= (np.int64(1) << P):
            t, kq, tb = _exact(counts[off[bi]:off[bi + 1]], raws[bi], P, log_q, log_gain, q)
            if t < bt:
                bt, bP, bkq, btb = t, P, kq, tb
                qbest[:K] = q[:K]
    return 0, bi, bP, bkq, btb, bt, K


def _token_ranges() -> tuple:
    """Each split's tokens as ranges of fine bins: a split's token never decreases along the fine bins
    (``rans_model._TOK``'s rows), so token t of split i covers bins ``start[off[i] + t]`` up to
    ``start[off[i] + t + 1]``; every bin of a token has the same raw bit count, ``tnb[off[i] + t]``; its
    tokens below 2^s are the bins themselves, with no raw bits."""
    tok, nb = rm._TOK, rm._NB
    S, B = tok.shape
    if not (np.diff(tok, axis=1) >= 0).all():
        raise AssertionError("a split's tokens decrease along the fine bins")
    starts, nbs, off = [], [], [0]
    for i in range(S):
        K = int(tok[i, -1]) + 1
        st = np.searchsorted(tok[i], np.arange(K + 1), side="left").astype(np.int64)  # st[K] = B
        tn = nb[i, np.minimum(st[:K], B - 1)].astype(np.int64)
        # a token's bins share its raw bit count (an empty token's is never read: its count is 0)
        lens = np.diff(st)
        if not (np.repeat(tn, lens) == nb[i]).all():
            raise AssertionError("a split's token spans bins of different raw bit counts")
        s = int(rm._SPLITS_S[i])
        if not (np.array_equal(st[:(1 << s) + 1], np.arange((1 << s) + 1)) and not tn[:1 << s].any()):
            raise AssertionError("a split's tokens below 2^s are not the fine bins themselves")
        starts.append(st)
        nbs.append(np.r_[tn, 0])
        off.append(off[-1] + K + 1)
    return np.concatenate(starts), np.concatenate(nbs), np.array(off, np.int64)


_TSTART, _TNB, _TOFF = _token_ranges()


@numba.njit(nogil=True, cache=True)
def _ranges_hist(u):
    """``rans_model._hist_of(u, None)``: the fine token histogram of symbols ``u`` (none: bin 0 once)."""
    hist = np.zeros(rm.FINE_K, np.int64)
    for i in range(u.size):
        tok, _nb, _r = rm._token(np.int64(u[i]), rm.FINE_S, rm.FINE_M)
        hist[tok] += 1
    if u.size == 0:
        hist[0] = 1
    return hist


@numba.njit(nogil=True, cache=True)
def _search_ranges(hist, tok, tstart, tnb, toff, split_s, split_m, count_log, log_q, log_gain, choices, top,
                   n_splits, q, qbest):
    """``_search`` of the fine histogram ``hist`` without building every split's counts: token t of split
    i counts the bins of its range (``_token_ranges``), a difference of the histogram's prefix sums, and
    its tokens below 2^s are the bins themselves, whose live terms are the same for every split (copied from
    one pass over the bins), so a split costs its tokens above 2^s up to the last used bin's (~750 for a
    4,096-symbol tensor's 36 distinct splits, against ~12,600 bins visited and ~12,600 counts written,
    zeroed and scanned by ``_split_counts``). The live counts in token order, their terms and sums as
    ``_search`` takes them; splits whose used bins
    are all their own tokens share the first such split's numbers (``_split_counts``' ``rep``); the full
    counts (zeros included) only for the splits costed exactly. The same (status, split, P, kq, table bits,
    total bits, tokens) and ``qbest``."""
    S = split_s.size
    last = 0
    for b in range(hist.size):
        if hist[b] > 0:
            last = b
    lim = last + 1
    C = np.empty(lim + 1, np.int64)  # C[b]: the symbols in bins below b
    C[0] = 0
    for b in range(lim):
        C[b + 1] = C[b] + hist[b]
    K = np.empty(S, np.int64)
    raws = np.zeros(S, np.int64)
    n_live = np.zeros(S, np.int64)
    ent = np.zeros(S)
    terms = np.empty(lim)
    # a split's tokens below 2^s are the bins themselves: its first terms are the live bins' own, in order
    own = np.empty(lim)
    below = np.empty(lim + 1, np.int64)  # below[b]: live bins under b
    k = 0
    for b in range(lim):  # branch-free: a dead bin's term (0 x log 0 table entry) is written over
        below[b] = k
        own[k] = np.float64(hist[b]) * count_log[hist[b]]
        k += hist[b] > 0
    below[lim] = k
    first = -1
    for i in range(S):
        K[i] = tok[i, last] + 1
        if last < (np.int64(1) << split_s[i]):  # every used bin is its own token, no raw bits
            if first >= 0:
                raws[i], n_live[i], ent[i] = raws[first], n_live[first], ent[first]
                continue
            first = i
        base = toff[i]
        p = min(np.int64(1) << split_s[i], lim)
        k = below[p]
        terms[:k] = own[:k]
        r = np.int64(0)
        for t in range(p, K[i]):  # the tokens above 2^s (no raw bits below)
            c = C[min(tstart[base + t + 1], lim)] - C[min(tstart[base + t], lim)]
            terms[k] = np.float64(c) * count_log[c]
            k += c > 0
            r += c * tnb[base + t]
        raws[i], n_live[i] = r, k
        ent[i] = -(0.0 + pairwise(terms, 0, k))
    est = np.empty(S)
    for i in range(S):
        e = ent[i] + np.float64(raws[i])
        e = e + np.float64(9 * n_live[i])
        e = e + np.float64(4 * np.int64(K[i] > n_live[i]))
        est[i] = e + 96.0
    cand = _candidates(est, split_s, split_m, n_live, n_splits)
    counts = np.empty(lim, np.int64)  # K[i] <= last + 1
    found = False
    bt, bi, bP, bkq, btb = 0.0, 0, 0, 0, 0
    for i in cand:
        if n_live[i] > (np.int64(1) << top):
            continue
        c = counts[:K[i]]
        base = toff[i]
        for t in range(K[i]):
            c[t] = C[min(tstart[base + t + 1], lim)] - C[min(tstart[base + t], lim)]
        t, kq, tb = _exact(c, raws[i], top, log_q, log_gain, q)
        if not found or t < bt or (t == bt and (split_s[i] < split_s[bi] or (
                split_s[i] == split_s[bi] and split_m[i] < split_m[bi]))):
            found = True
            bt, bi, bP, bkq, btb = t, i, top, kq, tb
            qbest[:K[i]] = q[:K[i]]
    if not found:
        return 1, 0, 0, 0, 0, 0.0, 0
    c = counts[:K[bi]]
    base = toff[bi]
    for t in range(K[bi]):
        c[t] = C[min(tstart[base + t + 1], lim)] - C[min(tstart[base + t], lim)]
    for P in choices:
        if P != top and n_live[bi] <= (np.int64(1) << P):
            t, kq, tb = _exact(c, raws[bi], P, log_q, log_gain, q)
            if t < bt:
                bt, bP, bkq, btb = t, P, kq, tb
                qbest[:K[bi]] = q[:K[bi]]
    return 0, bi, bP, bkq, btb, bt, K[bi]


RANGES = True  # the search by ``_search_ranges``; False: ``_search`` (every split's counts built in full)


def build_model(u: np.ndarray = None, hist: np.ndarray = None) -> tuple:
    """``rans.build_model(u, hist)`` (default precisions and splits) of fewer than ``SMALL`` symbols: the
    same (model, model bits)."""
    if RANGES and (hist is not None or u.size < SMALL):
        hist = _ranges_hist(u) if hist is None else hist  # (rans_model._hist_of's histogram)
        n = int(hist.sum())
        if n == 0:  # no symbols: any valid table will do (_hist_of)
            hist = np.zeros(rm.FINE_K, np.int64)
            hist[0], n = 1, 1
        if n < SMALL:
            q = np.empty(rm.FINE_K, np.int64)
            qbest = np.empty(rm.FINE_K, np.int64)
            st, i, P, kq, tbits, total, K = _search_ranges(
                hist, rm._TOK, _TSTART, _TNB, _TOFF, rm._SPLITS_S, rm._SPLITS_M, _count_log(n), _LOG_Q, _LOG_GAIN,
                _CHOICES, _TOP, 3, q, qbest)
            if st:
                raise ValueError(f"no split fits its used tokens in 2^{_TOP} slots")
            s, m = rm._SPLITS[i]
            return rm.Model(int(P), s, m, qbest[:K].copy(), int(kq), int(tbits)), float(total)
    hist = rm._hist_of(u, hist)
    n = int(hist.sum())
    if n >= SMALL:
        return rans.build_model(u, hist)
    used = np.flatnonzero(hist)
    q = np.empty(rm.FINE_K, np.int64)
    qbest = np.empty(rm.FINE_K, np.int64)
    st, i, P, kq, tbits, total, K = _search(used, hist[used], rm._TOK, rm._NB, rm._SPLITS_S, rm._SPLITS_M,
                                            _count_log(n), _LOG_Q, _LOG_GAIN, _CHOICES, _TOP, 3, q, qbest)
    if st:
        raise ValueError(f"no split fits its used tokens in 2^{_TOP} slots")
    s, m = rm._SPLITS[i]
    return rm.Model(int(P), s, m, qbest[:K].copy(), int(kq), int(tbits)), float(total)
