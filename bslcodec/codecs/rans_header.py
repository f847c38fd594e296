"""Reading an ``ans`` payload's model header and table (spec 4.4) and building the decoders' slot tables, in
numpy and Python only: what a decoder on any device needs before its kernels run, importable without numba (a
GPU-only process, e.g. a serving replica, never imports it: ~0.3 s of a fresh process, results/serve.md).

``rans_table`` registers its compiled forms in :data:`KERNELS`; they are used once numba has them loaded
(``jitcache.loaded``), the Python twins until then (tested equal, ``tests/test_cold_twins.py``).
:mod:`bslcodec.codecs.rans` is the face importers use."""

import struct

import numpy as np

from ..container.errors import FormatError
from ..container.limits import LANES
from ..jitcache import ready
from .golomb_header import n_groups  # the same 32-lane groups as eg (spec 4.4)
from .rans_ref import MAX_MSB, MAX_PROB_BITS, MAX_SPLIT, MAX_TABLE_ZEROS, k_max

#: Compiled forms of this module's twins, set by ``rans_table`` at its import: "parse_table", "fill_gpu_table"
KERNELS: dict = {}


def _align4(x: int) -> int:
    return x + (-x % 4)


def min_length(header: int, n_elems: int, lane_symbols: int) -> int:
    """Smallest payload that can describe ``n_elems`` elements: uint32 W per group, 4 bytes per lane state.
    So a reader allocates at most 32·S·itemsize / 132 bytes of output per payload byte (S=1024, F32: ~1000)."""
    G = n_groups(n_elems, lane_symbols)
    if G == 0:
        return header
    lanes = LANES * (G - 1) + min(LANES, n_elems - (G - 1) * LANES * lane_symbols)
    return header + 4 * G + 4 * lanes


def _parse_table_np(tb: bytes, K: int, kq: int, M: int, freqs: np.ndarray) -> tuple:
    """``rans_table._parse_table`` in Python (the table as one integer, a code word a few operations): the same results and
    error codes; what a process uses before numba has loaded the kernel (``jitcache.loaded``)."""
    T, nbits, pos, i, run = int.from_bytes(tb, "little"), 8 * len(tb), 0, 0, False
    while i < K:
        k = 0 if run else kq
        x = T >> pos
        z = (x & -x).bit_length() - 1 if x else nbits - pos  # leading zeros before the code word's 1 bit
        if z > MAX_TABLE_ZEROS:
            return pos + MAX_TABLE_ZEROS + 1, 2
        if not x:
            return nbits, 1
        pos += z + 1
        n = z + k
        if pos + n > nbits:
            return pos, 1
        v = (1 << n) + ((T >> pos) & ((1 << n) - 1)) - (1 << k)
        pos += n
        if run:
            if i + v + 1 > K:
                return pos, 4
            i += v + 1
            run = False
        elif v > 0:
            if v > M:
                return pos, 3
            freqs[i] = v
            i += 1
        else:
            run = True
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
    fast = ready(KERNELS, "parse_table")
    if fast is not None:
        pos, err = fast(buf[12:12 + B], K, kq, 1 << P, freqs)
    else:
        pos, err = _parse_table_np(bytes(buf[12:12 + B]), K, kq, 1 << P, freqs)
    if err:
        raise FormatError(f"ans table: {_TABLE_ERRORS[err]}")
    if B != (pos + 7) // 8:
        raise FormatError(f"ans table bit string is {B} bytes, its code words use {(pos + 7) // 8}")
    if int(freqs.sum()) != 1 << P:
        raise FormatError(f"ans table frequencies sum to {int(freqs.sum())}, not M = {1 << P}")
    return P, s, m, freqs, _align4(12 + B)


def gpu_table(P: int, s: int, m: int, freqs: np.ndarray) -> np.ndarray:
    """The default GPU kernel's slot table (int64, 2^P entries), see ``rans_table._fill_gpu_table``."""
    freqs = np.asarray(freqs, np.int64)
    fast = ready(KERNELS, "fill_gpu_table")
    if fast is None:
        return _gpu_table_np(P, s, m, freqs)
    out = np.empty(1 << P, np.int64)
    fast(P, s, m, freqs, out)
    return out


def _token_split(s: int, m: int, K: int) -> tuple:
    """(raw bits, symbol base) of tokens 0..K-1 (spec 4.4's token split; ``rans_table._nb_base`` per token)."""
    tok = np.arange(K, dtype=np.int64)
    i = tok - (1 << s)
    small = tok < (1 << s)
    nb = np.where(small, 0, s + (i >> m) - m)
    base = np.where(small, tok, ((1 << m) + (i & ((1 << m) - 1))) << np.maximum(nb, 0))
    return nb, base


_TOKEN_HI: dict = {}  # (s, m, K) -> per token (nb | base << 5) << 32, read-only
_RAMP: dict = {}  # P -> slot << 15 for the 2^P slots, read-only


def _token_hi(s: int, m: int, K: int) -> np.ndarray:
    """Per token the high word of its slots, ``(nb | base << 5) << 32`` (spec 4.4's token split), cached: a
    model's tokens depend only on (s, m, K)."""
    hi = _TOKEN_HI.get((s, m, K))
    if hi is None:
        nb, base = _token_split(s, m, K)
        hi = (nb | (base << 5)) << 32
        hi.flags.writeable = False
        if len(_TOKEN_HI) < 256:  # at most 256 x k_max(12, 4) x 8 bytes (~9 MB), whatever the files say
            _TOKEN_HI[(s, m, K)] = hi
    return hi


def _ramp(P: int) -> np.ndarray:
    r = _RAMP.get(P)
    if r is None:
        r = _RAMP[P] = np.arange(0, 1 << (P + 15), 1 << 15, dtype=np.int64)
        r.flags.writeable = False
    return r


def _gpu_table_np(P: int, s: int, m: int, freqs: np.ndarray) -> np.ndarray:
    """``gpu_table`` in numpy (``jitcache.ready``): per live token its packed high word and f, repeated f times,
    plus each slot's offset ``(slot - c) << 15`` (``slot << 15`` here, ``c << 15`` taken off per token)."""
    live = np.flatnonzero(freqs > 0)
    f = freqs[live]
    start = np.cumsum(f)
    start -= f
    # f | (slot - c) << 15 | hi with + for |: f <= 2^MAX_PROB_BITS < 2^15 and slot - c < 2^15 share no bits
    out = np.repeat(_token_hi(s, m, freqs.size)[live] + f - (start << 15), f)
    out += _ramp(P)
    return out


def slot_table(P: int, s: int, m: int, freqs: np.ndarray) -> np.ndarray:
    """Per slot, packed: f (15 bits) | slot - c (14 bits) << 15 | raw bits (5) << 29 | symbol base << 34."""
    K = freqs.size
    nb, base = _token_split(s, m, K)
    cum = np.concatenate(([0], np.cumsum(freqs)))
    slot_tok = np.repeat(np.arange(K, dtype=np.int64), freqs)
    slots = np.arange(1 << P, dtype=np.int64)
    return (freqs[slot_tok] | ((slots - cum[slot_tok]) << 15) | (nb[slot_tok] << 29)
            | (base[slot_tok] << 34)).astype(np.int64)


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


def subpayload(payload, n_elems: int, lane_symbols: int, g0: int, g1: int, parsed=None) -> tuple:
    """(payload, n) of a valid ``ans`` / ``ans-dq`` payload holding only groups [g0, g1) of ``payload``.

    Groups decode independently (spec 4.4 / 4.6: per-group word counts, lane states and dq states; the model
    does not depend on N), so the model header and table, the word counts ``W[g0:g1]`` and those groups'
    words (odd-count padding words included) form a payload of ``min(N, g1*32S) - g0*32S`` elements whose
    decode is elements [g0*32S, g0*32S + n) of the full decode. Reads only the header, the word-count table
    and the groups' words; the sizes are checked (``parse``) before any offset is used, so a corrupt table
    raises FormatError. ``parsed``: ``parse()``'s result for this payload, when the caller has it.
    """
    buf = np.frombuffer(payload, np.uint8)
    W, start = (parsed if parsed is not None else parse(payload, n_elems, lane_symbols))[4:6]
    G = W.size
    if not 0 <= g0 <= g1 <= G:
        raise ValueError(f"groups [{g0}, {g1}) are not inside the payload's {G} groups")
    H = _align4(12 + int(buf[8:12].view("<u4")[0])) if buf.size >= 12 else -1
    if H < 12 or buf.size != H + 4 * G + 2 * int(start[-1]):  # parse() checked it; ``parsed`` may be another's
        raise FormatError(f"ans payload of {buf.size} bytes does not match its parsed tables")
    gs = g1 - g0
    w0, w1 = int(start[g0]), int(start[g1])
    out = np.empty(H + 4 * gs + 2 * (w1 - w0), np.uint8)
    out[:H] = buf[:H]
    out[H:H + 4 * gs] = buf[H + 4 * g0:H + 4 * g1]
    a = H + 4 * G
    out[H + 4 * gs:] = buf[a + 2 * w0:a + 2 * w1]
    unit = LANES * lane_symbols
    return out, min(n_elems, g1 * unit) - g0 * unit
