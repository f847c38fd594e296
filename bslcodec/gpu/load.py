"""Whole-file GPU loading: ``load_file(..., framework="pt", device="cuda")`` and ``safe_open`` use this.

``eg``, ``ans`` and ``ans-dq`` payloads (F32/F16/BF16) and ``fexp`` payloads (lossless floats) go to the GPU compressed
and are decoded there: all ``ans`` tensors of a call in one kernel launch, all ``fexp`` tensors in one launch
per item size, ``eg`` tensor by tensor. Everything else (zstd chunks, raw, lossy F64) is decoded on the CPU
and copied over. Checksums are verified on the host before anything is decoded.
"""

import numpy as np
import torch

from ..pipeline import codec
from ._ans import decode_ans_many
from ._eg import decode_eg
from ._fexp import decode_fexp_many

_GPU_DTYPES = ("F32", "F16", "BF16")


def load_to_cuda(src, device="cuda", names=None) -> dict:
    """name -> CUDA tensor for the tensors of an open ``.bsl`` source (checksums verified on the host)."""
    dev = torch.device(device)
    out, ans_jobs, fexp_jobs = {}, [], []
    for name in (names if names is not None else list(src.entries)):
        e = src.entry(name)
        where = f"{src.where}: tensor {name!r}"
        if e.codec in codec.ANS_CODECS and e.dtype in _GPU_DTYPES:
            step, center, s = codec._check_ans_params(e, where)
            ans_jobs.append({"name": where, "key": name, "shape": e.shape, "n_elems": e.numel, "lane_symbols": s,
                             "payload": np.frombuffer(src.payload(e), np.uint8), "step": step, "center": center,
                             "dtype": e.dtype, "dq": e.codec == "ans-dq"})
            out[name] = None  # keeps the file's order; filled after the launches below
        elif e.codec == "fexp":
            s = codec._check_fexp_params(e, where)
            fexp_jobs.append({"name": where, "key": name, "shape": e.shape, "n_elems": e.numel, "lane_symbols": s,
                              "payload": np.frombuffer(src.payload(e), np.uint8), "dtype": e.dtype})
            out[name] = None
        elif e.codec == "eg" and e.dtype in _GPU_DTYPES:
            step, center, s = codec._check_eg_params(e, where)
            payload = np.frombuffer(src.payload(e), np.uint8)
            try:
                t = decode_eg(payload, e.numel, s, step, center, e.dtype, device=dev)
            except Exception as exc:
                if isinstance(exc, (TypeError, ValueError)):
                    raise
                raise type(exc)(f"{where}: {exc}") from None
            out[name] = t.view(e.shape)
        else:
            from ..pipeline.arrays import _to_framework

            out[name] = _to_framework(src.tensor(name), "pt", dev)
    for jobs, decode in ((ans_jobs, decode_ans_many), (fexp_jobs, decode_fexp_many)):
        if jobs:
            for j, t in zip(jobs, decode(jobs, device=dev)):  # errors name the file and the tensor
                out[j["key"]] = t.view(j["shape"])
    return out
