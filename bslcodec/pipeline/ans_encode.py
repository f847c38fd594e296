"""``rans.encode`` of a small tensor's symbols in one compiled call (issue 19).

``rans_enc.encode`` spends ~15 numpy calls and two launches on a tensor (its frequencies' cumulative sums,
reciprocals and packed table, the group regions, the scratch, the gather): ~25 us of Python around a
~13 us kernel for 4,096 symbols. Below ``SMALL`` symbols the tensor is one group (``LANES`` x 1,024 symbols
a group), and here all of that is one call built from ``rans_enc``'s own compiled group encoders
(``_encode_group_v`` where ``rans_enc._encode_vec`` would take the vector one, else ``_encode_group``),
with the same integer and float operations, so the same words; the header is ``rans_enc``'s. The same
bytes as ``rans.encode``: tests/test_ans_model.py compares them. ``FAST = False``: ``rans.encode``. The
kernels release the GIL (``nogil``), as ``rans_enc``'s do: the encode pool codes tensors on several threads.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np

from ..codecs import rans, rans_enc, rans_vec
from ..container.limits import LANES

SMALL = 1 << 15  # symbols: at most one group at ``lane_symbols`` = 1024
FAST = True


@numba.njit(inline="always")
def _tables(freqs):
    """``rans_enc.encode``'s ``tpk`` (frequency | cumulative << 16) and ``rcp`` (1 / max(f, 1))."""
    K = freqs.size
    tpk = np.empty(K, np.uint64)
    rcp = np.empty(K)
    c = np.int64(0)
    for k in range(K):
        f = np.int64(freqs[k])
        tpk[k] = np.uint64(f | (c << 16))
        rcp[k] = 1.0 / np.float64(max(f, 1))
        c += f
    return tpk, rcp


@numba.njit(inline="always")
def _gather(scratch, region_end, first_word):
    w = region_end[0] - first_word[0]
    words = np.empty(w + w % 2, np.uint16)
    words[:w] = scratch[first_word[0]:region_end[0]]
    if w % 2:
        words[w] = 0
    return w, words


@numba.njit(nogil=True, cache=True)
def _encode_vec(u, lane_symbols, P, s, m, freqs, lut, per_sym):
    """One group by ``_encode_group_v`` (what ``_encode_groups_vec`` runs): (its words, words padded even)."""
    tpk, rcp = _tables(freqs)
    ng = u.size
    region_end = np.array([2 * min(ng, LANES) + per_sym * ng], np.int64)
    scratch = np.empty(region_end[0], np.uint16)
    first_word = np.zeros(1, np.int64)
    tp32 = np.empty(tpk.size, np.uint32)
    for k in range(tpk.size):
        tp32[k] = np.uint32(tpk[k])
    rans_enc._encode_group_v(np.int64(0), u, lane_symbols, P, s, m, tpk, rcp, lut, tp32, scratch, region_end,
                             first_word)
    return _gather(scratch, region_end, first_word)


@numba.njit(nogil=True, cache=True)
def _encode_scalar(u, lane_symbols, P, s, m, freqs, lut, per_sym, has_hi):
    """One group by ``_encode_group`` (what ``_encode_groups`` runs)."""
    tpk, rcp = _tables(freqs)
    ng = u.size
    region_end = np.array([2 * min(ng, LANES) + per_sym * ng], np.int64)
    scratch = np.empty(region_end[0], np.uint16)
    first_word = np.zeros(1, np.int64)
    rans_enc._encode_group(np.int64(0), u, lane_symbols, P, s, m, tpk, rcp, lut, scratch, region_end,
                           first_word, has_hi)
    return _gather(scratch, region_end, first_word)


def encode(u: np.ndarray, lane_symbols: int, model) -> bytes:
    """``rans.encode(u, lane_symbols, model)``: the same bytes."""
    if not (FAST and 0 < u.size < SMALL and LANES * lane_symbols >= SMALL and u.dtype in (np.uint16, np.uint32)):
        return rans.encode(u, lane_symbols, model)
    u = np.ascontiguousarray(u)
    head = rans_enc.header_bytes(model)
    freqs = np.ascontiguousarray(model.freqs, np.int64)
    max_nb = rans_enc._token_bits(model.freqs.size - 1, model.s, model.m)
    per_sym = 1 + (max_nb > 0) + (max_nb > 16)
    has_hi = max_nb > 16
    lut = rans_enc._token_lut(model.s, model.m)
    got = None
    if rans_vec.SIMD and model.prob_bits >= rans_enc.P_MIN and not has_hi:
        try:
            got = _encode_vec(u, lane_symbols, model.prob_bits, model.s, model.m, freqs, lut, per_sym)
        except (numba.core.errors.NumbaError, RuntimeError):  # the vector code did not compile: rans.encode's
            return rans.encode(u, lane_symbols, model)       # own fallback (it turns the vector code off)
    if got is None:
        got = _encode_scalar(u, lane_symbols, model.prob_bits, model.s, model.m, freqs, lut, per_sym, has_hi)
    w, words = got
    return b"".join([head, np.array([w], "<u4").tobytes(), words.tobytes()])
