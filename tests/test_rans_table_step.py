"""The ``ans`` / ``ans-dq`` decoder's usual step through its token table (``rans_dec._decode_group``: output
and next dq state looked up by token and state, a step with a raw-bit token decoded again by the general
step) against the general step alone, and against the ``Q`` levels dequantized as spec 4.3 says: valid
payloads with no, rare and frequent raw-bit tokens, and corrupted ones (same values or same error)."""

import numpy as np
import pytest

from bslcodec.codecs import rans, rans_dec
from bslcodec.container.errors import FormatError

DT = {"F32": np.float32, "BF16": np.uint16}


def _symbols(rng, n, raw_rate, wide):
    """Zigzag symbols: a Laplace bulk inside the direct tokens, a ``raw_rate`` share far outside (tokens
    with raw bits; ``wide``: beyond 2^17, more than 16 raw bits)."""
    d = np.rint(rng.laplace(0, 3, n)).astype(np.int64)
    far = rng.random(n) < raw_rate
    d[far] = rng.integers(-(1 << 20 if wide else 3000), 1 << 20 if wide else 3000, int(far.sum()))
    return ((d << 1) ^ (d >> 63)).astype(np.uint32)


def _decode(payload, n, s, center, step, mode, dq, table, monkeypatch):
    monkeypatch.setattr(rans_dec, "TABLE_ELEMS_PER_ENTRY", 0 if table else 1 << 40)
    out = np.empty(n, DT[mode] if mode in DT else np.int64)
    try:
        rans.decode_into(payload, n, s, center, step, out, mode, dq=dq)
    except FormatError as exc:
        return str(exc)
    return out


def _dequant(q, step, mode):
    y = q.astype(np.float32) * np.float32(step)
    if mode == "F32":
        return y
    b = y.view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)  # RNE to bf16 bits


@pytest.mark.parametrize("raw_rate", [0.0, 0.002, 0.2])
@pytest.mark.parametrize("dq", [False, True])
@pytest.mark.parametrize("s", [16, 64])
def test_table_step_matches_general_step(raw_rate, dq, s, monkeypatch):
    rng = np.random.default_rng(int(raw_rate * 1000) + 7 * s + dq)
    for n in (32 * s * 3 + 45, 32 * s * 2):  # several groups, a partial last step and group, or none
        u = _symbols(rng, n, raw_rate, wide=raw_rate == 0.002)
        payload = rans.encode(u, s, rans.build_model(u)[0])
        center, step = int(rng.integers(-50, 50)), float(rng.uniform(1e-4, 0.1))
        q = _decode(payload, n, s, center, 1.0, "Q", dq, False, monkeypatch)
        for mode in DT:
            got = _decode(payload, n, s, center, step, mode, dq, True, monkeypatch)
            assert got.tobytes() == _decode(payload, n, s, center, step, mode, dq, False, monkeypatch).tobytes()
            assert got.tobytes() == _dequant(q, step, mode).tobytes()


@pytest.mark.parametrize("dq", [False, True])
def test_table_step_corrupt_payloads(dq, monkeypatch):
    """A flipped bit or a changed word count: the table step gives what the general step gives, the same
    values or the same FormatError (never a read outside the payload)."""
    rng = np.random.default_rng(11)
    s, n = 16, 32 * 16 * 4 + 100
    u = _symbols(rng, n, 0.01, wide=False)
    model = rans.build_model(u)[0]
    p = rans.encode(u, s, model)
    start = model.header_size + 4 * rans.n_groups(n, s)
    errors = 0
    for i in range(80):
        q = bytearray(p)
        if i % 8 == 0:  # the word counts: shift words from one group to the next
            g = int(rng.integers(0, rans.n_groups(n, s) - 1))
            at = model.header_size + 4 * g
            w = int.from_bytes(q[at:at + 4], "little")
            dw = 2 * int(rng.integers(1, 40))
            q[at:at + 4] = (w - dw).to_bytes(4, "little")
            q[at + 4:at + 8] = (int.from_bytes(q[at + 4:at + 8], "little") + dw).to_bytes(4, "little")
        else:
            q[int(rng.integers(start, len(p)))] ^= 1 << int(rng.integers(0, 8))
        q = bytes(q)
        for mode in DT:
            a = _decode(q, n, s, 3, 0.01, mode, dq, True, monkeypatch)
            b = _decode(q, n, s, 3, 0.01, mode, dq, False, monkeypatch)
            if isinstance(a, str):
                errors += 1
                assert a == b
            else:
                assert not isinstance(b, str) and a.tobytes() == b.tobytes()
    assert errors >= 40
