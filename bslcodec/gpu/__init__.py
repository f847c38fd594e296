"""GPU decoding of ``eg``, ``ans`` (lossy, spec 4.3 and 4.4) and ``fexp`` (lossless, 4.5) payloads straight into CUDA torch tensors.

Optional leaf: nothing else in bslcodec imports it. It needs an NVIDIA GPU and PyTorch built with CUDA, nothing
more: the kernels are compiled with the NVRTC that PyTorch's CUDA wheels bring, once, into a cubin cached on disk
(``_cuda.py``), and launched through the CUDA driver. Importing it without them raises
:class:`GpuUnavailableError`, which is both a ``BslError`` and an ``ImportError``.

Example (on a machine with a GPU)::

    from bslcodec.gpu import decode_eg
    w = decode_eg(payload, n_elems, lane_symbols=512, step=0.01, center=0, dtype=torch.bfloat16)
"""

from ..container.errors import BslError


class GpuUnavailableError(BslError, ImportError):
    """bslcodec.gpu cannot run here: no CUDA device, or no CUDA build of PyTorch."""


_NEEDS = "bslcodec.gpu needs an NVIDIA GPU with a CUDA build of PyTorch"

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the machine
    raise GpuUnavailableError(f"{_NEEDS}: PyTorch is not installed ({e})") from e
if not torch.cuda.is_available():
    raise GpuUnavailableError(f"{_NEEDS}: torch {torch.__version__} sees no CUDA device")
from ._ans import decode_ans, decode_ans_many
from ._eg import decode_eg
from ._fexp import decode_fexp, decode_fexp_many
from .load import load_to_cuda, warm_up

__all__ = ["decode_ans", "decode_ans_many", "decode_eg", "decode_fexp", "decode_fexp_many", "load_to_cuda", "warm_up",
           "GpuUnavailableError"]
