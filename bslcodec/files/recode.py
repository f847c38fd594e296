"""``bslcodec recode``: re-code the lossy tensors of a ``.bsl`` file with another entropy stage.

The quantized symbols stay the same, so every decoded value stays the same (no second quantization); only
the entropy stage changes: ``eg`` decodes faster layer by layer on a GPU, ``ans`` is ~5 % smaller. Lossless
tensors and metadata are copied (each tensor is decoded first, so an invalid input gives an error, not an
invalid output); payload checksums are verified on the way in and recomputed on the way out; the output is
written atomically.

    from bslcodec.files.recode import recode_file
    recode_file("model.bsl", "model-eg.bsl", codec="eg")
"""

import json
import os

from ..codecs import transcode
from ..container.errors import BslError
from ..container.format import Entry, checksum, place
from ..pipeline import codec as _codec
from . import api

LOSSY = ("eg", "ans")


def recode_file(src_path, dst_path, codec: str = "eg", overwrite: bool = False, progress=None) -> dict:
    """Write ``src_path`` to ``dst_path`` with every ``eg``/``ans`` tensor in ``codec``; a summary dict.

    ``ans-dq`` tensors (dependent quantization) are copied as they are: their levels need the ans-dq decoder.

    ``progress``: an optional callable ``(name, done, total)``.
    """
    if codec not in LOSSY:
        raise BslError(f"codec must be one of {', '.join(LOSSY)}, not {codec!r}")
    src_path, dst_path = os.fspath(src_path), os.fspath(dst_path)
    if os.path.exists(dst_path):
        if os.path.realpath(dst_path) == os.path.realpath(src_path):
            raise BslError(f"{dst_path}: the output must not be the input")
        if not overwrite:
            raise BslError(f"{dst_path} exists (overwrite=True, or --overwrite, replaces it)")
    src = api._Source(path=src_path)
    try:
        entries, payloads, n_recoded, before, after = [], [], 0, 0, 0
        total = len(src.index.entries)
        for i, e in enumerate(src.index.entries):
            where = f"{src.where}: tensor {e.name!r}"
            data = src.payload(e)  # checksum verified
            before += e.length
            if e.codec in LOSSY and e.codec != codec:
                (_codec._check_eg_params if e.codec == "eg" else _codec._check_ans_params)(e, where)
                try:
                    params, data = transcode.recode_payload(e.codec, data, e.numel, e.params, codec)
                except BslError as exc:
                    raise type(exc)(f"{where}: {exc}") from None
                new = Entry(e.name, e.dtype, tuple(e.shape), codec, params, extra=dict(e.extra))
                n_recoded += 1
            else:
                _codec.decode(e, data, where)  # copied as it is, but only if it decodes: no invalid output
                data = bytes(data)
                new = Entry(e.name, e.dtype, tuple(e.shape), e.codec, dict(e.params), extra=dict(e.extra))
            new.checksum = checksum(data)
            entries.append(new)
            payloads.append(data)
            after += len(data)
            if progress is not None:
                progress(e.name, i + 1, total)
        metadata = dict(src.index.metadata)
        if api.SETTINGS_KEY in metadata:
            try:
                used = json.loads(metadata[api.SETTINGS_KEY])
                if isinstance(used, dict) and not any(e.codec == "ans-dq" for e in entries):
                    used["codec"] = codec  # (ans-dq tensors have no eg form: they stay, and so does the setting)
                    metadata[api.SETTINGS_KEY] = json.dumps(used, sort_keys=True)
            except ValueError:
                pass  # not ours to fix: copied as it is
    finally:
        src.close()
    place(entries, [len(p) for p in payloads])
    api.atomic_write(dst_path, lambda fh: api._write(fh, entries, payloads, metadata))
    return {"tensors": total, "recoded": n_recoded, "payload_bytes_before": before, "payload_bytes_after": after,
            "file_bytes": os.path.getsize(dst_path)}


__all__ = ["recode_file"]
