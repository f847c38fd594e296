"""The codec parameters of an index entry, checked as the spec allows them (4.3-4.5): every decoder's first step
(CPU, GPU, slices, compressed-resident), in Python only, importable without numba."""

import math
import struct

import numpy as np

from ..container.dtypes import FLOAT_NAMES
from ..container.errors import FormatError
from ..container.format import Entry
from ..container.limits import (
    LANES,
    MAX_LANE_SYMBOLS,
    MAX_SYMBOL_MAGNITUDE,
    MIN_LANE_SYMBOLS,
)
from .fexp_ref import MAX_LANE_SYMBOLS as FEXP_MAX_S
from .fexp_ref import MIN_LANE_SYMBOLS as FEXP_MIN_S

ANS_CODECS = ("ans", "ans-dq")  # the ans payload layout (spec 4.4); ans-dq reads its indices as dq levels
ANS_MIN_S, ANS_MAX_S = 16, 4096
F32_MAX = float(np.finfo(np.float32).max)
_BINARY32 = struct.Struct("<f")


def finite_float(v) -> float:
    """``v`` as a float if it is a number (not a bool) that a binary64 holds as a finite value, else NaN.

    A JSON integer can be far beyond binary64 (``2**1024 - 1`` rounds to 2**1024): ``float()`` of it raises
    OverflowError, so every number read from a file goes through here before any arithmetic."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return math.nan
    try:
        f = float(v)
    except OverflowError:
        return math.nan
    return f if math.isfinite(f) else math.nan


def is_binary32(x: float) -> bool:
    """Whether the positive finite ``x`` is a binary32 value: ``float(np.float32(x)) == x`` (both round with a
    C cast to float; ``struct`` does it without numpy scalars, ~1 -> 0.2 us)."""
    return x <= F32_MAX and _BINARY32.unpack(_BINARY32.pack(x))[0] == x


def check_quantized(e: Entry, where: str, s_min: int, s_max: int) -> tuple:
    """(step, center, S) of an ``eg`` or ``ans`` entry: both share the quantization of spec 4.3."""
    p, name = e.params, e.codec
    if e.dtype not in FLOAT_NAMES:
        raise FormatError(f"{where}: codec {name} is only for float dtypes, not {e.dtype}")
    step, center, s = p.get("step"), p.get("center"), p.get("lane_symbols")
    # a JSON float (the usual step) is compared directly: finite_float's numpy isinstance checks cost ~0.4 us
    if not (0.0 < step < math.inf if type(step) is float else
            not isinstance(step, bool) and isinstance(step, (int, float)) and finite_float(step) > 0):
        raise FormatError(f"{where}: {name} step must be a positive finite number, found {step!r}")
    if e.dtype != "F64" and not is_binary32(float(step)):
        raise FormatError(f"{where}: {name} step {step!r} is not a binary32 value")
    if type(center) is not int or abs(center) >= MAX_SYMBOL_MAGNITUDE:
        raise FormatError(f"{where}: {name} center must be an integer below 2^24 in magnitude, found {center!r}")
    if type(s) is not int or not s_min <= s <= s_max or s & (s - 1):
        raise FormatError(f"{where}: {name} lane_symbols must be a power of two in [{s_min}, {s_max}], "
                          f"found {s!r}")
    return float(step), center, s


def check_eg(e: Entry, where: str) -> tuple:
    """(step, center, S) of an ``eg`` entry (spec 4.3)."""
    return check_quantized(e, where, MIN_LANE_SYMBOLS, MAX_LANE_SYMBOLS)


def check_ans(e: Entry, where: str) -> tuple:
    """(step, center, S) of an ``ans`` or ``ans-dq`` entry (spec 4.4: as 4.3, with 16 <= S <= 4096)."""
    return check_quantized(e, where, ANS_MIN_S, ANS_MAX_S)


def check_fexp(e: Entry, where: str) -> int:
    """S of an ``fexp`` entry (spec 4.5)."""
    if e.dtype not in FLOAT_NAMES:
        raise FormatError(f"{where}: codec fexp is only for float dtypes, not {e.dtype}")
    s = e.params.get("lane_symbols")
    if type(s) is not int or not FEXP_MIN_S <= s <= FEXP_MAX_S or s & (s - 1):
        raise FormatError(f"{where}: fexp lane_symbols must be a power of two in "
                          f"[{FEXP_MIN_S}, {FEXP_MAX_S}], found {s!r}")
    return s


def unit(e: Entry, where: str) -> int:
    """Elements per independently decodable unit (group or chunk) of a payload."""
    if e.codec == "eg":
        return LANES * check_eg(e, where)[2]
    if e.codec == "fexp":
        return LANES * check_fexp(e, where)
    if e.codec in ANS_CODECS:
        return LANES * check_ans(e, where)[2]
    if e.codec == "zstd":
        c = e.params.get("chunk_elems")
        return c if type(c) is int and c > 0 else 1
    return max(1, e.numel)
