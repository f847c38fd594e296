"""Decoding a file's small tensors in batches (issue 19): those of one codec family and output type go to
one compiled call (``codecs/batch_dec.py``), payloads read in place from the file's bytes, so the Python
and dispatch cost of a tensor (~10-25 us: payload parsing, tables, a 19-argument kernel call) is paid once
per batch. The params are checked as one by one (``codec._check_*_params``) and every checksum before its
payload is read.

A tensor that fails anything (checksum, params, payload) is left out of the result: the caller decodes it
one by one (``_Source.tensor``), which raises the error a one-by-one load raises, naming the tensor.
"""

from __future__ import annotations

import numpy as np

from ..codecs import batch_dec, rans
from ..container.errors import FormatError
from ..container.format import checksum
from ..parallel import SERIAL_BELOW
from . import codec as _codec

#: Tensors of fewer elements than this are batched (larger ones run the parallel kernels, or their own)
BATCH_BELOW = SERIAL_BELOW
_MODE = {"F32": "F32", "F16": "F32", "BF16": "BF16", "F64": "F64"}
_FAMILY = {"ans": "ans", "ans-dq": "ans", "eg": "eg", "fexp": "fexp"}


def batchable(e) -> bool:
    return e.codec in _FAMILY and 0 < e.numel < BATCH_BELOW and e.dtype in _MODE


def _job(e, n: int, where: str, start: int) -> tuple:
    """(batch key, item of ``batch_dec.decode_many``) of ``e`` (``n`` = ``e.numel``); FormatError where the
    params are refused, or where the payload is shorter than any payload of ``n`` elements (ans:
    ``rans.min_length``; eg: 1 bit an element; fexp: 4 bits), so that the batch's one output buffer is
    bounded by the payloads' bytes as the one-by-one decodes' outputs are (a hostile file's entries cannot
    size it alone). ``where`` only names the tensor in an error, which the batch drops (one by one raises
    it again with the tensor's name)."""
    if e.codec == "fexp":
        s = _codec._check_fexp_params(e, where)
        if e.length < n // 2:
            raise FormatError("too short")
        return ("fexp", _codec.numpy_dtype(e.dtype).itemsize), (start, e.length, n, s)
    eg = e.codec == "eg"
    step, center, s = (_codec._check_eg_params if eg else _codec._check_ans_params)(e, where)
    if e.length < (n // 8 if eg else rans.min_length(12, n, s)):
        raise FormatError("too short")
    return (_FAMILY[e.codec], _MODE[e.dtype]), (start, e.length, n, s, center, step, e.codec == "ans-dq")


def decode_small(src, names: list) -> dict:
    """name -> array (``e.shape``) of every batchable tensor of ``names`` in the open ``_Source`` ``src``
    that decodes; the others (not batchable, or refused) are not in it."""
    data = np.frombuffer(src.buf, np.uint8)
    if data.ctypes.data % 8:  # a buffer from ``load(bytes)`` at an odd address: the kernels read words
        return {}
    base, buf, size, entries, where = src.index.data_start, src.buf, data.size, src.entries, src.where
    groups: dict = {}
    for name in names:
        e = entries[name]
        if e.codec not in _FAMILY or e.dtype not in _MODE:
            continue
        n = e.numel
        if not 0 < n < BATCH_BELOW:
            continue
        start = base + e.offset
        try:
            key, item = _job(e, n, where, start)
        except FormatError:
            continue  # one by one raises it
        end = start + e.length
        if end > size or checksum(buf[start:end]) != e.checksum:
            continue
        jobs = groups.get(key)
        if jobs is None:
            jobs = groups[key] = []
        jobs.append((e, item))
    out = {}
    for (kind, mode), jobs in groups.items():
        flat, offs, ok = batch_dec.decode_many(data, kind, mode, [j for _, j in jobs])
        offs, ok = offs.tolist(), ok.tolist()
        f16, view = mode == "F32" and kind != "fexp", kind == "fexp" or mode != "F32"
        for t, (e, _) in enumerate(jobs):
            if not ok[t]:
                continue
            a = flat[offs[t]:offs[t + 1]]
            if e.dtype == "F16" and f16:
                a = _codec._to_f16(a)
            elif view:
                a = a.view(_codec.numpy_dtype(e.dtype))
            out[e.name] = a.reshape(e.shape)
    return out
