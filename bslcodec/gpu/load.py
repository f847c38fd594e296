"""Whole-file GPU loading: ``load_file(..., framework="pt", device="cuda")`` and ``safe_open`` use this.

``eg`` and ``ans`` payloads (F32/F16/BF16) and ``fexp`` payloads (lossless floats) go to the GPU compressed
and are decoded there (all ``ans`` tensors of a call in one kernel launch); everything else (zstd chunks,
raw, lossy F64) is decoded on the CPU and copied over.
"""

import numpy as np
import torch

from .. import codec
from ._ans import decode_ans_many
from ._eg import decode_eg
from ._fexp import decode_fexp

_GPU_DTYPES = ("F32", "F16", "BF16")


def load_to_cuda(src, device="cuda", names=None) -> dict:
    """name -> CUDA tensor for the tensors of an open ``.bsl`` source (checksums verified on the host)."""
    dev = torch.device(device)
    out, ans_jobs = {}, []
    for name in (names if names is not None else list(src.entries)):
        e = src.entry(name)
        where = f"{src.where}: tensor {name!r}"
        if e.codec == "ans" and e.dtype in _GPU_DTYPES:
            step, center, s = codec._check_ans_params(e, where)
            ans_jobs.append({"name": where, "key": name, "shape": e.shape, "payload": np.frombuffer(src.payload(e), np.uint8),
                             "n_elems": e.numel, "lane_symbols": s, "step": step, "center": center,
                             "dtype": e.dtype})
            out[name] = None  # keeps the file's order; filled after the one launch below
        elif (e.codec == "eg" and e.dtype in _GPU_DTYPES) or e.codec == "fexp":
            if e.codec == "fexp":
                s = codec._check_fexp_params(e, where)
            else:
                step, center, s = codec._check_eg_params(e, where)
            payload = np.frombuffer(src.payload(e), np.uint8)
            try:
                if e.codec == "fexp":
                    t = decode_fexp(payload, e.numel, s, e.dtype, device=dev)
                else:
                    t = decode_eg(payload, e.numel, s, step, center, e.dtype, device=dev)
            except Exception as exc:
                if isinstance(exc, (TypeError, ValueError)):
                    raise
                raise type(exc)(f"{where}: {exc}") from None
            out[name] = t.view(e.shape)
        else:
            from ..api import _to_framework

            out[name] = _to_framework(src.tensor(name), "pt", dev)
    if ans_jobs:
        decoded = decode_ans_many(ans_jobs, device=dev)  # errors name the file and the tensor
        for j, t in zip(ans_jobs, decoded):
            out[j["key"]] = t.view(j["shape"])
    return out
