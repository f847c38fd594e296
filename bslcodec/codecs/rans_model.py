"""The ``ans`` model (spec 4.4): tokens, the per-tensor model (probability bits P, token split s/m, a
frequency table), its choice (``build_model``: the smallest payload, table included) and size estimates.
:mod:`bslcodec.codecs.rans` is the face importers use."""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from ..container.limits import LANES
from ..parallel import launch, serial_twin

# inlined into the cached decoder; bslcodec/jitcache.py keys numba's cache on dq.py too
from .golomb import _ctlz
from .rans_header import _align4, n_groups
from .rans_ref import MAX_MSB, MAX_SPLIT, k_max

L = 1 << 16
STATE_BITS_PER_LANE = 24  # flush cost of a lane, on average (32 bits written, ~8 of them information)
FINE_S, FINE_M = MAX_SPLIT, MAX_MSB  # the histogram every (s, m) is derived from
FINE_K = k_max(FINE_S, FINE_M)  # 4304 bins
PROB_BITS_CHOICES = (11, 12, 13)  # 2^13 slots: a 64 KiB decode table (P <= 14 is valid)

# Status codes written by the decoder, one per group (0 = fine).
_SHORT, _BAD_STATE, _OVERRUN, _END, _RANGE = 1, 2, 3, 4, 5
_STATUS_TEXT = {
    _SHORT: "its word count cannot hold the lane states",
    _BAD_STATE: "a lane's initial state is below 2^16",
    _OVERRUN: "the lanes read past the group's words",
    _END: "the lanes do not end in the state 2^16 at the group's last word",
    _RANGE: "a symbol gives |q| >= 2^24",
}


@numba.njit(inline="always")
def _floor_log2(v):
    return 63 - np.int64(_ctlz(np.uint64(v)))


@numba.njit(inline="always")
def _token(u, s, m):
    """(token, raw bit count, raw value) of symbol u (int64)."""
    if u < (np.int64(1) << s):
        return u, np.int64(0), np.int64(0)
    e = _floor_log2(u)
    nb = e - m
    tok = (np.int64(1) << s) + ((e - s) << m) + ((u >> nb) - (np.int64(1) << m))
    return tok, nb, u & ((np.int64(1) << nb) - 1)


@numba.njit(inline="always")
def _token_nb(u, s, m):
    """``_token`` without a branch (the encoder's hot loop, where u < 2^s is unpredictable)."""
    bigm = -np.int64(u >= (np.int64(1) << s))  # all ones when u >= 2^s
    # floor(log2(u | 1)) as the exponent field of float64(u | 1) (exact, u < 2^25): vectorizes
    e = (np.float64(np.int32(u | 1)).view(np.int64) >> 52) - 1023
    nb = (e - m) & bigm
    tok = u + (((np.int64(1) << s) + (max(e - s, 0) << m) + ((u >> nb) - (np.int64(1) << m)) - u) & bigm)
    return tok, nb, u & ((np.int64(1) << nb) - 1)


# ---------------------------------------------------------------- model

@dataclass
class Model:
    prob_bits: int
    s: int
    m: int
    freqs: np.ndarray  # int64, length K, sums to 2^prob_bits
    kq: int
    table_bits: int  # bits of the table bit string

    @property
    def header_size(self) -> int:
        return _align4(12 + (self.table_bits + 7) // 8)


_HIST_BLOCK = 1 << 20


@numba.njit(parallel=True, nogil=True, cache=True)
def fine_histogram(u):
    """Counts of the tokens of (s, m) = (12, 4), from which every coarser split is summed."""
    n = u.size
    nb_ = (n + _HIST_BLOCK - 1) // _HIST_BLOCK
    part = np.zeros((nb_, FINE_K), np.int64)
    for b in prange(nb_):
        for i in range(b * _HIST_BLOCK, min(n, (b + 1) * _HIST_BLOCK)):
            tok, nb, r = _token(np.int64(u[i]), FINE_S, FINE_M)
            part[b, tok] += 1
    return part


def fine_hist(u: np.ndarray) -> np.ndarray:
    return launch(fine_histogram, _SERIAL['fine_histogram'], np.ascontiguousarray(u), work=u.size).sum(axis=0)


def _fine_bins():
    """For each fine bin: (smallest symbol in it, exponent e, top FINE_M mantissa bits h0)."""
    b = np.arange(FINE_K, dtype=np.int64)
    lo = np.where(b < (1 << FINE_S), b, 0)
    i = b - (1 << FINE_S)
    e = FINE_S + (i >> FINE_M)
    h0 = i & ((1 << FINE_M) - 1)
    big = b >= (1 << FINE_S)
    lo[big] = ((1 << FINE_M) + h0[big]) << (e[big] - FINE_M)
    return lo


_FINE_LO = _fine_bins()


def coarse_map(s: int, m: int) -> tuple:
    """(token of each fine bin, raw bits of that token) for split (s, m)."""
    u = _FINE_LO
    tok = u.copy()
    nb = np.zeros_like(u)
    big = u >= (1 << s)
    e = np.zeros_like(u)
    e[big] = np.floor(np.log2(u[big])).astype(np.int64)
    # exact floor(log2) for integers (float log2 can round up just below a power of two)
    e[big] -= (np.left_shift(1, e[big]) > u[big]).astype(np.int64)
    nb[big] = e[big] - m
    tok[big] = (1 << s) + ((e[big] - s) << m) + ((u[big] >> nb[big]) - (1 << m))
    return tok, nb


_MAPS = {(s, m): coarse_map(s, m) for s in range(MAX_SPLIT + 1) for m in range(min(s, MAX_MSB) + 1)}


def quantize_freqs(counts: np.ndarray, prob_bits: int) -> np.ndarray:
    """Integer frequencies summing to 2^prob_bits, >= 1 where counts > 0, close to minimal cross-entropy.

    Tokens too rare for one slot get 1; the others share the remaining slots in proportion (floored), and
    the few slots the flooring leaves go where they save the most bits.
    """
    M = 1 << prob_bits
    c = np.ascontiguousarray(counts, np.int64)
    q = np.zeros(c.size, np.int64)
    rest = np.zeros(c.size, np.bool_)
    d = _floor_freqs(c, M, q, rest)  # the integer part, compiled (the same integers as _quantize_freqs_ref)
    if d < 0:
        raise ValueError(f"{-d} used tokens do not fit 2^{prob_bits} slots")
    if d:
        # the d slots go to the tokens not forced to 1 that save the most bits (ties: lower token first);
        # every such gain is >= 0, so only they are ranked (the reference ranks every token, the others at -1)
        idx = np.flatnonzero(rest)
        qi = q[idx]
        gain = c[idx].astype(np.float64) * np.log2((qi + 1) / np.maximum(qi, 1))
        q[idx[np.argsort(-gain, kind="stable")[:d]]] += 1
    return q


@numba.njit(nogil=True, cache=True)
def _floor_freqs(c, M, q, rest):
    """``quantize_freqs`` up to the leftover slots: ``q`` the floored frequencies, ``rest`` the tokens not
    forced to 1; returns the slots left (0 <= d < live tokens), or minus the live tokens if over M."""
    nz_count = 0
    total = np.int64(0)
    for i in range(c.size):
        nz_count += c[i] > 0
        total += c[i]
    if nz_count > M:
        return -np.int64(nz_count)
    forced = np.zeros(c.size, np.bool_)
    for i in range(c.size):
        forced[i] = c[i] > 0 and c[i] * M < total
    while True:
        F = np.int64(0)
        n_rest = np.int64(0)
        for i in range(c.size):
            rest[i] = c[i] > 0 and not forced[i]
            F += forced[i]
            if rest[i]:
                n_rest += c[i]
        new = False
        for i in range(c.size):
            if forced[i]:
                q[i] = 1
            elif rest[i]:
                q[i] = ((M - F) * c[i]) // n_rest
                if q[i] < 1:
                    new = True
        if not new:
            break
        for i in range(c.size):
            if rest[i] and q[i] < 1:
                forced[i] = True
    s = np.int64(0)
    for i in range(c.size):
        s += q[i]
    return M - s


def _quantize_freqs_ref(counts: np.ndarray, prob_bits: int) -> np.ndarray:
    """``quantize_freqs`` in numpy (the reference of the compiled integer part)."""
    M = 1 << prob_bits
    c = np.asarray(counts, np.int64)
    nz = c > 0
    if int(nz.sum()) > M:
        raise ValueError(f"{int(nz.sum())} used tokens do not fit 2^{prob_bits} slots")
    q = np.zeros(c.size, np.int64)
    forced = nz & (c * M < int(c.sum()))
    while True:
        rest = nz & ~forced
        F, n_rest = int(forced.sum()), int(c[rest].sum())  # the largest token is never forced
        q[forced] = 1
        q[rest] = ((M - F) * c[rest]) // n_rest
        new = rest & (q < 1)
        if not new.any():
            break
        forced |= new
    d = M - int(q.sum())  # 0 <= d < number of non-forced tokens
    if d:
        cf = c.astype(np.float64)
        gain = np.where(rest, cf * np.log2((q + 1) / np.maximum(q, 1)), -1.0)
        q[np.argsort(-gain, kind="stable")[:d]] += 1
    return q


def _eg_len(v, k):
    """Lengths of the EG-k code words of integers ``v`` (frexp gives floor(log2) exactly)."""
    e = np.frexp((np.asarray(v, np.int64) + (1 << k)).astype(np.float64))[1].astype(np.int64) - 1
    return 2 * e - k + 1


@numba.njit(nogil=True, cache=True)
def _table_cost(f):
    """``table_cost`` compiled: the same integer arithmetic and the same choice (the first cheapest kq)."""
    nz = 0
    for v in f:
        nz += v > 0
    nzv = np.empty(nz, np.int64)
    j = 0
    runs, run_bits = 0, 0
    i = 0
    while i < f.size:
        if f[i] > 0:
            nzv[j] = f[i]
            j += 1
            i += 1
        else:
            r = 0
            while i < f.size and f[i] == 0:
                r += 1
                i += 1
            runs += 1
            run_bits += 2 * (63 - np.int64(_ctlz(np.uint64(r)))) + 1  # EG-0 of r - 1: 2 floor(log2 r) + 1
    mid = 0
    if nz:
        srt = np.sort(nzv)
        med = float(srt[nz // 2]) if nz % 2 else (float(srt[nz // 2 - 1]) + float(srt[nz // 2])) / 2.0
        mid = math.frexp(med)[1] - 1  # EG-k is cheapest near log2(f)
    best_bits, best_kq = np.int64(-1), -1
    for kq in range(max(0, mid - 6), min(15, mid + 2) + 1):
        bits = np.int64(runs * (kq + 1) + run_bits)
        for v in nzv:
            e = 63 - np.int64(_ctlz(np.uint64(v + (np.int64(1) << kq))))
            bits += 2 * e - kq + 1
        if best_kq < 0 or bits < best_bits:
            best_bits, best_kq = bits, kq
    return best_bits, best_kq


def table_cost(freqs: np.ndarray) -> tuple:
    """(bits, kq) of the cheapest table bit string for ``freqs``: per nonzero frequency its EG-kq code, per
    run of zeros a 0 in EG-kq and the run length - 1 in EG-0; kq searched near log2 of the median."""
    bits, kq = _table_cost(np.ascontiguousarray(freqs, np.int64))
    return int(bits), int(kq)


def _table_cost_ref(freqs: np.ndarray) -> tuple:
    """``table_cost`` in numpy (the reference of the compiled one)."""
    f = np.asarray(freqs, np.int64)
    nzv = f[f > 0]
    # zero runs
    z = f == 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], z.astype(np.int8), [0]))))
    runs = edges[1::2] - edges[::2]
    run_bits = int(_eg_len(runs - 1, 0).sum()) if runs.size else 0
    best = None
    mid = int(np.frexp(float(np.median(nzv)))[1]) - 1 if nzv.size else 0  # EG-k is cheapest near log2(f)
    for kq in range(max(0, mid - 6), min(15, mid + 2) + 1):
        bits = int(_eg_len(nzv, kq).sum()) + runs.size * (kq + 1) + run_bits
        if best is None or bits < best[0]:
            best = (bits, kq)
    return best


# every split's token map stacked (one row per (s, m) of _MAPS), for _candidates
_SPLITS = list(_MAPS)
_TOK = np.ascontiguousarray(np.stack([_MAPS[k][0] for k in _SPLITS]))
_NB = np.ascontiguousarray(np.stack([_MAPS[k][1] for k in _SPLITS]))
_SPLITS_S, _SPLITS_M = np.array([k[0] for k in _SPLITS]), np.array([k[1] for k in _SPLITS])
_SPLIT_INDEX = np.arange(len(_SPLITS))


@numba.njit(nogil=True, cache=True)
def _split_counts(used, h, tok, nb, split_s):
    """For every split i (row of ``tok``/``nb``, s = ``split_s[i]``) over the used fine bins ``used`` with
    counts ``h``: its token counts ``counts[off[i]:off[i + 1]]`` (K_i = last used token + 1 of them), raw
    bits, number of live tokens, its representative ``rep[i]``, and the live counts (as float64) of the
    representatives one after the other. A split whose tokens below 2^s are the bins themselves has, where
    every used bin is below 2^s, the counts of the first such split: that one is their representative (a
    small tensor's symbols make ~20 of the 55 splits alike); any other split is its own."""
    S = tok.shape[0]
    off = np.zeros(S + 1, np.int64)
    for i in range(S):
        off[i + 1] = off[i] + tok[i, used[-1]] + 1  # tokens are non-decreasing in the fine bin
    counts = np.zeros(off[S], np.int64)
    raws = np.zeros(S, np.int64)
    n_live = np.zeros(S, np.int64)
    rep = np.arange(S)
    first = -1
    for i in range(S):
        if used[-1] < (np.int64(1) << split_s[i]):  # every used bin is its own token, no raw bits
            if first >= 0:
                rep[i] = first
                counts[off[i]:off[i + 1]] = counts[off[first]:off[first + 1]]
                raws[i], n_live[i] = raws[first], n_live[first]
                continue
            first = i
        for j in range(used.size):
            counts[off[i] + tok[i, used[j]]] += h[j]
            raws[i] += h[j] * nb[i, used[j]]
        for t in range(off[i], off[i + 1]):
            n_live[i] += counts[t] > 0
    n = 0
    for i in range(S):
        if rep[i] == i:
            n += n_live[i]
    live = np.empty(n, np.float64)
    k = 0
    for i in range(S):
        if rep[i] != i:
            continue
        for t in range(off[i], off[i + 1]):
            if counts[t] > 0:
                live[k] = counts[t]
                k += 1
    return off, counts, raws, n_live, rep, live


@numba.njit(nogil=True, cache=True)
def _pairwise(a, lo, n):
    """numpy's pairwise summation of a[lo:lo + n] (``pairwise_sum`` in its loops: 8 accumulators up to 128
    elements, halves at multiples of 8 above), so the sum is the same float as ``a[lo:lo + n].sum()``."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    if n <= 128:
        r = a[lo:lo + 8].copy()
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] += a[lo + i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res += a[lo + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a, lo, n2) + _pairwise(a, lo + n2, n - n2)


@numba.njit(nogil=True, cache=True)
def _segment_sums(a, ends):
    """[a[ends[i - 1]:ends[i]].sum() for each i] (ends[-1] = 0), the same floats as numpy's."""
    out = np.empty(ends.size)
    lo = 0
    for i in range(ends.size):
        out[i] = 0.0 + _pairwise(a, lo, ends[i] - lo)
        lo = ends[i]
    return out


def _ranked(hist: np.ndarray) -> tuple:
    """Every split costed by entropy in one compiled pass: (order of the splits, cheapest first, by (est, s, m);
    est; token count offsets; token counts; raw bits; live tokens), split i's counts at ``off[i]:off[i + 1]``.

    The token counts and raw bits are the same integers as split by split (``_candidates_ref``), the
    entropy terms the same numbers (numpy's log2), summed per split in numpy's order, so the ranking is the
    same."""
    N = int(hist.sum())
    used = np.flatnonzero(hist)
    off, counts, raws, n_live, rep, live = _split_counts(used, hist[used], _TOK, _NB, _SPLITS_S)
    own = np.flatnonzero(rep == _SPLIT_INDEX)  # the representatives: the entropy of each, then copied
    ent = np.zeros(rep.size)
    ent[own] = -_segment_sums(live * np.log2(live / N), np.cumsum(n_live[own]))
    ent = ent[rep]
    # the reference's float additions, elementwise in the same order: the same numbers
    est = ent + raws + 9 * n_live + 4 * (np.diff(off) > n_live) + 96  # + table: ~9 bits a used token
    order = np.lexsort((_SPLITS_M, _SPLITS_S, est))  # by (est, s, m)
    return order, est, off, counts, raws, n_live


def _candidates(hist: np.ndarray) -> list:
    """(estimated bits, s, m, token counts, raw bits) for every split, cheapest first (``_ranked``)."""
    order, est, off, counts, raws, _ = _ranked(hist)
    return [(float(est[i]), _SPLITS[i][0], _SPLITS[i][1], counts[off[i]:off[i + 1]], int(raws[i]))
            for i in order.tolist()]


def _candidates_ref(hist: np.ndarray) -> list:
    """``_candidates`` split by split (the reference)."""
    N = int(hist.sum())
    used = np.flatnonzero(hist)
    out = []
    for (s, m), (tok, nb) in _MAPS.items():
        K = int(tok[used[-1]]) + 1
        counts = np.bincount(tok, weights=hist, minlength=K).astype(np.int64)[:K]
        raw = int((hist * nb).sum())
        live = counts[counts > 0]
        ent = float(-(live * np.log2(live / N)).sum())
        est = ent + raw + 9 * live.size + 4 * (K > live.size) + 96  # + table: ~9 bits a used token
        out.append((est, s, m, counts, raw))
    out.sort(key=lambda c: (c[0], c[1], c[2]))
    return out


def _hist_of(u, hist):
    if hist is None:
        hist = fine_hist(u)
    if int(hist.sum()) == 0:  # no symbols: any valid table will do
        hist = np.zeros(FINE_K, np.int64)
        hist[0] = 1
    return hist


def _exact(counts, raw, s, m, P):
    """(total bits incl. model header, model) of split (s, m) at precision P."""
    q = quantize_freqs(counts, P)
    live = counts > 0
    bits = float((counts[live] * (P - np.log2(q[live]))).sum()) + raw
    tbits, kq = table_cost(q)
    return bits + 8 * _align4(12 + (tbits + 7) // 8), Model(P, s, m, q, kq, tbits)


def build_model(u: np.ndarray = None, hist: np.ndarray = None, prob_bits_choices=PROB_BITS_CHOICES,
                n_splits: int = 3) -> tuple:
    """(model, model bits) minimising token + raw + table bits for symbols ``u`` (or their ``hist``).

    Model bits exclude the lane flushes and the group table (see ``estimate_bits``). Search: every split
    ranked by entropy; the best few (and the best few with <= 128 used tokens, whose frequencies lose less
    to quantization) costed exactly at the finest precision; then the winner at every precision.
    """
    hist = _hist_of(u, hist)
    order, est, off, counts_all, raws, n_live = _ranked(hist)
    order, n_live = order.tolist(), n_live.tolist()  # n_live[i]: split i's tokens with a count > 0
    few = [i for i in order[n_splits:] if n_live[i] <= 128][:2]
    top = max(prob_bits_choices)
    best = None
    for i in order[:n_splits] + few:
        if n_live[i] > 1 << top:
            continue
        s, m = _SPLITS[i]
        total, model = _exact(counts_all[off[i]:off[i + 1]], int(raws[i]), s, m, top)
        if best is None or (total, s, m) < (best[0], best[2].s, best[2].m):
            best = (total, i, model)
    if best is None:
        raise ValueError(f"no split fits its used tokens in 2^{top} slots")
    total, i, model = best
    for P in sorted(prob_bits_choices):
        if P != top and n_live[i] <= 1 << P:
            t, mdl = _exact(counts_all[off[i]:off[i + 1]], int(raws[i]), model.s, model.m, P)
            if t < total:
                total, model = t, mdl
    return model, total


def estimate_size(u: np.ndarray = None, lane_symbols: int = 1024, hist: np.ndarray = None) -> int:
    """Payload bytes predicted without building the table (entropy of the best split + overheads);
    typically within 0.2 % of ``len(encode(...))``. For rate control."""
    n = int(u.size) if hist is None else int(hist.sum())
    hist = _hist_of(u, hist)
    order, est = _ranked(hist)[:2]
    return math.ceil(estimate_bits(float(est[order[0]]), n, lane_symbols) / 8)


def estimate_bits(model_bits: float, n_elems: int, lane_symbols: int) -> float:
    """Payload bits predicted from the model's cost plus lane flushes and the group table.

    A lane writes its information plus ~24 bits (the 2^16 it starts from, and on average 8 unused bits of
    its 32-bit final state), but never less than the 32 bits of that state."""
    G = n_groups(n_elems, lane_symbols)
    if G == 0:
        return model_bits
    bps = model_bits / n_elems
    full, last, last_sum = _last_lanes(n_elems, lane_symbols)
    flush = full * max(32.0, bps * lane_symbols + STATE_BITS_PER_LANE) - full * bps * lane_symbols
    flush += float(np.maximum(32.0, bps * last + STATE_BITS_PER_LANE).sum() - bps * last_sum)
    return model_bits + flush + 40 * G  # + uint32 word count and padding per group


@functools.lru_cache(maxsize=1024)
def _last_lanes(n_elems: int, lane_symbols: int) -> tuple:
    """(lanes of the full groups, symbols of each lane of the last group, their sum) for ``estimate_bits``
    (the allocation asks ~20 times per tensor)."""
    G = n_groups(n_elems, lane_symbols)
    ng = n_elems - (G - 1) * LANES * lane_symbols
    last = -(-(ng - np.arange(min(LANES, ng))) // LANES)  # symbols of each lane of the last group
    last.flags.writeable = False
    return LANES * (G - 1), last, last.sum()


def payload_bits_exact_check(model: Model, u: np.ndarray) -> float:  # pragma: no cover - diagnostics
    """Ideal coded bits of ``u`` under ``model`` (tokens + raw bits), no rANS overheads."""
    hist = fine_hist(u)
    tok, nb = _MAPS[(model.s, model.m)]
    counts = np.bincount(tok, weights=hist, minlength=model.freqs.size)[:model.freqs.size]
    live = counts > 0
    return float((counts[live] * (model.prob_bits - np.log2(model.freqs[live]))).sum() + (hist * nb).sum())


# serial twins of the parallel kernels, for parallel.launch (forked children under OpenMP)
_SERIAL = {k.py_func.__name__: serial_twin(k) for k in (fine_histogram,)}
