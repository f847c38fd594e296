"""Numba interleaved-rANS coding of the ``ans`` payload (spec 4.4), bit-exact with ``rans_ref``.

One per-tensor model (probability bits P, token split s/m, a frequency table) and 32 rANS lanes per group
sharing one stream of 16-bit words; groups are independent, so they encode and decode in parallel
(``prange``). Per-element work never runs in Python. ``build_model`` picks the model that makes the
payload smallest, table included.

The code lives in ``rans_model`` (tokens, model choice, estimates), ``rans_table`` (table bytes),
``rans_enc`` and ``rans_dec``; this module is their face: importers use ``rans.<name>``.
"""

from .rans_dec import (  # noqa: F401
    MODES,
    decode_into,
    decode_tables,
    min_length,
    parse,
    subpayload,
)
from .rans_enc import (  # noqa: F401
    encode,
)
from .rans_model import (  # noqa: F401
    FINE_K,
    FINE_M,
    FINE_S,
    PROB_BITS_CHOICES,
    STATE_BITS_PER_LANE,
    L,
    Model,
    _align4,
    _candidates,
    _candidates_ref,
    _table_cost_ref,
    _token,
    build_model,
    coarse_map,
    estimate_bits,
    estimate_size,
    fine_hist,
    fine_histogram,
    n_groups,
    payload_bits_exact_check,
    quantize_freqs,
    table_cost,
)
from .rans_ref import MAX_MSB, MAX_PROB_BITS, MAX_SPLIT  # noqa: F401
from .rans_table import (  # noqa: F401
    gpu_table,
    header_bytes,
    parse_header,
    slot_table,
    tables,
)

__all__ = ["Model", "build_model", "encode", "decode_into", "parse", "estimate_bits", "estimate_size",
           "n_groups", "quantize_freqs", "fine_hist", "subpayload"]
