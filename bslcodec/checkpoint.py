"""Checkpoints on disk for the CLI and the loaders: ``.safetensors``, torch ``.pt``/``.bin``, ``.npz``,
``.bsl``, and Hugging Face model folders (one weights file, or shards listed in an ``*.index.json``).

Reading never unpickles arbitrary objects: torch files go through ``torch.load(weights_only=True)``
(torch is imported only for them) and ``.npz`` through ``numpy.load(allow_pickle=False)``.

Every output is staged: written under a temporary name beside the destination (a temporary folder for
folder outputs), fsynced, then renamed into place, so a failed or interrupted run leaves nothing behind.

Folder layout written by :func:`encode_checkpoint`::

    model.bsl                                   # input had model.safetensors (or pytorch_model.bin)
    model-00001-of-00003.bsl ...                # input was sharded: one .bsl per input shard
    model.bsl.index.json                        # {"metadata": {...}, "weight_map": {name: shard}}
    config.json, tokenizer.json, 1_Pooling/...  # every other file, copied unchanged
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import api
from .api import as_numpy
from .dtypes import NUMPY_DTYPES, dtype_name
from .errors import BslError, EncodeError

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

    def keys(self):
        return self._keys

    def nbytes(self, name):
        sl = self._f.get_slice(name)
        dt = sl.get_dtype()
        size = NUMPY_DTYPES[dt].itemsize if dt in NUMPY_DTYPES else _ST_ITEMSIZE.get(dt, 1)
        return math.prod(sl.get_shape()) * size

    def get(self, name):
        try:
            return self._f.get_tensor(name)
        except Exception as exc:
            raise CheckpointError(f"{self.path}: tensor {name!r}: cannot read: {_first_line(exc)}") from None

    def close(self):
        self._f = None


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
        self._f = api.safe_open(str(path), framework=framework, device=device)
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


def _extras(folder: Path, used: set) -> tuple:
    """(files to copy, weight files left out): every file but the weights; hidden folders skipped."""
    extra, skipped = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_root = Path(root).relative_to(folder)
        for f in sorted(files):
            rel = rel_root / f
            if rel_root == Path(".") and f in used:
                continue
            if rel_root == Path(".") and (f.lower().endswith(WEIGHT_SUFFIXES) or f.endswith(".index.json")):
                skipped.append(str(rel))  # another copy of the weights (e.g. pytorch_model.bin)
                continue
            if f.startswith(".bsl-") or f.endswith(".bsl-tmp"):
                continue  # a temporary file of ours
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


# ---------------------------------------------------------------- staged output

def _fsync_dir(folder) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_output(path, folder: bool, overwrite: bool = False):
    """Yield a temporary path beside ``path``; on success fsync and rename it to ``path``, else delete it."""
    path = Path(path)
    parent = path.absolute().parent
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise CheckpointError(f"{path}: already exists (pass --overwrite to replace it)")
        if path.is_dir() != folder:
            raise CheckpointError(f"{path}: already exists and is a {'folder' if path.is_dir() else 'file'}; "
                                  f"the output here is a {'folder' if folder else 'file'}")
    if not parent.is_dir():
        raise CheckpointError(f"{parent}: output folder does not exist")
    try:
        if folder:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".bsl-tmp", dir=parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".bsl-tmp", dir=parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        raise CheckpointError(f"{parent}: cannot write here: {exc.strerror}") from None

    def remove(p):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    try:
        yield tmp
        mask = _umask()
        if folder:
            os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it 0700; give it the mode mkdir would
            for root, _, files in os.walk(tmp):
                for f in files:
                    _fsync_file(os.path.join(root, f))
                _fsync_dir(root)
            if path.exists():  # --overwrite: move the old folder aside, then swap
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".bsl-old", dir=parent))
                os.rename(path, old / "x")
                try:
                    os.rename(tmp, path)
                except BaseException:
                    os.rename(old / "x", path)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, path)
        else:
            os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it 0600; give it the mode open() would
            _fsync_file(tmp)
            os.replace(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        remove(tmp)
        raise


# ---------------------------------------------------------------- writers (to a final or staged path)

def write_bsl(path, entries: list, payloads: list, metadata: dict) -> int:
    """Write encoded tensors as a ``.bsl`` file; returns its size."""
    from .format import place

    place(entries, [len(p) for p in payloads])
    with open(path, "wb") as fh:
        api._write(fh, entries, payloads, metadata)  # the one .bsl writer (preamble, header, payloads)
    return os.path.getsize(path)


def _user_metadata(metadata: dict) -> dict:
    return {k: v for k, v in (metadata or {}).items() if not k.startswith(META_PREFIX)}


def write_safetensors(path, tensors: dict, metadata: dict | None = None) -> None:
    try:
        from safetensors.numpy import save_file
    except ImportError:  # pragma: no cover
        raise CheckpointError("writing .safetensors needs the safetensors package: pip install safetensors") \
            from None
    meta = _user_metadata(metadata)
    meta.setdefault("format", "pt")  # what transformers checks before loading a .safetensors file
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot write .safetensors: {_first_line(exc)}") from None


def write_pt(path, tensors: dict, metadata: dict | None = None) -> None:
    try:
        import torch
    except ImportError:
        raise CheckpointError("writing .pt needs torch: pip install torch") from None
    sd = {k: api._to_framework(np.ascontiguousarray(v), "pt", "cpu") for k, v in tensors.items()}
    wrapper = (metadata or {}).get(META_PREFIX + "pt_wrapper")
    torch.save({wrapper: sd} if wrapper else sd, str(path))


def write_npz(path, tensors: dict, metadata: dict | None = None) -> None:
    for k, v in tensors.items():
        if v.dtype == NUMPY_DTYPES["BF16"]:
            raise CheckpointError(f"tensor {k!r} is bfloat16, which .npz cannot hold; "
                                  "decode to .safetensors or .pt instead")
    with open(path, "wb") as fh:
        np.savez(fh, **tensors)


WRITERS = {"safetensors": (write_safetensors, ".safetensors"), "pt": (write_pt, ".pt"),
           "npz": (write_npz, ".npz")}


def output_format(path) -> str:
    """Format of a decoded file by its suffix: ``.pt``/``.pth``/``.bin`` torch, ``.npz``, else safetensors."""
    suffix = Path(path).suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return "pt"
    if suffix == ".npz":
        return "npz"
    if suffix == ".bsl":
        raise CheckpointError(f"{path}: decode writes .safetensors, .pt or .npz, not .bsl")
    return "safetensors"


# ---------------------------------------------------------------- progress

class Progress:
    """A tqdm bar in bytes (per tensor updates, bytes/s), or nothing when disabled."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            # disable=None: no bar when stderr is not a terminal (logs, pipes, CI)
            self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True,
                            file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)

    def start(self, name: str):
        if self.bar is not None:
            self.bar.set_postfix_str(name if len(name) <= 40 else "…" + name[-39:], refresh=False)

    def update(self, n: int):
        if self.bar is not None:
            self.bar.update(n)

    def note(self, text: str):
        if self.bar is not None and not self.bar.disable:
            self.bar.set_description_str(text)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- encoding

@dataclass
class Result:
    """What an encode or decode did: sizes, counts and time, for the summary line."""

    inputs: list
    outputs: list
    in_bytes: int = 0
    out_bytes: int = 0
    n_tensors: int = 0
    n_weights: int = 0
    seconds: float = 0.0
    rel_steps: list = field(default_factory=list)  # bits=: the rel_step chosen for each file
    skipped: list = field(default_factory=list)
    encoded: bool = True  # False for a decode

    @property
    def bsl_bytes(self) -> int:
        return self.out_bytes if self.encoded else self.in_bytes

    @property
    def bits_per_weight(self) -> float:
        """Bits of ``.bsl`` per element (all tensors, headers included)."""
        return 8 * self.bsl_bytes / self.n_weights if self.n_weights else 0.0

    @property
    def ratio(self) -> float:
        return self.in_bytes / self.out_bytes if self.out_bytes else float("inf")


def check_settings(max_error=None, rel_step=None, bits=None, lossless=(), rdoq=None, quantizer=None) -> None:
    """Raise EncodeError for conflicting or bad options (before any work is done)."""
    from .codec import Settings

    Settings(max_error=max_error, rel_step=rel_step, bits=bits, lossless=tuple(lossless or ()), rdoq=rdoq,
             quantizer=quantizer)


def encode_file(tf: TensorFile, dest, *, max_error=None, rel_step=None, bits=None, lossless=(), sensitivity=None,
                codec="auto", bar=None, extra_metadata=None, rdoq=None, quantizer=None) -> tuple:
    """Encode every tensor of ``tf`` to the ``.bsl`` file ``dest`` with ``api.encode_tensors``.

    Returns (file size, number of elements, the rel_step chosen for ``bits=`` or None). The file's
    metadata keeps the source file's metadata, plus ``bslcodec.source_format`` and the core's
    ``bslcodec.settings`` (JSON of the options; ``bits=`` adds the rel_step it found) for ``verify``.
    """
    bar = bar or Progress(0, "", False)
    metadata = {k: v for k, v in tf.metadata.items() if isinstance(k, str) and isinstance(v, str)}
    metadata.update(extra_metadata or {})
    metadata[META_PREFIX + "source_format"] = tf.fmt
    arrays = {n: tf.get(n) for n in tf.keys()}

    def progress(phase, name, nbytes):
        if phase == "search":
            bar.note(f"search step for {bits:g} bits/weight")
            return
        bar.note(phase)
        bar.start(name)
        bar.update(nbytes)

    try:
        entries, payloads, metadata = api.encode_tensors(
            arrays, metadata=metadata, max_error=max_error, rel_step=rel_step, bits=bits,
            lossless=tuple(lossless or ()), sensitivity=sensitivity, codec=codec, progress=progress, rdoq=rdoq,
            quantizer=quantizer)
    except BslError as exc:
        raise type(exc)(f"{tf.path}: {exc}") from None
    chosen = json.loads(metadata[api.SETTINGS_KEY]).get("rel_step") if bits is not None else None
    n_weights = sum(math.prod(e.shape) for e in entries)
    return write_bsl(dest, entries, payloads, metadata), n_weights, chosen


def _copy_extras(src: Checkpoint, tmp: Path) -> None:
    for rel in src.extra:
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src.path / rel, target)  # follows symlinks (Hugging Face cache snapshots)


def _total_bytes(src: Checkpoint) -> int:
    total = 0
    for i in range(len(src.files)):
        with src.open(i) as tf:
            total += sum(tf.nbytes(n) for n in tf.keys())
    return total


def encode_checkpoint(inp, out, *, max_error=None, rel_step=None, bits=None, lossless=(), sensitivity=None, codec="auto",
                      overwrite=False, progress=True, rdoq=None, quantizer=None) -> Result:
    """Encode a checkpoint file or model folder to a ``.bsl`` file or folder (see the module docstring).

    With ``bits=`` the target holds for each output file (so for the whole folder too); each shard gets
    its own step.
    """
    t0 = time.perf_counter()
    check_settings(max_error, rel_step, bits, lossless, quantizer=quantizer)
    src = open_checkpoint(inp, "weights")
    out = Path(out)
    _check_distinct(src, out)
    res = Result([str(f) for f in src.files], [], in_bytes=src.weight_bytes, skipped=list(src.skipped))
    kw = dict(max_error=max_error, rel_step=rel_step, bits=bits, lossless=lossless, sensitivity=sensitivity,
              codec=codec, quantizer=quantizer)
    if rdoq is not None:  # None: the codec's default for the mode (bslcodec.rdoq.DEFAULT_ON)
        kw["rdoq"] = rdoq
    # torch files are read whole: their size stands in for the tensor bytes rather than reading them twice
    total = src.weight_bytes if src.fmt == "pt" else _total_bytes(src)
    bar = Progress(2 * total, "encode", progress)  # each tensor's bytes count twice: fit, then encode
    try:
        with staged_output(out, src.folder, overwrite) as tmp:
            n = len(src.files)
            weight_map, names = {}, []
            for i in range(n):
                if not src.folder:
                    dest, shard = tmp, out.name
                else:
                    shard = shard_name(i, n, ".bsl") if src.sharded else BSL_SINGLE
                    dest = tmp / shard
                with src.open(i) as tf:
                    size, n_w, rel = encode_file(tf, dest, bar=bar, **kw)
                    for name in tf.keys():
                        if name in weight_map:
                            raise CheckpointError(f"{src.path}: tensor {name!r} is in two shards")
                        weight_map[name] = shard
                    names.append(shard)
                res.out_bytes += size
                res.n_weights += n_w
                res.n_tensors += len(tf.keys())
                res.rel_steps.append(rel)
            if src.folder:
                if src.sharded:
                    meta = {"total_size": _total_decoded(tmp, names), "bsl_total_size": res.out_bytes}
                    with open(tmp / BSL_INDEX, "w", encoding="utf-8") as fh:
                        json.dump({"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}, fh,
                                  indent=2)
                        fh.write("\n")
                _copy_extras(src, tmp)
                res.outputs = [str(out / s) for s in names]
            else:
                res.outputs = [str(out)]
    finally:
        bar.close()
    res.seconds = time.perf_counter() - t0
    return res


def _check_distinct(src: Checkpoint, out: Path) -> None:
    o, i = out.resolve(), src.path.resolve()
    if o == i:
        raise CheckpointError(f"{out}: the output must differ from the input")
    if src.folder and i in o.parents:
        raise CheckpointError(f"{out}: the output must not be inside the input folder {src.path}")


def _total_decoded(folder: Path, shards: list) -> int:
    total = 0
    for s in shards:
        with BslFile(folder / s) as f:
            total += sum(f.nbytes(n) for n in f.keys())
    return total


# ---------------------------------------------------------------- decoding

def decode_checkpoint(inp, out, *, overwrite=False, progress=True) -> Result:
    """Decode a ``.bsl`` file (to ``.safetensors``/``.pt``/``.npz`` by ``out``'s suffix) or an encoded
    folder (to a folder of ``model.safetensors`` or safetensors shards with their index, plus the
    copied files)."""
    t0 = time.perf_counter()
    src = open_checkpoint(inp, "bsl")
    out = Path(out)
    _check_distinct(src, out)
    fmt = "safetensors" if src.folder else output_format(out)
    write = WRITERS[fmt][0]
    res = Result([str(f) for f in src.files], [], in_bytes=src.weight_bytes, encoded=False)
    bar = Progress(_total_bytes(src), "decode", progress)
    try:
        with staged_output(out, src.folder, overwrite) as tmp:
            n = len(src.files)
            weight_map, total = {}, 0
            for i in range(n):
                if not src.folder:
                    dest, shard = tmp, out.name
                else:
                    shard = shard_name(i, n, ".safetensors") if src.sharded else ST_SINGLE
                    dest = tmp / shard
                with BslFile(src.files[i]) as f:
                    tensors = {}
                    for name in f.keys():
                        bar.start(name)
                        tensors[name] = f.get(name)
                        bar.update(tensors[name].nbytes)
                        weight_map[name] = shard
                    try:
                        write(dest, tensors, f.metadata)
                    except CheckpointError as exc:
                        raise CheckpointError(f"{f.path}: {exc}") from None
                    nb = sum(t.nbytes for t in tensors.values())
                    total += nb
                    res.n_tensors += len(tensors)
                    res.n_weights += sum(t.size for t in tensors.values())
                    del tensors
                res.outputs.append(str(out / shard) if src.folder else str(out))
                res.out_bytes += os.path.getsize(dest)
            if src.folder:
                if src.sharded:
                    with open(tmp / ST_INDEX, "w", encoding="utf-8") as fh:
                        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                                  fh, indent=2)
                        fh.write("\n")
                _copy_extras(src, tmp)
    finally:
        bar.close()
    res.seconds = time.perf_counter() - t0
    return res


def load_torch(path, device="cpu") -> dict:
    """Torch tensors of one ``.bsl`` file on ``device``. For CUDA it uses the GPU decoder
    (``bslcodec.gpu``) when that can run here, else decodes on the CPU and copies the tensors over."""
    dev = str(device)
    if dev.startswith("cuda"):
        try:
            return api.load_file(path, framework="pt", device=dev)
        except ImportError:  # no GPU decoder here (no CuPy, or not built yet): CPU decode, then copy
            pass
    sd = api.load_file(path, framework="pt", device="cpu")
    return sd if dev == "cpu" else {k: v.to(dev) for k, v in sd.items()}


def load_tensors(path, framework: str = "np", device: str = "cpu") -> dict:
    """Every tensor of a ``.bsl`` file or encoded folder (all shards), decoded."""
    out = {}
    for f in bsl_files(path):
        out.update(api.load_file(f, framework=framework, device=device))
    return out


class TensorLookup:
    """Tensors by name across every file of a checkpoint (a file or a folder, any format)."""

    def __init__(self, path):
        self.checkpoint = open_checkpoint(path, "any")
        self.files, self.where = [], {}
        try:
            for i in range(len(self.checkpoint.files)):
                tf = self.checkpoint.open(i)
                self.files.append(tf)
                for name in tf.keys():
                    self.where.setdefault(name, tf)
        except BaseException:
            self.close()
            raise

    def keys(self) -> list:
        return sorted(self.where)

    def get(self, name: str) -> np.ndarray:
        return self.where[name].get(name)

    def close(self):
        for tf in self.files:
            tf.close()
        self.files = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["CheckpointError", "Checkpoint", "TensorFile", "TensorLookup", "open_checkpoint", "open_file", "bsl_files",
           "encode_checkpoint", "decode_checkpoint", "load_tensors", "load_torch", "staged_output", "Result"]
