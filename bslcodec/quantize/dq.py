"""Dependent (trellis-coded) quantization for the ``ans-dq`` codec (spec 4.6).

Two scalar quantizers share one step Δ: Q0 has the even multiples of Δ, Q1 the odd multiples and zero.
An 8-state machine, driven by the parity of each transmitted index ``k``, picks the quantizer of the next
element: NNR's 8-state trellis-coded quantization, the one NNCodec's ``use_dq`` runs (its deepCABAC
``Trellis8States``; VVC's 4-state machine saves ~0.017 bits/weight less at equal MSE). The chain runs along each
lane of a group (elements ``g·32S + j + 32t``, increasing ``t``) and starts in state 0, so the 32 lanes of
every group still decode independently and side by side on CPU and GPU.

The decoded level of index ``k`` in state ``σ`` is ``L = 2k − (σ & 1)·sgn(k)``, then ``q = center + L``
and ``x̂ = q·Δ`` exactly as spec 4.3. The encoder picks the indices of each lane with a Viterbi search
minimising ``(x − x̂)²/Δ² + c·bits`` over the 8 states, bits from the ans model of the previous pass.
Each element's choice is restricted to ``|x − x̂| <= 1.5 Δ`` (plus the output dtype's rounding, or
exactly ``max_error`` when the user gave one). (Within Δ there is one admissible level per quantizer and
the trellis has nothing to choose; 1.5 Δ gains as much as 2 Δ.) The mean squared error is about 0.25 Δ²,
plain rounding's at a step of 1.74 Δ, and at equal mean squared error DQ needs ~0.16-0.18 bits/weight less
than plain rounding with the same entropy coder (``results/dq.md``).
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import math

import numba
import numpy as np

from ..container.limits import LANES

NEXT_STATE = ((0, 2), (7, 5), (1, 3), (6, 4), (2, 0), (5, 7), (3, 1), (4, 6))  # [state][parity of k]
N_STATES = len(NEXT_STATE)
# NEXT_STATE packed three bits an entry at bit 3·(2σ + parity) (48 bits): what the decoders use
NEXT_PACKED = sum(v << (3 * (2 * s + p)) for s in range(N_STATES) for p in range(2) for v in (NEXT_STATE[s][p],))
BOUND_FACTOR = 1.5  # each element within 1.5 Δ: as small as 2 Δ in R-D, and still lets the trellis choose
STEP_FACTOR = 0.575  # Δ = STEP_FACTOR · (plain step): MSE ≈ 0.25 Δ² ≈ step²/12, plain rounding's


@numba.njit(inline="always")
def level(k, state):
    """The level (relative to ``center``) of index ``k`` in ``state``: 2k in Q0 (even states), 2k − sgn(k)
    in Q1 (odd states)."""
    sg = (k > 0) - (k < 0)
    return 2 * k - (state & 1) * sg


@numba.njit(inline="always")
def next_state(state, k):
    return (np.int64(NEXT_PACKED) >> (3 * (2 * state + (k & 1)))) & 7


@numba.njit(inline="always")
def f16_round(y):
    """``y`` (a binary32 value, as float64) rounded to the nearest binary16, ties to even, ±inf beyond
    its range: numpy's ``astype(float16)``, which numba lacks."""
    a = abs(y)
    if a >= 65520.0:  # half-way to 2^16 and beyond: rounds to infinity
        return math.copysign(math.inf, y)
    if a < 2.0**-14:  # subnormal: multiples of 2^-24
        r = np.rint(a * 2.0**24) * 2.0**-24
    else:
        m, e = math.frexp(a)  # a = m·2^e, 0.5 <= m < 1: 11 significant bits are multiples of 2^(e-11)
        r = np.rint(a * 2.0 ** (11 - e)) * 2.0 ** (e - 11)
    return math.copysign(r, y)


def levels_ref(d: np.ndarray, n: int, lane_symbols: int) -> np.ndarray:
    """Reference (plain numpy, slow) of the decoders: indices ``d`` (int64, element order) to levels."""
    d = np.asarray(d, np.int64)
    out = np.empty(n, np.int64)
    gsize = LANES * lane_symbols
    for start in range(0, n, gsize):
        ng = min(n, start + gsize) - start
        for j in range(min(LANES, ng)):
            state = 0
            for e in range(start + j, start + ng, LANES):
                k = int(d[e])
                out[e] = 2 * k - (state & 1) * ((k > 0) - (k < 0))  # odd states: Q1
                state = NEXT_STATE[state][k & 1]
    return out


_levels = numba.njit(cache=True)(levels_ref)


def levels(d: np.ndarray, lane_symbols: int) -> np.ndarray:
    """``levels_ref`` compiled (the same code): indices ``d`` of a whole tensor to levels, for the writer's F16
    check, tests and benchmarks."""
    d = np.ascontiguousarray(d, np.int64)
    return _levels(d, d.size, lane_symbols)
