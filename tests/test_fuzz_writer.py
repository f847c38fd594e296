"""A bounded run of ``tools/fuzz_writer.py`` (the long runs are recorded in results/reliability.md): random
``save_file`` keywords and tensor contents, and random checkpoints through the CLI, each must end in a
``BslError`` / a one-line CLI error or a file that decodes within its promise. About 15 s per target, whatever
the machine's speed (a slow machine tries fewer inputs)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import fuzz_writer as fw  # noqa: E402


@pytest.mark.parametrize("target", ["api", "cli"])
def test_fuzz_writer_bounded(target):
    stats = fw.Stats(None, raise_on_finding=True)  # the first finding fails the test with its input
    fw.run(target, 15, stats, seed=0)
    assert stats.n > 0 and not stats.findings
