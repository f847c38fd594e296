"""``import bslcodec`` stays light (STYLE: numba and torch load lazily) and the API still loads on first use;
every package that defines cached kernels installs jitcache's locators before its modules define them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def _child(code: str) -> str:
    """The last line a fresh ``python -c code`` prints (it must exit 0)."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip().splitlines()[-1]


def test_import_is_light_and_the_api_loads_on_use():
    got = json.loads(_child(CHILD))
    assert got["light"] == []  # nothing heavy on `import bslcodec`
    assert got["api"] and got["missing"]
    assert got["installed"] and got["first_locator"] == "BslUserProvidedCacheLocator"


def test_cli_help_does_not_import_the_codecs():
    code = "import sys, bslcodec.cli; print(sorted(m for m in ('numba', 'numpy') if m in sys.modules))"
    assert _child(code) == "[]"


def test_safe_open_reads_the_header_without_the_codecs(tmp_path):
    """``bslcodec.safe_open`` (keys, metadata, entries) reads the header without importing numba or the codecs
    (~0.5 s in a fresh process); the first ``get_tensor`` imports them and decodes as ``load_file`` does."""
    import numpy as np

    import bslcodec

    path = tmp_path / "m.bsl"
    bslcodec.save_file({"a": np.linspace(-1, 1, 300, dtype=np.float32), "b": np.arange(10)}, path,
                       metadata={"k": "v"})
    code = (
        "import sys, json, numpy as np, bslcodec\n"
        f"f = bslcodec.safe_open({str(path)!r})\n"
        "head = [f.keys(), f.metadata()['k'], [e.codec for e in f.entries()]]\n"
        "light = 'numba' not in sys.modules and 'bslcodec.files.api' not in sys.modules\n"
        "a = f.get_tensor('a'); f.close()\n"
        f"same = bool(np.array_equal(a, bslcodec.load_file({str(path)!r})['a']))\n"
        "import bslcodec.files.api as api\n"
        "print(json.dumps({'head': head, 'light': light, 'same': same,\n"
        "                  'one_class': bslcodec.safe_open is api.safe_open and bslcodec.load_file is api.load_file}))\n")
    got = json.loads(_child(code))
    assert got["head"][:2] == [["a", "b"], "v"] and got["light"] and got["same"] and got["one_class"]


def test_cli_info_reads_headers_without_the_codecs(tmp_path):
    """``bslcodec info`` lists a file from its header alone: no numba import."""
    import numpy as np

    import bslcodec

    path = tmp_path / "m.bsl"
    bslcodec.save_file({"a": np.linspace(-1, 1, 300, dtype=np.float32)}, path)
    code = ("import sys, json\nfrom click.testing import CliRunner\nfrom bslcodec.cli import main\n"
            f"r = CliRunner().invoke(main, ['info', '--json', {str(path)!r}])\n"
            "print(json.dumps({'rc': r.exit_code, 'numba': 'numba' in sys.modules, 'out': r.output}))\n")
    got = json.loads(_child(code))
    assert got["rc"] == 0 and not got["numba"], got
    info = json.loads(got["out"])
    assert info["total"]["tensors"] == 1 and info["files"][0]["tensors"][0]["codec"] in ("ans-dq", "ans", "eg")


def test_torch_loaders_do_not_import_numba():
    """``bslcodec.torch``'s loaders import neither numba nor the rate loss: a process that only loads onto a GPU
    never pays for numba's import (~0.3 s); the rate loss is imported on first use."""
    code = ("import sys, torch, bslcodec.torch as bt\n"
            "torch.cuda.is_available = lambda: True  # bslcodec.gpu imports where no GPU is (its host side)\n"
            "from bslcodec.torch import load_state_dict, shard_state_dict, load_compressed\n"
            "import bslcodec.hf, bslcodec.gpu.load\n"
            "light = 'numba' not in sys.modules and 'bslcodec.torch.rate' not in sys.modules\n"
            "from bslcodec.torch import RateLoss\n"
            "print(light, RateLoss.__module__, sorted(set(bt.__all__) - set(dir(bt))))\n")
    pytest.importorskip("torch")
    assert _child(code) == "True bslcodec.torch.rate []"
