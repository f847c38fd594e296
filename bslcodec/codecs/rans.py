"""Numba interleaved-rANS coding of the ``ans`` payload (spec 4.4), bit-exact with ``rans_ref``.

One per-tensor model (probability bits P, token split s/m, a frequency table) and 32 rANS lanes per group
sharing one stream of 16-bit words; groups are independent, so they encode and decode in parallel
(``prange``). Per-element work never runs in Python. ``build_model`` picks the model that makes the
payload smallest, table included.
"""

import math
import struct
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from ..container.errors import FormatError
from ..container.limits import LANES, MAX_SYMBOL_MAGNITUDE
from ..parallel import launch, serial_twin

# inlined into the cached decoder; bslcodec/jitcache.py keys numba's cache on dq.py too
from ..quantize.dq import level as _dq_level
from ..quantize.dq import next_state as _dq_next
from ..quantize.quant import store_dequant
from .golomb import _ctlz, _step32
from .rans_ref import MAX_MSB, MAX_PROB_BITS, MAX_SPLIT, MAX_TABLE_ZEROS, k_max

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


def n_groups(n_elems: int, lane_symbols: int) -> int:
    return -(-n_elems // (LANES * lane_symbols))


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


def _align4(x: int) -> int:
    return x + (-x % 4)


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


@numba.njit(nogil=True, cache=True)
def _split_counts(used, h, tok, nb):
    """For every split i (row of ``tok``/``nb``) over the used fine bins ``used`` with counts ``h``: its
    token counts ``counts[off[i]:off[i + 1]]`` (K_i = last used token + 1 of them), raw bits, number of
    live tokens, and the live counts of all splits one after the other (as float64)."""
    S = tok.shape[0]
    off = np.zeros(S + 1, np.int64)
    for i in range(S):
        off[i + 1] = off[i] + tok[i, used[-1]] + 1  # tokens are non-decreasing in the fine bin
    counts = np.zeros(off[S], np.int64)
    raws = np.zeros(S, np.int64)
    n_live = np.zeros(S, np.int64)
    for i in range(S):
        for j in range(used.size):
            counts[off[i] + tok[i, used[j]]] += h[j]
            raws[i] += h[j] * nb[i, used[j]]
        for t in range(off[i], off[i + 1]):
            n_live[i] += counts[t] > 0
    live = np.empty(n_live.sum(), np.float64)
    k = 0
    for t in range(off[S]):
        if counts[t] > 0:
            live[k] = counts[t]
            k += 1
    return off, counts, raws, n_live, live


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


def _candidates(hist: np.ndarray) -> list:
    """(estimated bits, s, m, token counts, raw bits) for every split, cheapest first.

    All splits in one compiled pass over the used fine bins only: the token counts and raw bits are the
    same integers as split by split (``_candidates_ref``), the entropy terms the same numbers (numpy's
    log2), summed per split in numpy's order, so the ranking is the same."""
    N = int(hist.sum())
    used = np.flatnonzero(hist)
    off, counts, raws, n_live, live = _split_counts(used, hist[used], _TOK, _NB)
    ent = -_segment_sums(live * np.log2(live / N), np.cumsum(n_live))
    # the reference's float additions, elementwise in the same order: the same numbers
    est = ent + raws + 9 * n_live + 4 * (np.diff(off) > n_live) + 96  # + table: ~9 bits a used token
    order = np.lexsort((_SPLITS_M, _SPLITS_S, est))  # by (est, s, m)
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
    cands = _candidates(hist)
    few = [c for c in cands[n_splits:] if np.count_nonzero(c[3]) <= 128][:2]
    top = max(prob_bits_choices)
    best = None
    for est, s, m, counts, raw in cands[:n_splits] + few:
        P = top if int((counts > 0).sum()) <= 1 << top else None
        if P is None:
            continue
        total, model = _exact(counts, raw, s, m, P)
        if best is None or (total, s, m) < (best[0], best[2].s, best[2].m):
            best = (total, (counts, raw), model)
    if best is None:
        raise ValueError(f"no split fits its used tokens in 2^{top} slots")
    total, (counts, raw), model = best
    for P in sorted(prob_bits_choices):
        if P != top and int((counts > 0).sum()) <= 1 << P:
            t, mdl = _exact(counts, raw, model.s, model.m, P)
            if t < total:
                total, model = t, mdl
    return model, total


def estimate_size(u: np.ndarray = None, lane_symbols: int = 1024, hist: np.ndarray = None) -> int:
    """Payload bytes predicted without building the table (entropy of the best split + overheads);
    typically within 0.2 % of ``len(encode(...))``. For rate control."""
    n = int(u.size) if hist is None else int(hist.sum())
    hist = _hist_of(u, hist)
    return math.ceil(estimate_bits(_candidates(hist)[0][0], n, lane_symbols) / 8)


def estimate_bits(model_bits: float, n_elems: int, lane_symbols: int) -> float:
    """Payload bits predicted from the model's cost plus lane flushes and the group table.

    A lane writes its information plus ~24 bits (the 2^16 it starts from, and on average 8 unused bits of
    its 32-bit final state), but never less than the 32 bits of that state."""
    G = n_groups(n_elems, lane_symbols)
    if G == 0:
        return model_bits
    bps = model_bits / n_elems
    full = LANES * (G - 1)
    ng = n_elems - (G - 1) * LANES * lane_symbols
    last = -(-(ng - np.arange(min(LANES, ng))) // LANES)  # symbols of each lane of the last group
    flush = full * max(32.0, bps * lane_symbols + STATE_BITS_PER_LANE) - full * bps * lane_symbols
    flush += float(np.maximum(32.0, bps * last + STATE_BITS_PER_LANE).sum() - bps * last.sum())
    return model_bits + flush + 40 * G  # + uint32 word count and padding per group


# ---------------------------------------------------------------- table bytes (writer and parser)

def header_bytes(model: Model) -> bytes:
    bits = []  # LSB-first bit list is fine: a table is at most a few thousand code words
    f, K, kq = model.freqs, model.freqs.size, model.kq

    def eg(v, k):
        w = int(v) + (1 << k)
        n = w.bit_length() - 1
        bits.extend([0] * (n - k))
        bits.append(1)
        bits.extend((w >> i) & 1 for i in range(n))

    i = 0
    while i < K:
        if f[i] > 0:
            eg(f[i], kq)
            i += 1
        else:
            j = i
            while j < K and f[j] == 0:
                j += 1
            eg(0, kq)
            eg(j - i - 1, 0)
            i = j
    assert len(bits) == model.table_bits
    arr = np.zeros(-(-len(bits) // 8) * 8, np.uint8)
    arr[:len(bits)] = bits
    tb = np.packbits(arr, bitorder="little").tobytes()
    head = bytes([0, model.prob_bits, model.s, model.m]) + int(K).to_bytes(2, "little") + bytes([kq, 0])
    head += len(tb).to_bytes(4, "little") + tb
    return head + bytes(-len(head) % 4)


@numba.njit(nogil=True, cache=True)
def _parse_table(tb, K, kq, M, freqs):
    """Fill ``freqs`` from the table bit string; returns (bits read, error code)."""
    nbits = tb.size * 8
    pos = 0
    i = 0
    while i < K:
        for which in range(2):
            k = kq if which == 0 else 0
            z = 0
            while True:
                if pos >= nbits:
                    return pos, 1
                bit = (tb[pos >> 3] >> (pos & 7)) & 1
                pos += 1
                if bit:
                    break
                z += 1
                if z > MAX_TABLE_ZEROS:
                    return pos, 2
            n = z + k
            if pos + n > nbits:
                return pos, 1
            r = 0
            for b in range(n):
                r |= np.int64((tb[(pos + b) >> 3] >> ((pos + b) & 7)) & 1) << b
            pos += n
            v = (np.int64(1) << n) + r - (np.int64(1) << k)
            if which == 0:
                if v > 0:
                    if v > M:
                        return pos, 3
                    freqs[i] = v
                    i += 1
                    break
            else:
                if i + v + 1 > K:
                    return pos, 4
                i += v + 1
    return pos, 0


_TABLE_ERRORS = {1: "a code word reads past the table bit string",
                 2: f"a code word has more than {MAX_TABLE_ZEROS} leading zeros",
                 3: "a frequency is over M", 4: "a run of zero frequencies passes the table's end"}


_MODEL_HEADER = struct.Struct("<4BH2BI")  # model, P, s, m, K, kq, reserved, B (spec 4.4)


def parse_header(buf: np.ndarray) -> tuple:
    """(P, s, m, freqs, H) from payload bytes; FormatError on anything spec 4.4 rejects."""
    if buf.size < 12:
        raise FormatError(f"ans payload of {buf.size} bytes is shorter than its 12-byte model header")
    model, P, s, m, K, kq, reserved, B = _MODEL_HEADER.unpack_from(buf)
    if model != 0:
        raise FormatError(f"ans model {model} is unknown (only 0, a frequency table)")
    if not 1 <= P <= MAX_PROB_BITS or s > MAX_SPLIT or m > min(s, MAX_MSB) or kq > 15 or reserved:
        raise FormatError(f"ans model header out of range (P={P}, s={s}, m={m}, kq={kq}, reserved={reserved})")
    if not 1 <= K <= k_max(s, m):
        raise FormatError(f"ans table has {K} entries, allowed 1..{k_max(s, m)}")
    if 12 + B > buf.size:
        raise FormatError(f"ans table bit string of {B} bytes runs past the payload ({buf.size} bytes)")
    freqs = np.zeros(K, np.int64)
    pos, err = _parse_table(buf[12:12 + B], K, kq, 1 << P, freqs)
    if err:
        raise FormatError(f"ans table: {_TABLE_ERRORS[err]}")
    if B != (pos + 7) // 8:
        raise FormatError(f"ans table bit string is {B} bytes, its code words use {(pos + 7) // 8}")
    if int(freqs.sum()) != 1 << P:
        raise FormatError(f"ans table frequencies sum to {int(freqs.sum())}, not M = {1 << P}")
    return P, s, m, freqs, _align4(12 + B)


@numba.njit(inline="always")
def _nb_base(tok, s, m):
    """(raw bit count, smallest symbol) of token ``tok`` under split (s, m) (spec 4.4)."""
    if tok < (np.int64(1) << s):
        return np.int64(0), tok
    i = tok - (np.int64(1) << s)
    nb = s + (i >> m) - m
    return nb, ((np.int64(1) << m) + (i & ((np.int64(1) << m) - 1))) << nb


@numba.njit(nogil=True, cache=True)
def _fill_tables(P, s, m, freqs, tos, tinfo):
    """The decoder's tables straight from the frequency table (what ``decode_tables(slot_table(...))``
    gives, without the 2^P-entry packed table in between): ``tos[slot]`` the live token of each slot,
    ``tinfo[live token]`` = f | c << 16 | nb << 32 | base << 37. Returns (live tokens, any nb > 16, largest
    symbol any live token can give). ``freqs`` sums to 2^P (``parse_header`` checked it)."""
    c = np.int64(0)
    live = 0
    hi = False
    u_max = np.int64(0)
    for tok in range(freqs.size):
        f = freqs[tok]
        if f <= 0:
            continue
        nb, base = _nb_base(np.int64(tok), s, m)
        tinfo[live] = np.uint64(f | (c << 16) | (nb << 32) | (base << 37))
        for j in range(c, c + f):
            tos[j] = live
        hi |= nb > 16
        u_max = max(u_max, base + (np.int64(1) << nb) - 1)
        c += f
        live += 1
    return live, hi, u_max


def tables(P: int, s: int, m: int, freqs: np.ndarray) -> tuple:
    """(tos, tinfo, has_hi, d_max) for the decoder (see ``decode_tables``), from the parsed header: one
    compiled call, a few microseconds (a small tensor's load is mostly such fixed costs)."""
    live = int(np.count_nonzero(freqs))
    tos = np.empty(1 << P, np.uint8 if live <= 256 else np.uint16)
    tinfo = np.empty(live, np.uint64)
    _, hi, u_max = _fill_tables(P, s, m, freqs, tos, tinfo)
    return tos, tinfo, bool(hi), (int(u_max) + 1) >> 1 if live else 0


@numba.njit(nogil=True, cache=True)
def _fill_gpu_table(P, s, m, freqs, out):
    """``out[slot]`` = (f | (slot - c) << 15) | (nb | base << 5) << 32: the GPU kernel's packing of
    ``slot_table`` (bslcodec/gpu/_ans.py), built in one pass."""
    c = np.int64(0)
    for tok in range(freqs.size):
        f = freqs[tok]
        if f <= 0:
            continue
        nb, base = _nb_base(np.int64(tok), s, m)
        hi = (nb | (base << 5)) << 32
        for j in range(f):
            out[c + j] = f | (j << 15) | hi
        c += f


def gpu_table(P: int, s: int, m: int, freqs: np.ndarray) -> np.ndarray:
    """The default GPU kernel's slot table (int64, 2^P entries), see ``_fill_gpu_table``."""
    out = np.empty(1 << P, np.int64)
    _fill_gpu_table(P, s, m, np.asarray(freqs, np.int64), out)
    return out


def slot_table(P: int, s: int, m: int, freqs: np.ndarray) -> np.ndarray:
    """Per slot, packed: f (15 bits) | slot - c (14 bits) << 15 | raw bits (5) << 29 | symbol base << 34."""
    K = freqs.size
    tok = np.arange(K, dtype=np.int64)
    i = tok - (1 << s)
    nb = np.where(tok < (1 << s), 0, s + (i >> m) - m)
    base = np.where(tok < (1 << s), tok, ((1 << m) + (i & ((1 << m) - 1))) << np.maximum(nb, 0))
    cum = np.concatenate(([0], np.cumsum(freqs)))
    slot_tok = np.repeat(tok, freqs)
    slots = np.arange(1 << P, dtype=np.int64)
    return (freqs[slot_tok] | ((slots - cum[slot_tok]) << 15) | (nb[slot_tok] << 29)
            | (base[slot_tok] << 34)).astype(np.int64)


# ---------------------------------------------------------------- encoder

def _token_bits(tok: int, s: int, m: int) -> int:
    return 0 if tok < (1 << s) else s + ((tok - (1 << s)) >> m) - m


@numba.njit(nogil=True, cache=True)
def _encode_group(g, u, lane_symbols, P, s, m, tpk, rcp, lut, scratch, region_end, first_word, has_hi):
    """rANS-encode group ``g`` backwards into its region of ``scratch`` (ending at ``region_end[g]``);
    ``first_word[g]`` gets where its words start. Per token ``tpk`` = f | c << 16 and ``rcp`` = 1/f. A
    plain function (numba's parfor lowering optimises a body inlined into the parallel loop less well);
    unsigned indices and few live arrays keep the loops free of wraparound code and spills."""
    n = u.size
    gsize = LANES * lane_symbols
    start = g * gsize
    ng = min(n, start + gsize) - start
    A = min(LANES, ng)
    T = (ng + LANES - 1) // LANES
    x = np.full(LANES, L, np.int64)
    toks = np.empty(LANES, np.uint64)
    sh = np.empty(LANES, np.int64)  # phase 2: low raw bit count n1
    lo = np.empty(LANES, np.int64)  # phase 2: low raw bits
    nbs = np.empty(LANES, np.int64)
    raws = np.empty(LANES, np.int64)
    xs = np.empty(LANES, np.int64)
    q = np.uint64(region_end[g])
    one = np.uint64(1)
    sP = 32 - P
    w1 = np.empty(LANES, np.uint16)
    w2 = np.empty(LANES, np.uint16)
    em1 = np.empty(LANES, np.uint64)
    em2 = np.empty(LANES, np.uint64)
    for tt in range(T):
        t = T - 1 - tt
        lt = min(LANES, ng - LANES * t)
        base = np.uint64(start + LANES * t)
        if not has_hi and lt == LANES:
            # no raw bits above 16 anywhere in the table: every lane's whole step (token, phase 2, phase 1)
            # in one loop without a carried dependency; only the word writes below share q
            for j in range(LANES):
                uv = np.int64(u[base + np.uint64(j)])
                if uv < lut.size:  # token and raw bit count of the small symbols from a table
                    pk = np.int64(lut[uv])
                    tok = pk & 0xFFFF
                    nb = pk >> 16
                    r = uv & ((np.int64(1) << nb) - 1)
                else:
                    tok, nb, r = _token_nb(uv, s, m)
                xv = x[j]
                e2 = (xv >> (32 - nb)) != 0  # phase 2: x >= 2^(32 - n1)
                w2[j] = np.uint16(xv & 0xFFFF)
                em2[j] = e2
                xv = ((xv >> (16 * e2)) << nb) | r
                tk = np.uint64(tok)
                e = tpk[tk]
                f = np.int64(e & np.uint64(0xFFFF))
                e1 = xv >= (f << sP)  # phase 1
                w1[j] = np.uint16(xv & 0xFFFF)
                em1[j] = e1
                x[j] = _coded_state(xv >> (16 * e1), e, rcp[tk], P)
            for jj in range(LANES):  # words of phase 2, lanes backwards
                j = np.uint64(LANES - 1 - jj)
                scratch[q - one] = w2[j]  # branch-free: kept only when emitted
                q -= em2[j]
            for jj in range(LANES):  # words of phase 1
                j = np.uint64(LANES - 1 - jj)
                scratch[q - one] = w1[j]
                q -= em1[j]
            continue
        any_hi = False
        for j in range(lt):
            tok, nb, r = _token_nb(np.int64(u[base + np.uint64(j)]), s, m)
            n1 = min(nb, 16)
            toks[j] = np.uint64(tok)
            sh[j] = n1
            lo[j] = r & ((np.int64(1) << n1) - 1)
            nbs[j] = nb
            raws[j] = r
            any_hi |= nb > 16
        if any_hi:  # phase 3: raw bits above the low 16
            for jj in range(lt):
                j = lt - 1 - jj
                n2 = nbs[j] - 16
                if n2 > 0:
                    xv = x[j]
                    if xv >= (np.int64(1) << (32 - n2)):
                        q -= one
                        scratch[q] = np.uint16(xv & 0xFFFF)
                        xv >>= 16
                    x[j] = (xv << n2) | (raws[j] >> 16)
        for jj in range(lt):  # phase 2: low raw bits (a no-op for n1 = 0)
            j = np.uint64(lt - 1 - jj)
            xv = x[j]
            n1 = sh[j]
            emit = (xv >> (32 - n1)) != 0  # x >= 2^(32 - n1)
            scratch[q - one] = np.uint16(xv & 0xFFFF)  # branch-free: kept only when emitted
            q -= np.uint64(emit)
            xv = xv >> (16 * emit)
            x[j] = (xv << n1) | lo[j]
        for jj in range(lt):  # phase 1, the emission: sequential in q
            j = np.uint64(lt - 1 - jj)
            xv = x[j]
            f = np.int64(tpk[toks[j]] & np.uint64(0xFFFF))
            emit = xv >= (f << sP)
            scratch[q - one] = np.uint16(xv & 0xFFFF)
            q -= np.uint64(emit)
            xs[j] = xv >> (16 * emit)
        for j in range(lt):  # phase 1, the state update: independent lanes
            tok = toks[j]
            x[j] = _coded_state(xs[j], tpk[tok], rcp[tok], P)
    q -= np.uint64(2 * A)
    for j in range(A):
        scratch[q + np.uint64(2 * j)] = np.uint16(x[j] & 0xFFFF)
        scratch[q + np.uint64(2 * j + 1)] = np.uint16(x[j] >> 16)
    first_word[g] = q


@numba.njit(inline="always", cache=True)
def _coded_state(xv, e, rcp_f, P):
    """Phase 1's state update, M·floor(x / f) + (x mod f) + c, for a state already renormalised; ``e`` is
    the token's packed (f | c << 16), ``rcp_f`` = fl(1/f): the quotient is exact or one too small (see
    encode()), and the remainder check fixes that."""
    f = np.int64(e & np.uint64(0xFFFF))
    qt = np.int64(np.float64(xv) * rcp_f)
    rt = xv - qt * f
    adj = rt >= f
    qt += adj
    rt -= f * adj
    return (qt << P) + rt + np.int64(e >> np.uint64(16))


@numba.njit(parallel=True, nogil=True, cache=True)
def _encode_groups(u, lane_symbols, P, s, m, tpk, rcp, lut, scratch, region_end, first_word, has_hi):
    """rANS-encode every group (``_encode_group``) in parallel."""
    for g in prange(region_end.size):
        _encode_group(g, u, lane_symbols, P, s, m, tpk, rcp, lut, scratch, region_end, first_word, has_hi)


@numba.njit(parallel=True, nogil=True, cache=True)
def _gather(scratch, first_word, region_end, out_words, out_start):
    for g in prange(first_word.size):
        w = region_end[g] - first_word[g]
        o = out_start[g]
        out_words[o:o + w] = scratch[first_word[g]:region_end[g]]
        if w % 2:
            out_words[o + w] = 0


_LUT_SYMBOLS = 1 << 12  # 16 KiB: stays in L1


def _token_lut(s: int, m: int) -> np.ndarray:
    """token | raw bit count << 16 of the symbols below 2^12 (uint32), for the encoder."""
    v = np.arange(_LUT_SYMBOLS, dtype=np.int64)
    e = np.zeros_like(v)
    big = v >= (1 << s)
    e[big] = np.frexp(v[big].astype(np.float64))[1] - 1  # floor(log2), exact for integers < 2^53
    nb = np.where(big, e - m, 0)
    tok = np.where(big, (1 << s) + ((e - s) << m) + ((v >> nb) - (1 << m)), v)
    return (tok | (nb << 16)).astype(np.uint32)


def encode(u: np.ndarray, lane_symbols: int, model: Model) -> bytes:
    """The ``ans`` payload of symbols ``u`` (every symbol's token must have a frequency > 0)."""
    u = np.ascontiguousarray(u)
    head = header_bytes(model)
    freqs = model.freqs.astype(np.int64)
    cum = np.concatenate(([0], np.cumsum(freqs)))[:-1].astype(np.int64)
    G = n_groups(u.size, lane_symbols)
    # one word per coding step that may emit: the token, and raw-bit chunks when the table has them
    max_nb = _token_bits(model.freqs.size - 1, model.s, model.m)
    per_sym = 1 + (max_nb > 0) + (max_nb > 16)
    ng = np.full(G, LANES * lane_symbols, np.int64)
    if G:
        ng[-1] = u.size - (G - 1) * LANES * lane_symbols
    bounds = 2 * np.minimum(ng, LANES) + per_sym * ng
    region_end = np.cumsum(bounds)
    scratch = np.empty(int(region_end[-1]) if G else 0, np.uint16)
    first_word = np.zeros(G, np.int64)
    # floor(x / f) as floor(x * fl(1/f)): for x < 2^32, f <= 2^14 the product is within 2^-20 of x/f,
    # and x/f is either an integer or at least 1/f >= 2^-14 away from one, so the result is exact or,
    # when x/f is an integer, possibly one too small (the remainder check fixes that).
    rcp = 1.0 / np.maximum(freqs, 1).astype(np.float64)
    tpk = (freqs | (cum << 16)).astype(np.uint64)
    launch(_encode_groups, _SERIAL['_encode_groups'], u, lane_symbols, model.prob_bits, model.s, model.m, tpk, rcp,
           _token_lut(model.s, model.m), scratch, region_end, first_word, max_nb > 16, work=u.size)
    W = region_end - first_word
    Wp = W + (W % 2)
    out_start = np.zeros(G + 1, np.int64)
    np.cumsum(Wp, out=out_start[1:])
    total = len(head) + 4 * G + 2 * int(out_start[-1])
    buf = np.empty(total, np.uint8)
    buf[:len(head)] = np.frombuffer(head, np.uint8)
    buf[len(head):len(head) + 4 * G] = W.astype("<u4").view(np.uint8)
    words = buf[len(head) + 4 * G:].view("<u2")
    launch(_gather, _SERIAL['_gather'], scratch, first_word, region_end, words, out_start[:-1], work=u.size)
    return buf.tobytes()


# ---------------------------------------------------------------- decoder

def min_length(header: int, n_elems: int, lane_symbols: int) -> int:
    """Smallest payload that can describe ``n_elems`` elements: uint32 W per group, 4 bytes per lane state.
    So a reader allocates at most 32·S·itemsize / 132 bytes of output per payload byte (S=1024, F32: ~1000)."""
    G = n_groups(n_elems, lane_symbols)
    if G == 0:
        return header
    lanes = LANES * (G - 1) + min(LANES, n_elems - (G - 1) * LANES * lane_symbols)
    return header + 4 * G + 4 * lanes


def parse(payload, n_elems: int, lane_symbols: int):
    """(P, s, m, frequency table, word counts, word offsets per group, words); checks all sizes."""
    buf = np.frombuffer(payload, np.uint8)
    P, s, m, freqs, H = parse_header(buf)
    G = n_groups(n_elems, lane_symbols)
    need = min_length(H, n_elems, lane_symbols)
    if buf.size < need:  # checked before anything is sized from n_elems
        raise FormatError(f"ans payload of {buf.size} bytes cannot hold {n_elems} elements "
                          f"({need} bytes at least: a word count per group, a state per lane)")
    W = buf[H:H + 4 * G].view("<u4").astype(np.int64)
    start = np.zeros(G + 1, np.int64)
    np.cumsum(W + (W % 2), out=start[1:])
    expect = H + 4 * G + 2 * int(start[-1])
    if buf.size != expect:
        raise FormatError(f"ans payload is {buf.size} bytes, its group table says {expect}")
    words = buf[H + 4 * G:].view("<u2")
    return P, s, m, freqs, W, start, words


_U16, _U32 = np.uint64(16), np.uint64(32)


@numba.njit(inline="always")
def _read(xv, words, p, last):
    """Renormalise (spec 4.4 ``read``) with the word index clamped to the group: (state, new p)."""
    rd = xv < L
    wv = np.uint64(words[min(p, last)])
    return (((xv << _U16) | wv) if rd else xv), p + np.uint64(rd)


@numba.njit(inline="always")
def _emit(out, ebase, qs, lt, mode, step32, step64):
    """Levels ``qs[:lt]`` dequantized to ``out[ebase:ebase + lt]`` (spec 4.3); one simple loop per mode.
    Returns whether any |q| >= 2^24."""
    lim = np.int32(MAX_SYMBOL_MAGNITUDE)
    bad = False
    for j in range(lt):
        qv = qs[j]
        bad |= (qv >= lim) | (qv <= -lim)
    if mode == 0:
        for j in range(lt):
            out[ebase + np.uint64(j)] = np.float32(qs[j]) * step32
    elif mode == 1:
        for j in range(lt):
            store_dequant(out, ebase + np.uint64(j), qs[j], 1, step32, step64)
    elif mode == 2:
        for j in range(lt):
            out[ebase + np.uint64(j)] = np.float64(qs[j]) * step64
    else:
        for j in range(lt):
            out[ebase + np.uint64(j)] = qs[j]
    return bad


@numba.njit(inline="always")
def _renorm_lanes(xs, x, words, p):
    """Renormalise the 32 lane states ``xs`` into ``x`` in lane order (spec 4.4 ``read``), unclamped (the
    caller checked that the step's reads stay inside the group); returns the new word index."""
    for j in range(LANES):
        xv = xs[j]
        rd = xv < L
        wv = np.uint64(words[p])
        x[j] = ((xv << _U16) | wv) if rd else xv
        p += np.uint64(rd)
    return p


@numba.njit(inline="always")
def _low_bits(e, xv):
    """Phase 2 of a usual step (no raw bits above 16) for one lane: (signed index d of the symbol, state
    after its low raw bits are taken). ``e``: the token's ``tinfo`` entry."""
    n1 = (e >> _U32) & np.uint64(31)
    uu = np.int32((e >> np.uint64(37)) + (xv & ((np.uint64(1) << n1) - np.uint64(1))))
    return (uu >> np.int32(1)) ^ -(uu & np.int32(1)), xv >> n1


@numba.njit(inline="always")
def _dq_levels(qs, st, lt, c32):
    """Levels ``qs[:lt]`` (center + index) of one step turned into dependent-quantization levels (spec
    4.6), advancing each lane's state ``st[j]``."""
    for j in range(lt):
        k = qs[j] - c32
        s = st[j]
        qs[j] = c32 + _dq_level(k, s)
        st[j] = _dq_next(s, k)


@numba.njit(nogil=True, cache=True)
def _decode_group(gi, words, W, wstart, tos, tinfo, P, g_first, n_elems, lane_symbols, center, out, out_base,
                  mode, step32, step64, status, has_hi, check, dq):
    """Decode group ``g_first + gi`` (spec 4.4); a plain function (not inlined into the parallel loop, where
    numba's parfor lowering optimises it less well). ``tos[slot]``: the token (index into ``tinfo``) of a
    slot; ``tinfo[token]`` = f | c << 16 | nb << 32 | base << 37. States are uint64 below 2^32; indices
    are unsigned (no negative-index wraparound in the generated code); levels fit int32 (|q| < 2^25)."""
    gsize = LANES * lane_symbols
    mask = (np.uint64(1) << np.uint64(P)) - np.uint64(1)
    Pu = np.uint64(P)
    g = g_first + gi
    start = g * gsize
    ng = min(n_elems, start + gsize) - start
    A = min(LANES, ng)
    T = (ng + LANES - 1) // LANES
    if W[g] < 2 * A:
        status[gi] = _SHORT
        return
    w0 = np.uint64(wstart[g])
    wend = w0 + np.uint64(W[g])
    x = np.empty(LANES, np.uint64)
    xs = np.empty(LANES, np.uint64)
    ent = np.empty(LANES, np.uint64)
    low = np.empty(LANES, np.uint64)
    qs = np.empty(LANES, np.int32)
    st = np.zeros(LANES, np.int32)  # dependent-quantization states (``dq``), one a lane
    c32 = np.int32(center)
    bad = False
    for j in range(A):
        x[j] = np.uint64(words[w0 + np.uint64(2 * j)]) | (np.uint64(words[w0 + np.uint64(2 * j + 1)]) << _U16)
        bad |= x[j] < L
    if bad:
        status[gi] = _BAD_STATE
        return
    p = w0 + np.uint64(2 * A)
    last = wend - np.uint64(1)
    out_of_range = False
    for t in range(T):
        lt = min(LANES, ng - LANES * t)
        ebase = np.uint64(start + LANES * t - out_base)
        if lt == LANES and not has_hi and p + np.uint64(2 * LANES) <= wend:
            # the usual step: 32 lanes, no raw bits above 16, and every read (at most 2 a lane) inside the
            # group, so no clamping. Loops without a carried dependency (table lookups, levels, output)
            # and the two short sequential renormalisation loops that share p.
            for j in range(LANES):  # phase 1: token
                xv = x[j]
                slot = xv & mask
                e = tinfo[tos[slot]]
                xs[j] = (e & np.uint64(0xFFFF)) * (xv >> Pu) + slot - ((e >> _U16) & np.uint64(0xFFFF))
                ent[j] = e
            p = _renorm_lanes(xs, x, words, p)
            if mode == 0 and not check and not dq:  # F32 (and F16), no level of the table can be out of range
                for j in range(LANES):  # phase 2: low raw bits, and the store
                    d, xs[j] = _low_bits(ent[j], x[j])
                    out[ebase + np.uint64(j)] = np.float32(c32 + d) * step32
            else:
                for j in range(LANES):  # phase 2: low raw bits
                    d, xs[j] = _low_bits(ent[j], x[j])
                    qs[j] = c32 + d
                if dq:
                    _dq_levels(qs, st, LANES, c32)
                out_of_range |= _emit(out, ebase, qs, LANES, mode, step32, step64)
            p = _renorm_lanes(xs, x, words, p)
            continue
        for j in range(lt):  # phase 1: token
            xv = x[j]
            slot = xv & mask
            e = tinfo[tos[slot]]
            xv = (e & np.uint64(0xFFFF)) * (xv >> Pu) + slot - ((e >> _U16) & np.uint64(0xFFFF))
            x[j], p = _read(xv, words, p, last)
            ent[j] = e
        for j in range(lt):  # phase 2: low raw bits
            nb = (ent[j] >> _U32) & np.uint64(31)
            n1 = min(nb, np.uint64(16))
            xv = x[j]
            low[j] = xv & ((np.uint64(1) << n1) - np.uint64(1))
            x[j], p = _read(xv >> n1, words, p, last)
        if has_hi:
            for j in range(lt):  # phase 3: raw bits above 16
                nb = (ent[j] >> _U32) & np.uint64(31)
                n2 = nb - np.uint64(16) if nb > np.uint64(16) else np.uint64(0)
                xv = x[j]
                low[j] |= (xv & ((np.uint64(1) << n2) - np.uint64(1))) << _U16
                x[j], p = _read(xv >> n2, words, p, last)
        for j in range(lt):
            uu = np.int32((ent[j] >> np.uint64(37)) + low[j])
            qs[j] = c32 + ((uu >> np.int32(1)) ^ -(uu & np.int32(1)))
        if dq:
            _dq_levels(qs, st, lt, c32)
        out_of_range |= _emit(out, ebase, qs, lt, mode, step32, step64)
    if p > wend:
        status[gi] = _OVERRUN
        return
    ok = p == wend
    for j in range(A):
        ok &= x[j] == L
    if not ok:
        status[gi] = _END
    elif out_of_range:
        status[gi] = _RANGE


@numba.njit(parallel=True, nogil=True, cache=True)
def _decode_groups(words, W, wstart, tos, tinfo, P, g_first, n_elems, lane_symbols, center, out, out_base,
                   mode, step32, step64, status, has_hi, check, dq):
    for gi in prange(status.size):
        _decode_group(gi, words, W, wstart, tos, tinfo, P, g_first, n_elems, lane_symbols, center, out,
                      out_base, mode, step32, step64, status, has_hi, check, dq)


def decode_tables(table: np.ndarray) -> tuple:
    """(tos, tinfo, has_hi, d_max) for the decoder from ``slot_table``'s packed per-slot entries (the slow
    reference of ``tables``, which builds them from the frequencies directly): the
    (live) token of each slot, per token f | c << 16 | nb << 32 | base << 37, whether a token has more
    than 16 raw bits, and the largest |d| any token can give."""
    t = np.asarray(table, np.int64)
    first = ((t >> 15) & 0x3FFF) == 0  # a token's first slot
    starts = np.flatnonzero(first)
    tok = np.cumsum(first) - 1
    e = t[starts]
    f, nb, base = e & 0x7FFF, (e >> 29) & 31, e >> 34
    tinfo = (f | (starts << 16) | (nb << 32) | (base << 37)).astype(np.uint64)
    tos = tok.astype(np.uint8 if starts.size <= 256 else np.uint16)
    u_max = int((base + (np.int64(1) << nb) - 1).max()) if starts.size else 0
    return tos, tinfo, bool(starts.size and int(nb.max()) > 16), (u_max + 1) >> 1


MODES = {"F32": 0, "BF16": 1, "F64": 2, "Q": 3}


def decode_into(payload, n_elems: int, lane_symbols: int, center: int, step: float, out: np.ndarray,
                mode: str, g_first: int = 0, g_last: int | None = None, parsed=None, dq: bool = False) -> None:
    """Decode groups [g_first, g_last) into ``out`` (flat; element e goes to out[e - g_first*32*S]).

    ``dq``: the symbols are dependent-quantization indices (codec ``ans-dq``, spec 4.6).
    ``mode``: "F32" (out float32), "BF16" (out uint16 bf16 bits), "F64" (out float64), "Q" (int64 q).
    ``parsed``: ``parse()``'s result for this payload, when the caller already has it.
    """
    P, s, m, freqs, W, wstart, words = parsed if parsed is not None else parse(payload, n_elems, lane_symbols)
    if g_last is None:
        g_last = W.size
    tos, tinfo, has_hi, d_max = tables(P, s, m, freqs)
    # else no level of the table is out of range (dq levels reach 2 |index|)
    check = abs(int(center)) + (2 * d_max if dq else d_max) >= MAX_SYMBOL_MAGNITUDE
    status = np.zeros(max(0, g_last - g_first), np.uint8)
    launch(_decode_groups, _SERIAL['_decode_groups'], words, W, wstart, tos, tinfo, P, g_first, n_elems,
           lane_symbols, np.int64(center), out, g_first * LANES * lane_symbols, MODES[mode], _step32(step),
           np.float64(step), status, has_hi, check, dq,
           work=min(n_elems, g_last * LANES * lane_symbols) - g_first * LANES * lane_symbols)
    if status.size and status.any():
        bad = int(np.flatnonzero(status)[0])
        raise FormatError(f"ans payload group {g_first + bad}: {_STATUS_TEXT[int(status[bad])]}")


def payload_bits_exact_check(model: Model, u: np.ndarray) -> float:  # pragma: no cover - diagnostics
    """Ideal coded bits of ``u`` under ``model`` (tokens + raw bits), no rANS overheads."""
    hist = fine_hist(u)
    tok, nb = _MAPS[(model.s, model.m)]
    counts = np.bincount(tok, weights=hist, minlength=model.freqs.size)[:model.freqs.size]
    live = counts > 0
    return float((counts[live] * (model.prob_bits - np.log2(model.freqs[live]))).sum() + (hist * nb).sum())


__all__ = ["Model", "build_model", "encode", "decode_into", "parse", "estimate_bits", "estimate_size",
           "n_groups", "quantize_freqs", "fine_hist"]


# serial twins of the parallel kernels, for parallel.launch (forked children under OpenMP)
_SERIAL = {k.py_func.__name__: serial_twin(k)
           for k in (fine_histogram, _encode_groups, _gather, _decode_groups)}
