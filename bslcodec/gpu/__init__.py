"""GPU decoding of ``eg``, ``ans`` (lossy, spec 4.3 and 4.4) and ``fexp`` (lossless, 4.5) payloads straight into CUDA torch tensors.

Optional leaf: nothing else in bslcodec imports it. It needs an NVIDIA GPU, PyTorch built with CUDA and
CuPy (``pip install cupy-cuda12x`` or ``cupy-cuda13x``, matching the CUDA of PyTorch); importing it
without them raises :class:`GpuUnavailableError`, which is both a ``BslError`` and an ``ImportError``.

Example (on a machine with a GPU)::

    from bslcodec.gpu import decode_eg
    w = decode_eg(payload, n_elems, lane_symbols=512, step=0.01, center=0, dtype=torch.bfloat16)
"""

from ..container.errors import BslError


class GpuUnavailableError(BslError, ImportError):
    """bslcodec.gpu cannot run here: no CUDA device, no CUDA build of PyTorch, or no CuPy."""


_NEEDS = ("bslcodec.gpu needs an NVIDIA GPU with a CUDA build of PyTorch and CuPy "
          "(pip install cupy-cuda12x or cupy-cuda13x, matching PyTorch's CUDA version)")

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the machine
    raise GpuUnavailableError(f"{_NEEDS}: PyTorch is not installed ({e})") from e
if not torch.cuda.is_available():
    raise GpuUnavailableError(f"{_NEEDS}: torch {torch.__version__} sees no CUDA device")
try:
    import cupy  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the machine
    raise GpuUnavailableError(f"{_NEEDS}: CuPy is not installed ({e})") from e

from ._ans import decode_ans, decode_ans_many  # noqa: E402
from ._eg import decode_eg  # noqa: E402
from ._fexp import decode_fexp, decode_fexp_many  # noqa: E402
from .load import load_to_cuda  # noqa: E402

__all__ = ["decode_ans", "decode_ans_many", "decode_eg", "decode_fexp", "decode_fexp_many", "load_to_cuda", "GpuUnavailableError"]
