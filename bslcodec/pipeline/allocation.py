"""Equal-slope (Lagrangian) step allocation across tensors, predicted from one analysis pass.

Each quantized tensor i gets its own step s_i. With R_i(s) its payload bits and D_i(s) its mean squared
error per element, the allocation minimises  sum_i R_i(s_i) + lambda * sum_i w_i n_i D_i(s_i): every tensor
works at the same slope -dR/dD = lambda w_i n_i. ``w_i`` is the distortion weight per weight: by default
1 / n_i (scaled by the median size; see ``weights``): the sum of every tensor's *mean* squared error counts,
each tensor as one stage of the model, not each weight (at high rate: steps in proportion to sqrt(n_i)), or
``s_i / n_i`` from a measured sensitivity. One constraint on top: no
tensor's relative error above ``REL_CAP`` times the model's (a tensor whose weights are much smaller than
the rest would otherwise be quantized to zero at low rates).

The curves are predicted, not encoded: a deterministic sample of each tensor (all of it up to
``SAMPLE`` elements) is rounded at steps on a grid of ``GRID`` points per octave, lazily, only where the
search looks. Bits: the entropy of the ans tokens (spec 4.4's finest split: symbols below 4096 coded
directly, larger ones as exponent/mantissa buckets plus raw bits), plus a table and the lane flushes;
dq is predicted as plain rounding minus ``dq_saving`` (measured, see ``DQ_SAVING``) at the plain step whose
MSE it keeps (it stores the step times ``dq.STEP_FACTOR``). D: the sample's mean squared rounding error.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import math
import os

import numba
import numpy as np

from ..codecs import rans, rans_model
from ..codecs.rans_model import _segment_sums
from ..container.dtypes import numpy_dtype
from ..container.limits import LANES, MAX_SYMBOL_MAGNITUDE
from . import gridpoints as _gp
from . import lambda_search as _ls
from . import sample_stats as _ss

GRID = 4  # grid points per octave of step; between them bits and log(MSE) are interpolated linearly
K_MIN, K_MAX = -20 * GRID, 5 * GRID  # steps from std / 2^20 to 32 std
_NK = K_MAX - K_MIN + 1  # grid points K_MIN .. K_MAX
BATCH_KERNEL = True  # the small curves' grid points by gridpoints.round_many; False: _eval_batch_ref
FAST_ROUNDING = True  # gridpoints.round_many_fast first (round_many for the points it leaves); False: round_many
ARRAY_POINTS = True  # the lambda search's missing small points as arrays (_eval_points); False: a (curve, k) list
COMPILED = True  # the lambda search's passes over the curves compiled (lambda_search.py); False: in Python
_PRIMES = (1_000_003, 999_983, 1_000_033)  # sample strides: i * p mod n visits distinct elements where p ∤ n
SAMPLE = 1 << 16  # elements whose rounding predicts a tensor's curve (the whole tensor if smaller)
WARN_REL_ERROR = 0.05  # bits= warns (QualityWarning) when the predicted relative L2 error is above 5 %
COMPILED_SUMS = True  # Allocation._totals' sums by _sums (~10 us a tensor of Python less); False: its loop
FUSED = True  # a search step's passes in one compiled call (Allocation._look: lambda_search.look); False: _pass each
FAST_INIT = True  # Allocation's set-up from arrays (sample_stats, float32 buffer, no per-curve copies); False: _init_ref
REUSE = True  # FAST_INIT's float32 sample buffer taken from a finished Allocation (_SPARE); False: a new one
SPARE_BYTES = 64 << 20  # a larger buffer is not kept
_SPARE = []  # at most one buffer, given back by _SmallRows.__del__ (list pop/append: atomic under the GIL)
SPLIT = True  # round_many_fast's points split over an Allocation's ``threads`` (nogil calls side by side);
# False: one call. Each point's numbers are its own whatever the split (no sum runs across points)
SPLIT_MIN = 1 << 17  # sample elements a batch must round before it is split (a hand-over costs ~20-50 us)
GALLOP = True  # Allocation.solve brackets lambda outward from a high-rate guess (False: bisects its whole
# range, as before 2026-12-07: the same criterion, other positions within it)
REL_CAP = 4.0  # no tensor's relative L2 error above ~REL_CAP x the whole model's
# dq's saving against plain rounding at the same MSE, bits per weight, as a function of plain rounding's
# bits per weight at the same step (piecewise linear). Measured with ans payloads on generalized-Gaussian
# tensors of shape 1 and 2 and MiniLM's matrices (shape 0.6 saves up to 0.05 less at 1-5 b/w): below ~2.5 b/w
# dq's files are *larger* at the same step (its MSE is lower there); the correction pass absorbs the rest
DQ_SAVING = ((0.0, 0.0), (0.1, 0.03), (0.4, -0.04), (0.8, -0.15), (1.25, -0.16), (1.65, -0.11), (2.1, -0.05),
             (2.55, 0.01), (3.0, 0.05), (3.5, 0.09), (4.0, 0.12), (4.5, 0.145), (5.0, 0.16), (6.0, 0.18),
             (7.0, 0.19), (8.0, 0.197), (9.0, 0.2), (32.0, 0.2))


_DQ_XS, _DQ_YS = (np.array(v, np.float64) for v in zip(*DQ_SAVING))


def dq_saving(bpw: float) -> float:
    return float(np.interp(bpw, _DQ_XS, _DQ_YS))


@numba.njit(inline="always")
def _round_into(x, step, hist):
    """Round ``x`` (float64) at ``step`` as the encoder does (center = rint(mean / step) taken by the
    caller as x's own); fill ``hist`` with the fine ans tokens of the zigzag symbols; return
    (sum of squared errors, raw bits, largest |q|)."""
    sse = 0.0
    raw = 0
    qmax = 0.0
    inv = 1.0 / step
    n = x.size
    s0 = 0.0
    for i in range(n):
        s0 += x[i]
    c = np.rint(s0 / n * inv) if n else 0.0
    for i in range(n):
        q = np.rint(x[i] * inv)
        d = x[i] - q * step
        sse += d * d
        z = q - c
        a = max(abs(q), abs(z))
        if a > qmax:
            qmax = a
        if abs(z) < 4194304.0:  # 2^22: the fine tokens cover these (larger: the caller stores exactly)
            zi = np.int64(z)
            u = (zi << 1) if zi >= 0 else ((-zi << 1) - 1)
            tok, nb, r = rans._token(u, rans.FINE_S, rans.FINE_M)
            hist[tok] += 1
            raw += nb
    return sse, raw, qmax


@numba.njit(cache=True)
def _round_stats(x, step, hist):
    """``_round_into`` of one sample."""
    return _round_into(x, step, hist)


@numba.njit(cache=True)
def _round_stats_many(xs, lo, hi, steps, sse, raw, qmax, live, ends):
    """``_round_stats`` of samples ``xs[lo[j]:hi[j]]`` at ``steps[j]`` for every j (one call for the grid
    points of many small tensors): their statistics, and each one's live token counts (as float64, in
    token order: ``hist[hist > 0]``) one after the other in ``live``, ending at ``ends[j]``."""
    hist = np.zeros(rans.FINE_K, np.int64)
    k = 0
    for j in range(steps.size):
        sse[j], raw[j], qmax[j] = _round_into(xs[lo[j]:hi[j]], steps[j], hist)
        # |z| <= qmax, so no symbol above 2 qmax: the tokens up to its token hold every count
        top = hist.size
        if qmax[j] < 1048576.0:
            top = rans._token(np.int64(2.0 * qmax[j]), rans.FINE_S, rans.FINE_M)[0] + 1
        for t in range(top):
            if hist[t] > 0:
                live[k] = hist[t]
                k += 1
                hist[t] = 0
        ends[j] = k


# samples of at most this many elements are evaluated in batches (``_eval_batch``): there the fixed Python cost
# of a grid point (~40 us) was several times its compiled rounding pass
BATCH_SAMPLE = 1 << 14


class _Missing(Exception):
    """A grid point not yet evaluated, asked for while ``Allocation._each`` collects them for one batch."""

    def __init__(self, k):
        self.k = k


def sample(flat: np.ndarray) -> np.ndarray:
    """The float64 values whose rounding predicts a tensor's curve: all of 1-D ``flat`` up to ``SAMPLE``
    elements, else a deterministic scattered sample without repeats (a plain stride could follow one
    column); taken from the tensor's own values (widening all of it would cost more)."""
    n = flat.size
    if n > SAMPLE:
        p = next(p for p in _PRIMES if n % p)
        flat = flat[np.sort(np.arange(SAMPLE, dtype=np.int64) * p % n)]
    return np.ascontiguousarray(flat, dtype=np.float64)


def sample_size(t) -> int:
    """The size of ``sample(t.flat)`` (or of the sample a released tensor kept), without taking it."""
    s = getattr(t, "sample", None)
    return int(s.size) if s is not None else min(int(t.flat.size), SAMPLE)


class Curve:
    """Predicted (bits, MSE) of one tensor at steps std * 2^(k / GRID), k integer, computed on demand."""

    def __init__(self, t, weight: float = 1.0, rows: tuple | None = None, take_x: bool = True):
        self.t, self.n, self.w = t, int(t.n), float(weight)
        self.name = None  # its key in Allocation.curves
        self.dq = t.quantizer == "dq"
        self.std = float(t.std)
        self.ms = _mean_square(t)  # mean square: the tensor's share of ||W||^2
        self._x = t.sample if getattr(t, "sample", None) is not None else sample(t.flat) if take_x else None
        self.m = int(self._x.size) if self._x is not None else sample_size(t)
        self.raw_bits = 8.0 * self.n * numpy_dtype(t.dtype).itemsize  # stored exactly instead
        # the evaluated grid points K_MIN .. K_MAX: bits, MSE, whether evaluated (rows of an Allocation's
        # arrays once it holds this curve: ``rows``, its views of them); any other k in ``_other``
        if rows is None:
            rows = np.zeros(_NK), np.zeros(_NK), np.zeros(_NK, np.bool_)
        self._b, self._d, self._h = rows
        self._other = {}
        self._defer = False  # inside Allocation._each: a missing point raises _Missing (batched there)

    @property
    def x(self) -> np.ndarray:
        """Its sample as float64 (``take_x=False``: an Allocation's small curve, whose sample is a view of
        the Allocation's float64 buffer, made on first use: the fast rounding reads a float32 copy)."""
        if self._x is None:
            self._x = self._rows.f64()[self._lo:self._hi]
        return self._x

    @x.setter
    def x(self, v: np.ndarray) -> None:
        self._x = v

    def step(self, k: float) -> float:
        return self.std * 2.0 ** (k / GRID)

    def point(self, k: int) -> tuple:
        """(bits, MSE) at grid point k."""
        i = k - K_MIN
        if 0 <= i < _NK:
            if self._h[i]:
                return float(self._b[i]), float(self._d[i])
        elif k in self._other:
            return self._other[k]
        if self._defer:
            raise _Missing(k)
        got = self._eval(k)
        self._store(k, got)
        return got

    def _store(self, k: int, got: tuple) -> None:
        i = k - K_MIN
        if 0 <= i < _NK:
            self._b[i], self._d[i], self._h[i] = got[0], got[1], True
        else:
            self._other[k] = got

    def _eval(self, k: int) -> tuple:
        s = self.step(k)
        hist = np.zeros(rans.FINE_K, np.int64)
        sse, raw, qmax = _round_stats(self.x, s, hist)
        if not qmax < (MAX_SYMBOL_MAGNITUDE >> 2):  # too fine (or NaN): the encoder stores the tensor exactly
            return self.raw_bits, 0.0
        live = hist[hist > 0].astype(np.float64)
        ent = float(-(live * np.log2(live / self.m)).sum())
        return self._finish(sse, raw, qmax, ent, live.size)

    def _finish(self, sse: float, raw: int, qmax: float, ent: float, n_live: int) -> tuple:
        """(bits, MSE) of a grid point from its rounding statistics and the entropy of its live tokens."""
        if not qmax < (MAX_SYMBOL_MAGNITUDE >> 2):  # too fine (or NaN): the encoder stores the tensor exactly
            return self.raw_bits, 0.0
        m = self.m
        if m < self.n:  # Miller-Madow: the plug-in entropy of a sample is low by ~(K-1)/(2 m ln 2)
            ent += (n_live - 1) / (2 * math.log(2))
        per = (ent + raw) / m
        # + the frequency table: ~9 bits a used token, but the coder then picks a coarser split than
        # these fine tokens, with at most ~600 used
        model = per * self.n + 9 * min(n_live, 600) + 96
        if self.dq:
            model -= dq_saving(per) * self.n
        bits = rans.estimate_bits(model, self.n, 1024)  # + lane flushes and the group table
        if bits >= self.raw_bits:
            return self.raw_bits, 0.0
        return bits, sse / m

    def slope(self, k: int) -> float:
        """Bits saved per unit of weighted squared error added going from grid point k to k + 1."""
        b0, d0 = self.point(k)
        b1, d1 = self.point(k + 1)
        dd = (d1 - d0) * self.n * self.w
        if dd <= 0:  # no error added (both stored exactly): coarsening is free
            return math.inf if b1 <= b0 else 0.0
        return max(b0 - b1, 0.0) / dd

    def at(self, lam: float, k0: int | None = None) -> float:
        """The (fractional) grid position where this tensor's slope equals ``lam``."""
        if k0 is None:  # start where the high-rate model puts it: slope = 12 / (GRID s^2 (2^(2/GRID) - 1) w)
            s2 = 12 / (GRID * lam * self.w * (2 ** (2 / GRID) - 1))
            k0 = round(GRID * 0.5 * math.log2(s2 / self.std ** 2)) if s2 > 0 and math.isfinite(s2) else 0
        k = min(max(k0, K_MIN), K_MAX - 1)
        while k < K_MAX - 1 and self.slope(k) >= lam:
            k += 1
        while k > K_MIN and self.slope(k - 1) < lam:
            k -= 1
        # slope(k-1) >= lam > slope(k): the optimum lies near grid point k; interpolate log slope between
        # the segment midpoints k - 1/2 and k + 1/2
        if k == K_MIN or k == K_MAX - 1:
            return float(k)
        a, b = self.slope(k - 1), self.slope(k)
        if not (math.isfinite(a) and a > 0 and b > 0):
            return float(k)
        f = (math.log(a) - math.log(lam)) / (math.log(a) - math.log(b)) if a != b else 0.5
        return k - 0.5 + min(max(f, 0.0), 1.0)

    def within(self, mse_cap: float, kf: float) -> float:
        """The coarsest position at or below ``kf`` whose MSE is at most ``mse_cap``."""
        if self.bits_mse(kf)[1] <= mse_cap:
            return kf
        k = math.floor(kf)
        while k > K_MIN and self.point(k)[1] > mse_cap:
            k -= 1
        d0, d1 = self.point(k)[1], self.bits_mse(min(k + 1, kf))[1]
        if d0 > mse_cap or not (d1 > d0 > 0):
            return float(k)
        return k + math.log(mse_cap / d0) / math.log(d1 / d0) * (min(k + 1, kf) - k)

    def bits_mse(self, kf: float) -> tuple:
        """(bits, MSE) at fractional grid position kf: bits linear, log MSE linear in between."""
        k = math.floor(kf)
        f = kf - k
        b0, d0 = self.point(k)
        if f == 0:
            return b0, d0
        b1, d1 = self.point(k + 1)
        d = d0 * (d1 / d0) ** f if d0 > 0 and d1 > 0 else d0 + f * (d1 - d0)
        return b0 + f * (b1 - b0), d


_BINARY32_EXACT = ("F32", "F16", "BF16")  # dtypes whose every value is a binary32 value


class _SmallRows:
    """What ``_eval_batch`` needs of each small curve, as arrays indexed by ``curve._si``: where its sample lies
    in the shared buffer and that sample's sum, what ``_finish_arrays`` reads (m, n, raw bits, dq, the lanes of
    ``rans_model._last_lanes``), its row in the Allocation's grid arrays; and the log tables by sample size."""

    def __init__(self, small: list, xs: np.ndarray, rows, lo: np.ndarray | None = None, hi: np.ndarray | None = None,
                 threads: int = 1, is32: bool = False, spare: np.ndarray | None = None):
        """``xs``: the samples one after the other (float64; ``is32``: float32, every value exact, from
        FAST_INIT), curve i's at ``lo[i]:hi[i]`` (None: at ``c._lo:c._hi``); ``rows``: their grid rows;
        ``spare``: the buffer ``xs`` lies in, given back to ``_SPARE`` when this goes."""
        self._spare, self._f64 = spare, None if is32 else xs
        for i, c in enumerate(small):
            c._si = i
        if lo is None:  # (the reference: its sums and extremes from the float64 buffer)
            self.lo = np.array([c._lo for c in small], np.int64)
            self.hi = np.array([c._hi for c in small], np.int64)
            self.s0 = _gp.sums(xs, self.lo, self.hi)
            self.xmin, self.xmax, self.ok = _gp.extremes(xs, self.lo, self.hi)
        else:
            self.lo, self.hi = lo, hi
            ns = lo.size
            self.s0, self.xmin, self.xmax, self.ok = np.empty(ns), np.empty(ns), np.empty(ns), np.empty(ns, np.bool_)
            _split_call(_ss.sums_extremes, (xs, lo, hi, self.s0, self.xmin, self.xmax, self.ok), (0,), hi - lo,
                        threads)
        # round_many_fast reads the samples as float32 where that is every value: those of F32, F16 and BF16
        # tensors (taken from their own values); an F64 tensor's where the float32 copy equals them
        self.xs_fast = xs
        if is32:
            pass
        elif all(getattr(c.t, "dtype", None) in _BINARY32_EXACT for c in small):
            self.xs_fast = xs.astype(np.float32)
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # (an F64 value beyond binary32: kept float64)
                x32 = xs.astype(np.float32)
            if np.array_equal(x32, xs):
                self.xs_fast = x32
        self.m = np.array([c.m for c in small], np.int64)
        self.n = np.array([c.n for c in small], np.int64)
        self.raw_bits = np.array([c.raw_bits for c in small])
        self.dq = np.array([c.dq for c in small], np.bool_)
        self.row = np.array(rows, np.int64)
        by_n = {v: rans_model._last_lanes(v, 1024) for v in set(self.n.tolist())}  # (small tensors share sizes)
        lanes = [by_n[v] for v in self.n.tolist()]
        self.full = np.array([f for f, _, _ in lanes], np.int64)
        self.last_sum = np.array([t for _, _, t in lanes], np.int64)
        self.lens = np.array([last.size for _, last, _ in lanes], np.int64)
        self.last_start = np.cumsum(self.lens) - self.lens
        self.last = np.concatenate([last for _, last, _ in lanes]).astype(np.int64) if lanes else np.zeros(0, np.int64)
        self.tables = {}  # gridpoints' log tables: {m: (table, offset)}
        self.tab, self.toff = np.zeros(1), np.zeros(len(small), np.int64)

    def f64(self) -> np.ndarray:
        """The samples as float64 (from the float32 ones on first use: round_many's leftover points, a small
        curve's ``x``)."""
        if self._f64 is None:
            self._f64 = self.xs_fast.astype(np.float64)
        return self._f64

    def __del__(self):
        spare, self._spare = self._spare, None
        try:
            if spare is not None and spare.nbytes <= SPARE_BYTES and not _SPARE:
                _SPARE.append(spare)
        except (NameError, TypeError):  # pragma: no cover - interpreter shutdown
            pass

    def tables_for(self, si: np.ndarray) -> None:
        """Make ``tab`` hold a log table of every sample size among the curves ``si``."""
        ms = set(self.m[si].tolist())
        if not ms <= set(self.tables):  # one table of every size met so far (a file's small tensors share few)
            self.tab, off = _gp.log_table(set(self.tables) | ms)
            self.tables = off
            self.toff = np.array([off.get(int(m), 0) for m in self.m.tolist()], np.int64)


def _eval_batch(want: list, xs: np.ndarray, small: _SmallRows | None = None, grid: tuple | None = None) -> None:
    """Evaluate the grid points ``want`` ((curve, k) of curves whose samples lie in ``xs`` at
    ``curve._lo:curve._hi``) in one compiled call (``gridpoints.round_many``), into each curve's cache
    (``grid``: the Allocation's (B, D, H), written as arrays where the points lie in them): the same numbers as
    ``_eval_batch_ref`` and ``Curve._eval`` point by point. ``small``: the curves' ``_SmallRows``."""
    if not BATCH_KERNEL or small is None:
        return _eval_batch_ref(want, xs)
    steps = np.array([c.step(k) for c, k in want])
    si = np.array([c._si for c, _ in want], np.int64)
    ks = np.array([k for _, k in want], np.int64)
    _eval_points(si, ks, steps, xs, small, grid, [c for c, _ in want])


_EXECUTOR = None  # the helper thread of _split_call (made on first use, kept: a thread start costs ~100 us)


def _forget_executor() -> None:
    """In a forked child: the parent's helper thread does not exist there, and a submit to its executor would
    wait forever; the child makes its own on first use."""
    global _EXECUTOR
    _EXECUTOR = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor)


def _split_call(kernel, args: tuple, shared: tuple, work: np.ndarray, threads: int) -> None:
    """``kernel(*args)`` over all points, as up to ``threads`` calls side by side (the kernel holds no GIL) on
    consecutive ranges of the points of about equal ``work`` each: one compiled call a thread, not one a
    tensor. ``args[i]`` is indexed by point unless ``i`` is in ``shared``; a call gets slices of those (views:
    it writes its own points' outputs in place)."""
    n = work.size
    total = int(work.sum())
    if not SPLIT or threads <= 1 or n < 2 or total < SPLIT_MIN:
        kernel(*args)
        return
    global _EXECUTOR
    if _EXECUTOR is None:
        from concurrent.futures import ThreadPoolExecutor

        _EXECUTOR = ThreadPoolExecutor(1, thread_name_prefix="bslcodec-alloc")
    cut = min(max(int(np.searchsorted(np.cumsum(work), total // 2)), 1), n - 1)

    def part(sl):
        kernel(*(v if i in shared else v[sl] for i, v in enumerate(args)))

    fut = _EXECUTOR.submit(part, slice(cut, n))  # (two threads: the 2-core box's; more would split further)
    part(slice(0, cut))
    fut.result()


def _eval_points(si: np.ndarray, ks: np.ndarray, steps: np.ndarray, xs: np.ndarray, small: _SmallRows,
                 grid: tuple | None, curves, threads: int = 1) -> None:
    """``_eval_batch`` of the points (small curve ``si[j]``, grid point ``ks[j]``, its step ``steps[j]``; ``xs``
    the float64 samples or a function giving them);
    ``curves(j)`` or ``curves[j]``: the curve of point j, for a point outside the grid arrays; ``threads``: the
    rounding's calls side by side (``_split_call``)."""
    n = si.size
    small.tables_for(si)
    sse, qmax, ent = np.empty(n), np.empty(n), np.empty(n)
    raw, n_live = np.empty(n, np.int64), np.empty(n, np.int64)
    lo, hi, s0, toff = small.lo[si], small.hi[si], small.s0[si], small.toff[si]
    if FAST_ROUNDING:
        done = np.empty(n, np.bool_)
        _split_call(_gp.round_many_fast, (small.xs_fast, lo, hi, small.xmin[si], small.xmax[si], small.ok[si], steps, s0,
                                          small.tab, toff, sse, raw, qmax, ent, n_live, done), (0, 8), hi - lo, threads)
        if not done.all():  # the points it leaves (a symbol at or above 2^22, a non-finite value): round_many
            r = np.flatnonzero(~done)
            got = np.empty(r.size), np.empty(r.size, np.int64), np.empty(r.size), np.empty(r.size), \
                np.empty(r.size, np.int64)
            _gp.round_many(xs() if callable(xs) else xs, lo[r], hi[r], steps[r], s0[r], small.tab, toff[r], *got)
            sse[r], raw[r], qmax[r], ent[r], n_live[r] = got
    else:
        _gp.round_many(xs() if callable(xs) else xs, lo, hi, steps, s0, small.tab, toff, sse, raw, qmax, ent, n_live)
    lens = small.lens[si]
    ends = np.cumsum(lens)
    last = small.last[np.arange(int(ends[-1]) if n else 0) + np.repeat(small.last_start[si] - (ends - lens), lens)]
    bits, mse = _finish_arrays(small.m[si], small.n[si], small.raw_bits[si], small.dq[si], small.full[si],
                               small.last_sum[si], lens, last, sse, raw, qmax, ent, n_live)
    i = ks - K_MIN
    inside = (i >= 0) & (i < _NK)
    if grid is not None:
        B, D, H = grid
        r = small.row[si[inside]]
        B[r, i[inside]], D[r, i[inside]], H[r, i[inside]] = bits[inside], mse[inside], True
    for j in np.flatnonzero(~inside if grid is not None else np.ones(n, np.bool_)).tolist():
        c = curves(j) if callable(curves) else curves[j]
        c._store(int(ks[j]), (float(bits[j]), float(mse[j])))


def _eval_batch_ref(want: list, xs: np.ndarray) -> None:
    """``_eval_batch`` as first written (the reference): the same rounding loop one point at a time
    (``_round_stats_many``), numpy's log2 of each count, each point's terms summed in numpy's pairwise
    order by ``_segment_sums``."""
    n = len(want)
    steps = np.array([c.step(k) for c, k in want])
    lo = np.array([c._lo for c, _ in want], np.int64)
    hi = np.array([c._hi for c, _ in want], np.int64)
    sse, qmax = np.empty(n), np.empty(n)
    raw, ends = np.empty(n, np.int64), np.empty(n, np.int64)
    live = np.empty(int(np.minimum(hi - lo, rans.FINE_K).sum()), np.float64)
    _round_stats_many(xs, lo, hi, steps, sse, raw, qmax, live, ends)
    n_live = np.diff(ends, prepend=0)
    m = np.repeat(np.array([float(c.m) for c, _ in want]), n_live)
    live = live[:int(ends[-1])]
    ent = -_segment_sums(live * np.log2(live / m), ends)
    bits, mse = _finish_many(want, sse, raw, qmax, ent, n_live)
    for j, (c, k) in enumerate(want):
        c._store(k, (float(bits[j]), float(mse[j])))


def _finish_many(want: list, sse, raw, qmax, ent, n_live) -> tuple:
    """``Curve._finish`` of many points as numpy vectors (``_finish_arrays``), the curves' numbers gathered
    point by point."""
    lanes = [rans_model._last_lanes(int(c.n), 1024) for c, _ in want]
    return _finish_arrays(np.array([c.m for c, _ in want], np.int64), np.array([c.n for c, _ in want], np.int64),
                          np.array([c.raw_bits for c, _ in want]), np.array([c.dq for c, _ in want]),
                          np.array([f for f, _, _ in lanes], np.int64), np.array([t for _, _, t in lanes], np.int64),
                          np.array([last.size for _, last, _ in lanes], np.int64),
                          np.concatenate([last for _, last, _ in lanes]), sse, raw, qmax, ent, n_live)


def _finish_arrays(m, n, raw_bits, dq, full, last_sum, lens, last, sse, raw, qmax, ent, n_live) -> tuple:
    """``Curve._finish`` of many points as numpy vectors: the same float operations in the same order
    (ints converted exactly, Python's ``max`` as a ``where``; ``estimate_bits``' last-group term summed per
    point in numpy's pairwise order by ``_segment_sums``), so the same (bits, MSE) floats. Per point: its
    curve's sample size ``m``, size ``n``, ``raw_bits``, ``dq``, and ``rans_model._last_lanes(n, 1024)`` as
    ``full``, ``last_sum`` and its ``lens`` entries of ``last``."""
    ent = np.where(m < n, ent + (n_live - 1) / (2 * math.log(2)), ent)  # Miller-Madow (see _finish)
    per = (ent + raw) / m
    model = per * n + 9 * np.minimum(n_live, 600) + 96
    if dq.any():
        model = np.where(dq, model - np.interp(per, _DQ_XS, _DQ_YS) * n, model)
    # rans.estimate_bits(model, n, 1024), point by point in vectors
    S = 1024
    G = -(-n // (LANES * S))
    bps = model / n
    a = bps * S + rans.STATE_BITS_PER_LANE
    flush = full * np.where(a > 32.0, a, 32.0) - full * bps * S  # Python's max(32.0, a)
    tail = np.maximum(32.0, np.repeat(bps, lens) * last + rans.STATE_BITS_PER_LANE)
    flush = flush + (_segment_sums(tail, np.cumsum(lens)) - bps * last_sum)
    bits = model + flush + 40 * G
    exact = ~(qmax < (MAX_SYMBOL_MAGNITUDE >> 2)) | (bits >= raw_bits)  # stored exactly instead
    return np.where(exact, raw_bits, bits), np.where(exact, 0.0, sse / m)


@numba.njit(cache=True)
def _sums(b, d, n):
    """(sum of ``b``, sum of ``d * n``) added one after the other in order, as ``Allocation._totals``' loop
    adds them (``n``: the curves' sizes as floats, exact: a Python int times a float is that)."""
    bits = sse = 0.0
    for i in range(b.size):
        bits += b[i]
        sse += d[i] * n[i]
    return bits, sse


def _mean_square(t) -> float:
    """std² + mean² of a tensor, or 0 where that is not a finite float (values near the float64 limit): such
    a tensor has no place in an allocation over squared errors and is stored exactly."""
    try:
        ms = float(t.std) ** 2 + float(t.mean) ** 2
    except OverflowError:
        return 0.0
    return ms if math.isfinite(ms) else 0.0


def weights(lossy: dict, sensitivity: dict | None = None) -> dict:
    """name -> distortion weight per weight: median(n) / n_i, or with ``sensitivity`` (output distortion per
    unit per-element squared error, spread over the tensor) s_i / n_i, floored at ``SENSITIVITY_FLOOR`` x the
    median.

    Without data, a tensor's output distortion is taken as its mean squared error, whatever its size. The
    per-weight sensitivities measured on the three model families of the suite fall with tensor size (least
    squares over each model's tensors, with mean square and fan-in beside log n: n^-0.5 on the character LM,
    n^-1.0 on EfficientNet-Lite0, n^-2.2 on all-MiniLM-L6-v2): a small tensor (a first convolution, an early
    depthwise kernel, a position table) is a whole stage of the model, a row of a 30k-token embedding is
    rarely used. At equal size this weight gave a lower output error than one weight per weight (one global
    step, what NNCodec does) on each of them (results/allocation_suite.md)."""
    live = {n: t for n, t in lossy.items() if t.std > 0 and _mean_square(t) > 0}  # the rest: stored exactly
    if not live:
        return {}
    if sensitivity is not None:
        from .codec import SENSITIVITY_FLOOR

        floor = SENSITIVITY_FLOOR * float(np.median([sensitivity[n] for n in live]))
        return {n: max(float(sensitivity[n]), floor) / t.n for n, t in live.items()}
    mid = float(np.median([t.n for t in live.values()]))
    return {n: mid / t.n for n, t in live.items()}


class Allocation:
    """The curves of a file's quantized tensors and the search for lambda."""

    def __init__(self, lossy: dict, sensitivity: dict | None = None, threads: int = 1):
        self.threads = threads  # the small curves' rounding calls side by side (_split_call)
        w = weights(lossy, sensitivity)
        if not FAST_INIT:
            self._init_ref(lossy, w)
            return
        names = sorted(w)
        nc = len(names)
        # the curves' grid points as arrays, each curve's rows views of them (lambda_search's passes read these)
        self._B, self._D, self._H = np.zeros((nc, _NK)), np.zeros((nc, _NK)), np.zeros((nc, _NK), np.bool_)
        ts = [lossy[n] for n in names]
        is_small = [0 < sample_size(t) <= BATCH_SAMPLE for t in ts]
        # a small curve's float64 sample is not taken here (take_x=False) where the float32 buffer below holds
        # its values: all of them as F32/F16/BF16 arrays (the float64 one is made only where asked for)
        f32 = all(getattr(t, "sample", None) is None and getattr(t, "flat", None) is not None
                  and t.dtype in _BINARY32_EXACT and t.flat.dtype == numpy_dtype(t.dtype)
                  for t, sm in zip(ts, is_small) if sm)
        self._list = [Curve(t, w[n], (self._B[i], self._D[i], self._H[i]), take_x=not (f32 and sm))
                      for i, (n, t, sm) in enumerate(zip(names, ts, is_small))]
        self.curves = dict(zip(names, self._list))
        for n, c in self.curves.items():
            c.name = n
        self.ms_total = sum(c.n * c.ms for c in self._list)
        small = [c for c, sm in zip(self._list, is_small) if sm]
        ms = np.array([c.m for c in small], np.int64)
        hi = np.cumsum(ms)
        lo = hi - ms
        for c, a, b in zip(small, lo.tolist(), hi.tolist()):
            c._lo, c._hi = a, b
        spare = None
        if f32:
            total = int(hi[-1]) if small else 0
            try:  # a finished Allocation's buffer (fresh pages cost ~4x the copy: ~1.5 ms for 4.9 MB)
                spare = _SPARE.pop() if REUSE else None
            except IndexError:  # (none, or another thread took it)
                spare = None
            if spare is None or spare.size < total:
                spare = np.empty(total, np.float32)
            xs32 = spare[:total]
            if small:
                np.concatenate([c.t.flat for c in small], out=xs32, casting="same_kind")  # (exact: F16/BF16 widen)
            self._xs64 = None  # made from xs32 where asked for (_rows.f64)
        else:
            self._xs64 = np.concatenate([c.x for c in small]) if small else np.zeros(0)
            for c in small:
                c.x = self._xs64[c._lo:c._hi]
            xs32 = None
        self._small = small
        self._n = np.array([float(c.n) for c in self._list])
        self._w = np.array([c.w for c in self._list])
        self._std = np.array([c.std for c in self._list])
        self._std2 = np.array([c.std ** 2 for c in self._list])
        self._ms = np.array([c.ms for c in self._list])
        self._is_small = np.array(is_small, np.bool_)
        self._rows = _SmallRows(small, self._xs64 if xs32 is None else xs32, np.flatnonzero(self._is_small), lo, hi,
                                threads, xs32 is not None, spare)
        for c in small:
            c._rows = self._rows  # (not the Allocation: no cycle, so its buffer is given back as soon as it goes)
        self._si = np.full(nc, -1, np.int64)  # a curve's index among the small ones (_SmallRows), by row
        self._si[self._rows.row] = np.arange(len(small))

    @property
    def _xs(self) -> np.ndarray:
        """The small curves' samples as float64, one after the other (made from the float32 copy on first use)."""
        return self._rows.f64() if self._xs64 is None else self._xs64

    def _init_ref(self, lossy: dict, w: dict) -> None:
        """``__init__`` as before FAST_INIT (the reference): every curve's float64 sample taken, then copied
        into one buffer; the grid rows copied into the arrays; the sums and extremes read from the float64
        buffer by ``gridpoints.sums`` and ``gridpoints.extremes``."""
        self.curves = {n: Curve(lossy[n], w[n]) for n in sorted(w)}
        self.ms_total = sum(c.n * c.ms for c in self.curves.values())
        for n, c in self.curves.items():
            c.name = n
        # the samples of the small curves in one buffer (each curve's x becomes a view of it), for _eval_batch
        small = [c for c in self.curves.values() if 0 < c.m <= BATCH_SAMPLE]
        self._xs64 = np.empty(sum(c.m for c in small))
        pos = 0
        for c in small:
            c._lo, c._hi = pos, pos + c.m
            self._xs64[pos:pos + c.m] = c.x
            c.x = self._xs64[pos:pos + c.m]
            pos += c.m
        self._small = small
        # the curves' grid points as arrays (each curve's rows are views of them), for lambda_search's passes
        names = list(self.curves)
        self._list = [self.curves[n] for n in names]
        nc = len(names)
        self._B, self._D, self._H = np.zeros((nc, _NK)), np.zeros((nc, _NK)), np.zeros((nc, _NK), np.bool_)
        for i, c in enumerate(self._list):
            self._B[i], self._D[i], self._H[i] = c._b, c._d, c._h
            c._b, c._d, c._h = self._B[i], self._D[i], self._H[i]
        self._n = np.array([float(c.n) for c in self._list])
        self._w = np.array([c.w for c in self._list])
        self._std2 = np.array([c.std ** 2 for c in self._list])
        self._ms = np.array([c.ms for c in self._list])
        self._is_small = np.zeros(nc, np.bool_)
        self._is_small[[i for i, c in enumerate(self._list) if 0 < c.m <= BATCH_SAMPLE]] = True
        row = {id(c): i for i, c in enumerate(self._list)}
        self._rows = _SmallRows(small, self._xs64, [row[id(c)] for c in small])
        self._std = np.array([c.std for c in self._list])
        self._si = np.full(nc, -1, np.int64)  # a curve's index among the small ones (_SmallRows), by row
        self._si[self._rows.row] = np.arange(len(small))

    def _pass(self, kind: int, lam: float = 0.0, cap=None, kf=None) -> tuple:
        """(out, out2) of ``lambda_search.run_pass`` over every curve (arrays in curve order): the grid
        points it finds missing are evaluated (the small curves' in one ``_eval_batch``) and the pass run
        again for those curves, as ``_each`` does."""
        nc = len(self._list)
        out, out2 = np.empty(nc), np.empty(nc)
        cap = np.zeros(nc) if cap is None else cap
        kf = np.zeros(nc) if kf is None else kf
        idx = np.arange(nc, dtype=np.int64)
        while idx.size:
            miss = np.empty(idx.size, np.int64)
            _ls.run_pass(kind, idx, self._B, self._D, self._H, self._n, self._w, self._std2, float(lam), cap, kf,
                         K_MIN, K_MAX, float(GRID), 2 ** (2 / GRID) - 1, out, out2, miss)
            lacking = miss != _ls.NONE
            idx, miss = idx[lacking], miss[lacking]
            self._fill(idx, miss)
        return out, out2

    def _fill(self, idx: np.ndarray, miss: np.ndarray) -> None:
        """Evaluate grid point ``miss[j]`` of curve ``idx[j]`` for every j: the small curves' in one
        ``_eval_points`` (or ``_eval_batch``), the others one by one."""
        if idx.size:
            sm = self._is_small[idx]
            for i, k in zip(idx[~sm].tolist(), miss[~sm].tolist()):
                self._list[i].point(k)  # evaluated on its own
            if sm.any():
                rows, ks = idx[sm], miss[sm]
                grid = (self._B, self._D, self._H)
                if BATCH_KERNEL and ARRAY_POINTS:  # (Curve.step's floats: gridpoints.steps)
                    # (the float64 samples only for the points round_many_fast leaves: made if asked for)
                    _eval_points(self._si[rows], ks, _gp.steps(self._std[rows], ks, 2.0, float(GRID)),
                                 lambda: self._xs,
                                 self._rows, grid, lambda j, rows=rows: self._list[int(rows[j])], self.threads)
                else:
                    _eval_batch([(self._list[i], k) for i, k in zip(rows.tolist(), ks.tolist())], self._xs,
                                self._rows, grid)

    def _array(self, pos: dict) -> np.ndarray:
        return np.array([float(pos[c.name]) for c in self._list])

    def _dict(self, a: np.ndarray) -> dict:
        return dict(zip(self.curves, a.tolist()))

    def _each(self, fn) -> dict:
        """{name: fn(curve)} for every curve, in curve order. The small curves' missing grid points are
        collected (``fn`` stops at the first, raising ``_Missing``) and evaluated together in one
        ``_eval_batch``, then ``fn`` runs again: the same points and values as one by one, without the
        ~40 us of Python per point (a 4,096-element tensor's save needs ~20 points)."""
        out = {}
        pending = list(self.curves)
        for c in self._small:
            c._defer = True
        try:
            while pending:
                want, retry = [], []
                for n in pending:
                    c = self.curves[n]
                    try:
                        out[n] = fn(c)
                    except _Missing as miss:
                        want.append((c, miss.k))
                        retry.append(n)
                if want:
                    _eval_batch(want, self._xs, self._rows, (self._B, self._D, self._H))
                pending = retry
        finally:
            for c in self._small:
                c._defer = False
        return {n: out[n] for n in self.curves}

    def positions(self, lam: float) -> dict:
        """Equal-slope positions at ``lam``, then every tensor whose relative error would exceed
        ``REL_CAP`` x the model's moved to a finer step (a common step would otherwise quantize a tensor
        of much smaller weights than the rest to zero at low rates)."""
        if COMPILED:
            pos = self._pass(_ls.AT, lam=lam)[0]
            if self.ms_total > 0 and len(pos) > 1:
                for _ in range(3):
                    e2 = self._totals(pos)[1] / self.ms_total
                    pos = self._pass(_ls.WITHIN, cap=REL_CAP ** 2 * e2 * self._ms, kf=pos)[0]
            return self._dict(pos)
        pos = self._each(lambda c: c.at(lam))
        if self.ms_total > 0 and len(pos) > 1:
            for _ in range(3):  # clamping lowers the model's error, which tightens the cap: iterate
                e2 = self.totals(pos)[1] / self.ms_total
                pos = self._each(lambda c, e2=e2, pos=pos: c.within(REL_CAP ** 2 * e2 * c.ms, pos[c.name]))
        return pos

    def _look(self, lam: float) -> tuple:
        """(positions, predicted bits, ``tensor_error``) at ``lam``: ``value(positions(lam))`` of ``solve`` by
        ``lambda_search.look``, one compiled call a search step (again after each batch of missing points), the
        same floats; the tensor error's sum in Python (``sum``'s own order, as ``tensor_error``)."""
        nc = len(self._list)
        pos, b, d, miss = np.empty(nc), np.empty(nc), np.empty(nc), np.empty(nc, np.int64)
        clamp = self.ms_total > 0 and nc > 1
        while True:
            ok, bits = _ls.look(self._B, self._D, self._H, self._n, self._w, self._std2, self._ms, float(lam),
                                float(self.ms_total), REL_CAP ** 2, clamp, K_MIN, K_MAX, float(GRID),
                                2 ** (2 / GRID) - 1, pos, b, d, miss)
            if ok:
                break
            idx = np.flatnonzero(miss != _ls.NONE)
            self._fill(idx, miss[idx])
        live = self._ms > 0
        rel = (d[live] / self._ms[live]).tolist()  # (IEEE division, as di / c.ms)
        return self._dict(pos), bits, math.sqrt(sum(rel) / len(rel)) if rel else 0.0

    def totals(self, pos: dict) -> tuple:
        """(predicted bits, predicted sum of squared errors) at grid positions ``pos``."""
        if COMPILED:
            return self._totals(self._array(pos))
        bits = sse = 0.0
        got = self._each(lambda c: c.bits_mse(pos[c.name]))
        for n, c in self.curves.items():
            b, d = got[n]
            bits, sse = bits + b, sse + d * c.n
        return bits, sse

    def _totals(self, pos: np.ndarray) -> tuple:
        """``totals`` of positions in curve order (the same sums, curve by curve)."""
        b, d = self._pass(_ls.BITS_MSE, kf=pos)
        if COMPILED_SUMS:
            return _sums(b, d, self._n)
        bits = sse = 0.0
        for bi, di, n in zip(b.tolist(), d.tolist(), [c.n for c in self._list]):
            bits, sse = bits + bi, sse + di * n
        return bits, sse

    def tensor_error(self, pos: dict) -> float:
        """The root mean square over tensors of each tensor's relative L2 error, sqrt(mean_i D_i / ms_i):
        every tensor counted once, as the default distortion weights count it (the plain relative error of
        all weights is dominated by the largest tensors, which those weights quantize coarser)."""
        if COMPILED:
            d = self._pass(_ls.BITS_MSE, kf=self._array(pos))[1].tolist()
            rel = [di / c.ms for di, c in zip(d, self._list) if c.ms > 0]
            return math.sqrt(sum(rel) / len(rel)) if rel else 0.0
        got = self._each(lambda c: c.bits_mse(pos[c.name]))
        rel = [got[n][1] / c.ms for n, c in self.curves.items() if c.ms > 0]
        return math.sqrt(sum(rel) / len(rel)) if rel else 0.0

    def solve(self, target_bits: float | None = None, rel_error: float | None = None) -> tuple:
        """(grid positions, predicted bits, predicted relative error) for a bits target or a budget on
        the tensors' relative L2 errors (``tensor_error``: their root mean square)."""
        if not self.curves:
            return {}, 0.0, 0.0

        def value(pos):
            b, _ = self.totals(pos)
            return pos, b, self.tensor_error(pos)

        def err_of(r):
            if target_bits is not None:
                return abs(r[1] - target_bits) / max(target_bits, 1e-300)
            return abs(r[2] - rel_error) / rel_error if rel_error > 0 else 0.0

        def too_coarse(r):  # at larger lambda the steps get finer: more bits, less error
            _, b, e = r
            return b < target_bits if target_bits is not None else e > rel_error

        # lambda in bits per unit of weighted squared error, searched in log space within [lo, hi]
        n_weights = sum(c.n for c in self.curves.values())
        scale = n_weights / max(self.ms_total, 1e-300)
        lo, hi = math.log(scale) - 40, math.log(scale) + 60
        r_lo = r_hi = best = None

        def look(x):
            nonlocal best
            r = self._look(math.exp(x)) if COMPILED and FUSED else value(self.positions(math.exp(x)))
            if best is None or err_of(r) < err_of(best):
                best = r
            return r

        if GALLOP:
            # bracket it outward from the high-rate guess in strides of 1, 2, 4, ...: each bit a weight quarters
            # the squared error, so lambda grows 4x a bit, from about log(scale) at ~0 bits (a relative error
            # e: -log2(e) bits). Within ~1.5 of the answer on synthetic files of three shapes (Gaussian,
            # t-tailed, Laplace) at 2-8 bits and rel_error 1/256-0.02. A bisection of the whole range first
            # visited positions 5-25 away: steps 2^4-2^18 finer or coarser than the answer, whose grid points
            # were ~60 % of those a default save of small tensors evaluated (results/load.md, round 8)
            if target_bits is not None:
                per = target_bits / max(n_weights, 1)
            else:
                per = -math.log2(rel_error) if rel_error > 0 else 60.0
            x, stride = min(max(math.log(scale) + 2 * math.log(2) * per, lo), hi), 1.0
            while True:
                r = look(x)
                if err_of(r) < 1e-4:
                    return best
                if too_coarse(r):
                    lo, r_lo = x, r
                else:
                    hi, r_hi = x, r
                if (r_lo is not None and r_hi is not None) or hi - lo < 1e-6:
                    break
                x = min(x + stride, hi) if too_coarse(r) else max(x - stride, lo)
                stride *= 2
        for _ in range(48):  # bisect
            mid = 0.5 * (lo + hi)
            r = look(mid)
            if err_of(r) < 1e-4 or hi - lo < 1e-6:
                break
            if too_coarse(r):
                lo, r_lo = mid, r
            else:
                hi, r_hi = mid, r
        if err_of(best) > 1e-3 and r_lo is not None and r_hi is not None:
            # the curves are not convex at low rates (the total jumps where a tensor's optimum moves from
            # one local minimum to another): go continuously from one bracket's positions to the other's
            a, b = 0.0, 1.0
            for _ in range(40):
                t = 0.5 * (a + b)
                r = value({n: (1 - t) * r_lo[0][n] + t * r_hi[0][n] for n in self.curves})
                if err_of(r) < err_of(best):
                    best = r
                if too_coarse(r):
                    a = t
                else:
                    b = t
        return best

    def step(self, name: str, kf: float) -> float:
        """The plain-rounding step at position kf (the caller applies dq's STEP_FACTOR)."""
        return self.curves[name].step(kf)


def steps_for(alloc: Allocation, pos: dict, lossy: dict) -> dict:
    """name -> rel_step (step = rel_step x unit, the unit being the std) of every tensor in the allocation; the
    others (constant, or a mean square beyond float64: ``weights``) get none and the encoder stores them
    exactly."""
    return {n: 2.0 ** (pos[n] / GRID) for n in lossy if n in pos}


def correction(alloc: Allocation, pos: dict, actual_bits: dict, missing_bits: float, share: float = 0.25) -> dict:
    """New grid positions for the largest tensors (holding up to ``share`` of the weights, at least one),
    shifted together so that, with their curves moved by what the encode measured (actual - predicted),
    they take ``missing_bits`` more (or fewer, if negative). The rest keep what they were encoded with:
    re-encoding only these keeps a ``bits=`` encode within 1 + ``share`` times one encode."""
    names = sorted(alloc.curves, key=lambda n: -alloc.curves[n].n)
    n_all = sum(c.n for c in alloc.curves.values())
    chosen, held = [], 0
    for n in names:
        if chosen and held + alloc.curves[n].n > share * n_all:
            break
        chosen.append(n)
        held += alloc.curves[n].n
    # what the encode measured minus what was predicted, per weight: taken as constant along the curve
    off = {n: (actual_bits[n] - alloc.curves[n].bits_mse(pos[n])[0]) / alloc.curves[n].n for n in chosen}
    want = sum(actual_bits[n] for n in chosen) + missing_bits

    def bits(shift):
        total = 0.0
        for n in chosen:
            c = alloc.curves[n]
            total += max(c.bits_mse(min(max(pos[n] + shift, K_MIN), K_MAX))[0] + off[n] * c.n, 0.0)
        return total

    lo, hi = -4.0 * GRID * 8, 4.0 * GRID * 8  # +-8 octaves
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if bits(mid) > want:
            lo = mid
        else:
            hi = mid
    shift = 0.5 * (lo + hi)
    return {n: min(max(pos[n] + shift, K_MIN), K_MAX) for n in chosen}
