"""Rate control for ``bits=``: search the relative step so the whole file meets a bits/weight target."""


from ..container.errors import EncodeError
from ..container.format import ZSTD_HEADER_MIN_BYTES

TOLERANCE = 0.01  # aim within 1 % so the 2 % promise holds with room to spare
HEADER_BITS_PER_TENSOR = 8 * 300  # first guess of a JSON entry's size; the caller corrects it
ZSTD_HEADER_BITS_PER_TENSOR = 8 * 64  # with a compressed header (over 4 KiB of JSON, spec 2.1): ~30 bytes of
# header and ~32 of padding a tensor (measured: 30 on a 314-tensor MobileNetV2-shaped model)


def overhead_guess(n_tensors: int) -> int:
    """A first guess of preamble + header + padding bits."""
    if HEADER_BITS_PER_TENSOR * n_tensors >= 8 * ZSTD_HEADER_MIN_BYTES:
        return 8 * 96 + ZSTD_HEADER_BITS_PER_TENSOR * n_tensors
    return 8 * 96 + HEADER_BITS_PER_TENSOR * n_tensors


def choose_rel_step(lossy: list, exact: list, bits: float, n_weights: int, overhead_bits: float | None = None) -> tuple:
    """A rel_step c (step = c * unit per tensor: std, or the sensitivity-weighted unit) whose total size is within 1 % of ``bits`` per weight.

    ``lossy``: LossyTensor objects; ``exact``: (name, array) stored losslessly (their size is fixed);
    ``overhead_bits``: preamble, header and padding (default: a per-tensor guess). Returns (c, predicted
    total bits).
    """
    from .codec import encode_lossless  # local import: codec sits above this module

    if n_weights == 0:
        raise EncodeError("bits= needs at least one element to encode")
    if overhead_bits is None:
        overhead_bits = overhead_guess(len(lossy) + len(exact))
    fixed = sum(8 * len(encode_lossless(a)[2]) for _, a in exact) + overhead_bits
    target = bits * n_weights

    lossless_bits = {}

    def total(log_c: float) -> float:
        c = 2.0 ** log_c
        size = fixed
        for t in lossy:
            s = t.size(t.step_at(c))  # the tensor's own rule (dq: a finer step for the same c)
            if s is None:  # too fine: the tensor would be stored exactly
                if t.name not in lossless_bits:
                    lossless_bits[t.name] = 8 * len(encode_lossless(t.arr)[2])
                size += lossless_bits[t.name]
            else:
                size += 8 * s
        return size

    if not lossy:
        raise EncodeError(f"bits={bits}: the file has no tensors to quantize (all stored exactly: "
                          f"{fixed / n_weights:.2f} bits/weight)")
    lo, hi = -24.0, 6.0  # log2 of c: from std/16M to 64 * std
    t_lo, t_hi = total(lo), total(hi)
    if target > t_lo * (1 + TOLERANCE) or target < t_hi * (1 - TOLERANCE):
        raise EncodeError(f"bits={bits} is out of reach: this file spans {t_hi / n_weights:.3f} to "
                          f"{t_lo / n_weights:.3f} bits/weight")
    best = (abs(t_lo - target), lo)
    for _ in range(40):
        mid = (lo + hi) / 2
        t = total(mid)
        best = min(best, (abs(t - target), mid))
        if abs(t - target) <= TOLERANCE * target:
            return 2.0 ** mid, t
        if t > target:
            lo = mid
        else:
            hi = mid
    if best[0] <= 0.02 * target:
        return 2.0 ** best[1], total(best[1])
    raise EncodeError(f"bits={bits}: no step meets the target within 2 % (closest: "
                      f"{(target + best[0]) / n_weights:.3f} bits/weight)")
