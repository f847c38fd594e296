"""Per-tensor pipeline: which codec a tensor gets, encoding it, and decoding it (all or a range)."""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import fnmatch
import functools
import math
from dataclasses import dataclass

import numba
import numpy as np

from ..codecs import dq_search, fexp, golomb, lossless, rans, rdoq
from ..codecs.params import ANS_CODECS, ANS_MAX_S, ANS_MIN_S, finite_float  # noqa: F401 - codec.<name> as before
from ..codecs.params import F32_MAX as _F32_MAX
from ..codecs.params import check_ans as _check_ans_params
from ..codecs.params import check_eg as _check_eg_params
from ..codecs.params import check_fexp as _check_fexp_params
from ..codecs.params import check_quantized as _check_quantized_params  # noqa: F401
from ..codecs.params import is_binary32 as _is_binary32  # noqa: F401
from ..codecs.params import unit as _unit
from ..container.dtypes import FLOAT_NAMES, dtype_name, numpy_dtype
from ..container.errors import EncodeError, FormatError
from ..container.format import QUANTIZED_CODECS, Entry  # noqa: F401 - codec.QUANTIZED_CODECS as before
from ..container.limits import (
    LANES,
    MAX_EG_ORDER,
    MAX_SYMBOL_MAGNITUDE,
)
from ..quantize import dq, ggd, quant
from ..quantize.quant import MODE_OF_DTYPE
from . import ans_encode, ans_model, dq_batch, dq_small, fexp_small, ggfit

DEFAULT_REL_ERROR = 2.0 ** -8  # the default: RMS over tensors of each one's relative L2 error ~0.39 % (allocation.py)
DEFAULT_REL_STEP = 1 / 64  # what rel_step-based callers (torch.rate) use when no setting is given
LANE_SYMBOLS = 512  # 32 * 512 elements per group; lane table = 16 bits per 512 symbols
SMALL_1D = 1 << 16  # 1-D float tensors up to this size (norms, biases): exact, or (allocation) SMALL_REL_STEP
SMALL_REL_STEP = 2.0 ** -10  # their plain-rounding step / scale: |x - x̂| <= scale / 2048 (scale: std, or for an
# all-positive tensor such as a BatchNorm variance min(std, smallest value): every element within 0.05 %;
# non-negative with zeros: the smallest positive value, the zeros stay exact). std/1024 rather than std/256:
# on EfficientNet-Lite0 (BatchNorm) the 1-D tensors at std/256 alone cost 1.3e-4 of logit cosine, a third of
# what all its conv weights cost at the default, for 2 bits an element less; on MiniLM and the char LM
# either step is far below the weights' error (results/fixed_cost.md, results/allocation_suite.md)
ANS_LANE_SYMBOLS = 1024  # ans groups of 32 * 1024: lane flushes cost ~24 bits / 1024 symbols (0.02 b/w)
LOSSY_CODECS = ("eg", "ans")
CODEC_CHOICES = ("auto",) + LOSSY_CODECS  # "auto": per tensor, the smaller payload of eg and ans
DEFAULT_CODEC = "auto"
QUANTIZERS = ("uniform", "dq")  # plain rounding (spec 4.3) or dependent quantization (spec 4.6, ans only)
QUANTIZER_CHOICES = ("auto",) + QUANTIZERS
DEFAULT_QUANTIZER = "auto"  # dq for rel_step / bits / the default; uniform with max_error, a named codec, rdoq


def resolve_quantizer(quantizer, max_error=None, codec=None, rdoq=None) -> str:
    """"uniform" or "dq" for the user's ``quantizer=`` (None: ``DEFAULT_QUANTIZER``). "auto" gives dq (about
    0.17 bits/weight smaller at the same mean squared error, results/dq.md) except where it cannot serve or
    does not pay: ``max_error=`` (at a given bound dq files are larger), a named ``codec="eg"`` or ``"ans"``
    (those codecs hold plain rounding; ``quantizer="dq", codec="ans"`` gives ans-dq) and ``rdoq=`` (a
    different level choice)."""
    q = DEFAULT_QUANTIZER if quantizer is None else quantizer
    if q not in QUANTIZER_CHOICES:
        raise EncodeError(f"quantizer= must be one of {', '.join(QUANTIZER_CHOICES)}, not {q!r}")
    if q != "auto":
        return q
    named = (codec if codec is not None else DEFAULT_CODEC) != "auto"  # the user asked for eg or ans itself
    return "uniform" if (max_error is not None or named or (rdoq is not None and rdoq is not False and rdoq != 0)) \
        else "dq"


@dataclass
class Settings:
    """How float tensors are quantized: at most one of ``max_error``, ``rel_step``, ``bits``, ``rel_error``
    (none: ``rel_error=DEFAULT_REL_ERROR``). Internal: users spell these as in :mod:`.knobs`."""

    max_error: float | None = None
    rel_step: float | None = None
    bits: float | None = None
    lossless: tuple = ()  # fnmatch patterns of tensor names stored exactly
    rdoq: float | bool | None = None  # RDOQ λ = c·step²: None = default for the mode, True = default c, False/0 = off
    quantizer: str = "uniform"  # "uniform" (plain rounding), "dq" (dependent quantization, codec ans-dq), "auto"
    rel_error: float | None = None  # the allocation at this RMS over tensors of their relative L2 errors (default:
    # DEFAULT_REL_ERROR)
    default: bool = False  # set with rel_error (given, or none of the four): the allocation by error (allocation.py)

    def __post_init__(self):
        given = {k: v for k, v in (("max_error", self.max_error), ("rel_step", self.rel_step),
                                   ("bits", self.bits), ("rel_error", self.rel_error)) if v is not None}
        if len(given) > 1:
            raise EncodeError(f"give at most one of max_error=, rel_step=, bits=, rel_error= (got {', '.join(given)})")
        for k, v in given.items():
            if not finite_float(v) > 0:  # numpy scalars (np.float32(1e-3)) count as numbers
                raise EncodeError(f"{k}= must be a positive finite number, got {v!r}")
            if not isinstance(v, (int, float)):
                setattr(self, k, float(v))  # np.float32 -> float (JSON of the settings); ints stay as given
        if isinstance(self.lossless, str):
            self.lossless = (self.lossless,)
        if self.lossless is False or self.lossless is None:
            self.lossless = ()
        if not isinstance(self.lossless, (tuple, list)) or not all(isinstance(p, str) for p in self.lossless):
            raise EncodeError(f"lossless= must be True, a name pattern or a list of name patterns, "
                              f"got {self.lossless!r}")
        self.lossless = tuple(self.lossless)
        if not self.max_error and not self.bits and not self.rel_step:
            self.default, self.rel_step = True, DEFAULT_REL_STEP
            if self.rel_error is None:
                self.rel_error = DEFAULT_REL_ERROR
        self.quantizer = resolve_quantizer(self.quantizer, self.max_error, None, self.rdoq)
        if self.quantizer == "dq" and self.rdoq:
            raise EncodeError("rdoq= and quantizer='dq' do not combine: the trellis already chooses the levels")
        self.rdoq = 0.0 if self.quantizer == "dq" else rdoq.resolve(self.rdoq, self.max_error is not None)


def wants_lossy(name: str, arr: np.ndarray, dtype: str, settings: Settings) -> bool:
    if dtype not in FLOAT_NAMES or arr.size == 0:
        return False
    if any(fnmatch.fnmatchcase(name, p) for p in settings.lossless):
        return False
    return not (arr.ndim <= 1 and arr.size <= SMALL_1D)


def wants_fine(name: str, arr: np.ndarray, dtype: str, settings: Settings) -> bool:
    """A small 1-D float tensor (norm, bias, BatchNorm statistic) that the allocation modes (``bits=``, the
    default) quantize at the fine fixed step ``SMALL_REL_STEP`` instead of storing exactly."""
    if not (settings.bits is not None or settings.default) or dtype not in FLOAT_NAMES or arr.size < 2:
        return False
    if any(fnmatch.fnmatchcase(name, p) for p in settings.lossless):
        return False
    return arr.ndim <= 1 and arr.size <= SMALL_1D


def fine_tensor(name: str, arr: np.ndarray, dtype: str):
    """(LossyTensor, rel_step) for a ``wants_fine`` tensor, or None (non-finite values: stored exactly)."""
    try:
        lt = LossyTensor(name, arr, dtype)
    except EncodeError:
        return None
    # eg below 2^14 elements: an ans table and lane flushes cost more there, and building the ans model
    # (~40 ms on a loaded box) would be most of the tensor's encode time
    lt.quantizer, lt.order_from_symbols = "uniform", True
    lt.gg_info = False  # the encoder drops the informational params of a fine tensor: no GG fit (~0.1 ms)
    lt.codec = "eg" if lt.n < 1 << 14 else DEFAULT_CODEC
    x = lt.x
    lo = float(np.min(x))
    if lo == 0:  # non-negative with zeros (a BatchNorm variance with dead channels): the zeros stay exact,
        pos = x[x > 0]  # the step follows the smallest positive value
        lo = float(np.min(pos)) if pos.size else 0.0
    if lo > 0 and lo < lt.std:  # all positive (a variance): the step follows the smallest value
        return lt, SMALL_REL_STEP * lo / lt.std
    return lt, SMALL_REL_STEP


class LossyTensor:
    """A float tensor prepared for quantization: values, fitted GG, statistics."""

    def __init__(self, name: str, arr: np.ndarray, dtype: str):
        self.name, self.dtype, self.shape, self.arr = name, dtype, arr.shape, arr
        self.flat = arr.reshape(-1)
        self.n = int(self.flat.size)  # elements
        x = self.kx
        self.mean, self.std, bad = quant.moments(x)
        if bad:
            raise EncodeError(f"tensor {name!r}: {bad} NaN/Inf values cannot be quantized; "
                              f"store it exactly with exact=[{name!r}]")
        self.gg_info = True  # the GG fit goes into the params (informational, spec 4.3); fitted on first use
        self.unit = self.std  # step = rel_step * unit; sensitivity weighting changes the unit
        self.codec = DEFAULT_CODEC  # entropy stage: "auto" (smaller of eg and ans), "eg" or "ans"
        self.rdoq = 0.0  # RDOQ strength c (λ = c·step², bslcodec.codecs.rdoq); 0: plain rounding
        self.quantizer = "uniform"  # or "dq": dependent quantization, stored as ans-dq (bslcodec.quantize.dq)
        self.order_from_symbols = False  # EG order window from the symbols' mean instead of the GG fit
        self.sample, self._load = None, None

    def release(self, load) -> None:
        """Let go of the values: ``load()`` reads them again (the tensor as it was given) each time they are
        coded. What the allocation needs of them is kept (its sample, ``allocation.sample``), so that a
        ``bits=`` search over a lazily read file holds no tensor between its passes (issue 18)."""
        from .allocation import sample

        self.sample = sample(self.flat)
        self.arr = self.flat = None
        self._load = load

    @functools.cached_property
    def _gg(self) -> tuple:
        return ggd.fit(self.kx)  # (a bf16 tensor: its bits; only the sample is widened)

    @property
    def nu(self) -> float:
        return self._gg[0]

    @property
    def alpha(self) -> float:
        return self._gg[1]

    @property
    def x(self) -> np.ndarray:
        """The values as the quantizers read them (1-D): F32/F64 the tensor itself; BF16/F16 widened to
        binary32 on each use (~0.5 ns an element, in parallel) and let go after it, so that the tensors a
        ``bits=`` search holds cost their own 2 bytes a weight, not 6 (issue 18's peak-memory bound); after
        ``release`` read again first."""
        flat = self._values()
        return flat if self.dtype in ("F32", "F64") else quant.as_float32(flat)

    @property
    def kx(self) -> np.ndarray:
        """The values as ``quant.moments``, ``ggd.fit`` and the dq search read them: ``x``, but bf16 as its
        uint16 bit patterns, widened inside the kernels (no float32 copy of the tensor to write and free)."""
        return quant.bf16_bits(self._values()) if self.dtype == "BF16" else self.x

    def _values(self) -> np.ndarray:
        """The flat values, read again after ``release`` (``code`` reads them once for all its uses)."""
        return self.flat if self.flat is not None else self._load().reshape(-1)

    def step_for(self, settings: Settings, rel_step: float | None = None) -> float:
        """The stored step: 2·max_error (dq: max_error / 1.5, its bound being 1.5 steps), or
        rel_step·unit (dq: times ``dq.STEP_FACTOR``, which keeps about the mean squared error of plain
        rounding at the same rel_step)."""
        if settings.max_error is not None:
            step = settings.max_error / dq.BOUND_FACTOR if self.quantizer == "dq" else 2 * settings.max_error
            return quant.step_for_dtype(step, self.dtype, round_down=True)
        return self.step_at(rel_step if rel_step is not None else settings.rel_step)

    def step_at(self, rel_step: float) -> float:
        """The stored step for ``rel_step`` (what ``bits=``'s search tries): rel_step·unit, times
        ``dq.STEP_FACTOR`` with the dq quantizer."""
        return quant.step_for_dtype(rel_step * self.unit * (dq.STEP_FACTOR if self.quantizer == "dq" else 1.0),
                                    self.dtype)

    def _within_bound(self, step: float, max_error: float | None, attempt):
        """(step, center, result) of ``attempt(step, center) -> (result, verdict)``; verdict 0: done, 1: some
        element breaks its bound (with ``max_error`` the step then shrinks a little, up to 8 tries), 2: no
        lossy form at this step (levels out of range). None where the tensor must be stored exactly."""
        for n_try in range(8):
            if not (step > 0 and math.isfinite(step)):
                return None
            center = int(np.clip(np.rint(self.mean / step), -(MAX_SYMBOL_MAGNITUDE - 1), MAX_SYMBOL_MAGNITUDE - 1))
            result, verdict = attempt(step, center)
            if verdict == 0:
                return step, center, result
            if verdict == 2 or max_error is None:
                return None
            step = quant.step_for_dtype(step * (1 - 2.0 ** (-22 + 3 * n_try)), self.dtype, round_down=True)
        return None

    def _params(self, step: float, center: int, lane_symbols: int, max_abs_error: float) -> dict:
        p = {"step": step, "center": center, "lane_symbols": lane_symbols}
        if self.gg_info:
            # gg_scale is stored as a binary32 value (informational)
            p["gg_nu"], p["gg_scale"] = round(self.nu, 6), float(np.float32(min(self.alpha, _F32_MAX)))
        p["max_abs_error"] = max_abs_error
        return p

    def _code_dq(self, step: float, max_error: float | None):
        """``code()`` for the dq quantizer: (params, None, None, u) or None."""
        x = self.kx

        def attempt(step, center):
            r = dq_small.quantize(x, step, center, self.dtype, ANS_LANE_SYMBOLS, bound=max_error,
                                  strict=max_error is not None)  # (dq_search.quantize with ans_model's models)
            if not r.n_bad and self.dtype == "F16":  # the error of the F16 values (and inf where they overflow)
                r.max_error, r.n_bad = _f16_check(x, r.u, center, step, max_error)
            # (without max_error an element without an admissible level has |q| >= 2^24: stored exactly)
            return r, int(r.n_bad > 0)

        done = self._within_bound(step, max_error, attempt)
        if done is None:
            return None
        step, center, r = done
        return self._params(step, center, ANS_LANE_SYMBOLS, r.max_error), None, None, r.u

    def code(self, step: float, max_error: float | None = None, lane_lengths: bool = True):
        """(params, ks, lens, u) for ``step``, or None when the tensor must be stored exactly.

        ``lane_lengths=False``: the third item is the eg bits of each group instead of its lane lengths
        (what sizes need; ``entropy_code`` computes the lane lengths only if it writes eg).

        With ``max_error`` the bound is strict: where binary32/bf16 rounding of ``q * step`` breaks it,
        the step shrinks a little (up to 8 tries) until every element meets it.

        With the dq quantizer ``ks`` and ``lens`` are None (the symbols are for ans only).
        """
        if self.flat is None and self._load is not None:  # released: read once for this call's uses
            self.flat = self._values()
            try:
                return self.code(step, max_error, lane_lengths)
            finally:
                self.flat = None
        if self.quantizer == "dq":
            return self._code_dq(step, max_error)

        x = self.x

        def attempt(step, center):
            qr = quant.quantize(x, step, center, self.dtype, bound=max_error, strict=max_error is not None)
            # overflow: step too fine for this tensor's range, lossless is the right answer
            return qr, 2 if qr.n_overflow else int(qr.n_bad > 0)

        done = self._within_bound(step, max_error, attempt)
        if done is None:
            return None
        step, center, qr = done
        if self.order_from_symbols:  # small tensors: the GG fit's order costs ~40 ms (scipy), the data ~1 us
            k0 = int(min(MAX_EG_ORDER, max(0, math.floor(math.log2(float(qr.u.mean()) + 1.0))))) if qr.u.size else 0
        else:
            k0 = ggd.best_order(self.nu, self.alpha, step)
        if self.rdoq:  # rate-distortion optimised levels within the mode's bound; the decoder is unchanged
            qr.u, qr.max_error = rdoq.apply(self, qr, step, center, max_error, k0)
        ks, lens = golomb.choose_group_orders(qr.u, LANE_SYMBOLS, max(0, k0 - 2), min(MAX_EG_ORDER, k0 + 2))
        if lane_lengths:
            lens = golomb.lane_lengths(qr.u, LANE_SYMBOLS, ks)
        params = self._params(step, center, LANE_SYMBOLS, qr.max_error)
        params["k"] = int(np.bincount(ks).argmax()) if ks.size else k0
        return params, ks, lens, qr.u

    def size(self, step: float) -> int | None:
        """Payload bytes at ``step`` for this tensor's codec choice (eg exact; ans estimated to ~0.2 %)."""
        coded = self.code(step, lane_lengths=False)
        if coded is None:
            return None
        if self.quantizer == "dq":
            return rans.estimate_size(coded[3], ANS_LANE_SYMBOLS)
        eg = golomb.payload_size_of_groups(coded[2])
        if self.codec == "eg":
            return eg
        ans = rans.estimate_size(coded[3], ANS_LANE_SYMBOLS)
        return ans if self.codec == "ans" else min(eg, ans)

    def encode(self, step: float, max_error: float | None = None):
        """(codec, params, payload) at ``step``, or None when the tensor is better stored exactly."""
        coded = self.code(step, max_error, lane_lengths=False)
        if coded is None:
            return None
        codec, params, payload = entropy_code(coded, self.codec)
        if len(payload) >= self.n * numpy_dtype(self.dtype).itemsize:
            return None  # not worth it: lossless storage is smaller and exact
        return codec, params, payload


SMALL_FIT = 1 << 15  # tensors of fewer elements have their GG fits made together (fit_small)


def fit_small(tensors) -> None:
    """Make the GG fits (``LossyTensor._gg``: informational params) of the small tensors among ``tensors``
    whose values are held, all at once (``ggfit.fit_many``: the same floats as one by one, ~45 us a
    4,096-element tensor less)."""
    todo = [t for t in tensors if t.gg_info and t.n < SMALL_FIT and t.flat is not None and "_gg" not in vars(t)]
    for t, got in zip(todo, ggfit.fit_many([t.kx for t in todo])):
        t._gg = got  # the cached_property's slot


def encode_small(jobs: list, threads: int = 1) -> dict:
    """{j: ``t.encode(step)``} for the jobs ``(t, step)`` whose encode ``dq_batch`` can run (small dq tensors
    whose values are held, at the default bound), coded together: ``threads`` ranges of them at once, each
    one compiled call (``dq_batch.run``); the others are left out (the caller encodes them one by one)."""
    if not (dq_batch.FAST and dq_small.FAST and ans_encode.FAST and ans_model.RANGES and dq_search.PASSES == 1):
        return {}
    groups = {}  # the values' numpy dtype (one compiled kernel each) -> [(j, t, step, x)]
    for j, (t, step) in enumerate(jobs):
        if (t.quantizer == "dq" and t.flat is not None and 0 < t.n < dq_batch.BELOW and 0 < step < 3e38
                and t.dtype in MODE_OF_DTYPE):
            x = t.kx
            groups.setdefault(x.dtype, []).append((j, t, step, x))
    out = {}
    for todo in groups.values():
        steps = np.array([s for _, _, s, _ in todo], np.float64)
        means = np.array([t.mean for _, t, _, _ in todo], np.float64)
        lim = MAX_SYMBOL_MAGNITUDE - 1  # (LossyTensor._within_bound's center, for every tensor at once)
        centers = np.clip(np.rint(means / steps), -lim, lim).astype(np.int64)
        try:
            got = dq_batch.run([x for _, _, _, x in todo], steps, centers, [t.dtype for _, t, _, _ in todo],
                               dq_search.DEFAULT_C, threads)
        except (numba.core.errors.NumbaError, RuntimeError):  # (the vector encoder did not compile here)
            dq_batch.FAST = False
            return {}
        for i, (j, t, step, x) in enumerate(todo):
            n_bytes = int(got.lens[i])
            if n_bytes == dq_batch.NOT_DONE:
                continue
            if n_bytes == dq_batch.BAD_LANES:
                out[j] = None  # (LossyTensor._code_dq: no lossy form at this step)
                continue
            too_big = n_bytes == dq_batch.TOO_BIG  # (LossyTensor.encode: stored exactly)
            center, max_err = int(centers[i]), float(got.stats[i, 0])
            if t.dtype == "F16":  # (as _code_dq)
                max_err, bad = _f16_check(x, got.symbols(i), center, step, None)
                if bad:
                    out[j] = None
                    continue
            if too_big:
                out[j] = None
                continue
            out[j] = "ans-dq", t._params(step, center, ANS_LANE_SYMBOLS, max_err), got.payload(i)
    return out


def entropy_code(coded: tuple, codec: str = "auto") -> tuple:
    """(codec, params, payload) of ``LossyTensor.code()``'s (params, ks, lens, u): ``eg``, ``ans`` or,
    with ``auto``, whichever payload is smaller (ans is built unless its estimate already loses).
    ``lens`` may be the per-group bit counts (``code(..., lane_lengths=False)``): the lane lengths are then
    computed only if the eg payload is written. The ans model: ``ans_model.build_model`` (``rans.build_model``'s
    model in one compiled call below 2^15 symbols)."""
    if codec not in CODEC_CHOICES:
        raise EncodeError(f"codec= must be one of {', '.join(CODEC_CHOICES)}, not {codec!r}")
    params, ks, lens, u = coded
    if ks is None:  # dependent quantization (LossyTensor._code_dq): ans-dq whatever ``codec`` says
        model, _ = ans_model.build_model(u)
        return "ans-dq", params, ans_encode.encode(u, ANS_LANE_SYMBOLS, model)
    eg_size = golomb.payload_size_of_groups(lens if lens.ndim == 1 else lens.sum(axis=1))
    if codec != "eg":
        model, bits = ans_model.build_model(u)
        if codec == "ans" or rans.estimate_bits(bits, u.size, ANS_LANE_SYMBOLS) < 8 * eg_size * 1.002:
            payload = ans_encode.encode(u, ANS_LANE_SYMBOLS, model)
            if codec == "ans" or len(payload) < eg_size:
                p = {k: v for k, v in params.items() if k != "k"}
                p["lane_symbols"] = ANS_LANE_SYMBOLS
                return "ans", p, payload
    if lens.ndim == 1:
        lens = golomb.lane_lengths(u, LANE_SYMBOLS, ks)
    return "eg", params, golomb.encode(u, LANE_SYMBOLS, ks, lens)


def _f16_check(x: np.ndarray, u: np.ndarray, center: int, step: float, max_error: float | None) -> tuple:
    """(largest |x - x̂|, number of elements over their bound) of dq symbols decoded to F16 (numba has no
    float16: checked in numpy). Bound: ``max_error`` exactly, else 1.5 steps plus F16 rounding (as
    ``bslcodec verify`` checks it)."""
    ui = u.astype(np.int64)
    q = center + dq.levels((ui >> 1) ^ -(ui & 1), ANS_LANE_SYMBOLS)
    xv = x.astype(np.float64)
    err = np.abs(_to_f16(q.astype(np.float32) * np.float32(step)).astype(np.float64) - xv)
    if max_error is not None:
        allowed = max_error
    else:
        rel, ab = quant.ROUNDING["F16"]
        allowed = dq.BOUND_FACTOR * step + rel * (2 * np.abs(xv) + err) + ab
    return (float(err.max()) if x.size else 0.0), int(np.count_nonzero(~(err <= allowed)))


SENSITIVITY_FLOOR = 1e-4  # relative to the median: a tensor that seems unused still keeps some precision


def check_sensitivity(lossy: dict, sensitivity: dict) -> dict:
    """name -> float sensitivity of every quantized tensor; EncodeError naming what is missing or bad."""
    if not isinstance(sensitivity, dict):
        raise EncodeError(f"sensitivity= must be a dict of tensor name -> number, got {type(sensitivity).__name__}")
    missing = sorted(n for n in lossy if n not in sensitivity)
    if missing:
        raise EncodeError(f"sensitivity= lacks {len(missing)} quantized tensor(s), e.g. {missing[:3]}")
    s = {}
    for n in lossy:
        v = sensitivity[n]
        if not finite_float(v) > 0:
            raise EncodeError(f"sensitivity[{n!r}] must be a positive finite number, got {v!r}")
        s[n] = float(v)
    return s


def apply_sensitivity(lossy: dict, sensitivity: dict) -> None:
    """Equal-slope allocation of steps across tensors from per-tensor sensitivities, for ``rel_step=``
    (``bits=`` and the default use the curves of ``allocation.py`` with the same weights).

    ``s_i`` is the model's output distortion per unit of per-element error variance spread over all of
    tensor i (what ``bslcodec.calibrate.sensitivity`` measures). With quantization noise step_i^2 / 12,
    minimising  sum_i n_i * (h_i - log2 step_i)  +  lambda * sum_i s_i * step_i^2 / 12  gives
    step_i proportional to sqrt(n_i / s_i): big, insensitive tensors get coarse steps. The units are scaled
    so that the size-weighted geometric mean of step_i / std_i is 1: ``rel_step=c`` keeps its average
    meaning and only redistributes the error.
    """
    if not isinstance(sensitivity, dict):
        raise EncodeError(f"sensitivity= must be a dict of tensor name -> number, got {type(sensitivity).__name__}")
    if not lossy:
        return
    s = check_sensitivity(lossy, sensitivity)
    live = [n for n, t in lossy.items() if t.std > 0]
    if not live:
        return
    floor = SENSITIVITY_FLOOR * float(np.median([s[n] for n in live]))
    raw = {n: 0.5 * (math.log(lossy[n].n) - math.log(max(s[n], floor))) for n in live}
    sizes = np.array([lossy[n].n for n in live], np.float64)
    log_ratio = np.array([raw[n] - math.log(lossy[n].std) for n in live])
    shift = float((sizes * log_ratio).sum() / sizes.sum())
    for n in live:
        lossy[n].unit = math.exp(min(raw[n] - shift, 709.0))  # values near the float64 limit: no overflow


def encode_lossless(arr: np.ndarray) -> tuple:
    """(codec, params, payload): the smallest of fexp (float dtypes), zstd and raw."""
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    if arr.size:
        best = ("raw", {}, None, arr.nbytes)
        if dtype_name(arr.dtype) in FLOAT_NAMES and fexp.min_payload(arr.size, arr.dtype.itemsize) < arr.nbytes:
            small = arr.size < fexp_small.SMALL_BELOW  # the same payload in two compiled calls
            params, payload = (fexp_small.encode if small else fexp.encode)(arr)
            if len(payload) < best[3]:
                best = ("fexp", params, payload, len(payload))
        params, payload = lossless.encode_zstd(arr)
        if len(payload) < best[3]:
            best = ("zstd", params, payload, len(payload))
        if best[2] is not None:
            return best[0], best[1], best[2].tobytes() if isinstance(best[2], np.ndarray) else best[2]
    return "raw", {}, arr.reshape(-1).view(np.uint8).tobytes()


# ---------------------------------------------------------------- decoding

def _to_f16(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # spec 4.3: overflow to +-inf per IEEE, not a RuntimeWarning
        return x.astype(np.float16)


def _decode_quantized_range(e: Entry, payload, where: str, g0: int, g1: int) -> np.ndarray:
    """Groups [g0, g1) of an ``eg`` or ``ans`` tensor, flat, in its dtype."""
    step, center, s = (_check_eg_params if e.codec == "eg" else _check_ans_params)(e, where)
    n = e.numel
    count = n if g1 is None else min(n, g1 * LANES * s) - g0 * LANES * s  # g1 None: to the end
    mode = {"F32": "F32", "F16": "F32", "BF16": "BF16", "F64": "F64"}[e.dtype]
    try:
        # the tables are checked first: they bound n by the payload's size, so `out` is never allocated
        # from a shape that the payload cannot hold
        if e.codec == "eg":
            tables = golomb.parse_tables(payload, n, s)
        else:
            parsed = rans.parse(payload, n, s)
        out = np.empty(count, {"F32": np.float32, "BF16": np.uint16, "F64": np.float64}[mode])
        if e.codec == "eg":
            golomb.decode_into(payload, n, s, center, step, out, mode, g0, g1, tables=tables)
        else:
            rans.decode_into(payload, n, s, center, step, out, mode, g0, g1, parsed=parsed,
                             dq=e.codec == "ans-dq")
    except FormatError as exc:
        raise FormatError(f"{where}: {exc}") from None
    if e.dtype == "F16":
        return _to_f16(out)
    return out.view(numpy_dtype(e.dtype)) if e.dtype == "BF16" else out


def _decode_fexp_range(e: Entry, payload, where: str, g0: int, g1: int) -> np.ndarray:
    s = _check_fexp_params(e, where)
    n, isz = e.numel, numpy_dtype(e.dtype).itemsize
    try:
        parsed = fexp.parse(payload, n, isz, s)  # checks sizes (>= 4 bits an element) before allocating
        out = np.empty(n if g1 is None else min(n, g1 * LANES * s) - g0 * LANES * s, fexp.UINTS[isz])
        fexp.decode_into(payload, n, isz, s, out, g0, g1, parsed=parsed)
    except FormatError as exc:
        raise FormatError(f"{where}: {exc}") from None
    return out.view(numpy_dtype(e.dtype))


def decode_flat(e: Entry, payload, where: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Elements [start, stop) of the tensor (flat, C order), decoding only the units that hold them."""
    n = e.numel
    stop = n if stop is None else stop
    if e.codec in ("raw", "zstd"):
        return lossless.decode_entry(e, payload, where, start, stop)
    if stop <= start:
        return np.empty(0, numpy_dtype(e.dtype))
    if start == 0 and stop == n:  # the whole tensor: every group (params checked once)
        return (_decode_fexp_range if e.codec == "fexp" else _decode_quantized_range)(e, payload, where, 0, None)
    unit = _unit(e, where)
    u0, u1 = start // unit, -(-stop // unit)
    decode_range = _decode_fexp_range if e.codec == "fexp" else _decode_quantized_range
    return decode_range(e, payload, where, u0, u1)[start - u0 * unit: stop - u0 * unit]


def decode(e: Entry, payload, where: str) -> np.ndarray:
    return decode_flat(e, payload, where).reshape(e.shape)
