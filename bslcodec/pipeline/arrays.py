"""Between numpy and the frameworks: what the writers take in (numpy arrays, torch tensors) and what the
readers hand out."""

import numpy as np

from ..container.dtypes import numpy_dtype
from ..container.errors import BslError, EncodeError


def as_numpy(value, name: str = "tensor") -> np.ndarray:
    """A contiguous numpy array for a numpy array or torch tensor (bf16 becomes ml_dtypes.bfloat16)."""
    mod = type(value).__module__
    if mod.startswith("torch"):
        import torch

        if not isinstance(value, torch.Tensor):
            raise EncodeError(f"tensor {name!r}: expected a numpy array or torch tensor, got {type(value).__name__}")
        if value.layout != torch.strided or getattr(value, "is_nested", False):
            kind = "nested" if getattr(value, "is_nested", False) else str(value.layout).replace("torch.", "")
            raise EncodeError(f"tensor {name!r}: a {kind} tensor; only dense (strided) tensors can be stored: "
                              "convert it first (e.g. .to_dense())")
        if value.device.type == "meta":
            raise EncodeError(f"tensor {name!r}: a meta tensor has no data to store")
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(numpy_dtype("BF16"))
        try:
            return t.numpy()
        except TypeError as exc:
            raise EncodeError(f"tensor {name!r}: torch dtype {t.dtype} is not supported ({exc})") from None
    if not isinstance(value, np.ndarray):
        if isinstance(value, (np.generic, int, float, bool)):
            value = np.asarray(value)
        else:
            raise EncodeError(f"tensor {name!r}: expected a numpy array or torch tensor, got {type(value).__name__}")
    if value.dtype.byteorder == ">":
        value = value.astype(value.dtype.newbyteorder("<"))
    return value if value.flags.c_contiguous else value.copy(order="C")  # keeps 0-d arrays 0-d


def _to_framework(arr: np.ndarray, framework: str, device: str):
    if framework in ("np", "numpy"):
        if device not in ("cpu", None):
            raise BslError(f"framework='np' only supports device='cpu', not {device!r}")
        return arr
    import torch

    if arr.dtype == numpy_dtype("BF16"):
        t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    elif arr.dtype == np.uint16 or arr.dtype == np.uint32 or arr.dtype == np.uint64:
        t = torch.from_numpy(arr.view({2: np.int16, 4: np.int32, 8: np.int64}[arr.itemsize]))
        t = t.view({2: torch.uint16, 4: torch.uint32, 8: torch.uint64}[arr.itemsize])
    else:
        t = torch.from_numpy(arr)
    return t.to(device) if device not in ("cpu", None) else t
