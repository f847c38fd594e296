"""Decoding every tensor of a file on the CPU with all cores (``load_file``, ``load``; issue 19).

Two kinds of parallelism, as the encoder's pool (:mod:`bslcodec.files.pool`) does it:

* a tensor of at least a thread's share of the file's output decodes alone, its kernel spread over the
  groups on every numba thread; the checksums of all such tensors are verified first, side by side on as
  many threads (``container.format.checksum`` hashes large payloads with the GIL released). (They ran one at
  a time on a helper thread beside the decode of the tensor before: on 16 cores that 17th thread slowed every
  parallel kernel to its slowest thread, and ``load_file`` of 8 x 4096^2 bf16 took 44 ms where its kernels
  took 26, H100 host, eleventh session.)
* the smaller tensors decode side by side on a thread pool, one numba thread each (their kernels run
  their serial twins: no parallel region per tiny tensor). The pool's cap on bytes in flight, which bounds
  an encode's memory, is lifted: a load holds every output anyway (with the cap, 23 MB MLP matrices ran 5
  at a time on 16 cores).

A file of less than ``PARALLEL_BYTES`` of output, or of one tensor, is decoded tensor after tensor on the
calling thread: starting threads costs more than such a load. Checksums are verified before a tensor's
payload is decoded, in every case; a mismatch raises :class:`ChecksumError` naming the tensor.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ..container.dtypes import NUMPY_DTYPES
from ..container.errors import ChecksumError
from ..container.format import checksum
from ..pipeline import batch as _batch
from ..pipeline import codec as _codec
from . import pool as _pool

#: Bytes of decoded output below which a file is decoded on the calling thread alone
PARALLEL_BYTES = 16 << 20


def _out_bytes(e) -> int:
    return e.numel * NUMPY_DTYPES[e.dtype].itemsize


def decode_all(src, names: list, convert) -> dict:
    """name -> ``convert(array)`` for ``names`` of an open ``_Source``, decoded with every core; the small
    tensors first, in batches (:mod:`bslcodec.pipeline.batch`). A tensor the batch refuses is decoded again
    one by one, in ``names`` order with the others, which raises its error."""
    done = _batch.decode_small(src, names)
    if not done:
        return _decode_each(src, names, convert)
    rest = _decode_each(src, [n for n in names if n not in done], convert)
    return {n: rest[n] if n in rest else convert(done[n]) for n in names}


def _decode_each(src, names: list, convert) -> dict:
    weights = [_out_bytes(src.entry(n)) for n in names]
    n_threads = _pool.threads()
    if n_threads <= 1 or len(names) <= 1 or sum(weights) < PARALLEL_BYTES:
        return {n: convert(src.tensor(n)) for n in names}
    total = sum(weights)
    big = [n for n, w in zip(names, weights) if w * n_threads > total]
    out = dict.fromkeys(names)
    if big:
        with ThreadPoolExecutor(min(n_threads, len(big)), thread_name_prefix="bslcodec-checksum") as ex:
            good = list(ex.map(lambda n: _sum(src, n), big))  # (no thread reads the file once this returns)
        for n, ok in zip(big, good):
            if not ok:
                raise ChecksumError(f"{src.where}: tensor {n!r}: payload checksum mismatch (corrupted file)")
        for n in big:
            e = src.entry(n)
            out[n] = convert(_codec.decode(e, src.payload(e, verify=False), f"{src.where}: tensor {n!r}"))
    small = [(n, w) for n, w in zip(names, weights) if w * n_threads <= total]
    if small:
        done = _pool.run(lambda n: convert(src.tensor(n)), [n for n, _ in small], [w for _, w in small],
                         n_threads=n_threads, budget=total)  # every output is held anyway: no cap
        out.update(zip((n for n, _ in small), done))
    return out


def _sum(src, name) -> bool:
    e = src.entry(name)
    return checksum(src.payload(e, verify=False)) == e.checksum
