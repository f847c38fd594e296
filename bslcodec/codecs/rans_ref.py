"""Slow, obviously correct reference of the ``ans`` payload (spec 4.4): the oracle for ``rans.py``.

Python integers, one symbol at a time, in exactly the order the spec writes down. Use it for tests and
small inputs only. The model (probability bits, token split, frequencies) is an input here: choosing it
is the encoder's business (``rans.build_model``); any valid model must round-trip.
"""

import numpy as np

from ..container.errors import FormatError
from ..container.limits import LANES

L = 1 << 16  # lower bound of a lane state; states live in [2^16, 2^32)
MAX_PROB_BITS = 14
MAX_SPLIT = 12
MAX_MSB = 4
MAX_TABLE_ZEROS = 16  # leading zeros allowed in a table code word
MIN_S, MAX_S = 16, 4096  # lane_symbols range of the ans codec


def k_max(s: int, m: int) -> int:
    """Number of tokens that exist for split ``s`` and ``m`` mantissa bits (those with e <= 24)."""
    return (1 << s) + (25 - s) * (1 << m)


def token_of(u: int, s: int, m: int) -> tuple:
    """(token, number of raw bits, raw value) of symbol ``u``."""
    if u < (1 << s):
        return u, 0, 0
    e = u.bit_length() - 1
    nb = e - m
    return (1 << s) + ((e - s) << m) + ((u >> nb) - (1 << m)), nb, u & ((1 << nb) - 1)


def token_bits(tok: int, s: int, m: int) -> int:
    """Raw bits that follow token ``tok``."""
    if tok < (1 << s):
        return 0
    return s + ((tok - (1 << s)) >> m) - m


def symbol_of(tok: int, r: int, s: int, m: int) -> int:
    if tok < (1 << s):
        return tok
    i = tok - (1 << s)
    nb = s + (i >> m) - m
    return (((1 << m) + (i & ((1 << m) - 1))) << nb) + r


# ---------------------------------------------------------------- table bit string

def _eg_bits(v: int, k: int) -> list:
    w = v + (1 << k)
    n = w.bit_length() - 1
    return [0] * (n - k) + [1] + [(w >> i) & 1 for i in range(n)]


def table_bits(freqs, kq: int) -> list:
    """The table bit string of frequencies ``freqs`` (list of ints), in stream order."""
    bits, i, K = [], 0, len(freqs)
    while i < K:
        if freqs[i] > 0:
            bits += _eg_bits(int(freqs[i]), kq)
            i += 1
        else:
            j = i
            while j < K and freqs[j] == 0:
                j += 1
            bits += _eg_bits(0, kq) + _eg_bits(j - i - 1, 0)
            i = j
    return bits


def _bytes_of_bits(bits: list) -> bytes:
    bits = bits + [0] * (-len(bits) % 8)
    return bytes(sum(b << i for i, b in enumerate(bits[o:o + 8])) for o in range(0, len(bits), 8))


class _BitReader:
    def __init__(self, data: bytes):
        self.data, self.pos, self.end = data, 0, 8 * len(data)

    def bit(self) -> int:
        if self.pos >= self.end:
            raise FormatError("ans table: a code word reads past the table bit string")
        b = (self.data[self.pos >> 3] >> (self.pos & 7)) & 1
        self.pos += 1
        return b

    def eg(self, k: int) -> int:
        z = 0
        while self.bit() == 0:
            z += 1
            if z > MAX_TABLE_ZEROS:
                raise FormatError(f"ans table: a code word has more than {MAX_TABLE_ZEROS} leading zeros")
        n = z + k
        r = 0
        for i in range(n):
            r |= self.bit() << i
        return (1 << n) + r - (1 << k)


def header_bytes(prob_bits: int, s: int, m: int, freqs, kq: int) -> bytes:
    """Model block: 12 fixed bytes, the table bit string, zero padding to a multiple of 4."""
    tb = _bytes_of_bits(table_bits(list(freqs), kq))
    out = bytes([0, prob_bits, s, m]) + len(freqs).to_bytes(2, "little") + bytes([kq, 0])
    out += len(tb).to_bytes(4, "little") + tb
    return out + bytes(-len(out) % 4)


def parse_header(payload: bytes) -> tuple:
    """(P, s, m, freqs list, H) of a payload; checks everything spec 4.4 says about the table."""
    if len(payload) < 12:
        raise FormatError("ans payload shorter than its 12-byte model header")
    model, P, s, m = payload[0], payload[1], payload[2], payload[3]
    K = int.from_bytes(payload[4:6], "little")
    kq, reserved = payload[6], payload[7]
    B = int.from_bytes(payload[8:12], "little")
    if model != 0:
        raise FormatError(f"ans model {model} is unknown (only 0, a frequency table)")
    if not 1 <= P <= MAX_PROB_BITS or s > MAX_SPLIT or m > min(s, MAX_MSB) or kq > 15 or reserved:
        raise FormatError(f"ans model header out of range: P={P} s={s} m={m} kq={kq} reserved={reserved}")
    if not 1 <= K <= k_max(s, m):
        raise FormatError(f"ans table has {K} entries, allowed 1..{k_max(s, m)}")
    if 12 + B > len(payload):
        raise FormatError("ans table bit string runs past the payload")
    M = 1 << P
    rd = _BitReader(payload[12:12 + B])
    freqs, i = [0] * K, 0
    while i < K:
        v = rd.eg(kq)
        if v > 0:
            if v > M:
                raise FormatError(f"ans table: frequency {v} is over M = {M}")
            freqs[i] = v
            i += 1
        else:
            r = rd.eg(0)
            if i + r + 1 > K:
                raise FormatError("ans table: a run of zero frequencies passes the table's end")
            i += r + 1
    if B != -(-rd.pos // 8):
        raise FormatError(f"ans table bit string is {B} bytes, its code words use {-(-rd.pos // 8)}")
    if sum(freqs) != M:
        raise FormatError(f"ans table frequencies sum to {sum(freqs)}, not M = {M}")
    H = 12 + B + (-(12 + B) % 4)
    return P, s, m, freqs, H


# ---------------------------------------------------------------- groups

def n_groups(n_elems: int, lane_symbols: int) -> int:
    return -(-n_elems // (LANES * lane_symbols))


def _encode_group(syms: list, P: int, s: int, m: int, freqs: list, cum: list) -> list:
    """Words of one group (without the padding word) for its symbols in element order."""
    n = len(syms)
    A, T = min(LANES, n), -(-n // LANES)
    coded = [token_of(u, s, m) for u in syms]
    x = [L] * A
    emitted = []

    def emit_if(j, limit):
        if x[j] >= limit:
            emitted.append(x[j] & 0xFFFF)
            x[j] >>= 16

    for t in reversed(range(T)):
        lanes = range(min(LANES, n - LANES * t))
        for j in reversed(lanes):  # phase 3: raw bits above 16
            tok, nb, r = coded[j + LANES * t]
            n2 = nb - min(nb, 16)
            if n2:
                emit_if(j, 1 << (32 - n2))
                x[j] = (x[j] << n2) | (r >> 16)
        for j in reversed(lanes):  # phase 2: low raw bits
            tok, nb, r = coded[j + LANES * t]
            n1 = min(nb, 16)
            if n1:
                emit_if(j, 1 << (32 - n1))
                x[j] = (x[j] << n1) | (r & ((1 << n1) - 1))
        for j in reversed(lanes):  # phase 1: token
            tok = coded[j + LANES * t][0]
            f = freqs[tok]
            emit_if(j, f << (32 - P))
            x[j] = ((x[j] // f) << P) + (x[j] % f) + cum[tok]
    words = []
    for j in range(A):
        words += [x[j] & 0xFFFF, x[j] >> 16]
    return words + emitted[::-1]


def encode_payload(u, lane_symbols: int, prob_bits: int, s: int, m: int, freqs, kq: int) -> bytes:
    """The ``ans`` payload of symbols ``u`` with the given model (every used token needs freqs > 0)."""
    u = [int(v) for v in np.asarray(u).ravel()]
    freqs = [int(f) for f in freqs]
    if sum(freqs) != 1 << prob_bits:
        raise ValueError("frequencies must sum to 2^prob_bits")
    cum = [0]
    for f in freqs:
        cum.append(cum[-1] + f)
    gsize = LANES * lane_symbols
    groups = [_encode_group(u[o:o + gsize], prob_bits, s, m, freqs, cum) for o in range(0, len(u), gsize)]
    out = bytearray(header_bytes(prob_bits, s, m, freqs, kq))
    for w in groups:
        out += len(w).to_bytes(4, "little")
    for w in groups:
        out += np.asarray(w + [0] * (len(w) % 2), "<u2").tobytes()
    return bytes(out)


def decode_payload(payload: bytes, n_elems: int, lane_symbols: int, center: int = 0) -> np.ndarray:
    """Symbols u (int64) of an ``ans`` payload, checking everything the spec says (incl. |q| < 2^24)."""
    payload = bytes(payload)
    P, s, m, freqs, H = parse_header(payload)
    M = 1 << P
    cum = [0]
    for f in freqs:
        cum.append(cum[-1] + f)
    slot_token = []
    for tok, f in enumerate(freqs):
        slot_token += [tok] * f
    G = n_groups(n_elems, lane_symbols)
    if len(payload) < H + 4 * G:
        raise FormatError("ans payload shorter than its group table")
    W = [int.from_bytes(payload[H + 4 * g:H + 4 * g + 4], "little") for g in range(G)]
    if len(payload) != H + 4 * G + 2 * sum(w + w % 2 for w in W):
        raise FormatError("ans payload length does not match its group table")
    out = np.zeros(n_elems, np.int64)
    base = H + 4 * G
    gsize = LANES * lane_symbols
    for g in range(G):
        n = min(n_elems - g * gsize, gsize)
        words = np.frombuffer(payload, "<u2", W[g], base).tolist()
        base += 2 * (W[g] + W[g] % 2)
        A, T = min(LANES, n), -(-n // LANES)
        if W[g] < 2 * A:
            raise FormatError(f"group {g}: {W[g]} words cannot hold {A} lane states")
        x = [words[2 * j] | (words[2 * j + 1] << 16) for j in range(A)]
        if min(x) < L:
            raise FormatError(f"group {g}: a lane's initial state is below 2^16")
        p = 2 * A

        def read(v):
            nonlocal p
            if v >= L:
                return v
            if p >= W[g]:
                raise FormatError(f"group {g}: the lanes read past the group's {W[g]} words")
            v = (v << 16) | words[p]
            p += 1
            return v

        for t in range(T):
            lanes = range(min(LANES, n - LANES * t))
            toks, lo = {}, {}
            for j in lanes:
                r = x[j] % M
                tok = slot_token[r]
                x[j] = freqs[tok] * (x[j] // M) + r - cum[tok]
                x[j] = read(x[j])
                toks[j] = tok
            for j in lanes:
                n1 = min(token_bits(toks[j], s, m), 16)
                lo[j] = x[j] % (1 << n1)
                x[j] = read(x[j] >> n1)
            for j in lanes:
                nb = token_bits(toks[j], s, m)
                n2 = nb - min(nb, 16)
                hi = x[j] % (1 << n2)
                x[j] = read(x[j] >> n2)
                uu = symbol_of(toks[j], lo[j] + (hi << 16), s, m)
                q = center + ((uu >> 1) if uu % 2 == 0 else -((uu + 1) >> 1))
                if abs(q) >= 1 << 24:
                    raise FormatError(f"group {g}: a symbol gives |q| >= 2^24")
                out[g * gsize + j + LANES * t] = uu
        if p != W[g]:
            raise FormatError(f"group {g}: the lanes end at word {p}, the group has {W[g]}")
        if any(v != L for v in x):
            raise FormatError(f"group {g}: a lane does not end in the state 2^16")
    return out
