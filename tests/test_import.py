"""``import bslcodec`` stays light (STYLE: numba and torch load lazily) and the API still loads on first use;
every package that defines cached kernels installs jitcache's locators before its modules define them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
import bslcodec
light = sorted(m for m in ("numba", "numpy", "ml_dtypes", "scipy", "bslcodec.files.api") if m in sys.modules)
api = callable(bslcodec.save_file) and bslcodec.files.api.load_file is bslcodec.load_file
missing = not hasattr(bslcodec, "no_such_name")
from numba.core import caching
impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
first = impl._locator_classes[0].__name__
print(json.dumps({"light": light, "api": api, "missing": missing, "first_locator": first,
                  "installed": bslcodec.jitcache._installed}))
"""


def test_import_is_light_and_the_api_loads_on_use():
    r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["light"] == []  # nothing heavy on `import bslcodec`
    assert got["api"] and got["missing"]
    assert got["installed"] and got["first_locator"] == "BslUserProvidedCacheLocator"


def test_cli_help_does_not_import_the_codecs():
    code = "import sys, bslcodec.cli; print(sorted(m for m in ('numba', 'numpy') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
