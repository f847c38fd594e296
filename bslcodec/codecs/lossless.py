"""Lossless codecs: ``raw`` and chunked, byte-shuffled ``zstd`` (spec 4.1, 4.2)."""

import struct
import threading

import numpy as np
import zstandard

from ..container.dtypes import numpy_dtype
from ..container.errors import FormatError
from ..container.limits import MAX_ZSTD_CHUNK_ELEMS, ZSTD_MAX_RATIO
from . import params

CHUNK_BYTES = 4 << 20  # raw bytes per zstd chunk: big enough for a good ratio, small enough to slice
LEVEL = 3


def _shuffle(raw: np.ndarray, itemsize: int) -> np.ndarray:
    """Byte planes: byte b of element e -> b * m + e (groups exponents and mantissas of floats)."""
    return raw.reshape(-1, itemsize).T.reshape(-1) if itemsize > 1 else raw


def _unshuffle(planes: np.ndarray, itemsize: int) -> np.ndarray:
    return planes.reshape(itemsize, -1).T.reshape(-1) if itemsize > 1 else planes


_LOCAL = threading.local()


def _compressor(level: int):
    """This thread's compressor at ``level`` (one a thread: a compressor is not shared between threads).
    Making one was ~8 us of a small tensor's ~40 us trial; each ``compress`` is a fresh frame from the
    same parameters, so the same bytes."""
    got = getattr(_LOCAL, "cctx", None)
    if got is None or got[0] != level:
        got = _LOCAL.cctx = (level, zstandard.ZstdCompressor(level=level, write_content_size=True))
    return got[1]


def _decompressor():
    """This thread's decompressor (making one is ~8 us, most of a small tensor's decode; ``decompress``
    starts a fresh frame each call). A caller that met an error drops it (``_LOCAL.dctx = None``)."""
    got = getattr(_LOCAL, "dctx", None)
    if got is None:
        got = _LOCAL.dctx = zstandard.ZstdDecompressor()
    return got


def encode_zstd(arr: np.ndarray, level: int = LEVEL) -> tuple:
    """(params, payload) of a contiguous array."""
    itemsize = arr.dtype.itemsize
    chunk = max(1, min(MAX_ZSTD_CHUNK_ELEMS, CHUNK_BYTES // itemsize))
    flat = arr.reshape(-1).view(np.uint8)
    n = arr.size
    cctx = _compressor(level)
    frames = []
    for start in range(0, n, chunk):
        raw = flat[start * itemsize:min(n, start + chunk) * itemsize]
        frames.append(cctx.compress(np.ascontiguousarray(_shuffle(raw, itemsize)).tobytes()))
    head = np.array([len(frames)] + [len(f) for f in frames], "<u4").tobytes()
    return {"chunk_elems": chunk, "shuffle": True}, head + b"".join(frames)


_U32 = struct.Struct("<I")


def zstd_chunks(payload, n: int, params: dict, where: str) -> tuple:
    """Validate the chunk table; returns (chunk_elems, shuffle, frame offsets: a list for one chunk, an
    int64 array for more)."""
    chunk = params.get("chunk_elems")
    shuffle = params.get("shuffle")
    if type(chunk) is not int or not 1 <= chunk <= MAX_ZSTD_CHUNK_ELEMS or type(shuffle) is not bool:
        raise FormatError(f"{where}: bad zstd params {params!r}")
    m = -(-n // chunk)
    size = len(payload)
    if size < 4 or _U32.unpack_from(payload)[0] != m:
        raise FormatError(f"{where}: zstd chunk count does not match {n} elements / {chunk} per chunk")
    if size < 4 + 4 * m:
        raise FormatError(f"{where}: zstd chunk table is truncated")
    if m == 1:  # most tensors: no numpy for two numbers
        offsets = [8, 8 + _U32.unpack_from(payload, 4)[0]]
    else:
        sizes = np.frombuffer(payload, "<u4", m, 4).astype(np.int64)
        offsets = np.zeros(m + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        offsets += 4 + 4 * m
    if int(offsets[-1]) != size:
        raise FormatError(f"{where}: zstd frames end at {int(offsets[-1])}, payload has {size} bytes")
    return chunk, shuffle, offsets


def decode_zstd(payload, n: int, dtype: np.dtype, params: dict, where: str, first: int = 0,
                last: int | None = None) -> np.ndarray:
    """Decode elements of chunks [first, last) as a flat array of ``dtype``."""
    chunk, shuffle, offsets = zstd_chunks(payload, n, params, where)
    m = len(offsets) - 1
    last = m if last is None else last
    itemsize = dtype.itemsize
    start_e, end_e = first * chunk, min(n, last * chunk)
    # before allocating: the chunks' frames must be able to expand to their declared sizes (zstd expands at
    # most ZSTD_MAX_RATIO x), together here; a frame that cannot hold its own is refused when it decodes
    if end_e > start_e and (end_e - start_e) * itemsize > ZSTD_MAX_RATIO * int(offsets[last] - offsets[first]):
        want = np.full(m, chunk * itemsize, np.int64)
        want[-1] = (n - (m - 1) * chunk) * itemsize
        i = first + int(np.flatnonzero(want[first:last] > ZSTD_MAX_RATIO * np.diff(offsets)[first:last])[0])
        raise FormatError(f"{where}: zstd chunk {i} is {int(offsets[i + 1] - offsets[i])} bytes, too small "
                          f"for the {int(want[i])} bytes it must hold (zstd expands at most "
                          f"{ZSTD_MAX_RATIO}x)")
    out = np.empty((end_e - start_e) * itemsize, np.uint8)
    dctx = _decompressor()
    mv = memoryview(payload)
    for i in range(first, last):
        want = (min(n, (i + 1) * chunk) - i * chunk) * itemsize
        frame = mv[int(offsets[i]):int(offsets[i + 1])]
        try:
            params_ = zstandard.get_frame_parameters(frame)
            if params_.content_size != want:
                raise FormatError(f"{where}: zstd chunk {i} declares {params_.content_size} bytes, expected {want}")
            raw = dctx.decompress(frame, max_output_size=want, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            _LOCAL.dctx = None  # a fresh one for the next call, whatever state this one is in
            raise FormatError(f"{where}: zstd chunk {i} is corrupt: {exc}") from None
        if len(raw) != want:
            raise FormatError(f"{where}: zstd chunk {i} decompressed to {len(raw)} bytes, expected {want}")
        raw = np.frombuffer(raw, np.uint8)
        pos = (i * chunk - start_e) * itemsize
        dst = out[pos:pos + want]
        if shuffle and itemsize > 1:  # unshuffle straight into place: no chunk-sized temporary
            dst.reshape(-1, itemsize)[...] = raw.reshape(itemsize, -1).T
        else:
            dst[...] = raw
    return out.view(dtype)


def decode_entry(e, payload, where: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Elements [start, stop) of a ``raw`` or ``zstd`` entry (spec 4.1, 4.2), flat, in its dtype (BOOL bytes
    checked to be 0 or 1). No numba: a load onto a GPU decodes its raw tensors (small norms) with this alone."""
    n = e.numel
    stop = n if stop is None else stop
    dtype = numpy_dtype(e.dtype)
    if stop <= start:
        return np.empty(0, dtype)
    store = dtype if e.dtype != "BOOL" else np.dtype(np.uint8)
    if e.codec == "raw":
        if len(payload) != n * dtype.itemsize:
            raise FormatError(f"{where}: raw payload is {len(payload)} bytes, expected {n * dtype.itemsize}")
        out = np.frombuffer(payload, np.uint8, (stop - start) * dtype.itemsize, start * dtype.itemsize)
        out = out.view(store).copy()
    else:
        unit = params.unit(e, where)  # zstd_chunks rejects a bad chunk_elems
        u0, u1 = start // unit, -(-stop // unit)
        out = decode_zstd(payload, n, store, e.params, where, u0, u1)[start - u0 * unit: stop - u0 * unit]
    if e.dtype == "BOOL":
        if out.size and out.max() > 1:
            raise FormatError(f"{where}: BOOL tensor holds a byte other than 0 or 1")
        out = out.view(np.bool_)
    return out
