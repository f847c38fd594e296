"""Fuzz the writers and the CLI: every input must end in a ``BslError`` (CLI: a one-line error and exit 1/2)
or a file that decodes back within its promise, never another exception, a traceback or a stray file.

Usage::

    python tools/fuzz_writer.py --seconds 900                  # both targets, half the time each
    python tools/fuzz_writer.py --target api --seconds 600     # save/save_file/load only
    python tools/fuzz_writer.py --target cli --seconds 600     # encode/info/verify/decode on checkpoints

Targets:

* ``api``: hypothesis draws a dict of tensors (every dtype, odd shapes: 0-d, empty, 1-D over the lossless
  threshold, non-contiguous, big-endian, torch tensors; contents with extreme finite values, subnormals,
  NaN/±inf, -0.0, constants) and ``save_file`` keyword combinations (valid, conflicting and nonsense
  values of max_error / bits / exact / expert rel_step, codec, quantizer, rdoq / sensitivity / metadata; the
  old keywords lossless= / rel_step= / codec= / ... in a quarter of the draws).
  Checked: a ``BslError`` or a file that loads back with the same names, dtypes and shapes; exact tensors
  bit-exact; quantized tensors finite in the input and within the bound (``max_error=`` exactly, else the
  bound of the codec's step plus the dtype's rounding); the output folder holds nothing else.
* ``cli``: a checkpoint (``.safetensors``/``.pt``/``.npz`` file or a model folder, single or sharded, with
  extra files, nested folders, hidden files and symlinks inside the folder) and random CLI options through
  ``encode``, ``info``, ``verify --against``, ``decode`` in-process (click's runner). Checked: exit 0, 1 or
  2 only; on failure one ``bslcodec: error:`` line and no output; on success verify passes and the
  decoded tensors equal ``load_file``'s; no ``*.bsl-tmp`` left anywhere.

Findings (deduplicated by exception type and innermost bslcodec frame) go to ``--findings`` with the
input (``.npz`` of the tensors, the keywords as text) and the traceback. ``tests/test_fuzz_writer.py`` runs a
bounded version of both targets.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bslcodec  # noqa: E402
from bslcodec.container.dtypes import NUMPY_DTYPES  # noqa: E402
from bslcodec.container.errors import BslError  # noqa: E402
from bslcodec.pipeline.codec import QUANTIZED_CODECS  # noqa: E402
from bslcodec.quantize.dq import BOUND_FACTOR  # noqa: E402
from bslcodec.quantize.quant import ROUNDING  # noqa: E402

DTYPES = list(NUMPY_DTYPES)
FLOATS = ("F64", "F32", "F16", "BF16")


class Finding(Exception):
    """The writer or the CLI broke a promise (not a clean refusal)."""


# ---------------------------------------------------------------- inputs

SHAPES = [(), (0,), (1,), (7,), (31,), (3, 0, 5), (1, 1, 1, 1, 1), (2, 3), (33, 31), (64, 64), (5, 4097),
          (65537,), (3, 11, 13), (1, 40000)]


def _specials(dt: np.dtype) -> list:
    if dt.kind != "f" and "bfloat16" not in str(dt):
        info = np.iinfo(dt) if dt.kind in "iu" else None
        return [info.min, info.max, 0] if info else [True, False]
    fi = ml_dtypes.finfo(dt)  # (numpy's finfo knows bfloat16 only from ml_dtypes 0.7)
    return [np.nan, np.inf, -np.inf, -0.0, 0.0, float(fi.max), -float(fi.max), float(fi.smallest_subnormal),
            -float(fi.smallest_subnormal), float(fi.tiny), float(fi.eps)]


@st.composite
def tensors(draw, max_tensors=4):
    n = draw(st.integers(1, max_tensors))
    out = {}
    for i in range(n):
        name = draw(st.sampled_from(["w", "a.weight", "b.bias", "emb", f"t{i}", "x/y", "ü", "allow_pickle",
                                     "file", "a/../../b"]))
        out[name] = draw(arrays())
    return out


@st.composite
def arrays(draw):
    dname = draw(st.sampled_from(DTYPES))
    dt = NUMPY_DTYPES[dname]
    shape = draw(st.sampled_from(SHAPES))
    size = math.prod(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dname in FLOATS:
        fi = ml_dtypes.finfo(dt)  # (numpy's finfo knows bfloat16 only from ml_dtypes 0.7)
        kind = draw(st.sampled_from(["normal", "normal", "laplace", "const", "zeros", "subnormal", "extreme",
                                     "huge_range", "ints"]))
        scale = draw(st.sampled_from([1e-40, 1e-30, 1e-6, 0.02, 1.0, 1e4, 1e30, 1e300]))
        if kind == "normal":
            x = rng.normal(0, scale, size)
        elif kind == "laplace":
            x = rng.laplace(scale, scale, size)
        elif kind == "const":
            x = np.full(size, scale)
        elif kind == "zeros":
            x = np.zeros(size)
        elif kind == "subnormal":
            x = rng.integers(-20, 20, size) * float(fi.smallest_subnormal)
        elif kind == "extreme":
            x = rng.choice([-1.0, 1.0], size) * float(fi.max) * rng.choice([1.0, 0.5, 0.999], size)
        elif kind == "huge_range":
            x = rng.normal(0, 1, size) * 10.0 ** rng.integers(-40, 40, size)
        else:
            x = rng.integers(-3, 4, size).astype(np.float64)
        with np.errstate(all="ignore"):
            arr = x.astype(dt)
        for _ in range(draw(st.integers(0, 3)) if size else 0):
            arr[rng.integers(0, size)] = draw(st.sampled_from(_specials(dt)))
    elif dname == "BOOL":
        arr = rng.integers(0, 2, size).astype(bool)
    else:
        info = np.iinfo(dt)
        arr = rng.integers(info.min, info.max, size, dtype=dt, endpoint=True)
    arr = arr.reshape(shape)
    form = draw(st.sampled_from(["plain", "plain", "noncontig", "bigendian", "torch", "torch_noncontig"]))
    if form == "noncontig" and arr.ndim >= 2:
        arr = np.asfortranarray(arr)
    elif form == "bigendian" and dt.kind in "fiu" and dt.itemsize > 1 and dname != "BF16":
        arr = arr.astype(dt.newbyteorder(">"))
    elif form.startswith("torch"):
        arr = _to_torch(arr, form == "torch_noncontig")
    return arr


def _to_torch(arr, noncontig):
    import torch

    from bslcodec.pipeline.arrays import _to_framework

    t = _to_framework(np.ascontiguousarray(arr), "pt", "cpu")
    if noncontig and t.ndim >= 2:
        t = t.t() if t.ndim == 2 else t.transpose(0, 1)
    return t if torch.is_tensor(t) else arr


ODD_NUMBERS = [None, 0, -1, 1e-45, 1e-30, 1e-8, 1e-3, 0.5, 1, 3, 8, 16, 40, 1e30, 1e300, float("nan"),
               float("inf"), np.float32(0.01), np.float64(1e-3), np.int64(2), True, "0.1", [0.1]]


@st.composite
def keywords(draw, names):
    kw = {}
    which = draw(st.sampled_from(["none", "none", "max_error", "max_error", "rel_step", "rel_step", "bits", "two", "odd"]))
    good = {"max_error": [1e-6, 1e-3, 0.01, 1.0, 1e6, np.float32(0.01)], "rel_step": [1e-6, 1 / 64, 0.5, 4.0, 1e4],
            "bits": [0.3, 1.0, 2.5, 4.0, 12.0, 33.0]}
    if which in good:
        kw[which] = draw(st.sampled_from(good[which]))
    elif which == "two":
        kw["max_error"], kw["rel_step"] = 0.01, 0.01
    elif which == "odd":
        kw[draw(st.sampled_from(list(good)))] = draw(st.sampled_from(ODD_NUMBERS))
    odd = draw(st.integers(0, 5)) == 0  # one nonsense value now and then; mostly valid combinations
    if draw(st.integers(0, 3)) == 0:
        kw["lossless"] = draw(st.sampled_from([5, [5], "w", False] if odd else [None, True, "*", ["w*"], ("emb", "t*"), ()]))
    if draw(st.booleans()):
        kw["codec"] = draw(st.sampled_from(["ans-dq", "zstd", "", 3] if odd else [None, "auto", "eg", "ans"]))
    if draw(st.booleans()):
        kw["quantizer"] = draw(st.sampled_from(["x", 1] if odd else [None, "auto", "uniform", "dq"]))
    if draw(st.integers(0, 3)) == 0:
        kw["rdoq"] = draw(st.sampled_from([-1.0, float("nan"), "a", 100.0] if odd else [None, True, False, 0, 0.12, 1.0]))
    if draw(st.integers(0, 5)) == 0:
        sens = draw(st.sampled_from(["all", "some", "odd", "notdict"]))
        vals = [1.0, 1e-30, 1e30, 0.0, float("nan"), -1.0, "x", True]
        if sens == "notdict":
            kw["sensitivity"] = draw(st.sampled_from([5, "x", [1.0]]))
        else:
            kw["sensitivity"] = {n: (draw(st.sampled_from(vals)) if sens == "odd" else 1.0 + i)
                                 for i, n in enumerate(names) if sens != "some" or i % 2 == 0}
    if draw(st.integers(0, 4)) == 0:
        kw["metadata"] = draw(st.sampled_from([{"a": "b"}, {"bslcodec.settings": "{\"max_error\": 1e30}"},
                                               {"k": "\ud800"}, {1: "x"}, "x", {"a": 1}]))
    # mostly the current spelling (exact=, expert={...}); the old keywords (deprecated, still taken) now and then
    return new_spelling(kw) if draw(st.integers(0, 3)) else kw


EXPERT = ("rel_step", "codec", "quantizer", "rdoq")


def new_spelling(kw: dict) -> dict:
    """``kw`` with the old keywords (lossless=, rel_step=, codec=, quantizer=, rdoq=) as exact= and expert=."""
    kw = dict(kw)
    expert = {k: kw.pop(k) for k in EXPERT if k in kw}
    if "lossless" in kw:
        kw["exact"] = kw.pop("lossless")
    if expert:
        kw["expert"] = expert
    return kw


# ---------------------------------------------------------------- the api target

def _np(v):
    from bslcodec.pipeline.arrays import as_numpy

    return as_numpy(v) if type(v).__module__.startswith("torch") else np.asarray(v)


def check_api(tens: dict, kw: dict, folder: Path) -> str:
    """'ok' or 'refused: ...'; raises Finding on a broken promise."""
    out = folder / "out.bsl"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                bslcodec.save_file(tens, out, **kw)
    except BslError as exc:
        left = os.listdir(folder)
        if left:
            raise Finding(f"refused ({exc}) but left {left}")
        return f"refused: {type(exc).__name__}"
    left = sorted(os.listdir(folder))
    if left != ["out.bsl"]:
        raise Finding(f"the folder holds {left}, not just out.bsl")
    back = bslcodec.load_file(out)
    with bslcodec.safe_open(out) as f:
        entries = {e.name: e for e in f.entries()}
    out.unlink()
    if sorted(back) != sorted(tens):
        raise Finding(f"names {sorted(tens)} came back as {sorted(back)}")
    for name, v in tens.items():
        x, xh, e = _np(v), back[name], entries[name]
        want = x.dtype.newbyteorder("<") if x.dtype.byteorder == ">" else x.dtype
        if xh.dtype != want or xh.shape != x.shape:
            raise Finding(f"{name}: {x.dtype} {x.shape} came back as {xh.dtype} {xh.shape}")
        if e.codec not in QUANTIZED_CODECS:
            if np.ascontiguousarray(x.astype(want)).tobytes() != xh.tobytes():
                raise Finding(f"{name}: stored exactly ({e.codec}) but not bit-exact")
            continue
        x64, xh64 = x.astype(np.float64), xh.astype(np.float64)
        if not np.all(np.isfinite(x64)):
            raise Finding(f"{name}: non-finite input quantized ({e.codec})")
        err = np.abs(xh64 - x64)
        me = kw.get("max_error")
        if me is not None and not isinstance(me, bool) and isinstance(me, (int, float, np.number)):
            if not np.all(err <= float(me)):
                raise Finding(f"{name}: max abs error {err.max():.6g} over max_error={me}")
            continue
        step = float(e.params["step"])
        rdoq = kw.get("rdoq", kw.get("expert", {}).get("rdoq"))
        bound = step * BOUND_FACTOR if e.codec == "ans-dq" else step / (1 if rdoq else 2)
        if e.codec != "ans-dq" and e.params.get("rdoq") is not None:
            bound = step
        rel, ab = ROUNDING[e.dtype]
        allowed = bound + rel * (2 * np.abs(x64) + err) + ab
        if not np.all(err <= allowed * (1 + 1e-12)):
            i = int(np.argmax(err - allowed))
            raise Finding(f"{name}: error {err.flat[i]:.6g} over the bound {allowed.flat[i]:.6g} ({e.codec}, "
                          f"step {step:.6g})")
    return "ok"


# ---------------------------------------------------------------- the cli target

def _write_input(fmt: str, path: Path, tens: dict) -> dict:
    """Write ``tens`` as ``fmt``; returns what was written (numpy), or {} when that format cannot hold it."""
    arrs = {k: np.ascontiguousarray(_np(v)) for k, v in tens.items()}
    arrs = {k: (a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a) for k, a in arrs.items()}
    if fmt == "safetensors":
        from safetensors.numpy import save_file

        if any(a.dtype == NUMPY_DTYPES["BF16"] for a in arrs.values()):
            return {}
        save_file(arrs, str(path))
    elif fmt == "npz":
        if any(a.dtype == NUMPY_DTYPES["BF16"] for a in arrs.values()) or \
                any(k in ("file", "allow_pickle") or "/" in k for k in arrs):
            return {}
        np.savez(path, **arrs)
    else:
        import torch

        from bslcodec.pipeline.arrays import _to_framework

        torch.save({k: _to_framework(a, "pt", "cpu") for k, a in arrs.items()}, str(path))
    return arrs


@st.composite
def checkpoints(draw):
    tens = draw(tensors(max_tensors=3))
    layout = draw(st.sampled_from(["file", "file", "folder", "sharded"]))
    fmt = draw(st.sampled_from(["safetensors", "pt", "npz"] if layout == "file" else ["safetensors", "pt"]))
    extras = draw(st.lists(st.sampled_from(["config.json", "sub/tok.txt", ".hidden/x", "link_in", "a b.txt"]),
                           max_size=4, unique=True))
    if draw(st.integers(0, 3)) == 0:  # one that must be refused, in a quarter of the folders
        extras.append(draw(st.sampled_from(["link_out", "link_dir", "dangling", "fifo"])))
    opts = []
    new = draw(st.integers(0, 3)) != 0  # mostly --exact / --expert KEY=VALUE; the old flags now and then

    def expert(key, value):
        return ["--expert", f"{key}={value}"] if new else [f"--{key.replace('_', '-')}", value]

    which = draw(st.sampled_from(["", "--max-error", "--rel-step", "--bits"]))
    if which:
        odd = draw(st.integers(0, 5)) == 0  # one nonsense value now and then
        value = draw(st.sampled_from(["1e30", "0", "-1", "nan", "inf", "x"] if odd else
                                     ["0.01", "1e-6", "1", "4", "0.05", "2.5", "1e-3"]))
        opts += expert("rel_step", value) if which == "--rel-step" else [which, value]
    if draw(st.booleans()):
        opts += expert("codec", draw(st.sampled_from(["auto", "eg", "ans", "auto", "eg", "ans", "bad"])))
    if draw(st.booleans()):
        opts += expert("quantizer", draw(st.sampled_from(["auto", "uniform", "dq"])))
    if draw(st.integers(0, 3)) == 0:
        opts += expert("rdoq", draw(st.sampled_from(["0", "0.12", "1", "-1", "nan"])))
    if draw(st.integers(0, 3)) == 0:
        opts += draw(st.sampled_from([["--exact", "*"], ["--exact", "w*"], ["--exact", "["]] if new else
                                     [["--lossless-all"], ["--lossless", "w*"], ["--lossless", "["]]))
    out_suffix = draw(st.sampled_from([".safetensors", ".pt", ".npz", ".bin", ""]))
    return tens, layout, fmt, extras, opts, out_suffix


def _run_cli(args) -> tuple:
    from click.testing import CliRunner

    from bslcodec.cli import main

    res = CliRunner().invoke(main, args, catch_exceptions=True)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        tb = "".join(traceback.format_exception(res.exception))
        raise Finding(f"bslcodec {' '.join(map(str, args))}: traceback:\n{tb}") from res.exception
    code = res.exit_code
    if code not in (0, 1, 2):
        raise Finding(f"bslcodec {' '.join(map(str, args))}: exit code {code}")
    err = res.stderr if hasattr(res, "stderr") else res.output
    if code and "bslcodec: error:" not in res.output + (err or "") and "verify FAILED" not in res.output:
        raise Finding(f"bslcodec {' '.join(map(str, args))}: exit {code} without an error line: {res.output!r}")
    return code, res.output


def _tmp_left(folder: Path) -> list:
    return [str(p) for p in folder.rglob("*") if p.name.endswith((".bsl-tmp", ".bsl-old"))]


def check_cli(case, folder: Path) -> str:
    tens, layout, fmt, extras, opts, out_suffix = case
    suffix = {"safetensors": ".safetensors", "pt": ".bin", "npz": ".npz"}[fmt]
    secret = folder / "secret.txt"
    secret.write_text("do not publish")
    if layout == "file":
        inp = folder / f"in{suffix}"
        written = _write_input(fmt, inp, tens)
    else:
        inp = folder / "model"
        inp.mkdir()
        single = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
        if layout == "folder":
            written = _write_input(fmt, inp / single, tens)
        else:
            names = sorted(tens)
            half = {n: tens[n] for n in names[: max(1, len(names) // 2)]}
            rest = {n: tens[n] for n in names if n not in half}
            s = ".safetensors" if fmt == "safetensors" else ".bin"
            shards = {f"model-00001-of-00002{s}": half, f"model-00002-of-00002{s}": rest}
            written, wm = {}, {}
            for shard, part in shards.items():
                if part:
                    w = _write_input(fmt, inp / shard, part)
                    if not w:
                        written = {}
                        break
                    written.update(w)
                    wm.update({n: shard for n in part})
            idx = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
            (inp / idx).write_text(json.dumps({"metadata": {}, "weight_map": wm}))
        for x in extras:
            p = inp / x
            p.parent.mkdir(parents=True, exist_ok=True)
            if x == "link_in":
                (inp / "target.txt").write_text("inside")
                p.symlink_to("target.txt")
            elif x == "link_out":
                p.symlink_to(secret)
            elif x == "link_dir":
                p.symlink_to(folder)
            elif x == "dangling":
                p.symlink_to(folder / "nowhere")
            elif x == "fifo":
                os.mkfifo(p)
            else:
                p.write_text("{}")
    if not written:
        return "skipped"
    out = folder / ("out" if layout != "file" else "out.bsl")
    code, text = _run_cli(["encode", str(inp), str(out), "-q"] + opts)
    if _tmp_left(folder):
        raise Finding(f"encode {opts} left {_tmp_left(folder)}")
    if code:
        if out.exists():
            raise Finding(f"encode {opts} failed ({text.strip()}) but wrote {out}")
        return "refused"
    hostile = sorted({"link_out", "link_dir", "dangling", "fifo"} & set(extras)) if layout != "file" else []
    if hostile:
        raise Finding(f"encode accepted a folder with {hostile}")
    if layout != "file":
        for p in out.rglob("*"):
            if p.is_symlink():
                raise Finding(f"encode copied a symlink {p}")
            if p.is_file() and p.read_bytes() == b"do not publish":
                raise Finding(f"encode copied a file from outside the input folder: {p}")
    code, text = _run_cli(["info", str(out)])
    if code:
        raise Finding(f"info of a fresh encode failed: {text}")
    code, text = _run_cli(["verify", str(out), "--against", str(inp), "-q"])
    if code:
        raise Finding(f"verify of a fresh encode ({opts}) failed: {text}")
    loaded = {}
    for f in bslcodec.files.checkpoint.bsl_files(out):
        loaded.update(bslcodec.load_file(f))
    dec = folder / (("dec" + out_suffix) if layout == "file" else "dec")
    code, text = _run_cli(["decode", str(out), str(dec), "-q"])
    if _tmp_left(folder):
        raise Finding(f"decode left {_tmp_left(folder)}")
    if code:
        if dec.exists():
            raise Finding(f"decode failed ({text.strip()}) but wrote {dec}")
        return "decode refused"
    from bslcodec.files.checkpoint import TensorLookup

    with TensorLookup(dec) as back:
        if sorted(back.keys()) != sorted(loaded):
            raise Finding(f"decode to {dec.name}: names {sorted(loaded)} came back as {sorted(back.keys())}")
        for n, v in loaded.items():
            got = _np(back.get(n))
            if got.dtype != v.dtype or got.shape != v.shape or got.tobytes() != v.tobytes():
                raise Finding(f"decode to {dec.name}: tensor {n!r} differs from load_file's")
    return "ok"


# ---------------------------------------------------------------- running

def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "bslcodec" in f.filename] or frames
    f = ours[-1] if ours else None
    return f"{type(exc).__name__}@{Path(f.filename).name}:{f.lineno}" if f else type(exc).__name__


class Stats:
    def __init__(self, findings: Path | None, raise_on_finding: bool):
        self.n, self.outcomes, self.findings, self.folder = 0, {}, {}, findings
        self.raise_on_finding = raise_on_finding

    def record(self, key: str, exc: BaseException, case) -> None:
        if self.raise_on_finding:
            raise exc
        first = key not in self.findings
        self.findings[key] = self.findings.get(key, 0) + 1
        if first and self.folder is not None:
            d = self.folder / key.replace("/", "_").replace(":", "_")
            d.mkdir(parents=True, exist_ok=True)
            (d / "traceback.txt").write_text("".join(traceback.format_exception(exc)))
            (d / "case.txt").write_text(repr(case)[:200000])
            print(f"finding {key}: {str(exc)[:300]}", flush=True)


def run(target: str, seconds: float, stats: Stats, seed: int | None = None) -> None:
    deadline = time.monotonic() + seconds

    class Stop(Exception):
        pass

    def one(case, fn):
        if time.monotonic() > deadline:
            raise Stop
        stats.n += 1
        folder = Path(tempfile.mkdtemp(prefix="fuzzw-"))
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                out = fn(case, folder)
            stats.outcomes[out] = stats.outcomes.get(out, 0) + 1
        except Finding as exc:
            what = re.sub(r"/\S+", "<path>", str(exc).splitlines()[0])[:60]  # same finding, other temp folder
            stats.record(f"{target}:{_where(exc.__cause__)}" if exc.__cause__ else f"{target}:{what}", exc, case)
        except Stop:
            raise
        except Exception as exc:  # anything but a BslError from the library is a finding
            stats.record(f"{target}:{_where(exc)}", exc, case)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    common = dict(deadline=None, database=None, derandomize=seed is not None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), max_examples=10**9)
    if target == "api":
        @settings(**common)
        @given(st.data())
        def fuzz(data):
            tens = data.draw(tensors())
            kw = data.draw(keywords(sorted(tens)))
            one((tens, kw), lambda c, f: check_api(c[0], c[1], f))
    else:
        @settings(**common)
        @given(checkpoints())
        def fuzz(case):
            one(case, check_cli)
    while time.monotonic() < deadline:
        try:
            fuzz()
        except Stop:
            break


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--target", choices=["api", "cli", "all"], default="all")
    ap.add_argument("--findings", type=Path, default=Path("fuzz-writer-findings"))
    a = ap.parse_args(argv)
    targets = ["api", "cli"] if a.target == "all" else [a.target]
    stats = Stats(a.findings, raise_on_finding=False)
    t0 = time.monotonic()
    for t in targets:
        n0 = stats.n
        run(t, a.seconds / len(targets), stats)
        print(f"{t}: {stats.n - n0} inputs", flush=True)
    print(json.dumps({"seconds": round(time.monotonic() - t0), "inputs": stats.n, "outcomes": stats.outcomes,
                      "findings": stats.findings}, indent=1, default=str), flush=True)
    return 1 if stats.findings else 0


if __name__ == "__main__":
    sys.exit(main())
