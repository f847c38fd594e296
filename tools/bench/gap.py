"""Where bslcodec's bits go: the coded payload of each quantized tensor against the entropy of its symbols.

:func:`breakdown` takes the bytes of a ``.bsl`` file and splits its size (bits/weight of the whole
checkpoint) into the payloads of the quantized tensors (``ans``, ``ans-dq`` and ``eg`` entries, every in-payload table
included), the order-0 empirical entropy H0 of the very same symbols (what an ideal static coder would
spend per tensor without any side info), the exactly stored tensors (1-D, ``fexp``/``zstd``/``raw``), the
JSON header + preamble and the 64-byte alignment. The symbols are decoded back from the file (bslcodec's
"Q" decode mode), so this measures the file as written.
"""

from __future__ import annotations

import numpy as np

from bslcodec.codecs import golomb, rans
from bslcodec.files import api
from bslcodec.pipeline import codec


def _q(src, e) -> np.ndarray:
    """The coded symbols of an ``eg``, ``ans`` or ``ans-dq`` entry as center + signed index (int64), decoded
    from the file: the quantization levels for eg/ans; for ans-dq the trellis indices that its ans stage
    codes (read without the state machine), not the levels."""
    q = np.empty(e.numel, np.int64)
    if e.codec == "eg":
        step, center, s = codec._check_eg_params(e, e.name)
        golomb.decode_into(src.payload(e), e.numel, s, center, step, q, "Q")
    else:
        p = e.params
        rans.decode_into(src.payload(e), e.numel, p["lane_symbols"], p["center"], float(p["step"]), q, "Q")
    return q


def entropy_bits(q: np.ndarray) -> float:
    """Order-0 empirical entropy of the symbols, in bits (total, not per symbol)."""
    if q.size == 0:
        return 0.0
    c = np.bincount((q - q.min()).astype(np.int64))
    c = c[c > 0].astype(np.float64)
    return float(-(c * np.log2(c / q.size)).sum())


def breakdown(blob: bytes, n_weights: int) -> dict:
    """Size accounting of a ``.bsl`` file, in bits per weight of the whole checkpoint."""
    src = api._Source(data=blob)
    try:
        total = 8 * len(blob)
        header = 8 * src.index.data_start
        pay = {"ans": 0, "eg": 0}
        w = {"ans": 0, "eg": 0}
        nt = {"ans": 0, "eg": 0}
        h0 = lossless = payload_sum = n_dq = 0
        n_lossless = 0
        for e in src.index.entries:
            payload_sum += 8 * e.length
            if e.codec not in ("eg", "ans", "ans-dq"):
                lossless += 8 * e.length
                n_lossless += 1
                continue
            stage = "eg" if e.codec == "eg" else "ans"  # ans-dq: an ans payload (spec 4.6)
            n_dq += e.codec == "ans-dq"
            pay[stage] += 8 * e.length
            w[stage] += e.numel
            nt[stage] += 1
            h0 += entropy_bits(_q(src, e))
        align = total - header - payload_sum
        n = float(n_weights)
        coded = pay["ans"] + pay["eg"]
        return {
            "file_bpw": total / n,
            "payload_bpw": coded / n,           # quantized tensors, tables included
            "h0_bpw": h0 / n,
            "payload_minus_h0_bpw": (coded - h0) / n,
            "payload_over_h0": coded / h0 if h0 else None,
            "ans_payload_bpw": pay["ans"] / n,
            "eg_payload_bpw": pay["eg"] / n,
            "ans_weight_fraction": w["ans"] / n,
            "eg_weight_fraction": w["eg"] / n,
            "n_ans_tensors": nt["ans"],
            "n_eg_tensors": nt["eg"],
            "n_ans_dq_tensors": n_dq,
            "n_lossless_tensors": n_lossless,
            "lossless_tensors_bpw": lossless / n,
            "header_bpw": header / n,
            "alignment_bpw": align / n,
        }
    finally:
        src.close()
