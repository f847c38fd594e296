"""LitServe APIs that serve ``.bsl`` models: OpenAI-compatible embeddings and chat completions.

LitServe (``pip install 'bslcodec[serve]'``) is a FastAPI/uvicorn server that runs each model in worker
processes, with batching, health checks and OpenAI-compatible specs. These two ``LitAPI`` classes only
load the model from a folder (``.bsl`` or safetensors weights, :mod:`bslcodec.serve.models`) and run it::

    import litserve as ls
    from bslcodec.serve.litserve import EmbeddingAPI, GenerationAPI

    api = EmbeddingAPI("minilm-bsl", spec=ls.OpenAIEmbeddingSpec())
    ls.LitServer(api, accelerator="cpu").run(host="127.0.0.1", port=8000)   # POST /v1/embeddings

    api = GenerationAPI("smollm2-bsl", dtype="bfloat16", spec=ls.OpenAISpec())
    ls.LitServer(api, accelerator="cuda").run(port=8001)                     # POST /v1/chat/completions

or from the shell: ``python -m bslcodec.serve embed minilm-bsl --port 8000``. ``GET /health`` answers
``ok`` once every worker has loaded its model.
"""

from __future__ import annotations

import litserve as ls

from .models import embed, load_causal_lm, load_encoder

__all__ = ["EmbeddingAPI", "GenerationAPI", "DEFAULT_MAX_TOKENS"]

#: Completion length when a request gives neither ``max_completion_tokens`` nor ``max_tokens``.
DEFAULT_MAX_TOKENS = 128


def _device(device) -> str:
    # LitServe hands "cpu", "cuda:0", ... (or a list when one worker spans several devices)
    return str(device[0] if isinstance(device, (list, tuple)) else device)


class EmbeddingAPI(ls.LitAPI):
    """Sentence embeddings of a sentence-transformers style folder; pass ``spec=ls.OpenAIEmbeddingSpec()``.

    ``predict`` takes a string or a list of strings and returns a ``(n, hidden)`` float32 tensor, L2
    normalised when the folder's ``modules.json`` says so (all-MiniLM-L6-v2 does).
    """

    def __init__(self, folder, dtype=None, **kwargs):  # kwargs: LitAPI's (spec=, api_path=...)
        super().__init__(**kwargs)
        self.folder, self.dtype = str(folder), dtype

    def setup(self, device):
        self.model, self.tokenizer, self.pooling = load_encoder(self.folder, _device(device), self.dtype)

    def predict(self, inputs):
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("input must be a string or a non-empty list of strings")
        return embed(self.model, self.tokenizer, self.pooling, texts)


class GenerationAPI(ls.LitAPI):
    """Chat completions from a causal LM folder; pass ``spec=ls.OpenAISpec()``.

    The messages go through the tokenizer's chat template (or are joined line by line when it has
    none); ``temperature=0`` decodes greedily, otherwise ``temperature``/``top_p`` sampling. The whole
    completion is produced, then sent (a streaming request gets it as one chunk).
    """

    def __init__(self, folder, dtype=None, **kwargs):  # kwargs: LitAPI's (spec=, api_path=...)
        super().__init__(**kwargs)
        self.folder, self.dtype = str(folder), dtype

    def setup(self, device):
        self.model, self.tokenizer = load_causal_lm(self.folder, _device(device), self.dtype)

    def _prompt_ids(self, messages):
        msgs = [{"role": m.role, "content": m.content if isinstance(m.content, str) else
                 " ".join(getattr(c, "text", "") or "" for c in (m.content or []))} for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
                                                      return_dict=True)
        return self.tokenizer("\n".join(m["content"] for m in msgs), return_tensors="pt")

    def predict(self, request):
        import torch

        enc = self._prompt_ids(request.messages)
        # only what a decoder takes (a BERT-style tokenizer also returns token_type_ids)
        inputs = {k: enc[k].to(self.model.device) for k in ("input_ids", "attention_mask") if k in enc}
        max_new = request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS
        sample = bool(request.temperature) and request.temperature > 0
        kwargs = {"do_sample": sample, "max_new_tokens": int(max_new)}
        if sample:
            kwargs.update(temperature=float(request.temperature), top_p=float(request.top_p or 1.0))
        else:  # greedy: clear the sampling defaults some generation_config.json files carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(**inputs, pad_token_id=pad, **kwargs)
        new = out[0, inputs["input_ids"].shape[1]:]
        yield self.tokenizer.decode(new, skip_special_tokens=True)
