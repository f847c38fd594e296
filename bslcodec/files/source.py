"""Reading a ``.bsl`` file or buffer: :class:`_Source` (memory-mapped bytes and the parsed index), decoding
all of it (``load``), and lazy access (:class:`safe_open`, ``get_slice``)."""

import mmap
import os
import stat

import numpy as np

from ..container.errors import BslError, ChecksumError, FormatError
from ..container.format import (
    PREAMBLE_BYTES,
    Entry,
    checksum,
    parse_header,
    read_header_length,
)

FRAMEWORKS = ("np", "numpy", "pt", "torch")


# The decoders (and with them numba, ~0.5 s on first import) are imported on the first decode, not on opening
# a file: a ``safe_open`` that reads keys, metadata or entries stays as quick as the header read.
def _codec():
    from ..pipeline import codec

    return codec


def _to_framework(arr, framework, device):
    from ..pipeline.arrays import _to_framework as convert

    return convert(arr, framework, device)


class _Source:
    """Read-only bytes of a file (memory-mapped) or a buffer, with its parsed index."""

    def __init__(self, data=None, path=None):
        self.path, self._mmap, self._fh = path, None, None
        where = f"{path}" if path is not None else "<bytes>"
        if path is not None:
            try:
                # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
                self._fh = open(fd, "rb")
            except OSError as exc:
                raise BslError(f"{path}: cannot open: {exc.strerror}") from None
            st = os.fstat(self._fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                self.close()
                raise BslError(f"{path}: not a regular file")
            size = st.st_size
            if size == 0:
                self.close()
                raise FormatError(f"{path}: empty file, not a .bsl file")
            self._mmap = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
            self.buf = memoryview(self._mmap)
        else:
            self.buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        try:
            size = len(self.buf)
            hlen, hsum, minor, flags = read_header_length(bytes(self.buf[:PREAMBLE_BYTES]), size)
            self.index = parse_header(self.buf[PREAMBLE_BYTES:PREAMBLE_BYTES + hlen], hsum, minor, size, flags)
        except FormatError as exc:
            self.close()
            raise type(exc)(f"{where}: {exc}") from None
        self.where = where
        self.entries = {e.name: e for e in self.index.entries}

    def entry(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            raise KeyError(f"{self.where}: no tensor named {name!r}") from None

    def payload(self, e: Entry, verify: bool = True):
        start = self.index.data_start + e.offset
        mv = self.buf[start:start + e.length]
        if verify and checksum(mv) != e.checksum:
            raise ChecksumError(f"{self.where}: tensor {e.name!r}: payload checksum mismatch (corrupted file)")
        return mv

    def tensor(self, name: str) -> np.ndarray:
        e = self.entry(name)
        where = f"{self.where}: tensor {name!r}"
        if e.codec in ("raw", "zstd"):  # no decoders (numba) needed: a GPU load's raw norms import none
            from ..codecs.lossless import decode_entry

            return decode_entry(e, self.payload(e), where).reshape(e.shape)
        return _codec().decode(e, self.payload(e), where)

    def close(self):
        buf = getattr(self, "buf", None)
        if buf is not None:
            buf.release()
            self.buf = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a decoded view still points into it; the OS unmaps it when collected
            self._mmap = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _check_framework(framework):
    if framework not in FRAMEWORKS:
        raise BslError(f"framework must be one of {FRAMEWORKS}, not {framework!r}")


def _load(src: _Source, framework: str, device) -> dict:
    _check_framework(framework)
    if framework in ("pt", "torch") and device not in ("cpu", None) and str(device).startswith("cuda"):
        from ..gpu import load_to_cuda  # leaf module: imported only when asked for

        return load_to_cuda(src, device)
    from .loader import decode_all

    return decode_all(src, list(src.entries), lambda arr: _to_framework(arr, framework, device))


def load_file(path, *, framework: str = "np", device: str = "cpu") -> dict:
    """Decode every tensor of a ``.bsl`` file: name -> numpy array (``framework="pt"``: torch tensor)."""
    src = _Source(path=os.fspath(path))
    try:
        return _load(src, framework, device)
    finally:
        src.close()


def load(data, *, framework: str = "np", device: str = "cpu") -> dict:
    """Decode every tensor of ``.bsl`` bytes."""
    return _load(_Source(data=data), framework, device)


def decode(data) -> np.ndarray:
    """Bytes from :func:`encode` -> the array (in its original dtype and shape)."""
    src = _Source(data=data)
    if len(src.entries) != 1:
        raise FormatError(f"decode() expects a one-tensor file, this one has {len(src.entries)}")
    return src.tensor(next(iter(src.entries)))


def load_torch(path, device="cpu") -> dict:
    """Torch tensors of one ``.bsl`` file on ``device``. For CUDA it uses the GPU decoder
    (``bslcodec.gpu``) when that can run here, else decodes on the CPU and copies the tensors over."""
    dev = str(device)
    if dev.startswith("cuda"):
        try:
            return load_file(path, framework="pt", device=dev)
        except ImportError:  # no GPU decoder here (GpuUnavailableError): CPU decode, then copy
            pass
    sd = load_file(path, framework="pt", device="cpu")
    return sd if dev == "cpu" else {k: v.to(dev) for k, v in sd.items()}


class _Slice:
    """``get_slice(name)[a:b, ...]``: decodes only the groups/chunks that hold the selected rows."""

    def __init__(self, handle, name):
        self._h, self._e = handle, handle._src.entry(name)

    def get_shape(self):
        return list(self._e.shape)

    def get_dtype(self):
        return self._e.dtype

    def __getitem__(self, key):
        e = self._e
        if not isinstance(key, tuple):
            key = (key,)
        if not e.shape:
            return self._h._out(self._h._src.tensor(e.name)[key])
        first, rest = key[0], key[1:]
        if isinstance(first, (bool, np.bool_)):  # a[True] is a new axis in numpy, not row 1
            raise BslError("get_slice takes an int or a slice on the first dimension, not a bool")
        if isinstance(first, (int, np.integer)):
            i = int(first) + (e.shape[0] if first < 0 else 0)
            if not 0 <= i < e.shape[0]:
                raise IndexError(f"index {first} is out of range for dimension 0 of size {e.shape[0]}")
            rows = range(i, i + 1)
        elif isinstance(first, slice):
            rows = range(*first.indices(e.shape[0]))
        else:
            raise BslError("get_slice supports an int or a slice on the first dimension")
        lo, hi = (min(rows), max(rows) + 1) if len(rows) else (0, 0)
        row = int(np.prod(e.shape[1:], dtype=np.int64))
        src = self._h._src
        flat = _codec().decode_flat(e, src.payload(e), f"{src.where}: tensor {e.name!r}", lo * row, hi * row)
        block = flat.reshape((hi - lo,) + tuple(e.shape[1:]))
        if rows.step != 1 and len(rows) > 1:
            block = block[::rows.step] if rows.step > 0 else block[::-1][::-rows.step]
        block = block[0] if isinstance(first, (int, np.integer)) else block
        lead = () if isinstance(first, (int, np.integer)) else (slice(None),)
        return self._h._out(block[lead + rest] if rest else block)


class safe_open:
    """Lazy access to a ``.bsl`` file, like ``safetensors.safe_open``::

        with bslcodec.safe_open("model.bsl", framework="np") as f:
            for name in f.keys():
                w = f.get_tensor(name)
            rows = f.get_slice("emb")[100:200]
    """

    def __init__(self, path, framework: str = "np", device: str = "cpu"):
        _check_framework(framework)
        self._framework, self._device = framework, device
        self._src = _Source(path=os.fspath(path))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._src.close()

    def keys(self) -> list:
        return sorted(self._src.entries)

    def metadata(self) -> dict:
        return dict(self._src.index.metadata)

    def entry(self, name: str) -> Entry:
        """The index entry (dtype, shape, codec, params, sizes) of a tensor."""
        return self._src.entry(name)

    def entries(self) -> list:
        return list(self._src.index.entries)

    def _out(self, arr):
        return _to_framework(arr if arr.flags.c_contiguous else arr.copy(order="C"), self._framework, self._device)

    def get_tensor(self, name: str):
        if self._framework in ("pt", "torch") and str(self._device).startswith("cuda"):
            from ..gpu import load_to_cuda

            return load_to_cuda(self._src, self._device, names=[name])[name]
        return self._out(self._src.tensor(name))

    def get_slice(self, name: str) -> _Slice:
        return _Slice(self, name)
