"""``decode_ans``: ``ans`` payloads (spec 4.4) decoded and dequantized on the GPU into torch tensors.

The host parses what is small and must be checked before any kernel runs: the model header and frequency
table (``rans.parse_header``), the per-group word counts, and the payload length (every group's words lie
inside the payload). It builds the slot table with ``rans.gpu_table`` (tested equal to the CPU decoder's
``rans.slot_table``, repacked).
Then one kernel launch decodes every tensor given (``decode_ans_many``), on torch's current stream; the
decoded values are those of ``bslcodec.load_file`` bit for bit (``fl32(q * step)``, RNE to F16 / BF16).
"""

import numpy as np
import torch

# rans_header, not rans: no numba in a process that only decodes on a GPU
from ..codecs import rans_header as rans
from ..container.errors import FormatError, LimitError
from ..container.limits import MAX_ELEMENTS, MAX_SYMBOL_MAGNITUDE
from ._ans_src import DESC_FIELDS, ERR_END, ERR_RANGE, ERR_SHORT, ERR_STATE, SOURCE
from ._cuda import Module
from ._eg import _output, _to_device

WARPS_PER_BLOCK = 16
_KERNELS = {"default": "ans_decode", "v1": "ans_decode_v1", "ring": "ans_decode_ring"}  # variant -> kernel
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_MODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_ERRORS = ((ERR_SHORT, "a group has fewer words than its lane states"),
           (ERR_STATE, "a lane's initial state is below 2^16"),
           (ERR_END, "a group does not end where its word count says (or a lane's final state is not 2^16)"),
           (ERR_RANGE, "a symbol gives |q| >= 2^24"))
_modules = {}


def _allow_shmem(fn, nbytes: int) -> None:
    """Raise the kernel's dynamic shared memory limit to ``nbytes`` if it is lower. The limit is a property
    of the kernel, shared by every prepared launch, so it only ever grows: a launch built earlier with a
    larger table stays valid."""
    need = max(nbytes, 48 << 10)
    # the Kernel (one per device and name) keeps what was set; its setter is a driver call, so only when it grows
    if fn.max_dynamic_shared_size_bytes < need:  # noqa: PLR1730
        fn.max_dynamic_shared_size_bytes = need


def _module(device_index: int):
    mod = _modules.get(device_index)
    if mod is None:
        mod = Module(SOURCE, device_index)  # compiled (or read from the cache) and loaded now
        for name in _KERNELS.values():
            mod.get_function(name)
        _modules[device_index] = mod
    return mod


class Prepared:
    """Host-side facts of one ``ans`` payload, checked: model, slot table and group extents."""

    __slots__ = ("P", "_model", "gpu_table", "wstart", "words_off", "wcount_off", "groups", "length")

    def __init__(self, payload, n_elems: int, lane_symbols: int):
        if not 0 <= n_elems <= MAX_ELEMENTS:
            raise LimitError(f"n_elems {n_elems} outside 0..2^48")
        if isinstance(payload, torch.Tensor) or hasattr(payload, "__cuda_array_interface__"):
            t = torch.as_tensor(payload)
            plen = int(t.shape[0])
            head = t[:min(plen, 12)].cpu().numpy()
            if head.size == 12:  # the model header, then the group word counts
                B = int(head[8:12].view("<u4")[0])
                G = rans.n_groups(n_elems, lane_symbols)
                head = t[:min(plen, rans._align4(12 + B) + 4 * G)].cpu().numpy()
        else:
            head = np.frombuffer(payload, np.uint8) if not isinstance(payload, np.ndarray) else payload
            plen = head.size
        P, s, m, freqs, H = rans.parse_header(head)
        G = rans.n_groups(n_elems, lane_symbols)
        need = rans.min_length(H, n_elems, lane_symbols)
        if plen < need:
            raise FormatError(f"ans payload of {plen} bytes cannot hold {n_elems} elements ({need} bytes at least)")
        W = head[H:H + 4 * G].view("<u4").astype(np.int64)
        start = np.zeros(G + 1, np.int64)
        np.cumsum(W + (W % 2), out=start[1:])
        expect = H + 4 * G + 2 * int(start[-1])
        if plen != expect:
            raise FormatError(f"ans payload is {plen} bytes, its group table says {expect}")
        self.P, self.groups, self.length = P, G, plen
        self._model = (P, s, m, freqs)
        # the default kernel's packing: per slot (f | (slot - c) << 15) | (nb | base << 5) << 32, in one pass
        self.gpu_table = rans.gpu_table(P, s, m, freqs)
        self.wstart = start[:-1]
        self.wcount_off, self.words_off = H, H + 4 * G

    @property
    def table(self) -> np.ndarray:
        """The CPU decoder's packed slot table (``rans.slot_table``), read by the kernel variants v1 and ring."""
        return rans.slot_table(*self._model)


def _check_step(step, center):
    s32 = np.float32(step)
    if not (np.isfinite(s32) and s32 > 0 and float(s32) == float(step)):
        raise FormatError(f"step {step!r} is not a positive finite binary32 value")
    if abs(int(center)) >= MAX_SYMBOL_MAGNITUDE:
        raise FormatError(f"center {center} has |center| >= 2^24")
    return s32


class Launch:
    """One prepared launch of the ``ans`` kernel over several payloads; ``run()`` queues it on a stream.

    Built once (descriptors and block table on the device), it can be run again and again, e.g. before
    every forward of a compressed-resident model. ``err``: an int32 CUDA tensor of one element per job
    given (``err_per_job``, the default) or of one element that every job or-s its flags into.
    """

    def __init__(self, jobs, device="cuda", variant="default", err=None, warps_per_block=None):
        dev = torch.device(device)
        if dev.type != "cuda":
            raise ValueError(f"device must be a CUDA device, got {dev}")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device, self.jobs = dev, jobs
        if variant not in _KERNELS:
            raise ValueError(f"variant must be one of {list(_KERNELS)}, not {variant!r}")
        wpb = warps_per_block or WARPS_PER_BLOCK
        outs, keep, rows, row_job, blocks, p_max = [], [], [], [], [0], 1
        for ji, j in enumerate(jobs):
            n = int(j["n_elems"])
            dtype = j["dtype"]
            dtype = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
            if dtype not in _MODE:
                raise TypeError(f"dtype must be one of {list(_MODE)}, got {dtype!r}")
            step32 = _check_step(j["step"], j["center"])
            prep = j.get("prepared")
            if prep is None:
                try:
                    prep = Prepared(j["payload"], n, int(j["lane_symbols"]))
                except (FormatError, LimitError) as exc:
                    raise type(exc)(f"{j.get('name', f'job {ji}')}: {exc}") from None
            out = _output(j.get("out"), dtype, n, dev)
            outs.append(out.view(-1))
            if prep.groups == 0:
                continue
            buf = _to_device(j["payload"], dev)
            tab = j.get("table_dev") if variant == "default" else None
            if tab is None:
                tab = torch.from_numpy(prep.gpu_table if variant == "default" else prep.table).to(dev)
            ws = j.get("wstart_dev")
            if ws is None:
                ws = torch.from_numpy(prep.wstart).to(dev)
            keep += [buf, tab, ws, out]
            base = buf.data_ptr()
            row = np.zeros(DESC_FIELDS, np.int64)
            dq = bool(j.get("dq", False))
            if dq and variant != "default":
                raise ValueError(f"ans-dq payloads decode with the default kernel only, not {variant!r}")
            row[:13] = (base + prep.words_off, base + prep.wcount_off, ws.data_ptr(), tab.data_ptr(), prep.P, n,
                        int(j["lane_symbols"]).bit_length() - 1, prep.groups, int(j["center"]),
                        int(np.float32(step32).view(np.int32)), out.data_ptr(), _MODE[dtype], int(dq))
            rows.append(row)
            row_job.append(ji)
            blocks.append(blocks[-1] + -(-prep.groups // wpb))
            p_max = max(p_max, prep.P)
        self.outs, self.keep, self.row_job = outs, keep, row_job
        self.grid = blocks[-1]
        if not rows:
            self.err = err
            return
        self.desc = torch.from_numpy(np.stack(rows)).to(dev)
        self.blk0 = torch.from_numpy(np.asarray(blocks, np.int64)).to(dev)
        self.err = err if err is not None else torch.zeros(len(rows), dtype=torch.int32, device=dev)
        self.err_stride = 1 if self.err.numel() == len(rows) else 0
        self.block = 32 * wpb
        self.shmem = 8 * (1 << p_max) + (wpb * 512 if variant == "ring" else 0)
        self.fn = _module(dev.index).get_function(_KERNELS[variant])
        _allow_shmem(self.fn, self.shmem)
        self.args = (np.uint64(self.desc.data_ptr()), np.uint64(self.blk0.data_ptr()), np.int32(len(rows)),
                     np.uint64(self.err.data_ptr()), np.int32(self.err_stride))

    def run(self, stream=None):
        """Queue the decode on ``stream`` (default: torch's current stream on the device)."""
        if not self.grid:
            return self.outs
        stream = stream if stream is not None else torch.cuda.current_stream(self.device)
        self.fn((self.grid,), (self.block,), self.args, shared_mem=self.shmem, stream=stream)
        return self.outs

    def raise_errors(self):
        """Wait for the launch and raise FormatError naming the first job whose payload is corrupt."""
        if not self.grid:
            return
        codes = self.err.cpu().numpy()
        bad = np.flatnonzero(codes)
        if bad.size:
            i = int(bad[0])
            what = "; ".join(text for bit, text in _ERRORS if int(codes[i]) & bit)
            ji = self.row_job[i] if self.err_stride else 0
            label = self.jobs[ji].get("name", f"job {ji}") if self.err_stride else "one of the payloads"
            raise FormatError(f"{label}: ans payload is corrupt: {what}")


def decode_ans_many(jobs, device="cuda", check=True, variant="default"):
    """Decode several ``ans`` payloads with one kernel launch.

    jobs: a list of dicts with ``payload`` (bytes / numpy uint8 / 1-D uint8 CUDA tensor), ``n_elems``,
    ``lane_symbols``, ``step``, ``center``, ``dtype`` (torch dtype or "F32"/"F16"/"BF16"), optional ``dq``
    (True for an ``ans-dq`` payload, spec 4.6: the same payload bytes, dependent-quantization levels), ``out``
    (a contiguous CUDA tensor of that dtype), ``name`` (for error messages) and ``prepared`` / ``table_dev``
    / ``wstart_dev`` (a ``Prepared`` and its table and group starts on the device, for repeated decodes).
    Returns the list of 1-D output tensors. With ``check`` the call waits and raises FormatError naming the
    first bad job. ``variant``: "default", or the benchmark variants "v1" and "ring".

    Temporaries (descriptors, tables, device copies of host payloads) are freed when this returns: torch's
    caching allocator reuses their memory only for work queued after this launch on the same stream.
    """
    launch = Launch(jobs, device, variant)
    outs = launch.run()
    if check:
        launch.raise_errors()
    return outs


def decode_ans(payload, n_elems, lane_symbols, step, center, dtype, device="cuda", out=None, check=True,
               prepared=None, dq=False) -> torch.Tensor:
    """Decode one ``ans`` payload into a 1-D CUDA tensor of ``n_elems`` elements of ``dtype``.

    Same arguments and checks as ``decode_eg``; ``prepared``: a ``Prepared`` of this payload, for
    callers that decode it repeatedly.

    >>> w = decode_ans(payload, 1000, 1024, 0.01, 0, torch.bfloat16)  # doctest: +SKIP
    """
    job = {"payload": payload, "n_elems": n_elems, "lane_symbols": lane_symbols, "step": step, "center": center,
           "dtype": dtype, "out": out, "prepared": prepared, "dq": dq}
    return decode_ans_many([job], device=device, check=check)[0]


__all__ = ["decode_ans", "decode_ans_many", "Launch", "Prepared"]
