"""``decode_eg``: an ``eg`` payload (spec 4.3) decoded and dequantized on the GPU into a torch tensor.

Three launches on torch's current stream, no host round trip until the error flag is read:
1. ``eg_group_words``: words per group from the uint16 lane table (thread per group);
2. ``torch.cumsum``: first 64-bit word of each group (groups are word aligned);
3. ``eg_decode_<dtype>``: thread per lane; lane starts are prefix sums of the group's 32 lane lengths,
   taken inside the kernel; decoded symbols are dequantized (``fl32(q * step)``, RNE to the output
   dtype) and written straight into the output tensor.
"""

import warnings

import numpy as np
import torch

from ..container.errors import FormatError, LimitError
from ..container.limits import LANES, MAX_ELEMENTS, MAX_LANE_SYMBOLS, MAX_SYMBOL_MAGNITUDE, MIN_LANE_SYMBOLS
from ._cuda import Module
from ._kernel_src import MULTI_SOURCE, SOURCE

_BLOCK = 256  # the kernels are built with __launch_bounds__(256, 6): 40 registers, 48 warps per SM
_MAX_GRID = 1 << 20  # kernels loop (grid-stride) past this many blocks
_KERNEL_OF_DTYPE = {torch.float32: "eg_decode_f32", torch.float16: "eg_decode_f16",
                    torch.bfloat16: "eg_decode_bf16"}
_DTYPE_NAMES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_ERRORS = ((1, "a code word has too many leading zeros (or the group order is > 24)"),
           (2, "code words do not end at a lane's declared length"),
           (4, "a symbol gives |q| >= 2^24"),
           (8, "the lane table's word count does not match the payload length"))
_MULTI_KERNELS = {torch.float32: "bsl_multi_f32", torch.float16: "bsl_multi_f16", torch.bfloat16: "bsl_multi_bf16"}
_modules = {}  # device index -> Module
_multi_modules = {}  # device index -> Module with the multi-tensor entry points (MULTI_SOURCE)


def _module(device_index: int):
    mod = _modules.get(device_index)
    if mod is None:
        mod = Module(SOURCE, device_index)  # compiled (or read from the cache) and loaded now
        for name in ("eg_group_words", *_KERNEL_OF_DTYPE.values()):
            mod.get_function(name)
        _modules[device_index] = mod
    return mod


def multi_module(device_index: int):
    """The multi-tensor ``eg`` kernels (``bsl_multi_<dtype>``: many payloads, one launch) on a device."""
    mod = _multi_modules.get(device_index)
    if mod is None:
        mod = Module(SOURCE + MULTI_SOURCE, device_index)
        for name in _MULTI_KERNELS.values():
            mod.get_function(name)
        _multi_modules[device_index] = mod
    return mod


def eg_layout(payload_len: int, n_elems: int, lane_symbols: int):
    """(G, head_padded, n_words) of an ``eg`` payload; FormatError where the length cannot hold it.

    Checked before the output is allocated (spec 7): every code word is at least one bit, so the
    ``n_words`` 64-bit words of code hold at most ``64 * n_words`` elements, and the output is at most
    64x the payload in bytes (F64; 32x for F32). Group tables alone (65 bytes a group) would otherwise
    let a 1.3 MB file make the GPU allocate gigabytes before the kernel flags the payload."""
    g_count = -(-n_elems // (LANES * lane_symbols))
    head = 65 * g_count
    head_padded = head + (-head % 8)
    if payload_len < head_padded + 8 or (payload_len - head_padded) % 8:
        raise FormatError(f"eg payload of {payload_len} bytes cannot hold {g_count} groups "
                          f"(tables {head_padded} bytes, then whole 64-bit words and a zero word)")
    n_words = (payload_len - head_padded) // 8 - 1
    if n_elems > 64 * n_words:
        raise FormatError(f"eg payload of {payload_len} bytes cannot hold {n_elems} elements: its {n_words} "
                          f"words of code hold at most {64 * n_words} (a code word is at least one bit)")
    return g_count, head_padded, n_words


def _check_params(n_elems, lane_symbols, step, center):
    if not 0 <= n_elems <= MAX_ELEMENTS:
        raise LimitError(f"n_elems {n_elems} outside 0..2^48")
    if not (MIN_LANE_SYMBOLS <= lane_symbols <= MAX_LANE_SYMBOLS and lane_symbols & (lane_symbols - 1) == 0):
        raise FormatError(f"lane_symbols {lane_symbols} is not a power of two in 16..1024")
    s32 = np.float32(step)
    if not (np.isfinite(s32) and s32 > 0 and float(s32) == float(step)):
        raise FormatError(f"step {step!r} is not a positive finite binary32 value")
    if abs(center) >= MAX_SYMBOL_MAGNITUDE:
        raise FormatError(f"center {center} has |center| >= 2^24")
    return s32


def _output(out, dtype, n: int, dev: torch.device) -> torch.Tensor:
    """``out`` checked (a contiguous ``dtype`` tensor of ``n`` elements on ``dev``), or a new one when None."""
    if out is None:
        return torch.empty(n, dtype=dtype, device=dev)
    if out.dtype != dtype or out.device != dev or out.numel() != n or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {dtype} tensor of {n} elements on {dev}")
    return out


def _to_device(payload, dev: torch.device) -> torch.Tensor:
    if isinstance(payload, torch.Tensor):
        buf = payload
    elif hasattr(payload, "__cuda_array_interface__"):
        buf = torch.as_tensor(payload, device=dev)
    else:
        arr = np.frombuffer(payload, np.uint8) if not isinstance(payload, np.ndarray) else payload
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise TypeError("payload must be bytes or a 1-D uint8 array/tensor")
        with warnings.catch_warnings():  # a read-only buffer is fine: the tensor is only read
            warnings.simplefilter("ignore", UserWarning)
            buf = torch.from_numpy(np.ascontiguousarray(arr))
    if buf.dtype != torch.uint8 or buf.dim() != 1:
        raise TypeError(f"payload tensor must be 1-D uint8, got {buf.dtype} with shape {tuple(buf.shape)}")
    buf = buf.to(dev)
    if not buf.is_contiguous() or buf.data_ptr() % 16:  # kernels read 4- and 8-byte words
        buf = buf.clone(memory_format=torch.contiguous_format)
    return buf


def decode_eg(payload, n_elems, lane_symbols, step, center, dtype, device="cuda", out=None,
              check=True) -> torch.Tensor:
    """Decode an ``eg`` payload into a 1-D CUDA tensor of ``n_elems`` elements of ``dtype``.

    payload: bytes, a 1-D numpy uint8 array, or a 1-D uint8 CUDA tensor (used in place when it is on
    ``device`` and 16-byte aligned). dtype: torch.bfloat16 / float16 / float32 (or "BF16", "F16",
    "F32"). out: an optional contiguous tensor of that dtype with ``n_elems`` elements on ``device``.
    Bit-identical to the CPU definition: ``y = fl32(float32(q) * step)``, then RNE to F16 / BF16.

    With ``check`` (default) the call waits for the GPU and raises FormatError for a bad payload
    (bad code word, lane length mismatch, |q| >= 2^24, wrong word count). With ``check=False`` it
    returns at once and a bad payload leaves unspecified values in the output.

    >>> w = decode_eg(payload, 1000, 512, 0.01, 0, torch.bfloat16)  # doctest: +SKIP
    """
    n_elems, lane_symbols, center = int(n_elems), int(lane_symbols), int(center)
    if isinstance(dtype, str):
        dtype = _DTYPE_NAMES.get(dtype, dtype)
    if dtype not in _KERNEL_OF_DTYPE:
        raise TypeError(f"dtype must be one of {list(_KERNEL_OF_DTYPE)}, got {dtype!r}")
    step32 = _check_params(n_elems, lane_symbols, step, center)
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"device must be a CUDA device, got {dev}")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())

    if isinstance(payload, torch.Tensor) or hasattr(payload, "__cuda_array_interface__"):
        plen = int(payload.shape[0]) if payload.ndim == 1 else -1
    else:
        plen = len(payload) if not isinstance(payload, np.ndarray) else payload.size
    g_count, head_padded, n_words = eg_layout(plen, n_elems, lane_symbols)

    out = _output(out, dtype, n_elems, dev)
    if n_elems == 0:
        if n_words != 0:
            raise FormatError(f"eg payload for 0 elements must be 8 bytes, got {plen}")
        return out.view(-1)
    buf = _to_device(payload, dev)

    mod = _module(dev.index)
    offs = torch.empty(g_count + 1, dtype=torch.int64, device=dev)
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    stream = torch.cuda.current_stream(dev)
    grid = min(-(-(g_count + 1) // _BLOCK), _MAX_GRID)
    mod.get_function("eg_group_words")(
        (grid,), (_BLOCK,), (np.uint64(buf.data_ptr()), np.int64(g_count), np.uint64(offs.data_ptr())),
        stream=stream)
    offs = torch.cumsum(offs, 0)  # offs[g] = first word of group g; offs[G] = total words
    grid = min(-(-(LANES * g_count) // _BLOCK), _MAX_GRID)
    mod.get_function(_KERNEL_OF_DTYPE[dtype])(
        (grid,), (_BLOCK,),
        (np.uint64(buf.data_ptr()), np.int64(n_elems), np.int32(lane_symbols.bit_length() - 1),
         np.int64(g_count), np.uint64(offs.data_ptr()), np.int64(head_padded), np.int64(n_words),
         step32, np.int32(center), np.uint64(out.data_ptr()), np.uint64(err.data_ptr())), stream=stream)
    if check:
        code = int(err.item())
        if code:
            what = "; ".join(text for bit, text in _ERRORS if code & bit)
            raise FormatError(f"eg payload ({n_elems} elements, S={lane_symbols}) is corrupt: {what}")
    return out.view(-1)
