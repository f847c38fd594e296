"""End to end over real HTTP: LitServe servers (``python -m bslcodec.serve``) load ``.bsl`` model folders
and answer like the original models.

- embeddings: all-MiniLM-L6-v2 encoded at the default setting, served on /v1/embeddings; every
  sentence's embedding has cosine >= 0.999 with the original model's (computed in this process).
- chat completions: a small LlamaForCausalLM (seeded random weights, MiniLM's tokenizer: CI has no real
  causal LM offline that installs quickly) encoded losslessly, served on /v1/chat/completions; greedy
  decoding gives exactly the original model's completion.

Both servers start as subprocesses on free loopback ports, each as soon as its folder is written (they boot
while the test prepares the rest), and are shut down (SIGINT to their process group, then SIGKILL) whatever
happens. 45-85 CPU-seconds measured (test process and servers); 2.5-6 min wall on the shared 2-core box
at load average 15-20. Skipped when LitServe (``bslcodec[serve]``), transformers or the MiniLM package is
missing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("litserve")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import minilm  # noqa: E402

try:
    MINILM = minilm.model_dir()
except minilm.ModelNotInstalledError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(str(exc), allow_module_level=True)

from bslcodec.files.checkpoint import encode_checkpoint  # noqa: E402

START_TIMEOUT = 240  # s: two servers importing torch at once on a loaded 2-core box
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")
PROMPTS = ["Tell me about the river and the old bridge.", "What is the capital of France?"]
MAX_TOKENS = 12


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m bslcodec.serve KIND FOLDER`` on a free loopback port, in its own process group."""

    def __init__(self, kind: str, folder: Path, log: Path):
        self.port = _free_port()
        self.log = log
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        self._log_fh = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bslcodec.serve", kind, str(folder), "--port", str(self.port),
             "--accelerator", "cpu", "--dtype", "float32"],
            stdout=self._log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, deadline: float):
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url("/health"), timeout=2) as r:
                    if r.status == 200 and r.read().strip(b'"') == b"ok":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        pytest.fail(f"server not ready after {START_TIMEOUT} s:\n{self.tail()}")

    def post(self, path: str, body: dict):
        req = urllib.request.Request(self.url(path), data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def tail(self) -> str:
        self._log_fh.flush()
        return self.log.read_bytes()[-3000:].decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)  # LitServe shuts its workers down on Ctrl-C
                self.proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:  # whatever is left of this server's own process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=20)
        self._log_fh.close()


def _tiny_lm(folder: Path):
    """A 2-layer LlamaForCausalLM with seeded random weights and MiniLM's tokenizer, saved as a HF folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(MINILM))
    tok.chat_template = CHAT_TEMPLATE
    tok.model_input_names = ["input_ids", "attention_mask"]  # a decoder takes no token_type_ids
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return model, tok


def _greedy(model, tok, prompt: str) -> str:
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, do_sample=False, max_new_tokens=MAX_TOKENS, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    started = []
    try:  # each server starts as soon as its folder exists; the rest is done while it boots
        encode_checkpoint(MINILM, tmp / "minilm-bsl", progress=False)          # the default setting
        started.append(Server("embed", tmp / "minilm-bsl", tmp / "embed.log"))
        lm, tok = _tiny_lm(tmp / "lm")
        encode_checkpoint(tmp / "lm", tmp / "lm-bsl", lossless=["*"], progress=False)
        started.append(Server("generate", tmp / "lm-bsl", tmp / "generate.log"))
        expected = {p: _greedy(lm, tok, p) for p in PROMPTS}
        minilm.embed(None, minilm.SENTENCES[:16])                               # load the reference model now
        deadline = time.monotonic() + START_TIMEOUT
        for s in started:
            s.wait_ready(deadline)
        yield {"embed": started[0], "generate": started[1], "expected": expected, "tmp": tmp}
    finally:
        for s in started:
            s.stop()


def test_bsl_folders_hold_no_safetensors(servers):
    for name in ("minilm-bsl", "lm-bsl"):
        files = {p.name for p in (servers["tmp"] / name).iterdir()}
        assert "model.bsl" in files and not any(f.endswith(".safetensors") for f in files)


def test_embeddings_match_original(servers):
    sentences = list(minilm.SENTENCES[:16])
    status, body = servers["embed"].post("/v1/embeddings", {"model": "minilm", "input": sentences})
    assert status == 200, body
    got = np.array([d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])], dtype=np.float64)
    ref = minilm.embed(None, sentences).astype(np.float64)
    assert got.shape == ref.shape == (16, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.999, cos


def test_embedding_of_one_string(servers):
    status, body = servers["embed"].post("/v1/embeddings", {"model": "minilm", "input": minilm.SENTENCES[0]})
    assert status == 200, body
    ref = minilm.embed(None, [minilm.SENTENCES[0]])[0]
    got = np.array(body["data"][0]["embedding"])
    assert float(got @ ref) / float(np.linalg.norm(got) * np.linalg.norm(ref)) >= 0.999


def test_greedy_completion_equals_original(servers):
    for prompt, want in servers["expected"].items():
        status, body = servers["generate"].post("/v1/chat/completions", {
            "model": "tiny", "messages": [{"role": "user", "content": prompt}],
            "temperature": 0, "max_tokens": MAX_TOKENS})
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == want
        assert want.strip()  # a real completion, not an empty string


def test_bad_request_is_an_http_error_and_server_survives(servers):
    status, _ = servers["generate"].post("/v1/chat/completions", {"model": "tiny", "messages": "not a list"})
    assert 400 <= status < 500
    status, body = servers["generate"].post("/v1/chat/completions", {
        "model": "tiny", "messages": [{"role": "user", "content": PROMPTS[0]}], "temperature": 0,
        "max_tokens": MAX_TOKENS})
    assert status == 200 and body["choices"][0]["message"]["content"] == servers["expected"][PROMPTS[0]]


def test_cli_refuses_a_folder_without_config(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "bslcodec.serve", "embed", str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode != 0
    assert "no config.json" in r.stderr and "Traceback" not in r.stderr


def test_gpu_decoder_prefetch_only_for_bsl_on_cuda(tmp_path, monkeypatch):
    """The GPU decoders are imported on a thread while the tokenizer loads only for .bsl weights on a CUDA
    device; an import that fails there (no GPU here) is silent: the weight load reports it."""
    from bslcodec.serve import models

    assert models._prefetch_gpu_decoder(tmp_path, "cuda") is None  # no .bsl weights
    monkeypatch.setattr(models, "has_bsl_weights", lambda folder: True)
    assert models._prefetch_gpu_decoder(tmp_path, "cpu") is None
    t = models._prefetch_gpu_decoder(tmp_path, "cuda:0")
    assert t is not None
    t.join(60)
    assert not t.is_alive()
