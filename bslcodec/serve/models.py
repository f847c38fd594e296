"""Models for the serving front end, built from a model folder: ``.bsl`` weights (a folder written by
``bslcodec encode``) or the original safetensors ones, so one server serves either and a benchmark
compares like with like.

    >>> from bslcodec.serve.models import load_causal_lm
    >>> model, tokenizer = load_causal_lm("smollm2-bsl", device="cpu")   # doctest: +SKIP

Loading goes through :func:`bslcodec.hf.from_pretrained` for ``.bsl`` folders (decoded on the GPU when
``device`` is CUDA) and through ``transformers``' own ``from_pretrained`` otherwise; the tokenizer and the
config come from the folder either way (``bslcodec encode`` copies them unchanged).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..container.errors import BslError

__all__ = ["has_bsl_weights", "load_causal_lm", "load_encoder", "Pooling"]

log = logging.getLogger("bslcodec.serve")


def has_bsl_weights(folder) -> bool:
    """True when ``folder`` holds ``.bsl`` weights (``model.bsl``, shards or ``model.bsl.index.json``)."""
    folder = Path(folder)
    return any(folder.glob("*.bsl")) or (folder / "model.bsl.index.json").is_file()


def _check_folder(folder) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise BslError(f"{folder}: not a model folder (config.json, tokenizer and weights)")
    if not (folder / "config.json").is_file():
        raise BslError(f"{folder}: no config.json (serve a whole Hugging Face model folder)")
    return folder


def _torch_dtype(dtype):
    import torch

    if dtype is None or dtype == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    found = getattr(torch, str(dtype), None)
    if not isinstance(found, torch.dtype):
        raise BslError(f"unknown dtype {dtype!r} (float32, bfloat16, float16 or auto)")
    return found


def _load(folder: Path, model_class, device: str, dtype):
    t0 = time.perf_counter()
    kwargs = {"dtype": _torch_dtype(dtype)}
    if has_bsl_weights(folder):
        from ..hf import from_pretrained

        model = from_pretrained(folder, model_class=model_class, device=device, **kwargs)
        source = ".bsl"
    else:
        model = model_class.from_pretrained(str(folder), device_map=str(device), **kwargs)
        source = "safetensors"
    model.eval()
    log.info("bslcodec.serve: %s loaded from %s weights in %.3f s", folder, source, time.perf_counter() - t0)
    return model


def _prefetch_gpu_decoder(folder: Path, device: str):
    """For ``.bsl`` weights on a CUDA device, import the GPU decoders (``bslcodec.gpu``) and load their kernels
    (from the cubin cache) on a thread while the tokenizer loads, instead of inside the weight load; returns the
    thread (join it before the load) or None. A fresh H100 replica of a 1.1B model loaded its ``.bsl`` weights in
    0.94 s against 0.57 s in a warm process (results/serve.md); imports and first uses are that difference.
    Failures are left to the load, which reports them."""
    if not str(device).startswith("cuda") or not has_bsl_weights(folder):
        return None

    def work():
        try:
            from bslcodec.gpu import warm_up

            warm_up(device)
        except Exception as e:  # noqa: BLE001 - the weight load imports it again and says what is wrong
            log.debug("bslcodec.serve: GPU decoder prefetch failed: %s", e)

    t = threading.Thread(target=work, name="bslcodec-gpu-import", daemon=True)
    t.start()
    return t


def load_causal_lm(folder, device: str = "cpu", dtype=None):
    """``(model, tokenizer)`` of a causal LM folder: ``AutoModelForCausalLM`` on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _check_folder(folder)
    pre = _prefetch_gpu_decoder(folder, device)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if pre is not None:
        pre.join()
    return _load(folder, AutoModelForCausalLM, device, dtype), tokenizer


@dataclass(frozen=True)
class Pooling:
    """How token vectors become one sentence vector (sentence-transformers' ``1_Pooling/config.json``
    and ``modules.json``): ``mode`` is ``"mean"`` or ``"cls"``; ``normalize`` L2-normalises the result;
    inputs are truncated to ``max_length`` tokens (``sentence_bert_config.json``)."""

    mode: str = "mean"
    normalize: bool = True
    max_length: int = 512

    @classmethod
    def from_folder(cls, folder) -> "Pooling":
        folder = Path(folder)
        mode, normalize, max_length = "mean", True, 512
        modules = folder / "modules.json"
        try:
            if modules.is_file():
                types = [m.get("type", "") for m in json.loads(modules.read_text())]
                normalize = any(t.endswith("Normalize") for t in types)
            pooling = folder / "1_Pooling" / "config.json"
            if pooling.is_file():
                cfg = json.loads(pooling.read_text())
                if cfg.get("pooling_mode_cls_token"):
                    mode = "cls"
                elif not cfg.get("pooling_mode_mean_tokens", True):
                    raise BslError(f"{pooling}: only mean or CLS pooling is supported")
            st = folder / "sentence_bert_config.json"
            if st.is_file():
                max_length = int(json.loads(st.read_text()).get("max_seq_length", max_length))
        except (ValueError, AttributeError, TypeError) as exc:
            raise BslError(f"{folder}: unreadable sentence-transformers config: {exc}") from None
        return cls(mode, normalize, max_length)


def load_encoder(folder, device: str = "cpu", dtype=None):
    """``(model, tokenizer, pooling)`` of a sentence-embedding folder (a BERT-like ``AutoModel`` plus the
    sentence-transformers pooling files, as all-MiniLM-L6-v2 ships)."""
    from transformers import AutoModel, AutoTokenizer

    folder = _check_folder(folder)
    pre = _prefetch_gpu_decoder(folder, device)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if pre is not None:
        pre.join()
    return _load(folder, AutoModel, device, dtype), tokenizer, Pooling.from_folder(folder)


def embed(model, tokenizer, pooling: Pooling, texts: list) -> "torch.Tensor":  # noqa: F821
    """Sentence embeddings ``(len(texts), hidden)`` float32, computed as sentence-transformers does."""
    import torch

    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=pooling.max_length,
                      return_tensors="pt").to(model.device)
    with torch.inference_mode():
        tokens = model(**batch).last_hidden_state                      # (B, T, H)
        if pooling.mode == "cls":
            out = tokens[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            out = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if pooling.normalize:
            out = torch.nn.functional.normalize(out, p=2, dim=1)
    return out.float().cpu()
