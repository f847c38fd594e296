"""Codecs under test, behind one interface: ``encode(state_dict) -> bytes`` and ``decode(bytes) -> dict``.

Every method is run in the same Python process by ``run_all.py`` so that MB/s numbers share the same
machine state. The peers (NNCodec, ZipNN) live in a separate ``--target`` folder installed by
``setup_peers.sh`` (nncodec pins numpy<2, which would break the project venv); :func:`import_peers`
puts it on ``sys.path`` and stubs ``torchvision`` (a CUDA build is all the registry has; nncodec only
imports it for its dataset/use-case modules, never for coding).

Conventions
  * ``sd`` is ``{name: float32 ndarray}``; ``sd16`` the same tensors cast to bf16 (round to nearest even),
    stored as ``uint16`` bit patterns.
  * ``decode`` returns arrays convertible to float32 (bf16 methods: uint16 bf16 bits, see ``to_f32``).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
import types

import numpy as np

PEERS_SITE = os.environ.get("BSL_PEERS_SITE", os.path.expanduser("~/.cache/bslcodec-bench/site"))


# ---------------------------------------------------------------- peer imports

class _Any:
    """Stand-in for any torchvision object: callable, subscriptable, subclassable."""

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Any()

    def __getattr__(self, n):
        return _Any()

    def __mro_entries__(self, bases):
        return (object,)


class _StubModule(types.ModuleType):
    def __getattr__(self, n):
        if n.startswith("__"):
            raise AttributeError(n)
        return _Any()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = set(roots)

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _StubModule(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


_peers: dict = {}


def import_peers() -> dict:
    """{"nnc": module or None, "zipnn": module or None, "errors": {...}, "versions": {...}}."""
    if _peers:
        return _peers
    errors, versions = {}, {}
    if os.path.isdir(PEERS_SITE) and PEERS_SITE not in sys.path:
        sys.path.append(PEERS_SITE)  # appended: the venv's own numpy/torch/scipy always win
    try:
        import torchvision  # noqa: F401  (a working CPU torchvision, if one is installed)
    except Exception:  # not installed, or a CUDA build that cannot load on a CPU torch
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        sys.meta_path.insert(0, _StubFinder({"torchvision"}))
    nnc = zipnn = None
    try:
        from importlib.metadata import version

        import nncodec.nnc as nnc  # noqa: F811

        try:
            versions["nncodec"] = version("nncodec")
        except Exception:
            versions["nncodec"] = "?"
    except Exception as exc:  # pragma: no cover - environment dependent
        errors["nncodec"] = f"{type(exc).__name__}: {exc}"
    try:
        import zipnn  # noqa: F811

        try:
            from importlib.metadata import version

            versions["zipnn"] = version("zipnn")
        except Exception:
            versions["zipnn"] = "?"
    except Exception as exc:  # pragma: no cover
        errors["zipnn"] = f"{type(exc).__name__}: {exc}"
    import zstandard

    versions["zstandard"] = zstandard.__version__
    import safetensors

    versions["safetensors"] = safetensors.__version__
    _peers.update(nnc=nnc, zipnn=zipnn, errors=errors, versions=versions)
    return _peers


# ---------------------------------------------------------------- helpers

def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), round to nearest even (NaN-free input)."""
    b = np.ascontiguousarray(a, np.float32).view(np.uint32)
    b = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return b.astype(np.uint16)


def bf16_bits_to_f32(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)


def to_f32(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.uint16:
        return bf16_bits_to_f32(a)
    if a.dtype.name == "bfloat16":
        return bf16_bits_to_f32(a.view(np.uint16))
    return a.astype(np.float32, copy=False)


def _concat(sd: dict) -> tuple[bytes, list]:
    names = sorted(sd)
    layout = [(n, sd[n].shape, sd[n].dtype) for n in names]
    buf = b"".join(np.ascontiguousarray(sd[n]).tobytes() for n in names)
    return buf, layout


def _split(buf, layout) -> dict:
    out, pos = {}, 0
    for n, shape, dt in layout:
        cnt = int(np.prod(shape, dtype=np.int64))
        out[n] = np.frombuffer(buf, dt, cnt, pos).reshape(shape)
        pos += cnt * np.dtype(dt).itemsize
    return out


# ---------------------------------------------------------------- methods

class Method:
    """One codec at one setting. ``family`` groups a curve; ``input`` is "fp32" or "bf16"."""

    family = "?"
    lossless = False
    input = "fp32"
    slow = False  # one timing repeat only

    def __init__(self, label: str, setting: dict):
        self.label, self.setting = label, setting

    def prepare(self, sd: dict, sd16: dict):
        """Untimed: anything the codec needs as its input format."""
        self.layout = None

    def encode(self, sd: dict, sd16: dict) -> bytes:
        raise NotImplementedError

    def decode(self, blob) -> dict:
        raise NotImplementedError


class Safetensors(Method):
    family, lossless = "safetensors", True

    def encode(self, sd, sd16):
        from safetensors.numpy import save

        return save(sd)

    def decode(self, blob):
        from safetensors.numpy import load

        return load(bytes(blob))


class Zstd(Method):
    family, lossless = "zstd", True

    def __init__(self, level: int, inp: str):
        super().__init__(f"zstd -{level} ({inp})", {"level": level, "input": inp})
        self.level, self.input = level, inp
        self.family = f"zstd ({inp})"
        self.lossless = inp == "fp32"
        self.slow = level >= 19

    def prepare(self, sd, sd16):
        self.raw, self.layout = _concat(sd if self.input == "fp32" else sd16)

    def encode(self, sd, sd16):
        import zstandard

        return zstandard.ZstdCompressor(level=self.level, threads=0).compress(self.raw)

    def decode(self, blob):
        import zstandard

        return _split(zstandard.ZstdDecompressor().decompress(blob), self.layout)


class ZipNNMethod(Method):
    lossless = True

    def __init__(self, inp: str):
        super().__init__(f"ZipNN ({inp})", {"input": inp, "threads": 1})
        self.input = inp
        self.family = f"ZipNN ({inp})"
        self.lossless = inp == "fp32"

    def prepare(self, sd, sd16):
        self.raw, self.layout = _concat(sd if self.input == "fp32" else sd16)
        self.fresh = bytearray(self.raw)

    def encode(self, sd, sd16):
        from zipnn import ZipNN

        z = ZipNN(input_format="byte", bytearray_dtype="float32" if self.input == "fp32" else "bfloat16",
                  threads=1)
        data, self.fresh = self.fresh, None
        try:
            # ZipNN reorders the bytes of its input IN PLACE: give it a copy made before the timer
            return bytes(z.compress(data))
        finally:
            self.fresh = bytearray(self.raw)

    def decode(self, blob):
        from zipnn import ZipNN

        z = ZipNN(input_format="byte", bytearray_dtype="float32" if self.input == "fp32" else "bfloat16",
                  threads=1)
        return _split(bytes(z.decompress(blob)), self.layout)


class NNCodec(Method):
    slow = True

    def __init__(self, qp: int, dq: bool = True, qp_per_tensor: dict | None = None, label: str | None = None):
        super().__init__(label or f"NNCodec qp={qp} dq={'on' if dq else 'off'}", {"qp": qp, "use_dq": dq})
        self.qp, self.dq, self.qp_per_tensor = qp, dq, qp_per_tensor
        self.family = "NNCodec (DQ on)" if dq else "NNCodec (DQ off)"
        self.tmp = tempfile.mkdtemp(prefix="nnc-bench-")

    def encode(self, sd, sd16):
        nnc = import_peers()["nnc"]
        path = os.path.join(self.tmp, "bitstream.nnc")
        kw = {} if self.qp_per_tensor is None else {"qp_per_tensor": dict(self.qp_per_tensor)}
        out = nnc.compress(dict(sd), bitstream_path=path, qp=self.qp, use_dq=self.dq, return_bitstream=True, **kw)
        return bytes(out)

    def decode(self, blob):
        nnc = import_peers()["nnc"]
        return nnc.decompress(bytearray(blob))


EXPERT = ("rel_step", "quantizer", "codec", "rdoq")  # bslcodec.save's expert= keys


def save_kwargs(setting: dict) -> dict:
    """``bslcodec.save``'s keywords for a setting as the results record it (flat: ``rel_step``, ``codec``,
    ``quantizer``, ``rdoq``, ``lossless`` next to ``max_error``, ``sensitivity`` ...)."""
    kw = {k: v for k, v in setting.items() if k not in EXPERT and k != "lossless"}
    if "lossless" in setting:
        kw["exact"] = setting["lossless"]
    expert = {k: setting[k] for k in EXPERT if k in setting}
    if expert:
        kw["expert"] = expert
    return kw


class Bsl(Method):
    """bslcodec through its public API (``save``/``load``). ``**kw``: the setting in the flat form the
    results record (``rel_step=``, ``quantizer=``, ``lossless=`` ...); :func:`save_kwargs` spells it for
    ``bslcodec.save``."""

    family = "bslcodec"

    def __init__(self, label: str, threads: int | None = None, input: str = "fp32", **kw):
        super().__init__(label, dict(kw))
        self.kw, self.threads, self.input = kw, threads, input
        self.save_kw = save_kwargs(kw)
        if kw.get("lossless"):
            self.family = f"bslcodec lossless ({input})"
            self.lossless = input == "fp32"

    def _with_threads(self, fn):
        if self.threads is None:
            return fn()
        import numba

        old = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        try:
            return fn()
        finally:
            numba.set_num_threads(old)

    def encode(self, sd, sd16):
        import bslcodec

        src = sd
        if self.input == "bf16":
            import ml_dtypes

            src = {k: v.view(ml_dtypes.bfloat16) for k, v in sd16.items()}
        return self._with_threads(lambda: bslcodec.save(src, **self.save_kw))

    def decode(self, blob):
        import bslcodec

        return self._with_threads(lambda: bslcodec.load(blob))
