"""Numba coding of the ``fexp`` payload (spec 4.5): lossless floats, bit-exact with ``fexp_ref``.

Each element's bits ``v`` (``W`` bits) become ``r = rotl(v, 1)``; the top ``8 + m`` bits of ``r`` (exponent
and ``m`` leading mantissa bits) are a symbol coded with a per-tensor, length-limited (<= 12 bits) canonical
Huffman code in the ``eg`` lane layout (groups of 32 lanes x S symbols, 64-bit aligned), and the other
``B = W - 8 - m`` bits are stored raw, bit-packed, where any element's bits are found at ``B * e``.
Decoding is one lookup in a 4096-entry table per symbol (``build_lut``, shared with the GPU decoder).
Groups are encoded and decoded in parallel (``prange``); per-element work never runs in Python.

The code lives in ``fexp_table`` (layout, canonical codes, the decoding table, ``parse``), ``fexp_enc`` and
``fexp_dec``; this module is their face: importers use ``fexp.<name>``.
"""

from .fexp_dec import (  # noqa: F401
    decode,
    decode_into,
)
from .fexp_enc import (  # noqa: F401
    choose_m,
    code_lengths,
    encode,
    payload_size,
)
from .fexp_ref import (  # noqa: F401
    HEAD_BYTES,
    MAX_CODE_LEN,
    MAX_LANE_SYMBOLS,
    MAX_M,
    MIN_LANE_SYMBOLS,
)
from .fexp_table import (  # noqa: F401
    ITEMSIZES,
    LUT_SIZE,
    UINTS,
    build_lut,
    build_lut_ref,
    canonical,
    check_lengths,
    default_lane_symbols,
    layout,
    min_payload,
    parse,
    parse_header,
    rest_bits,
)
