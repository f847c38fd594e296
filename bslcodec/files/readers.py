"""Reading checkpoints: one file of tensors (``.safetensors``, torch ``.pt``/``.bin``, ``.npz``, ``.bsl``) or a
Hugging Face model folder (one weights file, or shards listed in an ``*.index.json``), and the names of those
layouts.

Reading never unpickles arbitrary objects: torch files go through ``torch.load(weights_only=True)``
(torch is imported only for them) and ``.npz`` through ``numpy.load(allow_pickle=False)``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import stat
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..container.dtypes import NUMPY_DTYPES
from ..container.errors import BslError, EncodeError
from .source import safe_open as _bsl_open  # (not files.api: listing and reading headers need no codecs)

# ---------------------------------------------------------------- names

BSL_SINGLE = "model.bsl"
BSL_INDEX = "model.bsl.index.json"
ST_SINGLE = "model.safetensors"
ST_INDEX = "model.safetensors.index.json"
PT_SINGLE = "pytorch_model.bin"
PT_INDEX = "pytorch_model.bin.index.json"
#: Weight files looked for in a model folder, in order of preference: (index, single file, format).
WEIGHT_LAYOUTS = ((ST_INDEX, ST_SINGLE, "safetensors"), (PT_INDEX, PT_SINGLE, "pt"))
BSL_LAYOUT = (BSL_INDEX, BSL_SINGLE, "bsl")
#: Files at the top of a model folder with these suffixes are other copies of the weights: not copied.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf",
                   ".bsl", ".npz", ".ot")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
META_PREFIX = "bslcodec."  # metadata keys bslcodec adds to a .bsl file; not copied back out on decode
_ST_ITEMSIZE = {"F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1}


class CheckpointError(BslError):
    """A checkpoint cannot be read or written (missing file, unsupported layout, unsafe pickle)."""


def shard_name(i: int, n: int, suffix: str) -> str:
    """``model-00001-of-00003.bsl`` (``i`` counts from 0)."""
    return f"model-{i + 1:05d}-of-{n:05d}{suffix}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


# ---------------------------------------------------------------- one file of tensors

class TensorFile:
    """Tensors of one file, read lazily where the format allows. ``keys()`` is sorted."""

    fmt = "?"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.metadata: dict = {}

    def keys(self) -> list:
        raise NotImplementedError

    def nbytes(self, name: str) -> int:
        """Decoded size of a tensor in bytes (for progress bars and totals)."""
        raise NotImplementedError

    def get(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SafetensorsFile(TensorFile):
    fmt = "safetensors"

    def __init__(self, path):
        super().__init__(path)
        try:
            from safetensors import safe_open
        except ImportError:  # pragma: no cover - safetensors is a demo/test extra
            raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package: "
                                  "pip install safetensors") from None
        try:
            self._f = safe_open(str(path), framework="numpy")
            self.metadata = dict(self._f.metadata() or {})
            self._keys = sorted(self._f.keys())
        except Exception as exc:  # SafetensorError, OSError: a bad or truncated file
            raise CheckpointError(f"{path}: not a readable .safetensors file: {_first_line(exc)}") from None
        self._layout = _st_layout(path)

    def keys(self):
        return self._keys

    def nbytes(self, name):
        sl = self._f.get_slice(name)
        dt = sl.get_dtype()
        size = NUMPY_DTYPES[dt].itemsize if dt in NUMPY_DTYPES else _ST_ITEMSIZE.get(dt, 1)
        return math.prod(sl.get_shape()) * size

    def get(self, name):
        got = _st_read(self.path, self._layout, name)
        if got is not None:
            return got
        try:
            return self._f.get_tensor(name)
        except Exception as exc:
            raise CheckpointError(f"{self.path}: tensor {name!r}: cannot read: {_first_line(exc)}") from None

    def close(self):
        self._f = None


def _st_layout(path) -> dict | None:
    """name -> (dtype, shape, file offset, bytes) from a ``.safetensors`` header (already checked by
    safetensors' own ``safe_open``), for reads into fresh arrays: safetensors' numpy reader copies out of a
    memory map of the file, whose pages then count in the process's resident memory as well as the copy (a
    whole shard's worth once every tensor was read: issue 18's peak-memory bound). None: read through
    safetensors (not a little-endian host, or a header this reader does not follow)."""
    if np.little_endian is False:  # pragma: no cover - the file's values are little-endian
        return None
    try:
        with open(path, "rb") as fh:
            (n,) = np.frombuffer(fh.read(8), "<u8")
            head = json.loads(fh.read(int(n)))
        out = {}
        for name, info in head.items():
            if name == "__metadata__":
                continue
            dt = NUMPY_DTYPES.get(info["dtype"])
            begin, end = (int(v) for v in info["data_offsets"])
            shape = tuple(int(v) for v in info["shape"])
            if dt is not None and end - begin == math.prod(shape) * dt.itemsize:
                out[name] = (dt, shape, 8 + int(n) + begin, end - begin)
        return out
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _st_read(path, layout, name):
    """``name`` read from the file into a fresh array (``_st_layout``), or None: read through safetensors."""
    if not layout or name not in layout:
        return None
    dt, shape, offset, nbytes = layout[name]
    arr = np.empty(shape, dt)
    view = memoryview(arr.reshape(-1).view(np.uint8)) if nbytes else memoryview(b"")
    try:
        with open(path, "rb", buffering=0) as fh:
            fh.seek(offset)
            got = 0
            while got < nbytes:
                k = fh.readinto(view[got:])
                if not k:
                    return None  # truncated since it was opened: safetensors says what is wrong
                got += k
    except OSError:
        return None
    return arr


class TorchFile(TensorFile):
    """A torch state dict, loaded with ``torch.load(weights_only=True)``: no arbitrary objects."""

    fmt = "pt"

    def __init__(self, path):
        super().__init__(path)
        try:
            import torch
        except ImportError:
            raise CheckpointError(f"{path}: reading torch checkpoints needs torch: pip install torch") from None
        try:
            with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says enough
                warnings.simplefilter("ignore")
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"{path}: refusing to load: the file holds objects other than tensors, and bslcodec never "
                f"unpickles arbitrary objects (torch.load(weights_only=True): {_first_line(exc)})") from None
        except Exception as exc:  # RuntimeError, EOFError, ...: not a torch file, or a damaged one
            raise CheckpointError(f"{path}: not a readable torch checkpoint: {_first_line(exc)}") from None
        self.wrapper = None
        if isinstance(obj, dict) and len(obj) == 1:
            (key, inner), = obj.items()
            if isinstance(key, str) and isinstance(inner, dict) and inner and \
                    all(isinstance(v, torch.Tensor) for v in inner.values()):
                self.wrapper, obj = key, inner  # {"state_dict": {...}}: remembered for decode
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path}: not a state dict: the file holds a {type(obj).__name__}, "
                                  "expected a dict of tensors")
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{path}: not a state dict: key {k!r} is not a string")
            if not isinstance(v, torch.Tensor):
                raise CheckpointError(f"{path}: not a state dict: {k!r} holds a {type(v).__name__}, "
                                      "not a tensor (only dicts of tensors can be encoded)")
        self._sd = obj
        self._keys = sorted(obj)
        if self.wrapper is not None:
            self.metadata = {META_PREFIX + "pt_wrapper": self.wrapper}

    def keys(self):
        return self._keys

    def nbytes(self, name):
        t = self._sd[name]
        return t.numel() * t.element_size()

    def get(self, name):
        try:
            from ..pipeline.arrays import as_numpy  # (the pipeline package brings numba)

            return as_numpy(self._sd[name], name)
        except EncodeError as exc:
            raise CheckpointError(f"{self.path}: {exc}") from None

    def close(self):
        self._sd = {}


class NpzFile(TensorFile):
    fmt = "npz"

    def __init__(self, path):
        super().__init__(path)
        try:
            self._z = np.load(str(path), allow_pickle=False)
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable .npz file: {_first_line(exc)}") from None
        if not isinstance(self._z, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: a single .npy array, not an .npz archive of named arrays")
        odd = [n for n in self._z.zip.namelist() if not n.endswith(".npy")]
        if odd:  # np.load hands such members out as bytes (a torch zip checkpoint named .npz, say)
            self._z.close()
            raise CheckpointError(f"{path}: not an .npz archive of arrays: member {odd[0]!r} is not a .npy array "
                                  "(a torch checkpoint? name it .pt)")
        self._keys = sorted(self._z.files)

    def keys(self):
        return self._keys

    def nbytes(self, name):
        try:
            return self._z.zip.getinfo(name + ".npy").file_size
        except KeyError:
            return 0

    def get(self, name):
        try:
            arr = self._z[name]
        except ValueError as exc:  # object arrays: "cannot be loaded when allow_pickle=False"
            raise CheckpointError(f"{self.path}: array {name!r}: refusing to unpickle an object array "
                                  f"({_first_line(exc)})") from None
        except Exception as exc:
            raise CheckpointError(f"{self.path}: array {name!r}: cannot read: {_first_line(exc)}") from None
        if arr.dtype.kind == "V":
            raise CheckpointError(f"{self.path}: array {name!r} has the raw dtype {arr.dtype} (bfloat16 does "
                                  "not survive .npz); use .safetensors or .pt for bfloat16")
        return arr

    def close(self):
        self._z.close()


class BslFile(TensorFile):
    fmt = "bsl"

    def __init__(self, path, framework="np", device="cpu"):
        super().__init__(path)
        self._f = _bsl_open(str(path), framework=framework, device=device)
        self.metadata = self._f.metadata()
        self._keys = self._f.keys()

    def keys(self):
        return self._keys

    def entry(self, name):
        return self._f.entry(name)

    def entries(self):
        return self._f.entries()

    def nbytes(self, name):
        e = self._f.entry(name)
        return e.numel * NUMPY_DTYPES[e.dtype].itemsize

    def get(self, name):
        return self._f.get_tensor(name)

    def close(self):
        self._f.close()


def _sniff(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head.startswith(b"\x89BSL"):
        return "bsl"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        return "npz" if names and all(n.endswith(".npy") for n in names) else "pt"
    if head[:1] == b"\x80":  # a legacy (non-zip) torch pickle
        return "pt"
    return None


def file_format(path) -> str:
    """``safetensors``, ``pt``, ``npz`` or ``bsl``, by suffix, else by the first bytes."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "pt"
    if suffix == ".npz":
        return "npz"
    if suffix == ".bsl":
        return "bsl"
    fmt = _sniff(path)
    if fmt is None:
        raise CheckpointError(f"{path}: unknown checkpoint format (expected .safetensors, .pt/.pth/.bin, "
                              ".npz, .bsl or a Hugging Face model folder)")
    return fmt


def open_file(path, fmt: str | None = None) -> TensorFile:
    path = Path(path)
    fmt = fmt or file_format(path)
    return {"safetensors": SafetensorsFile, "pt": TorchFile, "npz": NpzFile, "bsl": BslFile}[fmt](path)


# ---------------------------------------------------------------- checkpoints (a file or a folder)

@dataclass
class Checkpoint:
    """A file of tensors, or a model folder: weight files (shards) plus other files to copy along."""

    path: Path
    fmt: str
    files: list  # absolute paths of the weight files, in shard order
    folder: bool = False
    index_name: str | None = None  # the index file of a sharded folder
    index: dict | None = None
    extra: list = field(default_factory=list)  # folder only: relative paths of files copied unchanged
    skipped: list = field(default_factory=list)  # folder only: other weight files, not copied

    @property
    def sharded(self) -> bool:
        return self.index_name is not None

    @property
    def weight_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    def open(self, i: int) -> TensorFile:
        return open_file(self.files[i], self.fmt)


def _read_index(folder: Path, name: str) -> tuple:
    path = folder / name
    try:
        with open(path, encoding="utf-8") as fh:
            index = json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable index: {_first_line(exc)}") from None
    wm = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wm, dict) or not wm:
        raise CheckpointError(f"{path}: an index needs a non-empty 'weight_map' object")
    files = []
    for shard in wm.values():
        if not isinstance(shard, str) or not shard or "/" in shard or "\\" in shard or shard in (".", ".."):
            raise CheckpointError(f"{path}: weight_map names {shard!r}, not a file name in this folder")
        if shard not in files:
            files.append(shard)
    for shard in files:
        if not (folder / shard).is_file():
            raise CheckpointError(f"{path}: shard {shard!r} is missing from {folder}")
    return index, [folder / f for f in sorted(files)]


def _link_roots(folder: Path) -> list:
    """Where a symlink in ``folder`` may point for its file to be copied: inside the folder, and for a
    Hugging Face cache snapshot (``models--org--name/snapshots/<rev>/``, whose files are links to
    ``../../blobs/<hash>``) that model's ``blobs`` folder."""
    real = folder.resolve()
    roots = [real]
    if real.parent.name == "snapshots" and (real.parent.parent / "blobs").is_dir():
        roots.append((real.parent.parent / "blobs").resolve())
    return roots


def copyable(folder: Path, rel: str, roots: list | None = None) -> Path:
    """The real path of the file ``folder/rel`` to copy along, or CheckpointError: only regular files, and
    symlinks to regular files inside the folder (see :func:`_link_roots`) are copied. A link out of the
    folder (to an SSH key, say) would publish that file with the model; ``/dev/zero`` or a FIFO would
    never end."""
    path = folder / rel
    roots = roots or _link_roots(folder)
    why = None
    try:
        if path.is_symlink():
            target = path.resolve(strict=True)
            if not any(target == r or r in target.parents for r in roots):
                why = f"a symlink to {target}, outside the folder"
            path = target
        if why is None and not stat.S_ISREG(os.stat(path).st_mode):
            why = "not a regular file (a FIFO, device, socket or folder)"
    except (OSError, RuntimeError) as exc:  # dangling link, link loop
        why = f"a symlink that does not resolve ({getattr(exc, 'strerror', None) or exc})"
    if why:
        raise CheckpointError(f"{folder / rel}: {why}; bslcodec copies only regular files inside the model "
                              "folder: remove it or copy the file in")
    return path


def _extras(folder: Path, used: set) -> tuple:
    """(files to copy, weight files left out): every file but the weights; hidden folders skipped.
    CheckpointError for anything else (see :func:`copyable`), before any work is done."""
    extra, skipped = [], []
    roots = _link_roots(folder)
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_root = Path(root).relative_to(folder)
        for d in dirs:  # os.walk lists a symlinked folder here and does not enter it
            if (Path(root) / d).is_symlink():
                raise CheckpointError(f"{Path(root) / d}: a symlink to a folder; bslcodec copies only regular "
                                      "files inside the model folder: remove it or copy the files in")
        for f in sorted(files):
            rel = rel_root / f
            if rel_root == Path(".") and f in used:
                continue
            if rel_root == Path(".") and (f.lower().endswith(WEIGHT_SUFFIXES) or f.endswith(".index.json")):
                skipped.append(str(rel))  # another copy of the weights (e.g. pytorch_model.bin)
                continue
            if f.startswith(".bsl-") or f.endswith((".bsl-tmp", ".bsl-old")):
                continue  # a temporary file of ours
            copyable(folder, str(rel), roots)
            extra.append(str(rel))
    return extra, skipped


def open_checkpoint(path, kind: str = "weights") -> Checkpoint:
    """Find the tensors at ``path``: a file, or a model folder.

    ``kind``: ``"weights"`` (an input to encode: safetensors/pt/npz, folder with ``model.safetensors``
    or ``pytorch_model.bin``, single or sharded), ``"bsl"`` (a ``.bsl`` file or a folder written by
    ``bslcodec encode``), or ``"any"``.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        layouts = {"weights": WEIGHT_LAYOUTS, "bsl": (BSL_LAYOUT,), "any": (BSL_LAYOUT,) + WEIGHT_LAYOUTS}[kind]
        for index_name, single, fmt in layouts:
            if (path / index_name).is_file():
                index, files = _read_index(path, index_name)
                used = {index_name} | {f.name for f in files}
                extra, skipped = _extras(path, used)
                return Checkpoint(path, fmt, files, True, index_name, index, extra, skipped)
            if (path / single).is_file():
                extra, skipped = _extras(path, {single})
                return Checkpoint(path, fmt, [path / single], True, None, None, extra, skipped)
        looked = ", ".join(n for layout in layouts for n in layout[:2])
        what = "no .bsl weights" if kind == "bsl" else "no model weights"
        raise CheckpointError(f"{path}: folder has {what} (looked for {looked})")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file or folder")
    if kind == "bsl" and _sniff(path) != "bsl":
        raise CheckpointError(f"{path}: not a .bsl file; encode it first with 'bslcodec encode'")
    fmt = file_format(path)
    if kind == "weights" and fmt == "bsl":
        raise CheckpointError(f"{path}: already a .bsl file (decode it with 'bslcodec decode')")
    return Checkpoint(path, fmt, [path])


def bsl_files(path) -> list:
    """The ``.bsl`` files of a ``.bsl`` file or of a folder written by ``bslcodec encode``."""
    return open_checkpoint(path, "bsl").files


