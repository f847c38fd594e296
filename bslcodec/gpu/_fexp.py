"""``decode_fexp``: an ``fexp`` payload (spec 4.5, lossless floats) decoded on the GPU into a torch tensor;
``decode_fexp_many``: any number of them in one launch per item size (whole checkpoints).

The host reads the payload's code lengths (at most 520 bytes), checks them and builds the 4096-entry
decoding table with the same function as the CPU decoder (``bslcodec.codecs.fexp.build_lut``). Then three launches
on torch's current stream, no host round trip until the error flag is read:
1. ``fexp_group_words``: words per group from the uint16 lane table (thread per group);
2. ``torch.cumsum``: first 64-bit word of each group;
3. ``fexp_decode_<itemsize>``: thread per lane, table in shared memory; writes the element bits.
"""

import numpy as np
import torch

# fexp_header, not fexp: no numba in a process that only decodes on a GPU
from ..codecs import fexp_header as fexp
from ..container.errors import FormatError, LimitError
from ..container.limits import LANES, MAX_ELEMENTS
from ._cuda import Module
from ._eg import _MAX_GRID, _output, _to_device
from ._fexp_src import SOURCE

_BLOCK = 256
_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}
_ITEMSIZE = {torch.bfloat16: 2, torch.float16: 2, torch.float32: 4, torch.float64: 8}
_KERNELS = ("fexp_decode_2", "fexp_decode_4", "fexp_decode_8",
            "fexp_decode_many_2", "fexp_decode_many_4", "fexp_decode_many_8")
_ERRORS = ((1, "bits that begin no code word"),
           (2, "code words do not end at a lane's declared length"),
           (8, "the lane table's word count does not match the payload length"))
_modules = {}


def _module(device_index: int):
    mod = _modules.get(device_index)
    if mod is None:
        mod = Module(SOURCE, device_index)  # compiled (or read from the cache) and loaded now
        for name in ("fexp_group_words", *_KERNELS):
            mod.get_function(name)
        _modules[device_index] = mod
    return mod


def prepare(payload, n_elems: int, itemsize: int, lane_symbols: int) -> dict:
    """Host-side checks and the decoding table (numpy) of an ``fexp`` payload; FormatError when bad."""
    if isinstance(payload, torch.Tensor) or hasattr(payload, "__cuda_array_interface__"):
        t = torch.as_tensor(payload)
        plen = int(t.shape[0])
        head = t[:min(plen, fexp.HEAD_BYTES + (128 << fexp.MAX_M))].cpu().numpy()
    else:
        head = np.frombuffer(payload, np.uint8) if not isinstance(payload, np.ndarray) else payload
        plen = head.size
    m, lengths, rest_off, t_off, w0, g = fexp.parse_header(head, n_elems, itemsize, lane_symbols, plen)
    if plen < w0 + 8 or (plen - w0) % 8:
        raise FormatError(f"fexp payload of {plen} bytes cannot hold {n_elems} elements "
                          f"(tables end at {w0}, then whole 64-bit words and a zero word)")
    return {"m": m, "lut": fexp.build_lut(lengths), "rest_off": rest_off, "lanes_off": t_off, "words_off": w0,
            "groups": g, "n_words": (plen - w0) // 8 - 1, "rest_bits": fexp.rest_bits(itemsize, m)}


def decode_fexp(payload, n_elems, lane_symbols, dtype, device="cuda", out=None, check=True,
                prepared=None, lut=None) -> torch.Tensor:
    """Decode an ``fexp`` payload into a 1-D CUDA tensor of ``n_elems`` elements of ``dtype``, bit-exact.

    payload: bytes, a 1-D numpy uint8 array, or a 1-D uint8 CUDA tensor (used in place when it is on
    ``device`` and 16-byte aligned). dtype: torch.bfloat16 / float16 / float32 / float64 (or "BF16", "F16",
    "F32", "F64"). ``prepared`` / ``lut``: what ``prepare`` returned and its table as a CUDA int16 tensor,
    for callers that decode the same payload repeatedly (benchmarks); otherwise both are made here.
    With ``check`` (default) the call waits for the GPU and raises FormatError for a corrupt payload.
    """
    n_elems, lane_symbols = int(n_elems), int(lane_symbols)
    if isinstance(dtype, str):
        dtype = _DTYPES.get(dtype, dtype)
    if dtype not in _ITEMSIZE:
        raise TypeError(f"dtype must be one of {list(_ITEMSIZE)}, got {dtype!r}")
    if not 0 <= n_elems <= MAX_ELEMENTS:
        raise LimitError(f"n_elems {n_elems} outside 0..2^48")
    itemsize = _ITEMSIZE[dtype]
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"device must be a CUDA device, got {dev}")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    p = prepared if prepared is not None else prepare(payload, n_elems, itemsize, lane_symbols)
    out = _output(out, dtype, n_elems, dev)
    if n_elems == 0:
        if p["n_words"] != 0:
            raise FormatError("fexp payload for 0 elements has stream words")
        return out.view(-1)
    buf = _to_device(payload, dev)
    if lut is None:
        lut = torch.from_numpy(p["lut"].view(np.int16)).to(dev)
    g = p["groups"]
    mod = _module(dev.index)
    offs = torch.empty(g + 1, dtype=torch.int64, device=dev)
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    base = buf.data_ptr()
    stream = torch.cuda.current_stream(dev)
    grid = min(-(-(g + 1) // _BLOCK), _MAX_GRID)
    mod.get_function("fexp_group_words")(
        (grid,), (_BLOCK,), (np.uint64(base + p["lanes_off"]), np.int64(g), np.uint64(offs.data_ptr())),
        stream=stream)
    offs = torch.cumsum(offs, 0)
    grid = min(-(-(LANES * g) // _BLOCK), _MAX_GRID)
    mod.get_function(f"fexp_decode_{itemsize}")(
        (grid,), (_BLOCK,),
        (np.uint64(lut.data_ptr()), np.uint64(base + p["lanes_off"]), np.uint64(base + p["words_off"]),
         np.int64(p["n_words"]), np.uint64(base + p["rest_off"]), np.uint32(p["rest_bits"]),
         np.int64(n_elems), np.int32(lane_symbols.bit_length() - 1), np.int64(g),
         np.uint64(offs.data_ptr()), np.uint64(out.data_ptr()), np.uint64(err.data_ptr())), stream=stream)
    if check:
        code = int(err.item())
        if code:
            what = "; ".join(text for bit, text in _ERRORS if code & bit)
            raise FormatError(f"fexp payload ({n_elems} elements, S={lane_symbols}) is corrupt: {what}")
    return out.view(-1)


def _host_offsets(payload: np.ndarray, p: dict) -> np.ndarray:
    """offs[g] = first 64-bit stream word of group g (offs[G] = all words), from the lane table."""
    g = p["groups"]
    lens = payload[p["lanes_off"]:p["lanes_off"] + 64 * g].view("<u2").reshape(g, LANES)
    offs = np.zeros(g + 1, np.int64)
    np.cumsum((lens.sum(axis=1, dtype=np.int64) + 63) // 64, out=offs[1:])
    if offs[-1] != p["n_words"]:
        raise FormatError(f"fexp payload: the lane table gives {int(offs[-1])} words, the payload holds "
                          f"{p['n_words']}")
    return offs


class ManyLaunch:
    """``fexp`` payloads decoded with one launch per item size; ``run()`` queues them, ``raise_errors()``
    waits and names the first corrupt one. jobs: dicts with ``payload`` (bytes / numpy uint8 on the host),
    ``n_elems``, ``lane_symbols``, ``dtype``, optional ``out`` and ``name``."""

    def __init__(self, jobs, device="cuda"):
        dev = torch.device(device)
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device, self.jobs, self.keep, self.outs, self.launches = dev, jobs, [], [], []
        by_size = {}
        for ji, j in enumerate(jobs):
            n, s = int(j["n_elems"]), int(j["lane_symbols"])
            dtype = _DTYPES.get(j["dtype"], j["dtype"]) if isinstance(j["dtype"], str) else j["dtype"]
            if dtype not in _ITEMSIZE:
                raise TypeError(f"dtype must be one of {list(_ITEMSIZE)}, got {dtype!r}")
            name = j.get("name", f"job {ji}")
            payload = np.frombuffer(j["payload"], np.uint8) if not isinstance(j["payload"], np.ndarray) else j["payload"]
            try:
                if not 0 <= n <= MAX_ELEMENTS:
                    raise LimitError(f"n_elems {n} outside 0..2^48")
                p = prepare(payload, n, _ITEMSIZE[dtype], s)
                offs = _host_offsets(payload, p)
            except (FormatError, LimitError) as exc:
                raise type(exc)(f"{name}: {exc}") from None
            out = _output(j.get("out"), dtype, n, dev)
            self.outs.append(out.view(-1))
            if n == 0:
                continue
            buf = _to_device(payload, dev)
            lut = torch.from_numpy(p["lut"].view(np.int16)).to(dev)
            offs_d = torch.from_numpy(offs).to(dev)
            self.keep += [buf, lut, offs_d, out]
            base = buf.data_ptr()
            row = np.zeros(16, np.int64)
            row[:11] = (lut.data_ptr(), base + p["lanes_off"], base + p["words_off"], p["n_words"],
                        base + p["rest_off"], p["rest_bits"], n, s.bit_length() - 1, p["groups"], offs_d.data_ptr(),
                        out.data_ptr())
            by_size.setdefault(_ITEMSIZE[dtype], []).append((ji, row, p["groups"]))
        mod = _module(dev.index) if by_size else None
        for itemsize, items in sorted(by_size.items()):
            blocks = [0]
            for _, _, g in items:
                blocks.append(blocks[-1] + -(-g // (_BLOCK // LANES)))
            desc = torch.from_numpy(np.stack([r for _, r, _ in items])).to(dev)
            blk0 = torch.from_numpy(np.asarray(blocks, np.int64)).to(dev)
            err = torch.zeros(len(items), dtype=torch.int32, device=dev)
            fn = mod.get_function(f"fexp_decode_many_{itemsize}")
            args = (np.uint64(desc.data_ptr()), np.uint64(blk0.data_ptr()), np.int32(len(items)), np.uint64(err.data_ptr()))
            self.launches.append((fn, blocks[-1], args, err, [ji for ji, _, _ in items], desc, blk0))

    def run(self, stream=None):
        stream = stream if stream is not None else torch.cuda.current_stream(self.device)
        for fn, grid, args, *_ in self.launches:
            fn((grid,), (_BLOCK,), args, stream=stream)
        return self.outs

    def raise_errors(self):
        for _, _, _, err, idx, *_ in self.launches:
            codes = err.cpu().numpy()
            bad = np.flatnonzero(codes)
            if bad.size:
                i = int(bad[0])
                what = "; ".join(text for bit, text in _ERRORS if int(codes[i]) & bit)
                name = self.jobs[idx[i]].get("name", f"job {idx[i]}")
                raise FormatError(f"{name}: fexp payload is corrupt: {what}")


def decode_fexp_many(jobs, device="cuda", check=True) -> list:
    """Decode several ``fexp`` payloads (host bytes) with one launch per item size; the 1-D outputs."""
    launch = ManyLaunch(jobs, device)
    outs = launch.run()
    if check:
        launch.raise_errors()
    return outs
