#!/usr/bin/env python
"""Where a warm ``bslcodec`` command's start-up goes: process CPU time by phase - the third-party imports in
order (numpy + ml_dtypes, numba, scipy.special + safetensors + zstandard + click), bslcodec's own modules,
the cached-kernel loads (``Dispatcher.compile`` wrapped: the first one includes numba's target
initialisation) and the rest of the command (results/encode.md, "First run and start-up"). CPU time, not
wall: this shared box's load varies. Run it from outside the tree (``python -c``/a script's directory comes
first on ``sys.path``), with the tree on ``PYTHONPATH``:

    cd /tmp && PYTHONPATH=/path/to/tree python /path/to/tree/tools/experiments/startup_phases.py \\
        encode in_folder out_folder --bits 4 -q --overwrite
"""

import sys
import time

c = time.process_time
t0 = c()
import ml_dtypes  # noqa: E402,F401
import numpy  # noqa: E402,F401

t1 = c()
import numba  # noqa: E402,F401
import numba.core.dispatcher  # noqa: E402

t2 = c()
import click  # noqa: E402,F401
import safetensors  # noqa: E402,F401
import scipy.special  # noqa: E402,F401
import zstandard  # noqa: E402,F401

t3 = c()
import bslcodec.cli  # noqa: E402
import bslcodec.files.checkpoint  # noqa: E402,F401

t4 = c()
loads = []
_orig = numba.core.dispatcher.Dispatcher.compile


def _compile(self, sig):
    s = c()
    try:
        return _orig(self, sig)
    finally:
        loads.append(c() - s)


numba.core.dispatcher.Dispatcher.compile = _compile
bslcodec.cli.main(sys.argv[1:], standalone_mode=False)
t5 = c()
print(f"CPU s: numpy+ml_dtypes {t1 - t0:.2f}  numba {t2 - t1:.2f}  scipy.special+safetensors+zstandard+click "
      f"{t3 - t2:.2f}  bslcodec modules {t4 - t3:.2f}  first kernel load (numba's target init) "
      f"{loads[0] if loads else 0:.2f}  other {max(0, len(loads) - 1)} loads {sum(loads[1:]):.2f}  "
      f"rest {t5 - t4 - sum(loads):.2f}  total {t5 - t0:.2f} (+ interpreter start)")
