"""Slow, obviously correct reference of the ``eg`` payload (spec 4.3): the oracle for the fast paths.

Works on Python ints bit by bit. Use it for tests and for small inputs only.
"""

import numpy as np

from ..container.errors import FormatError
from ..container.limits import LANES, MAX_CODE_BITS, MAX_EG_ORDER


def codeword_bits(u: int, k: int) -> list:
    """The bits of the exp-Golomb code word of ``u`` with order ``k``, in stream order."""
    v = u + (1 << k)
    n = v.bit_length() - 1
    return [0] * (n - k) + [1] + [(v >> i) & 1 for i in range(n)]


def codeword_length(u: int, k: int) -> int:
    return 2 * ((u + (1 << k)).bit_length() - 1) - k + 1


def lane_elements(n_elems: int, lane_symbols: int, g: int, j: int) -> range:
    """Element indices held by lane ``j`` of group ``g``."""
    start = g * LANES * lane_symbols
    end = min(n_elems, start + LANES * lane_symbols)
    return range(start + j, end, LANES)


def n_groups(n_elems: int, lane_symbols: int) -> int:
    return -(-n_elems // (LANES * lane_symbols))


def choose_orders(u, lane_symbols: int, k_lo: int, k_hi: int) -> tuple:
    """Per group, the order in [k_lo, k_hi] with the fewest bits (the first on a tie), and the bit length
    of each lane with that order: what ``golomb.choose_orders`` computes, element by element."""
    n = len(u)
    g_count = n_groups(n, lane_symbols)
    ks = np.zeros(g_count, np.uint8)
    lens = np.zeros((g_count, LANES), np.int64)
    for g in range(g_count):
        lanes = [[int(u[e]) for e in lane_elements(n, lane_symbols, g, j)] for j in range(LANES)]
        best = None
        for k in range(k_lo, k_hi + 1):
            bits = [sum(codeword_length(v, k) for v in lane) for lane in lanes]
            if best is None or sum(bits) < sum(best[1]):
                best = (k, bits)
        ks[g] = best[0]
        lens[g] = best[1]
    return ks, lens


def encode_payload(u, lane_symbols: int, k_groups) -> bytes:
    """Encode symbols ``u`` (non-negative ints) into the ``eg`` payload layout."""
    u = [int(x) for x in np.asarray(u).ravel()]
    n = len(u)
    g_count = n_groups(n, lane_symbols)
    lengths, streams = [], []
    for g in range(g_count):
        k = int(k_groups[g])
        group_bits = []
        for j in range(LANES):
            bits = []
            for e in lane_elements(n, lane_symbols, g, j):
                bits += codeword_bits(u[e], k)
            lengths.append(len(bits))
            group_bits += bits
        group_bits += [0] * (-len(group_bits) % 64)
        streams.append(group_bits)
    out = bytearray()
    out += np.asarray(lengths, dtype="<u2").tobytes()
    out += bytes(int(k) for k in k_groups[:g_count])
    out += bytes(-len(out) % 8)
    bits = [b for s in streams for b in s] + [0] * 64
    for w in range(0, len(bits), 64):
        out += sum(bit << i for i, bit in enumerate(bits[w:w + 64])).to_bytes(8, "little")
    return bytes(out)


def decode_payload(payload: bytes, n_elems: int, lane_symbols: int) -> np.ndarray:
    """Decode an ``eg`` payload into its symbols (int64), checking everything the spec says."""
    g_count = n_groups(n_elems, lane_symbols)
    head = 64 * g_count + g_count
    head_padded = head + (-head % 8)
    if len(payload) < head_padded + 8:
        raise FormatError("eg payload shorter than its tables")
    lengths = np.frombuffer(payload, "<u2", LANES * g_count).reshape(g_count, LANES)
    ks = payload[64 * g_count:head]
    words = [int(lengths[g].sum(dtype=np.int64)) for g in range(g_count)]
    words = [-(-w // 64) for w in words]
    if len(payload) != head_padded + 8 * (sum(words) + 1):
        raise FormatError("eg payload length does not match its lane table")
    stream = int.from_bytes(payload[head_padded:], "little")
    out = np.zeros(n_elems, dtype=np.int64)
    word0 = 0
    for g in range(g_count):
        k = ks[g]
        if k > MAX_EG_ORDER:
            raise FormatError(f"group {g}: order {k} > {MAX_EG_ORDER}")
        pos = 64 * word0
        group_end = 64 * (word0 + words[g])
        for j in range(LANES):
            lane_end = pos + int(lengths[g, j])
            for e in lane_elements(n_elems, lane_symbols, g, j):
                z = 0
                while pos < group_end and not (stream >> pos) & 1:
                    z += 1
                    pos += 1
                if z > (MAX_CODE_BITS - 1) // 2 - k or pos >= group_end:
                    raise FormatError(f"group {g} lane {j}: bad code word")
                pos += 1
                nbits = z + k
                r = (stream >> pos) & ((1 << nbits) - 1)
                pos += nbits
                out[e] = (1 << nbits) + r - (1 << k)
            if pos != lane_end:
                raise FormatError(f"group {g} lane {j}: code words end at bit {pos}, lane ends at {lane_end}")
        word0 += words[g]
    return out
