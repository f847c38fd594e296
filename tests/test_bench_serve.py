"""tools/bench/bench_serve.py's bookkeeping (no server is started here; tests/test_serve.py runs the servers):
the run plan alternates formats, the phases of a replica add up to its total, marks files survive torn
lines, and a run stopped by --deadline still writes a report of what it measured."""

from __future__ import annotations

import importlib.util
import itertools
import json
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "tools" / "bench" / "bench_serve.py")
bs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bs)


def test_plan_pairs_flip_and_repeats_outermost():
    plan = bs.plan([2.0, 1.0], 3, ["safetensors", "bsl"])
    assert [(rep, rate) for rep, rate, _ in plan] == [(r, x) for r in range(3) for x in (0.0, 2e9, 1e9)]
    orders = [o for _, _, o in plan]
    assert all(sorted(o) == ["bsl", "safetensors"] for o in orders)
    assert all(a != b for a, b in itertools.pairwise(orders))  # the order flips from one pair to the next
    firsts = [o[0] for o in orders]
    assert abs(firsts.count("bsl") - firsts.count("safetensors")) <= 1


def test_phases_add_up_and_missing_marks_merge():
    t0 = 1000.0
    marks = {k: t0 + i + 1.0 for i, (k, _) in enumerate(bs.PHASES)}
    ph = bs.phases(marks, t0)
    assert list(ph) == [name for _, name in bs.PHASES]
    assert abs(sum(ph.values()) - (marks["answer"] - t0)) < 1e-9
    del marks["cuda_ready"]  # a CPU replica: CUDA init's time (none) goes to the tokenizer phase
    ph = bs.phases(marks, t0)
    assert "CUDA init" not in ph and ph["tokenizer"] == 2.0
    assert abs(sum(ph.values()) - (marks["answer"] - t0)) < 1e-9
    sp = bs.split(ph, 20.0)
    assert sp["pull_load"] == ph["pull"] + ph["load weights"] and sp["rest"] == 20.0 - sp["pull_load"]
    assert bs.split({"pull": 1.0}, 5.0) == {"pull_load": None, "rest": None}


def test_read_marks_keeps_first_and_skips_torn_lines(tmp_path, monkeypatch):
    f = tmp_path / "m.marks"
    monkeypatch.setenv(bs.MARKS_ENV, str(f))
    bs.mark("load_start", 5.0)
    bs.mark("load_start", 6.0)
    with open(f, "a") as fh:
        fh.write('{"mark": "load_done", "t": 7.0}\n{"mark": "ready", "t"')  # a line cut short
    assert bs.read_marks(f) == {"load_start": 5.0, "load_done": 7.0}
    assert bs.read_marks(tmp_path / "absent") == {}
    monkeypatch.delenv(bs.MARKS_ENV)
    bs.mark("ready")  # no file named: nothing written, no error
    assert bs.read_marks(f) == {"load_start": 5.0, "load_done": 7.0}


def _run(fmt, rate, rep, total, pull, load):
    ph = {"python start": 0.1, "pull": pull, "worker imports": total - pull - load - 0.1, "load weights": load}
    return {"seconds": total, "phases": ph, **bs.split(ph, total), "pull_s": pull, "pulled_bytes": 0,
            "load1": 1.0, "wall_s": total + 1, "answer": "x", "fmt": fmt, "rate": rate, "rep": rep}


def test_report_of_a_run_stopped_by_the_deadline(tmp_path):
    args = SimpleNamespace(accelerator="cuda", dtype="bfloat16", rates=[2.0, 1.0], repeats=3, deadline=500,
                           max_tokens=8, setting={"bits": 6.0}, out=str(tmp_path / "r" / "serve.md"))
    first = {f: _run(f, 0.0, 0, 20.0, 0.0, 1.0) for f in ("safetensors", "bsl")}
    mod = {"model": "synthetic", "kind": "generate", "bits_per_weight": 6.0, "encode_s": 1.0,
           "weights_bytes": {"safetensors": 2.2e9, "bsl": 0.83e9},
           "folder_bytes": {"safetensors": 2.2e9, "bsl": 0.83e9}, "first_run": first,
           "runs": [_run("safetensors", 1e9, 0, 16.0, 2.2, 1.5), _run("bsl", 1e9, 0, 15.5, 0.83, 1.6),
                    _run("safetensors", 0.0, 1, 14.0, 0.0, 1.5)],  # its pair was cut off
           "skipped": [{"rep": 1, "rate": 2e9}]}
    mod["runs"][1]["numba"] = False  # the .bsl replica's load imported no numba (an older run's record has no key)
    results = {"machine": {"cpu": "x", "cores": 16, "python": "3.12", "gpu": "H200"}, "date": "d", "models": [mod]}
    bs.write(results, args, quiet=True)
    text = Path(args.out).read_text()
    assert "Stopped by `--deadline`: 1 pair(s) not run (repeat 1 2 GB/s)" in text
    assert "| 1 GB/s | 1 | -0.50 | -1.27 | +0.77 |" in text  # paired: total, pull + load, rest
    assert "not run (deadline or stopped)" in text
    assert "bsl: numba imported by the end of the weight load in 0 of 1 runs." in text
    assert "safetensors: numba imported" not in text
    assert json.loads(Path(args.out).with_suffix(".json").read_text())["models"][0]["skipped"]


def test_fits_is_a_finish_time():
    args = SimpleNamespace(deadline=100.0, t_start=time.perf_counter() - 60)
    assert bs.fits(args, 30) and not bs.fits(args, 50)
    assert bs.fits(SimpleNamespace(deadline=0, t_start=0.0), 1e9)
