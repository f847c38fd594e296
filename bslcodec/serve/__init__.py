"""Serving ``.bsl`` models in real inference servers (a leaf: the core never imports it).

- :mod:`bslcodec.serve.models`: transformers models and tokenizers from a folder of ``.bsl`` (or
  safetensors) weights; needs ``torch`` and ``transformers``.
- :mod:`bslcodec.serve.litserve`: LitServe ``LitAPI`` classes for OpenAI-compatible embeddings and chat
  completions; needs ``pip install 'bslcodec[serve]'``.
- ``python -m bslcodec.serve embed|generate FOLDER --port N``: run one of them (``--help``).

``docs/serving.md`` has the walk-through, the cold-start numbers and the vLLM design (``docs/vllm.md``).
"""

__all__ = ["models"]
