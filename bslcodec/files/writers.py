"""Writing checkpoints: staged outputs (written under a temporary name beside the destination, fsynced, then
renamed into place, so a failed or interrupted run leaves nothing behind) and one writer per output format."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..container.dtypes import NUMPY_DTYPES
from ..pipeline.arrays import _to_framework
from . import api
from .readers import META_PREFIX, TORCH_SUFFIXES, CheckpointError, _first_line

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
    api.remove_stale_temps(path)  # what a killed run (SIGKILL, power loss) to the same output left
    prefix = f".{path.name}.{os.getpid()}-"  # the pid tells remove_stale_temps whose it is
    try:
        if folder:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".bsl-tmp", dir=parent))
            lock = os.open(tmp, os.O_RDONLY)
        else:
            lock, name = tempfile.mkstemp(prefix=prefix, suffix=".bsl-tmp", dir=parent)
            tmp = Path(name)
    except OSError as exc:
        raise CheckpointError(f"{parent}: cannot write here: {exc.strerror}") from None
    api.lock_temp(lock)  # held until the output is in place or removed

    def remove(p):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    try:
        yield tmp
        api.check_signals()  # an interrupt whose KeyboardInterrupt was swallowed: not put in place
        mask = _umask()
        if folder:
            os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it 0700; give it the mode mkdir would
            for root, _, files in os.walk(tmp):
                for f in files:
                    _fsync_file(os.path.join(root, f))
                _fsync_dir(root)
            if path.exists():  # --overwrite: move the old folder aside, then swap
                api.check_signals()
                old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".bsl-old", dir=parent))
                os.rename(path, old / "x")
                try:
                    os.rename(tmp, path)
                except BaseException:
                    os.rename(old / "x", path)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                api.check_signals()
                os.rename(tmp, path)
        else:
            os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it 0600; give it the mode open() would
            _fsync_file(tmp)
            api.check_signals()
            os.replace(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        remove(tmp)
        raise
    finally:
        os.close(lock)


# ---------------------------------------------------------------- writers (to a final or staged path)

def write_bsl(path, entries: list, payloads: list, metadata: dict) -> int:
    """Write encoded tensors as a ``.bsl`` file; returns its size."""
    from ..container.format import place

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
    sd = {k: _to_framework(np.ascontiguousarray(v), "pt", "cpu") for k, v in tensors.items()}
    wrapper = (metadata or {}).get(META_PREFIX + "pt_wrapper")
    torch.save({wrapper: sd} if wrapper else sd, str(path))


def _npz_member(name: str) -> str:
    """The zip member of tensor ``name`` (``name.npy``, as ``np.savez`` names them), or CheckpointError for a
    name that is not a safe relative path inside an archive (``unzip`` would write ``a/../../b`` outside)."""
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts) or \
            (len(parts[0]) >= 2 and parts[0][1] == ":"):
        raise CheckpointError(f"tensor {name!r}: its name is not a safe path inside an .npz archive (absolute, "
                              "'..', '.', empty parts or a backslash); decode to .safetensors or .pt instead")
    return name + ".npy"


def write_npz(path, tensors: dict, metadata: dict | None = None) -> None:
    """``np.savez`` layout (one ``<name>.npy`` member per tensor, stored), written member by member:
    ``np.savez(fh, **tensors)`` would take a tensor named ``file`` or ``allow_pickle`` as its own argument."""
    import zipfile

    members = {}
    for k, v in tensors.items():
        if v.dtype == NUMPY_DTYPES["BF16"]:
            raise CheckpointError(f"tensor {k!r} is bfloat16, which .npz cannot hold; "
                                  "decode to .safetensors or .pt instead")
        members[k] = _npz_member(k)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for k, v in tensors.items():
            with zf.open(members[k], "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(v), allow_pickle=False)


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


