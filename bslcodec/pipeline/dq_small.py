"""``dq_search.quantize`` of a small tensor with less around its kernels (issue 19).

Below ``parallel.SERIAL_BELOW`` elements ``dq_search.quantize`` runs the serial twins of its kernels anyway;
here they are called directly (no ``launch``), the first-pass histogram's one block taken as it is (its
``.sum(axis=0)`` of one row), the model's token bits read from ``ans_model``'s table of numpy's ``log2`` in
one compiled loop (``dq_search.token_bits`` took ~8 us of numpy calls a tensor), the lanes' statistics of
the one group read directly. The same kernels with the same arguments, so the same symbols, error and bad
lanes; tests/test_ans_model.py compares them with ``dq_search.quantize``. ``FAST = False``: that one.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np

from ..codecs import dq_search
from ..container.limits import LANES
from ..parallel import SERIAL_BELOW
from . import ans_model

FAST = True


@numba.njit(nogil=True, cache=True)
def token_bits(freqs, P, log_q, none):
    """``dq_search.token_bits`` of a model with frequencies ``freqs`` at precision P: P - log2(f) where
    f > 0 (``log_q[f]``: numpy's log2 of f), else ``none``."""
    out = np.empty(freqs.size)
    for k in range(freqs.size):
        f = freqs[k]
        out[k] = np.float64(P) - log_q[f] if f > 0 else none
    return out


def quantize(x: np.ndarray, step: float, center: int, dtype: str, lane_symbols: int, bound: float | None = None,
             strict: bool = False) -> dq_search.DQResult:
    """``dq_search.quantize(x, step, center, dtype, lane_symbols, bound=bound, strict=strict,
    build_model=ans_model.build_model)``."""
    n = x.size
    if not (FAST and 0 < n < min(SERIAL_BELOW, LANES * lane_symbols + 1, ans_model.SMALL) and dq_search.PASSES == 1
            and not (dtype == "BF16" and x.dtype == np.uint16 and n >= dq_search.TABLE_MIN)
            and abs(step) < 3e38):
        return dq_search.quantize(x, step, center, dtype, lane_symbols, bound=bound, strict=strict,
                                  build_model=ans_model.build_model)
    c = dq_search.DEFAULT_C
    mode = dq_search.MODE_OF_DTYPE[dtype]
    bound = dq_search.BOUND_FACTOR * step if bound is None else bound
    rel, ab = (0.0, 0.0) if strict else dq_search.ROUNDING[dtype]
    step32 = np.float32(step)  # (|step| < 3e38: no overflow to warn of)
    hist = dq_search._q0_hist_serial(x, float(step), np.int64(center))  # one block: n < _Q0_BLOCK
    model, _ = ans_model.build_model(None, hist=hist[0])
    tokbits = token_bits(model.freqs, model.prob_bits, ans_model._LOG_Q, dq_search._NO_TOKEN_BITS)
    rate = dq_search._rate_table(float(c), tokbits, model.s, model.m, dq_search._RATE_TABLE)
    u = np.empty(n, np.uint32)
    st = dq_search._quantize_serial(x, lane_symbols, np.int64(center), mode, step32, float(step), float(c),
                                    float(bound), rel, ab, dtype == "F16", rate, tokbits, model.s, model.m, u)
    r = dq_search.DQResult()
    r.n_bad = int(st[0, 1])  # one group (n <= LANES x lane_symbols)
    r.max_error = float(st[0, 0])
    r.u = u
    return r
