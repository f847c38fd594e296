"""The ``ans`` encoder (spec 4.4), bit-exact with ``rans_ref``: 32 rANS lanes per group sharing one
stream of 16-bit words; groups encoded in parallel into scratch regions, then gathered."""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import functools

import numba
import numpy as np
from numba import prange

from ..container.limits import LANES
from ..parallel import launch, serial_twin
from . import rans_vec

# inlined into the cached decoder; bslcodec/jitcache.py keys numba's cache on dq.py too
from .rans_model import (
    L,
    Model,
    _token_nb,
    n_groups,
)
from .rans_table import (
    header_bytes,
)
from .rans_venc import P_MIN, venc_run

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
        _encode_group(np.int64(g), u, lane_symbols, P, s, m, tpk, rcp, lut, scratch, region_end, first_word, has_hi)


@numba.njit(inline="always", cache=True)
def _scalar_step(x, u, base, lt, s, m, tpk, rcp, lut, scratch, q, P, toks, raws, nbs, xs):
    """One step of lanes < ``lt`` as ``_encode_group`` codes it where no token has raw bits above 16 (the
    fast path's values, in its general loops' order); returns the new ``q``."""
    one = np.uint64(1)
    for j in range(lt):
        uv = np.int64(u[base + np.uint64(j)])
        if uv < lut.size:
            pk = np.int64(lut[uv])
            tok = pk & 0xFFFF
            nb = pk >> 16
            r = uv & ((np.int64(1) << nb) - 1)
        else:
            tok, nb, r = _token_nb(uv, s, m)
        toks[j] = np.uint64(tok)
        nbs[j] = nb
        raws[j] = r
    for jj in range(lt):  # phase 2
        j = np.uint64(lt - 1 - jj)
        xv = x[j]
        n1 = nbs[j]
        emit = (xv >> (32 - n1)) != 0
        scratch[q - one] = np.uint16(xv & 0xFFFF)
        q -= np.uint64(emit)
        x[j] = ((xv >> (16 * emit)) << n1) | raws[j]
    for jj in range(lt):  # phase 1
        j = np.uint64(lt - 1 - jj)
        xv = x[j]
        emit = xv >= (np.int64(tpk[toks[j]] & np.uint64(0xFFFF)) << (32 - P))
        scratch[q - one] = np.uint16(xv & 0xFFFF)
        q -= np.uint64(emit)
        xs[j] = xv >> (16 * emit)
    for j in range(lt):
        tok = toks[j]
        x[j] = _coded_state(xs[j], tpk[tok], rcp[tok], P)
    return q


@numba.njit(nogil=True, cache=True)
def _encode_group_v(g, u, lane_symbols, P, s, m, tpk, rcp, lut, tp32, scratch, region_end, first_word):
    """``_encode_group`` of a table without raw bits above 16, its full steps run as vector code
    (``rans_venc.venc_run``) and the others (the partial last step, a step with a symbol of 2^12 or more) by
    ``_scalar_step``: the same words. The lane states live in a uint32 array between steps."""
    n = u.size
    gsize = LANES * lane_symbols
    start = g * gsize
    ng = min(n, start + gsize) - start
    A = min(LANES, ng)
    T = (ng + LANES - 1) // LANES
    x = np.empty(LANES, np.int64)
    x32 = np.full(LANES, L, np.uint32)
    toks = np.empty(LANES, np.uint64)
    raws = np.empty(LANES, np.int64)
    nbs = np.empty(LANES, np.int64)
    xs = np.empty(LANES, np.int64)
    q = np.uint64(region_end[g])
    t = T - 1
    while t >= 0:
        if ng - LANES * t >= LANES:
            k, q = venc_run(x32, u, np.uint64(start + LANES * t), np.uint64(t + 1), q, scratch, lut, tp32,
                            np.uint64(P))
            t -= np.int64(k)
            if t < 0:
                break
        for j in range(LANES):
            x[j] = np.int64(x32[j])
        q = _scalar_step(x, u, np.uint64(start + LANES * t), min(LANES, ng - LANES * t), s, m, tpk, rcp, lut,
                         scratch, q, P, toks, raws, nbs, xs)
        for j in range(LANES):
            x32[j] = np.uint32(x[j])
        t -= 1
    q -= np.uint64(2 * A)
    for j in range(A):
        scratch[q + np.uint64(2 * j)] = np.uint16(x32[j] & 0xFFFF)
        scratch[q + np.uint64(2 * j + 1)] = np.uint16(x32[j] >> 16)
    first_word[g] = q


@numba.njit(parallel=True, nogil=True, cache=True)
def _encode_groups_vec(u, lane_symbols, P, s, m, tpk, rcp, lut, scratch, region_end, first_word, has_hi):
    """``_encode_groups`` with the vector step (``_encode_group_v``), for a table that allows it (no raw bits
    above 16, P >= ``rans_venc.P_MIN``: ``_encode_vec`` runs ``_encode_groups`` for any other); symbols uint16
    or uint32. A kernel of its own, so that the scalar one never depends on the vector code compiling; nor
    does this one compile the scalar ``_encode_group`` in (a first run compiled it, twice, for nothing)."""
    if has_hi or P < P_MIN:
        raise ValueError("_encode_groups_vec: a table with raw bits above 16 or P below P_MIN")
    tp32 = np.empty(tpk.size, np.uint32)  # f | c << 16 (both below 2^16)
    for k in range(tpk.size):
        tp32[k] = np.uint32(tpk[k])
    for g in prange(region_end.size):
        gi = np.int64(g)  # (int64 as in the typing before the parfor rewrite: one compiled signature, not two)
        _encode_group_v(gi, u, lane_symbols, P, s, m, tpk, rcp, lut, tp32, scratch, region_end, first_word)


@numba.njit(parallel=True, nogil=True, cache=True)
def _gather(scratch, first_word, region_end, out_words, out_start):
    for g in prange(first_word.size):
        w = region_end[g] - first_word[g]
        o = out_start[g]
        out_words[o:o + w] = scratch[first_word[g]:region_end[g]]
        if w % 2:
            out_words[o + w] = 0


_LUT_SYMBOLS = 1 << 12  # 16 KiB: stays in L1


@functools.lru_cache(maxsize=None)  # (s, m): 55 splits at most
def _token_lut(s: int, m: int) -> np.ndarray:
    """token | raw bit count << 16 of the symbols below 2^12 (uint32; shared: not to be written), for the
    encoder; built once per split (it was ~20 us of a 4,096-symbol tensor's ~110 us encode)."""
    v = np.arange(_LUT_SYMBOLS, dtype=np.int64)
    e = np.zeros_like(v)
    big = v >= (1 << s)
    e[big] = np.frexp(v[big].astype(np.float64))[1] - 1  # floor(log2), exact for integers < 2^53
    nb = np.where(big, e - m, 0)
    tok = np.where(big, (1 << s) + ((e - s) << m) + ((v >> nb) - (1 << m)), v)
    return (tok | (nb << 16)).astype(np.uint32)


_SCRATCH_WORDS = 1 << 22  # 8 MiB of scratch regions: the groups encoded at once (each chunk's words then gathered)


def encode(u: np.ndarray, lane_symbols: int, model: Model) -> bytes:
    """The ``ans`` payload of symbols ``u`` (every symbol's token must have a frequency > 0).

    The groups are encoded a chunk at a time into one scratch buffer of at most ~``_SCRATCH_WORDS`` words
    (each group's region has room for its worst case, several times its words): a scratch for the whole
    tensor was 2-3x its symbols' bytes of fresh memory, which the kernel zeroed page by page (huge pages:
    all of it) at ~10 % of a whole encode's time."""
    u = np.ascontiguousarray(u)
    head = header_bytes(model)
    freqs = model.freqs.astype(np.int64)
    cum = np.concatenate(([0], np.cumsum(freqs)))[:-1].astype(np.int64)
    G = n_groups(u.size, lane_symbols)
    gsize = LANES * lane_symbols
    # one word per coding step that may emit: the token, and raw-bit chunks when the table has them
    max_nb = _token_bits(model.freqs.size - 1, model.s, model.m)
    per_sym = 1 + (max_nb > 0) + (max_nb > 16)
    # floor(x / f) as floor(x * fl(1/f)): for x < 2^32, f <= 2^14 the product is within 2^-20 of x/f,
    # and x/f is either an integer or at least 1/f >= 2^-14 away from one, so the result is exact or,
    # when x/f is an integer, possibly one too small (the remainder check fixes that).
    rcp = 1.0 / np.maximum(freqs, 1).astype(np.float64)
    tpk = (freqs | (cum << 16)).astype(np.uint64)
    lut = _token_lut(model.s, model.m)
    per_chunk = max(1, _SCRATCH_WORDS // (2 * LANES + per_sym * gsize))
    scratch = None
    W = np.zeros(G, np.int64)
    parts = []
    for c0 in range(0, G, per_chunk):
        c1 = min(G, c0 + per_chunk)
        uc = u[c0 * gsize:min(u.size, c1 * gsize)]
        ng = np.full(c1 - c0, gsize, np.int64)
        ng[-1] = uc.size - (c1 - c0 - 1) * gsize
        region_end = np.cumsum(2 * np.minimum(ng, LANES) + per_sym * ng)
        if scratch is None:  # the first chunk is the largest (only the tensor's last group is partial)
            scratch = np.empty(int(region_end[-1]), np.uint16)
        first_word = np.zeros(c1 - c0, np.int64)
        args = (uc, lane_symbols, model.prob_bits, model.s, model.m, tpk, rcp, lut, scratch, region_end,
                first_word, max_nb > 16)
        if not _encode_vec(args, uc):
            launch(_encode_groups, _SERIAL['_encode_groups'], *args, work=uc.size)
        Wc = region_end - first_word
        W[c0:c1] = Wc
        out_start = np.zeros(c1 - c0 + 1, np.int64)
        np.cumsum(Wc + (Wc % 2), out=out_start[1:])
        words = np.empty(int(out_start[-1]), "<u2")
        launch(_gather, _SERIAL['_gather'], scratch, first_word, region_end, words, out_start[:-1], work=uc.size)
        parts.append(words)
    return b"".join([head, W.astype("<u4").tobytes()] + parts)


def _encode_vec(args, u) -> bool:
    """Whether the groups were encoded by the vector kernel (``rans_vec.SIMD``, a table it takes, uint16 or
    uint32 symbols); if it fails to compile, the vector code is turned off (``rans_vec.disable``)."""
    if not (rans_vec.SIMD and u.dtype in (np.uint16, np.uint32) and args[2] >= P_MIN and not args[-1]):
        return False
    return rans_vec.launch_vector(_encode_groups_vec, _SERIAL['_encode_groups_vec'], *args, work=u.size)


# serial twins of the parallel kernels, for parallel.launch (forked children under OpenMP)
_SERIAL = {k.py_func.__name__: serial_twin(k) for k in (_encode_groups, _encode_groups_vec, _gather)}
