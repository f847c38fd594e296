"""Hugging Face ``transformers`` models from folders written by ``bslcodec encode``.

An inference server that does ::

    model = AutoModelForCausalLM.from_pretrained("my-model", dtype="auto", device_map="cuda")
    tokenizer = AutoTokenizer.from_pretrained("my-model")

serves the ``.bsl`` version of the model (``bslcodec encode my-model my-model-bsl``) with one changed line::

    model = bslcodec.hf.from_pretrained("my-model-bsl", model_class=AutoModelForCausalLM, dtype="auto",
                                        device_map="cuda")
    tokenizer = AutoTokenizer.from_pretrained("my-model-bsl")   # copied unchanged by encode

The weights are decoded (on the GPU when ``device``/``device_map`` is a CUDA device), then handed to
``model_class.from_pretrained(None, config=..., state_dict=...)``, so transformers does what it always
does: dtype, device placement, tied weights, renamed keys, missing-key reports.
"""

from __future__ import annotations

from pathlib import Path

from .container.errors import BslError

__all__ = ["from_pretrained", "model_class_for"]


def model_class_for(config, model_class=None):
    """The concrete ``transformers`` class to build: ``model_class`` (a class, an ``Auto*`` class or a
    class name) or, when None, the first of ``config.architectures`` that ``transformers`` has, else
    ``AutoModel``'s class for this config."""
    import transformers

    if isinstance(model_class, str):
        found = getattr(transformers, model_class, None)
        if found is None:
            raise BslError(f"transformers has no class named {model_class!r}")
        model_class = found
    if model_class is None:
        for name in getattr(config, "architectures", None) or ():
            found = getattr(transformers, name, None)
            if found is not None:
                return found
        model_class = transformers.AutoModel
    mapping = getattr(model_class, "_model_mapping", None)  # an Auto* class: pick the concrete one
    if mapping is not None:
        try:
            return mapping[type(config)]
        except KeyError:
            raise BslError(f"{model_class.__name__} has no model for a {type(config).__name__}") from None
    return model_class


def from_pretrained(folder, *model_args, model_class=None, device=None, strict: bool = False, **kwargs):
    """Build a ``transformers`` model from ``folder`` (config + ``.bsl`` weights) and load its weights.

    ``model_class``: class, ``Auto*`` class or class name (default: from ``config.architectures``).
    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...: weights are decoded there and the model is placed
    there (it sets ``device_map`` unless you pass one). ``strict=True`` raises :class:`BslError` when
    transformers reports missing, unexpected or mismatched keys. Every other keyword (``dtype``,
    ``device_map``, ``attn_implementation``, ``output_loading_info``, ``trust_remote_code``...) goes to
    transformers' ``from_pretrained``; ``config=`` replaces the folder's ``config.json``.
    """
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise BslError("bslcodec.hf needs transformers: pip install transformers") from None
    from transformers import AutoConfig

    from .files.readers import bsl_files
    from .files.source import load_torch

    folder = Path(folder)
    if not folder.is_dir():
        raise BslError(f"{folder}: not a folder (bslcodec.hf.from_pretrained needs a folder written by "
                       "'bslcodec encode': config.json plus the .bsl weights)")
    files = bsl_files(folder)
    config = kwargs.pop("config", None)
    if config is None:
        if not (folder / "config.json").is_file():
            raise BslError(f"{folder}: no config.json (encode the whole Hugging Face model folder)")
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=kwargs.get("trust_remote_code", False))
    cls = model_class_for(config, model_class)

    device_map = kwargs.get("device_map")
    if device is not None:
        kwargs.setdefault("device_map", str(device))
        decode_on = str(device)
    elif isinstance(device_map, str) and (device_map == "cpu" or device_map.startswith("cuda")):
        decode_on = device_map
    else:
        decode_on = "cpu"  # "auto" / per-module maps: transformers moves each weight where it belongs
    state_dict = {}
    for f in files:
        state_dict.update(load_torch(f, decode_on))

    want_info = kwargs.get("output_loading_info", False)
    if strict:
        kwargs["output_loading_info"] = True
    out = cls.from_pretrained(None, *model_args, config=config, state_dict=state_dict, **kwargs)
    if not strict:
        return out
    model, info = out
    problems = {k: list(info.get(k) or ()) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        detail = "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, v[:5]))}{' ...' if len(v) > 5 else ''}"
                           for k, v in problems.items())
        raise BslError(f"{folder}: weights do not match {cls.__name__} ({detail})")
    return (model, info) if want_info else model
