"""``container.format.checksum``: XXH3-64 (spec 3.2) whichever python-xxhash entry point computes it (the
streaming object for large payloads, which hashes with the GIL released; the one-shot function below that)."""

import numpy as np
import pytest
import xxhash

from bslcodec.container import format as fmt


@pytest.mark.parametrize("n", [0, 1, 63, 64, 240, 241, fmt.GIL_FREE_BYTES - 1, fmt.GIL_FREE_BYTES,
                               fmt.GIL_FREE_BYTES + 1, 3 << 20, (5 << 20) + 17])
def test_the_same_digest_for_every_input_kind(n):
    data = np.random.default_rng(n).integers(0, 256, n + 9, dtype=np.uint8)
    view = data[9:]  # an offset view, as the loaders pass payload slices
    want = xxhash.xxh3_64_hexdigest(bytes(view))
    for form in (bytes(view), bytearray(view), memoryview(bytes(view)), view, np.frombuffer(bytes(view), np.uint8)):
        assert fmt.checksum(form) == want


def test_large_payloads_take_the_streaming_form(monkeypatch):
    """Only inputs under GIL_FREE_BYTES reach the one-shot function (which keeps the GIL while it hashes)."""
    seen = []
    one_shot = xxhash.xxh3_64_hexdigest
    monkeypatch.setattr(fmt.xxhash, "xxh3_64_hexdigest", lambda d: seen.append(len(d)) or one_shot(d))
    small, large = b"x" * (fmt.GIL_FREE_BYTES - 1), np.zeros(fmt.GIL_FREE_BYTES, np.uint8)
    assert fmt.checksum(small) == one_shot(small) and fmt.checksum(large) == one_shot(large.tobytes())
    assert seen == [fmt.GIL_FREE_BYTES - 1]
