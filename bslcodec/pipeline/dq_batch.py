"""Many small ans-dq tensors coded in one compiled call each (issue 19's per-tensor cost).

A small tensor's dq encode (``dq_small.quantize`` then ``codec.entropy_code``) is ~15 compiled calls with
Python between them: the first-pass histogram, its model search, the token bits and rate table, the trellis,
the final histogram and model, the ans encode, the table bits and the payload's bytes; ~45 us of Python a
4,096-element tensor, and the GIL handed over at each call where two threads code tensors side by side (so
``files/pool.py`` ran them on one, ``TINY_BYTES``). Here one call (``_code_range``, nogil) runs that whole
chain for a range of tensors, from the same compiled pieces with the same arguments (``dq_search``'s serial
kernels, ``ans_model``'s search, ``ans_encode``'s group encoders, ``rans_table``'s table writer), so the same
symbols, models and payload bytes; ``run`` splits the tensors into one range per thread, each releasing the
GIL once. tests/test_dq_batch.py compares the payloads with the one-tensor path. ``FAST = False``: none is
batched (``codec.encode_small`` leaves every tensor to ``LossyTensor.encode``).

Only what ``dq_small.quantize`` and ``ans_encode.encode`` would run in their one-call forms: fewer than
``BELOW`` elements (one group of 32 x 1,024 symbols, the serial kernels), one trellis pass, the default bound
(no ``max_error``: its step-shrinking retries stay with ``LossyTensor``).
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np

from ..codecs import dq_search, rans_table, rans_vec
from ..codecs import rans_model as rm
from ..codecs.rans_enc import _token_lut
from ..codecs.rans_venc import P_MIN
from ..container.dtypes import numpy_dtype
from ..container.limits import LANES
from ..parallel import SERIAL_BELOW
from . import ans_encode, ans_model, dq_rows, dq_small

FAST = True
ROWS = True  # the trellis by dq_rows.group (False: dq_search._quantize_serial, the same symbols)
LANE_SYMBOLS = 1024  # codec.ANS_LANE_SYMBOLS (spec 4.4's S of every ans-dq payload the encoder writes)
BELOW = min(SERIAL_BELOW, ans_model.SMALL, ans_encode.SMALL, LANES * LANE_SYMBOLS + 1)  # elements
# what a tensor's row of the outputs says (``lens``): its payload's bytes, or why there is none
BAD_LANES = -1  # some lane has no admissible path: stored exactly (as LossyTensor's verdict 1)
NOT_DONE = -2  # not coded here (no split fits): left to LossyTensor.encode
TOO_BIG = -3  # a payload of at least the tensor's own bytes (its room here): stored exactly (LossyTensor.encode)

_LUTS = None  # every split's ``rans_enc._token_lut``, one row a split (rm._SPLITS' order)


def _luts() -> np.ndarray:
    global _LUTS
    if _LUTS is None:
        _LUTS = np.ascontiguousarray(np.stack([_token_lut(s, m) for s, m in rm._SPLITS]))
    return _LUTS


@numba.njit(nogil=True, cache=True)
def _model(hist, count_log, tabs, q, qbest):
    """``ans_model.build_model``'s search of histogram ``hist``: (status, split, P, kq, table bits, K); the
    frequencies in ``qbest[:K]``."""
    tok, tstart, tnb, toff, split_s, split_m, log_q, log_gain, choices, top = tabs
    st, i, P, kq, tbits, _total, K = ans_model._search_ranges(hist, tok, tstart, tnb, toff, split_s, split_m,
                                                              count_log, log_q, log_gain, choices, top, 3, q, qbest)
    return st, i, P, kq, tbits, K


@numba.njit(nogil=True, cache=True)
def _payload(u, i, P, kq, tbits, K, freqs, tabs, luts, use_vec, out):
    """``rans_table.header_bytes`` + ``ans_encode.encode``'s lane count and words of ``u`` under the model
    (split ``i``, precision ``P``, frequencies ``freqs``), written to ``out``; its length, or ``TOO_BIG``
    where it would take all of ``out`` or more (nothing written), ``NOT_DONE`` where the table's bits are
    not the model's."""
    split_s, split_m = tabs[4], tabs[5]
    s, m = split_s[i], split_m[i]
    top_tok = K - 1  # rans_enc._token_bits of the last token: its raw bits
    max_nb = 0 if top_tok < (np.int64(1) << s) else s + ((top_tok - (np.int64(1) << s)) >> m) - m
    per_sym = 1 + np.int64(max_nb > 0) + np.int64(max_nb > 16)
    has_hi = max_nb > 16
    lut = luts[i]
    if use_vec and P >= P_MIN and not has_hi:
        w, words = ans_encode._encode_vec(u, LANE_SYMBOLS, P, s, m, freqs, lut, per_sym)
    else:
        w, words = ans_encode._encode_scalar(u, LANE_SYMBOLS, P, s, m, freqs, lut, per_sym, has_hi)
    nb = (tbits + 7) // 8
    head = 12 + nb
    pad = -head % 4
    total = head + pad + 4 + 2 * words.size
    if total >= out.size:
        return TOO_BIG
    out[0], out[1], out[2], out[3] = 0, P, s, m
    out[4], out[5], out[6], out[7] = K & 0xFF, (K >> 8) & 0xFF, kq, 0
    for b in range(4):
        out[8 + b] = (nb >> (8 * b)) & 0xFF
    out[12:head + pad] = 0
    n_bits = rans_table._write_table(freqs, np.int64(kq), out[12:head])
    if n_bits != tbits:  # (header_bytes asserts it)
        return NOT_DONE
    p = head + pad
    for b in range(4):
        out[p + b] = (w >> (8 * b)) & 0xFF
    p += 4
    for j in range(words.size):
        out[p + 2 * j] = words[j] & 0xFF
        out[p + 2 * j + 1] = words[j] >> 8
    return total


@numba.njit(nogil=True, cache=True)
def _code_range(t0, t1, xs, off, steps, centers, bounds, modes, rels, abss, f16s, lam, use_vec, rows, count_logs,
                clog_off, tabs, luts, us, uoff, stats, pay, pay_off, lens):
    """Tensors ``t0 .. t1`` (tensor t: ``xs[off[t]:off[t + 1]]``) through what ``dq_small.quantize`` and
    ``entropy_code`` do: ``stats[t]`` = (largest |x - x̂|, lanes without a path), its payload at
    ``pay[pay_off[t]:pay_off[t + 1]]`` and its length in ``lens[t]`` (or ``BAD_LANES``, ``NOT_DONE``,
    ``TOO_BIG``); its symbols at ``us[uoff[t]:]`` where ``uoff[t] >= 0`` (the F16 tensors, which the caller
    checks), else in a scratch. ``rows``: the trellis by ``dq_rows.group`` (else
    ``dq_search._quantize_serial``)."""
    q = np.empty(rm.FINE_K, np.int64)
    qbest = np.empty(rm.FINE_K, np.int64)
    split_s, split_m, log_q = tabs[4], tabs[5], tabs[6]
    wk = np.zeros((24, LANES))  # dq_rows.group's scratch (dq_rows.scratch)
    pk = np.zeros((LANE_SYMBOLS, LANES), np.uint16)
    dist, kk, cur = np.empty((5, LANES)), np.empty((2, LANES), np.int64), np.empty(LANES, np.int64)
    most = 0
    for t in range(t0, t1):
        most = max(most, off[t + 1] - off[t])
    ubuf = np.empty(most, np.uint32)
    for t in range(t0, t1):
        a, b = off[t], off[t + 1]
        x = xs[a:b]
        u = us[uoff[t]:uoff[t] + b - a] if uoff[t] >= 0 else ubuf[:b - a]
        step, center = steps[t], centers[t]
        count_log = count_logs[clog_off[t]:clog_off[t] + (b - a) + 1]
        # the first pass's model: of plain Q0 rounding (dq_search.quantize, one block)
        hist = dq_search._q0_hist_serial(x, step, center)[0]
        st, i, P, kq, tbits, K = _model(hist, count_log, tabs, q, qbest)
        if st:
            lens[t] = NOT_DONE
            continue
        tokbits = dq_small.token_bits(qbest[:K], P, log_q, dq_search._NO_TOKEN_BITS)
        rate = dq_search._rate_table(lam, tokbits, split_s[i], split_m[i], dq_search._RATE_TABLE)
        if rows:
            me, bad = dq_rows.group(x, center, modes[t], np.float32(step), step, lam, bounds[t], rels[t], abss[t],
                                    f16s[t], rate, tokbits, split_s[i], split_m[i], u, wk, pk, dist, kk, cur)
        else:
            got = dq_search._quantize_serial(x, LANE_SYMBOLS, center, modes[t], np.float32(step), step, lam,
                                             bounds[t], rels[t], abss[t], f16s[t], rate, tokbits, split_s[i],
                                             split_m[i], u)
            me, bad = got[0, 0], got[0, 1]
        stats[t, 0], stats[t, 1] = me, bad
        if bad > 0:
            lens[t] = BAD_LANES
            continue
        # the final model: of the symbols the trellis chose (entropy_code's build_model)
        st, i, P, kq, tbits, K = _model(ans_model._ranges_hist(u), count_log, tabs, q, qbest)
        if st:
            lens[t] = NOT_DONE
            continue
        got_len = _payload(u, i, P, kq, tbits, K, qbest[:K].copy(), tabs, luts, use_vec,
                           pay[pay_off[t]:pay_off[t + 1]])
        lens[t] = got_len


def _tabs() -> tuple:
    return (rm._TOK, ans_model._TSTART, ans_model._TNB, ans_model._TOFF, rm._SPLITS_S, rm._SPLITS_M,
            ans_model._LOG_Q, ans_model._LOG_GAIN, ans_model._CHOICES, np.int64(ans_model._TOP))


class Batch:
    """The outputs of ``run``: per tensor ``stats[t]`` (largest error, lanes without a path), ``lens[t]``
    (payload bytes, ``BAD_LANES``, ``NOT_DONE`` or ``TOO_BIG``), ``payload(t)``, ``symbols(t)`` (F16
    tensors only)."""

    __slots__ = ("lens", "off", "pay", "pay_off", "stats", "uoff", "us")

    def payload(self, t: int) -> bytes:
        a = self.pay_off[t]
        return self.pay[a:a + self.lens[t]].tobytes()

    def symbols(self, t: int) -> np.ndarray:
        a = self.uoff[t]
        return self.us[a:a + self.off[t + 1] - self.off[t]]


def run(xs: list, steps: list, centers: list, dtypes: list, lam: float, threads: int = 1) -> Batch:
    """Code the flat arrays ``xs`` (as ``LossyTensor.kx`` gives them, all of one numpy dtype, each of
    fewer than ``BELOW`` elements) at ``steps`` and ``centers``, spec dtypes ``dtypes``, with the default
    bound (1.5 steps plus the dtype's rounding); ``threads`` ranges of tensors at once."""
    nt = len(xs)
    sizes = np.array([x.size for x in xs], np.int64)
    off = np.zeros(nt + 1, np.int64)
    np.cumsum(sizes, out=off[1:])
    cat = np.concatenate(xs) if nt else np.zeros(0, np.float32)
    steps_a = np.array(steps, np.float64)
    centers_a = np.array(centers, np.int64)
    bounds = np.array([dq_search.BOUND_FACTOR * s for s in steps], np.float64)  # (dq_search.quantize's)
    modes = np.array([dq_search.MODE_OF_DTYPE[d] for d in dtypes], np.int64)
    rels = np.array([dq_search.ROUNDING[d][0] for d in dtypes], np.float64)
    abss = np.array([dq_search.ROUNDING[d][1] for d in dtypes], np.float64)
    f16s = np.array([d == "F16" for d in dtypes], np.bool_)
    # each size's log2(c / n) table (ans_model._count_log: numpy's log2), once
    logs, where = [], {}
    pos = 0
    for n in sizes.tolist():
        if n not in where:
            where[n] = pos
            logs.append(ans_model._count_log(n))
            pos += n + 1
    count_logs = np.concatenate(logs) if logs else np.zeros(1)
    clog_off = np.array([where[n] for n in sizes.tolist()], np.int64)
    # a tensor's payload has room for its own bytes less one: a longer one is not written (TOO_BIG)
    pay_off = np.zeros(nt + 1, np.int64)
    np.cumsum(sizes * np.array([numpy_dtype(d).itemsize for d in dtypes], np.int64), out=pay_off[1:])
    # the F16 tensors' symbols are kept (the caller checks them decoded to F16), the others' are not
    uoff = np.where(f16s, np.cumsum(np.where(f16s, sizes, 0)) - sizes, -1).astype(np.int64)
    out = Batch()
    out.off, out.uoff = off, uoff
    out.us = np.empty(int(sizes[f16s].sum()), np.uint32)
    out.stats = np.zeros((nt, 2), np.float64)
    out.pay, out.pay_off = np.empty(int(pay_off[-1]), np.uint8), pay_off
    out.lens = np.full(nt, NOT_DONE, np.int64)
    args = (cat, off, steps_a, centers_a, bounds, modes, rels, abss, f16s, float(lam), bool(rans_vec.SIMD), ROWS,
            count_logs, clog_off, _tabs(), _luts(), out.us, uoff, out.stats, out.pay, pay_off, out.lens)
    parts = max(1, min(threads, nt))
    if parts == 1:
        _code_range(0, nt, *args)
        return out
    # ranges of about equal elements, one a thread (each call holds no GIL until it returns)
    cuts = np.searchsorted(off, np.arange(1, parts) * off[-1] / parts).tolist()
    bounds_t = [0] + [min(max(c, 0), nt) for c in cuts] + [nt]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(parts - 1) as ex:
        futs = [ex.submit(_code_range, bounds_t[p], bounds_t[p + 1], *args) for p in range(1, parts)]
        _code_range(bounds_t[0], bounds_t[1], *args)
        for f in futs:
            f.result()
    return out
