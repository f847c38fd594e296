"""Reading an ``eg`` payload's tables (spec 4.3: lane lengths, orders, word offsets) in numpy only: what a decoder
on any device needs before its kernels run, importable without numba (a GPU-only process never imports it).

``golomb`` registers its compiled lane-table check in :data:`KERNELS`; it is used once numba has it loaded
(``jitcache.loaded``), the numpy twin until then (tested equal, ``tests/test_cold_twins.py``).
:mod:`bslcodec.codecs.golomb` is the face importers use."""

import numpy as np

from ..container.errors import FormatError
from ..container.limits import LANES, MAX_CODE_BITS, MAX_EG_ORDER
from ..jitcache import ready

#: The compiled form of ``_lane_table_np``, set by ``golomb`` at its import: "lane_table"
KERNELS: dict = {}


def n_groups(n_elems: int, lane_symbols: int) -> int:
    return -(-n_elems // (LANES * lane_symbols))


def table_bytes(g_count: int) -> int:
    """Bytes before the bit stream: lane lengths, orders, padding to 8."""
    head = 2 * LANES * g_count + g_count
    return head + (-head % 8)


def _lane_table_np(lens, ks, n_elems, lane_symbols, word_start) -> int:
    """``golomb._lane_table`` in numpy (``jitcache.loaded``): the same checks, offsets and first bad lane."""
    G = ks.size
    if G == 0:
        word_start[0] = 0
        return -1
    n_last = n_elems - (G - 1) * LANES * lane_symbols
    cnt = np.full((G, LANES), lane_symbols, np.int64)
    cnt[-1] = np.maximum(0, (n_last - np.arange(LANES) + LANES - 1) // LANES)
    k = ks.astype(np.int64)[:, None]
    ln = lens.astype(np.int64)
    bad = np.flatnonzero((ln < cnt * (k + 1)) | (ln > cnt * (MAX_CODE_BITS - k)))
    if bad.size:
        return int(bad[0])
    word_start[0] = 0
    np.cumsum((ln.sum(axis=1) + 63) // 64, out=word_start[1:])
    return -1


def parse_tables(payload, n_elems: int, lane_symbols: int):
    """Split a payload into (lane lengths, orders, word offsets per group, words); checks sizes."""
    buf = np.frombuffer(payload, np.uint8)
    g_count = n_groups(n_elems, lane_symbols)
    head = table_bytes(g_count)
    if buf.size < head + 8:
        raise FormatError(f"eg payload of {buf.size} bytes is shorter than its tables ({head + 8} bytes)")
    lens = buf[: 2 * LANES * g_count].view("<u2").reshape(g_count, LANES)
    ks = buf[2 * LANES * g_count: 2 * LANES * g_count + g_count]
    if g_count and int(ks.max()) > MAX_EG_ORDER:
        raise FormatError(f"eg order {int(ks.max())} is over {MAX_EG_ORDER}")
    word_start = np.empty(g_count + 1, np.int64)
    fast = ready(KERNELS, "lane_table")
    bad = (fast if fast is not None else _lane_table_np)(lens, ks, n_elems, lane_symbols, word_start)
    if bad >= 0:
        g, j = divmod(bad, LANES)
        n_last = n_elems - (g_count - 1) * LANES * lane_symbols
        cnt = lane_symbols if g < g_count - 1 else max(0, (n_last - j + LANES - 1) // LANES)
        raise FormatError(f"eg payload group {g} lane {j}: {int(lens[g, j])} bits cannot hold "
                          f"{cnt} code words of order {int(ks[g])}")
    expect = head + 8 * (int(word_start[-1]) + 1)
    if buf.size != expect:
        raise FormatError(f"eg payload is {buf.size} bytes, its lane table says {expect}")
    words = buf[head:].view("<u8")
    return lens, ks, word_start, words


def word_offsets(payload, n_elems: int, lane_symbols: int) -> tuple:
    """(offs, head_padded, n_words) of an ``eg`` payload: offs[g] = first 64-bit word of group g, offs[G] = W.

    The lighter half of :func:`parse_tables` (no per-lane bounds): what the GPU decoder needs to decode a payload
    in one launch, computed once on the host.
    """
    buf = np.frombuffer(payload, np.uint8)
    g_count = n_groups(n_elems, lane_symbols)
    head_padded = table_bytes(g_count)
    if buf.size < head_padded + 8 or (buf.size - head_padded) % 8:
        raise FormatError(f"eg payload of {buf.size} bytes cannot hold {g_count} groups")
    lens = buf[:2 * LANES * g_count].view("<u2").reshape(g_count, LANES)
    offs = np.zeros(g_count + 1, np.int64)
    np.cumsum((lens.sum(axis=1, dtype=np.int64) + 63) // 64, out=offs[1:])
    n_words = (buf.size - head_padded) // 8 - 1
    if offs[-1] != n_words:
        raise FormatError(f"eg payload: the lane table gives {int(offs[-1])} words, the payload holds {n_words}")
    return offs, head_padded, n_words
