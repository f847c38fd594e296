"""The allocation's grid points of many small tensors in one compiled call (issue 19).

``allocation._eval_batch`` rounds each small tensor's sample at ~19 steps. Its first form (kept there as
``_eval_batch_ref``) summed the sample again at every point (a serial chain of ~1 ns an element, of ~2.5),
then took numpy's ``log2`` of every live token count of every point (~780 a point of a 64x64 tensor's
default save, the search visiting fine steps: 4.5 M values for 300 tensors). Here:

* a sample's sum is taken once (the same serial loop, so the same float) and given to its points; the
  rounding loop is the reference's (four points interleaved, each with its own chains, measured no faster);
* the entropy term of a count c out of m, ``c * log2(c / m)``, reads ``log2(c / m)`` from a table that
  numpy's ``log2`` filled (``log_table``): the same function of the same float, so the same number (numpy's
  SIMD ``log2`` is not libm's, which is why the table and not the kernel computes it), and each point's terms
  are summed in numpy's pairwise order (``pairwise``: ``rans_model._pairwise`` without its recursion).

So (sse, raw bits, largest level, entropy, live tokens) are the reference's floats; tests/test_allocation.py
compares the two on odd and hostile samples.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np

from ..codecs import rans
from ..codecs import rans_model as _rm


@numba.njit
def _pw0(a, lo, n):
    """numpy's pairwise summation of a[lo:lo + n] for n <= 128 (``pairwise_sum`` in its loops: 8
    accumulators)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    # the 8 accumulators as scalars (an array of them was allocated at every call: ~60 ns, as much as
    # summing ~200 terms)
    r0, r1, r2, r3, r4, r5, r6, r7 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3], a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        b = lo + i
        r0 += a[b]
        r1 += a[b + 1]
        r2 += a[b + 2]
        r3 += a[b + 3]
        r4 += a[b + 4]
        r5 += a[b + 5]
        r6 += a[b + 6]
        r7 += a[b + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(inline="always")
def _half(n):
    """Where numpy's pairwise sum splits n > 128 elements: n / 2 rounded down to a multiple of 8."""
    n2 = n // 2
    return n2 - n2 % 8


# ``rans_model._pairwise`` without recursion (a cached kernel calling a recursive one segfaults when loaded
# from numba's cache): level L sums up to ~128 * 2^L - 17 elements exactly as the recursion does
@numba.njit
def _pw1(a, lo, n):
    return _pw0(a, lo, n) if n <= 128 else _pw0(a, lo, _half(n)) + _pw0(a, lo + _half(n), n - _half(n))


@numba.njit
def _pw2(a, lo, n):
    return _pw0(a, lo, n) if n <= 128 else _pw1(a, lo, _half(n)) + _pw1(a, lo + _half(n), n - _half(n))


@numba.njit
def _pw3(a, lo, n):
    return _pw0(a, lo, n) if n <= 128 else _pw2(a, lo, _half(n)) + _pw2(a, lo + _half(n), n - _half(n))


@numba.njit
def _pw4(a, lo, n):
    return _pw0(a, lo, n) if n <= 128 else _pw3(a, lo, _half(n)) + _pw3(a, lo + _half(n), n - _half(n))


@numba.njit
def _pw5(a, lo, n):
    return _pw0(a, lo, n) if n <= 128 else _pw4(a, lo, _half(n)) + _pw4(a, lo + _half(n), n - _half(n))


@numba.njit
def pairwise(a, lo, n):
    """numpy's pairwise sum of a[lo:lo + n], n <= ``PAIRWISE_MAX`` (a live token count: <= FINE_K)."""
    return _pw0(a, lo, n) if n <= 128 else _pw5(a, lo, _half(n)) + _pw5(a, lo + _half(n), n - _half(n))


@numba.njit
def _pw6(a, lo, n):
    return _pw0(a, lo, n) if n <= 128 else _pw5(a, lo, _half(n)) + _pw5(a, lo + _half(n), n - _half(n))


@numba.njit
def _pw7(a, lo, n):
    return _pw0(a, lo, n) if n <= 128 else _pw6(a, lo, _half(n)) + _pw6(a, lo + _half(n), n - _half(n))


@numba.njit
def _pw8(a, lo, n):
    return _pw0(a, lo, n) if n <= 128 else _pw7(a, lo, _half(n)) + _pw7(a, lo + _half(n), n - _half(n))


@numba.njit
def pairwise_wide(a, lo, n):
    """``pairwise`` up to ``PAIRWISE_WIDE_MAX`` terms (three levels more)."""
    return _pw0(a, lo, n) if n <= 128 else _pw8(a, lo, _half(n)) + _pw8(a, lo + _half(n), n - _half(n))


PAIRWISE_WIDE_MAX = 56849  # ... 7121 -> 14225 -> 28433 -> 56849
PAIRWISE_MAX = 7121  # 128 -> 239 -> 461 -> 905 -> 1793 -> 3569 -> 7121: n - _half(n) <= n / 2 + 8.5
assert rans.FINE_K <= PAIRWISE_MAX  # a point's live tokens


@numba.njit(cache=True)
def steps(std, ks, base, grid):
    """``Curve.step`` of each point: ``std[j] * base ** (ks[j] / grid)``, ``base`` = 2.0 given at run time
    (a constant base could let LLVM turn ``pow`` into ``exp2``): libm's ``pow``, as Python's ``**`` calls it."""
    out = np.empty(ks.size)
    for j in range(ks.size):
        out[j] = std[j] * base ** (ks[j] / grid)
    return out


@numba.njit(cache=True)
def sums(xs, lo, hi):
    """The sum of each sample ``xs[lo[i]:hi[i]]`` in ``_round_into``'s serial order."""
    out = np.empty(lo.size)
    for i in range(lo.size):
        s0 = 0.0
        for t in range(lo[i], hi[i]):
            s0 += xs[t]
        out[i] = s0
    return out


def log_table(ms) -> tuple:
    """(table, offset of each m) for the samples' sizes ``ms``: ``table[off + c] = log2(c / m)`` for
    c = 1 .. m, by numpy's ``log2`` of float64 quotients as the reference computes them."""
    ms = sorted({int(m) for m in ms})
    off, pos = {}, 0
    for m in ms:
        off[m], pos = pos, pos + m + 1
    tab = np.zeros(pos)
    for m in ms:
        c = np.arange(1, m + 1, dtype=np.float64)
        tab[off[m] + 1:off[m] + m + 1] = np.log2(c / np.float64(m))
    return tab, off


@numba.njit(cache=True)
def round_many(xs, lo, hi, steps, s0, tab, toff, sse, raw, qmax, ent, n_live):
    """For every j: sample ``xs[lo[j]:hi[j]]`` (its sum ``s0[j]``) rounded at ``steps[j]`` as
    ``allocation._round_into`` does (its loop's operations, the sum aside); ``ent[j]`` the entropy of its
    live fine tokens as ``_eval_batch_ref`` computes it (``log2(c / m)`` from ``tab[toff[j] + c]``),
    ``n_live[j]`` their number."""
    hist = np.zeros(rans.FINE_K, np.int64)
    terms = np.empty(rans.FINE_K)
    for j in range(steps.size):
        x = xs[lo[j]:hi[j]]
        step = steps[j]
        e, w, mq = 0.0, 0, 0.0
        inv = 1.0 / step
        n = x.size
        c = np.rint(s0[j] / n * inv) if n else 0.0
        for i in range(n):  # written out: the same loop through an inlined helper ran ~2x slower
            q = np.rint(x[i] * inv)
            d = x[i] - q * step
            e += d * d
            z = q - c
            a = max(abs(q), abs(z))
            if a > mq:  # noqa: PLR1730  (_round_into's test, whatever max() does with a NaN)
                mq = a
            if abs(z) < 4194304.0:  # 2^22 (see _round_into)
                zi = np.int64(z)
                u = (zi << 1) if zi >= 0 else ((-zi << 1) - 1)
                tok, nb, _r = rans._token(u, rans.FINE_S, rans.FINE_M)
                hist[tok] += 1
                w += nb
        sse[j], raw[j], qmax[j] = e, w, mq
        # the live counts' entropy terms in token order (|z| <= qmax: no token above 2 qmax's)
        top = rans.FINE_K
        if mq < 1048576.0:
            top = rans._token(np.int64(2.0 * mq), rans.FINE_S, rans.FINE_M)[0] + 1
        k = 0
        for t in range(top):  # branch-free: a zero count's term (0 x tab[off]) is written over by the next one
            h = hist[t]
            terms[k] = np.float64(h) * tab[toff[j] + h]
            k += h > 0
            hist[t] = 0
        n_live[j] = k
        ent[j] = -(0.0 + pairwise(terms, 0, k))


@numba.njit(cache=True)
def extremes(xs, lo, hi):
    """(smallest, largest value, whether every value is finite) of each sample ``xs[lo[i]:hi[i]]``."""
    n = lo.size
    xmin, xmax, ok = np.zeros(n), np.zeros(n), np.ones(n, np.bool_)
    for i in range(n):
        a, b, fin = np.inf, -np.inf, True
        for t in range(lo[i], hi[i]):
            v = xs[t]
            fin = fin and np.isfinite(v)
            a = min(a, v)
            b = max(b, v)
        xmin[i], xmax[i], ok[i] = a, b, fin and hi[i] > lo[i]
    return xmin, xmax, ok


_G = 8  # points rounded side by side: their squared-error sums are eight independent serial chains
_BLOCK = 512  # elements of each point's squared errors (and tokens) held at once: 48 KiB for eight points
_Z_LIM = 4194304.0  # 2^22: _round_into counts the tokens of the symbols below (larger: stored exactly)


@numba.njit(nogil=True, cache=True)  # (nogil: the encoder runs the GG fits beside the allocation)
def round_many_fast(xs, lo, hi, xmin, xmax, ok, steps, s0, tab, toff, sse, raw, qmax, ent, n_live, done):
    """``round_many`` of the points it can take apart (``done[j]`` set; the caller runs ``round_many`` on
    the rest): a point whose sample is finite and whose every symbol is below 2^22, known from the sample's
    extremes (rounding is monotone: q = rint(x / step) runs from rint(xmin / step) to rint(xmax / step), and
    z = q - c with it), so that every element's token is counted and ``qmax`` is the largest of |q| and |z|
    at the two ends, as the reference's running maximum finds it. Then the reference's loop in three: the
    squared errors, symbols' tokens and raw bits (no branch: it vectorizes; where every |z| < 2^11 the
    symbol is its own token, no raw bits); the squared errors summed in the reference's serial order, eight
    points' chains side by side (one chain is ~4 cycles an element); the tokens counted. The entropy as
    ``round_many`` takes it, each bin's term computed apart from keeping the live ones (the first
    vectorizes). ``xs`` may be float32 where every sample value is one (half the
    bytes to read: a batch reads every small tensor's sample): the same float64 values. Same floats."""
    P = steps.size
    hist = np.zeros((_G, rans.FINE_K), np.int32)
    terms = np.empty(rans.FINE_K)
    every = np.empty(rans.FINE_K)
    d2 = np.zeros((_G, _BLOCK))
    tk = np.zeros((_G, _BLOCK), np.int32)
    grp = np.empty(_G, np.int64)
    inv_ = np.empty(_G)
    c_ = np.empty(_G)
    own = np.empty(_G, np.bool_)
    esum = np.zeros(_G)
    j = 0
    while j < P:
        # a group: up to _G consecutive points this kernel takes, samples of one length
        g = 0
        n = -1
        while j < P and g < _G:
            m = hi[j] - lo[j]
            if n >= 0 and m != n:
                break
            done[j] = False
            inv = 1.0 / steps[j]
            c = np.rint(s0[j] / m * inv) if m else 0.0
            qlo, qhi = np.rint(xmin[j] * inv), np.rint(xmax[j] * inv)
            zlo, zhi = qlo - c, qhi - c
            if ok[j] and abs(zlo) < _Z_LIM and abs(zhi) < _Z_LIM and abs(qlo) < np.inf and abs(qhi) < np.inf:
                done[j] = True
                qmax[j] = max(max(abs(qlo), abs(qhi)), max(abs(zlo), abs(zhi)))
                grp[g], inv_[g], c_[g] = j, inv, c
                own[g] = max(abs(zlo), abs(zhi)) < 2048.0  # every symbol below 2^12 = 2^FINE_S: its own token
                n = m
                g += 1
            j += 1
        if g == 0:
            continue
        e0, e1, e2, e3, e4, e5, e6, e7 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        for p in range(g):
            raw[grp[p]] = 0
        for b0 in range(0, n, _BLOCK):
            bn = min(_BLOCK, n - b0)
            for p in range(g):
                pt = grp[p]
                x = xs[lo[pt] + b0:lo[pt] + b0 + bn]
                step, inv, c = steps[pt], inv_[p], c_[p]
                dp = d2[p]
                tp = tk[p]
                if own[p]:
                    for i in range(bn):
                        v = np.float64(x[i])
                        q = np.rint(v * inv)
                        d = v - q * step
                        dp[i] = d * d
                        zi = np.int64(q - c)
                        tp[i] = np.int32((zi << 1) ^ (zi >> 63))
                else:
                    w = np.int64(0)
                    for i in range(bn):
                        v = np.float64(x[i])
                        q = np.rint(v * inv)
                        d = v - q * step
                        dp[i] = d * d
                        zi = np.int64(q - c)
                        u = (zi << 1) ^ (zi >> 63)
                        tok, nb, _r = _rm._token_nb(u, rans.FINE_S, rans.FINE_M)
                        tp[i] = np.int32(tok)
                        w += nb
                    raw[pt] += w
                hp = hist[p]
                for i in range(bn):
                    hp[tp[i]] += 1
            for i in range(bn):  # the serial sums, eight chains side by side (an absent point's: unused)
                e0 += d2[0, i]
                e1 += d2[1, i]
                e2 += d2[2, i]
                e3 += d2[3, i]
                e4 += d2[4, i]
                e5 += d2[5, i]
                e6 += d2[6, i]
                e7 += d2[7, i]
        esum[0], esum[1], esum[2], esum[3], esum[4], esum[5], esum[6], esum[7] = e0, e1, e2, e3, e4, e5, e6, e7
        for p in range(g):
            pt = grp[p]
            sse[pt] = esum[p]
            hp = hist[p]
            mq = qmax[pt]
            top = rans.FINE_K
            if mq < 1048576.0:
                top = rans._token(np.int64(2.0 * mq), rans.FINE_S, rans.FINE_M)[0] + 1
            # round_many's terms (no token at or above top has a count), written for every bin (this loop
            # vectorizes), then the live ones kept in order
            tb = tab[toff[pt]:]
            for t in range(top):
                every[t] = np.float64(hp[t]) * tb[hp[t]]
            k = 0
            for t in range(top):
                terms[k] = every[t]
                k += hp[t] > 0
            hp[:top] = 0
            n_live[pt] = k
            ent[pt] = -(0.0 + pairwise(terms, 0, k))
