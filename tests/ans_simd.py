"""Helpers shared by the vector rANS step tests (tests/test_rans_vec.py: decoder, tests/test_rans_venc.py:
encoder, tests/test_rans_gen.py: general step, tests/test_fexp_vec.py)."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from bslcodec.codecs import rans_vec

ROOT = Path(__file__).resolve().parents[1]
HAVE_SIMD = rans_vec.SIMD  # read at import: the tests flip rans_vec.SIMD (hypothesis' examples share one monkeypatch)


def needs_simd():
    if not HAVE_SIMD:
        pytest.skip("this target does not use the vector step (no AVX-512); the subprocess tests force it")


def symbols(rng, n, scale, raw_rate, wide):
    """Zigzag symbols of Laplace levels, a ``raw_rate`` share of them far out (raw-bit tokens; ``wide``: > 16 bits)."""
    d = np.rint(rng.laplace(0, scale, n)).astype(np.int64)
    far = rng.random(n) < raw_rate
    d[far] = rng.integers(-(1 << 20 if wide else 3000), 1 << 20 if wide else 3000, int(far.sum()))
    return ((d << 1) ^ (d >> 63)).astype(np.uint32)


def corrupted(p: bytes, header_size: int, n_groups: int, rng, count: int = 6):
    """``count`` damaged copies of the ans payload ``p``: every third moves ``2 dw`` words between two
    neighbouring groups' word counts (the counts still add up), the others flip 1-3 bits in the words."""
    start = header_size + 4 * n_groups
    for i in range(count):
        q = bytearray(p)
        if i % 3 == 0:
            at = header_size + 4 * int(rng.integers(0, n_groups - 1))
            dw = 2 * int(rng.integers(-40, 40))
            for a, d in ((at, -dw), (at + 4, dw)):
                q[a:a + 4] = ((int.from_bytes(q[a:a + 4], "little") + d) % 2**32).to_bytes(4, "little")
        else:
            for _ in range(int(rng.integers(1, 4))):
                q[int(rng.integers(start, len(p)))] ^= 1 << int(rng.integers(0, 8))
        yield bytes(q)


def child(code: str, name, features) -> list:
    """The words ``code`` prints, run by a fresh interpreter with one Numba thread and an empty Numba cache
    (so the kernels compile there and their assembly is kept), compiled for the CPU ``name`` with
    ``features`` (None: this machine), without the user's SIMD switch."""
    env = dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for k in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "BSLCODEC_ANS_SIMD"):
        env.pop(k, None)
    if name:
        env.update(NUMBA_CPU_NAME=name, NUMBA_CPU_FEATURES=features)
    with tempfile.TemporaryDirectory() as d:
        env["NUMBA_CACHE_DIR"] = d
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.split()
