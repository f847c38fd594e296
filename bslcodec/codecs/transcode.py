"""Re-code a lossy payload with the other entropy stage, without requantizing.

``ans`` and ``eg`` (spec 4.3, 4.4) code the same symbols: the quantization step, the center and so every
decoded value stay the same; only the entropy stage changes. ``ans_to_eg`` is what
``bslcodec.torch.compressed.load_compressed(..., gpu_codec="eg")`` uses: ``eg`` decodes faster per layer
on a GPU, at a payload ~5 % larger.
"""

import numpy as np

from ..container.errors import FormatError
from ..container.limits import MAX_EG_ORDER, MAX_SYMBOL_MAGNITUDE
from . import golomb, rans

EG_LANE_SYMBOLS = 512  # the writer's eg lane length (codec.LANE_SYMBOLS)
ANS_LANE_SYMBOLS = 1024  # the writer's ans lane length (codec.ANS_LANE_SYMBOLS)


def symbols_of(codec: str, payload, n_elems: int, lane_symbols: int, center: int) -> np.ndarray:
    """The uint32 symbols ``u`` of an ``eg`` or ``ans`` payload (FormatError where it is corrupt)."""
    # the tables are checked first: they bound n_elems by the payload's size, so `q` is never allocated
    # from a shape that the payload cannot hold (as in codec._decode_quantized_range)
    if codec == "ans":
        parsed = rans.parse(payload, n_elems, lane_symbols)
        q = np.empty(n_elems, np.int64)
        rans.decode_into(payload, n_elems, lane_symbols, center, 1.0, q, "Q", parsed=parsed)
    elif codec == "eg":
        tables = golomb.parse_tables(payload, n_elems, lane_symbols)
        q = np.empty(n_elems, np.int64)
        golomb.decode_into(payload, n_elems, lane_symbols, center, 1.0, q, "Q", tables=tables)
    else:
        raise FormatError(f"codec {codec!r} has no quantized symbols")
    if q.size and int(np.abs(q).max()) >= MAX_SYMBOL_MAGNITUDE:
        raise FormatError("a symbol gives |q| >= 2^24")
    q -= center
    return np.where(q >= 0, 2 * q, -2 * q - 1).astype(np.uint32)


def symbols_of_ans(payload, n_elems: int, lane_symbols: int, center: int) -> np.ndarray:
    """The uint32 symbols ``u`` of an ``ans`` payload (FormatError where it is corrupt)."""
    return symbols_of("ans", payload, n_elems, lane_symbols, center)


def ans_payload(u: np.ndarray, lane_symbols: int = ANS_LANE_SYMBOLS) -> bytes:
    """An ``ans`` payload of symbols ``u`` (the writer's model search)."""
    model, _ = rans.build_model(u)
    return rans.encode(u, lane_symbols, model)


def recode_payload(codec: str, payload, n_elems: int, params: dict, to: str) -> tuple:
    """(params, payload) of a lossy ``eg``/``ans`` payload re-coded with the entropy stage ``to``: same
    symbols, so the same decoded values; ``params`` keeps step, center and the informational keys."""
    s, center = int(params["lane_symbols"]), int(params["center"])
    u = symbols_of(codec, payload, n_elems, s, center)
    out = {k: v for k, v in params.items() if k != "k"}
    if to == "eg":
        ks, data = _eg_coded(u)
        out["lane_symbols"] = EG_LANE_SYMBOLS
        out["k"] = int(np.bincount(ks).argmax()) if ks.size else 0  # the most common group order, as codec.py
        return out, data
    if to == "ans":
        out["lane_symbols"] = ANS_LANE_SYMBOLS
        return out, ans_payload(u)
    raise FormatError(f"cannot re-code to {to!r} (eg or ans)")


def _eg_coded(u: np.ndarray, lane_symbols: int = EG_LANE_SYMBOLS) -> tuple:
    """(group orders, ``eg`` payload) of symbols ``u``: the best order of each group in a window around the
    order that suits the mean."""
    if u.size == 0:
        ks = np.zeros(0, np.uint8)
        return ks, golomb.encode(u, lane_symbols, ks, np.zeros((0, 32), np.uint16))
    k0 = int(np.clip(np.floor(np.log2(float(u.mean()) + 1.0)), 0, MAX_EG_ORDER))
    ks, _ = golomb.choose_group_orders(u, lane_symbols, max(0, k0 - 3), min(MAX_EG_ORDER, k0 + 3))
    return ks, golomb.encode(u, lane_symbols, ks, golomb.lane_lengths(u, lane_symbols, ks))


def eg_payload(u: np.ndarray, lane_symbols: int = EG_LANE_SYMBOLS) -> bytes:
    """An ``eg`` payload of symbols ``u``, with the best order of each group in a window around the mean."""
    return _eg_coded(u, lane_symbols)[1]


def ans_to_eg(payload, n_elems: int, lane_symbols: int, center: int) -> bytes:
    """The ``eg`` payload (lane length ``EG_LANE_SYMBOLS``) of the symbols of an ``ans`` payload."""
    try:
        u = symbols_of_ans(payload, n_elems, lane_symbols, center)
    except FormatError as exc:
        raise FormatError(f"ans payload cannot be transcoded: {exc}") from None
    return eg_payload(u)


__all__ = ["ans_to_eg", "recode_payload", "symbols_of", "symbols_of_ans", "eg_payload", "ans_payload",
           "EG_LANE_SYMBOLS", "ANS_LANE_SYMBOLS"]
