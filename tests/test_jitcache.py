"""numba's disk cache never serves a stale kernel (issue 20, item 12; bslcodec/jitcache.py).

The ans-dq decoder in codecs/rans_dec.py inlines quantize/dq.py's state machine (``next_state`` reads
``NEXT_PACKED``, built from ``NEXT_STATE``). numba keys its cache on rans_dec.py alone, so changing dq.py used to
leave the old machine compiled in. Here a copy of the package decodes a file (filling its cache), its dq.py
is changed, and the copy decodes again: the result must follow the new dq.py (checked against the plain
Python references of the changed copy), not the cached kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import bslcodec
from bslcodec import jitcache

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
import numpy as np
import bslcodec
from bslcodec.codecs import rans_ref
from bslcodec.quantize import dq
assert bslcodec.__file__.startswith(sys.argv[2]), bslcodec.__file__
data = open(sys.argv[1], "rb").read()
hlen = int.from_bytes(data[16:24], "little")
t = json.loads(data[32:32 + hlen])["tensors"][0]
p = t["params"]
payload = data[32 + hlen + t["offset"]:32 + hlen + t["offset"] + t["length"]]
n = int(np.prod(t["shape"]))
u = rans_ref.decode_payload(payload, n, p["lane_symbols"]).astype(np.int64)
k = (u >> 1) ^ -(u & 1)
ref = (np.float32(p["center"]) + dq.levels_ref(k, n, p["lane_symbols"]).astype(np.float32)) * np.float32(p["step"])
got = bslcodec.load(data)["w"].reshape(-1)
print(json.dumps({"same_as_reference": bool(np.array_equal(got, ref)), "sum": float(got.astype(np.float64).sum()),
                  "installed": bslcodec.jitcache.install()}))
"""


def test_installed_with_this_numba():
    """The locators are in place (a numba whose internals moved fails here rather than going stale)."""
    from numba.core import caching
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
    assert jitcache.install()
    names = [c.__name__ for c in impl._locator_classes[:3]]
    assert names == ["BslUserProvidedCacheLocator", "BslInTreeCacheLocator", "BslUserWideCacheLocator"]


def test_digest_covers_the_floors_kernels_compile_in():
    files = {f.relative_to(jitcache.PACKAGE).as_posix() for f in jitcache.sources()}
    assert {"quantize/dq.py", "quantize/quant.py", "codecs/rans_dec.py", "container/limits.py", "parallel.py"} <= files
    assert not any(f.startswith(("files/", "pipeline/", "torch/", "gpu/")) for f in files)
    assert len(jitcache.digest()) == 64


def _run(pkg: Path, blob: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["PYTHONPATH"] = str(pkg)
    r = subprocess.run([sys.executable, "-c", CHILD, str(blob), str(pkg)], capture_output=True, text=True,
                       env=env, cwd=pkg, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_changing_an_inlined_module_rebuilds_the_decoder(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "bslcodec", pkg / "bslcodec", ignore=shutil.ignore_patterns("__pycache__"))
    x = np.random.default_rng(0).normal(0, 1, (64, 40)).astype(np.float32)
    blob = tmp_path / "w.bsl"
    bslcodec.save_file({"w": x}, blob, rel_step=1 / 4, quantizer="dq")
    before = _run(pkg, blob)
    assert before["installed"] and before["same_as_reference"]
    assert any((pkg / "bslcodec" / "codecs" / "__pycache__").glob("rans_dec.*.nbi"))  # the decoder was cached
    dq_py = pkg / "bslcodec" / "quantize" / "dq.py"
    src = dq_py.read_text()
    old = "NEXT_STATE = ((0, 2), (7, 5), (1, 3), (6, 4), (2, 0), (5, 7), (3, 1), (4, 6))"
    assert old in src
    dq_py.write_text(src.replace(old, "NEXT_STATE = ((2, 0), (5, 7), (3, 1), (4, 6), (0, 2), (7, 5), (1, 3), (6, 4))"))
    after = _run(pkg, blob)  # rans_dec.py itself is unchanged: numba alone would load its cached decoder
    assert after["same_as_reference"], "a stale decoder ran: the cache did not follow the inlined dq.py"
    assert after["sum"] != before["sum"]  # the change does change the decoded values


def test_pipeline_kernels_compiling_in_other_pipeline_files_are_keyed_on_them(tmp_path, monkeypatch):
    """pipeline/dq_batch.py's kernel runs the kernels of the pipeline modules it imports (pipeline/ is no floor
    of :func:`jitcache.digest`): each is in ``COMPILES_IN``, and an edit of one changes dq_batch's stamp."""
    import ast

    src = (ROOT / "bslcodec" / "pipeline" / "dq_batch.py").read_text()
    imported = {f"pipeline/{a.name}.py" for node in ast.walk(ast.parse(src))
                if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module for a in node.names}
    assert imported and imported <= set(jitcache.COMPILES_IN["pipeline/dq_batch.py"])
    # ggfit's _moments_kernel sums with gridpoints' pairwise_wide (it was not keyed on gridpoints before 2026-12-07)
    assert "pipeline/gridpoints.py" in jitcache.COMPILES_IN["pipeline/ggfit.py"]
    copy = tmp_path / "bslcodec"
    shutil.copytree(ROOT / "bslcodec" / "pipeline", copy / "pipeline")
    monkeypatch.setattr(jitcache, "PACKAGE", copy)
    before = jitcache.compiled_in(str(copy / "pipeline" / "dq_batch.py"))
    assert jitcache.compiled_in(str(copy / "pipeline" / "codec.py")) is None
    with open(copy / "pipeline" / "dq_rows.py", "a") as f:
        f.write("\n# edited\n")
    assert jitcache.compiled_in(str(copy / "pipeline" / "dq_batch.py")) != before


def test_every_kernel_module_installs_the_locators_first():
    """A module defining cached kernels calls ``jitcache.install()`` itself, before them (a module imported first in a
    process would otherwise cache its kernels under numba's own stamps, issue 20, item 12), and no package's
    ``__init__`` does: importing a package imports no numba (a load onto a GPU reads payload headers with
    ``codecs.*_header`` and never imports it)."""
    missing, inits = [], []
    for f in sorted(jitcache.PACKAGE.rglob("*.py")):
        text = f.read_text()
        if f.name == "__init__.py":
            if "jitcache.install()" in text.split('"""')[-1] or "import numba" in text:
                inits.append(f.relative_to(jitcache.PACKAGE).as_posix())
            continue
        first = min((i for i in (text.find("cache=True"), text.find("serial_twin(")) if i >= 0), default=-1)
        if first < 0 or f.name in ("jitcache.py", "parallel.py"):  # parallel.py: serial_twin itself
            continue
        if not 0 <= text.find("jitcache.install()") < first:
            missing.append(f.relative_to(jitcache.PACKAGE).as_posix())
    assert missing == [] and inits == []
