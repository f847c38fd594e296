"""Numba's on-disk cache, keyed on every source a bslcodec kernel can compile in.

numba's ``cache=True`` stores a compiled function next to its module and reuses it while *that module's*
file is unchanged. A kernel also compiles in the njit functions it calls from other modules (inlined or
linked: ``codecs/rans_dec.py`` inlines ``quantize/dq.py``'s state machine) and freezes the module globals
it reads (``container/limits.py``'s ``LANES``). numba does not follow those: a change in ``dq.py`` alone
left a stale decoder in the cache, which decoded wrongly (issue 20, item 12). An upgrade that changes
such a file, or an editable install being edited, would do the same.

:func:`install` (called at the top of every module that defines cached kernels, before them; no package
``__init__`` imports numba, so that a load onto a GPU, which reads headers with ``codecs.*_header``, never does;
tests/test_jitcache.py checks every module) puts cache
locators in front of numba's own ones. They serve only functions defined in this package's files, and
store them where numba would (``NUMBA_CACHE_DIR``, else ``__pycache__`` if writable, else the user-wide
cache dir), with a source stamp that is numba's stamp of the
function's own file *plus* a digest of the package version and of every file of the floors that kernels
may compile in: ``container/``, ``quantize/``, ``codecs/`` and ``parallel.py``. Any change to any of them
makes every cached bslcodec kernel stale, and numba recompiles it (once) instead of loading it. Edits to
``pipeline/``, ``files/``, the CLI or other leaves do not invalidate anything: no kernel may compile in
code from those (their own file's stamp covers kernels defined there, e.g. ``torch/rate_eg.py``).

numba's locator classes are not public API (``InTreeCacheLocator`` / ``CacheImpl`` since numba 0.60-ish,
``_InTreeCacheLocator`` / ``_CacheImpl`` before); where neither exists :func:`install` returns False and
tests/test_jitcache.py fails. ``NUMBA_CACHE_LOCATOR_CLASSES`` (a user's explicit choice of locators)
bypasses this one. ``NUMBA_CACHE_DIR`` alone would not help: its stamps have the same blind spot.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
#: What kernels may compile in (besides their own module): floors below pipeline/, relative to PACKAGE
KERNEL_SOURCES = ("container", "quantize", "codecs", "parallel.py")

#: Files of pipeline/ whose kernels compile in njit code of other pipeline/ files (which :func:`digest` does not
#: cover, pipeline/ being no floor): the stamp of each adds those files' bytes, so that an edit there alone
#: does not leave its callers stale (dq_batch's ``_code_range`` runs dq_rows', ans_model's, ans_encode's and
#: dq_small's kernels; ans_model's sums are gridpoints' ``pairwise``, ggfit's its ``pairwise_wide``)
COMPILES_IN = {
    "pipeline/dq_batch.py": ("pipeline/dq_rows.py", "pipeline/ans_model.py", "pipeline/ans_encode.py",
                             "pipeline/dq_small.py", "pipeline/gridpoints.py"),
    "pipeline/ans_model.py": ("pipeline/gridpoints.py",),
    "pipeline/ggfit.py": ("pipeline/gridpoints.py",),
}
_digest: str | None = None
_installed: bool | None = None


def sources() -> list:
    """The files whose contents key every cached kernel, sorted."""
    files = []
    for name in KERNEL_SOURCES:
        p = PACKAGE / name
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return files


def digest() -> str:
    """sha256 of the package version and the kernel sources (path and bytes of each), computed once."""
    global _digest
    if _digest is None:
        from . import __version__  # noqa: PLC0415 - bslcodec/__init__ sets it first
        h = hashlib.sha256(f"bslcodec {__version__}\0".encode())
        for f in sources():
            h.update(f.relative_to(PACKAGE).as_posix().encode() + b"\0")
            h.update(f.read_bytes())
            h.update(b"\0")
        _digest = h.hexdigest()
    return _digest


def compiled_in(py_file: str) -> str | None:
    """sha256 of the pipeline/ files ``py_file``'s kernels compile in (``COMPILES_IN``), or None."""
    try:
        rel = Path(py_file).resolve().relative_to(PACKAGE).as_posix()
    except (ValueError, OSError):
        return None
    deps = COMPILES_IN.get(rel)
    if not deps:
        return None
    h = hashlib.sha256()
    for d in deps:
        h.update(d.encode() + b"\0" + (PACKAGE / d).read_bytes() + b"\0")
    return h.hexdigest()


def _in_package(py_file: str) -> bool:
    try:
        Path(py_file).resolve().relative_to(PACKAGE)
    except (ValueError, OSError):
        return False
    return True


def _locator_classes():
    """Subclasses of numba's file-backed locators (user-given dir, in-tree ``__pycache__``, user-wide dir,
    tried in numba's order) that serve only this package's files and add :func:`digest` to the stamp;
    ([], None) where numba's internals differ."""
    from numba.core import caching

    def find(name):
        return getattr(caching, name, None) or getattr(caching, "_" + name, None)

    impl = find("CacheImpl")
    bases = [find(n) for n in ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")]
    if impl is None or not isinstance(getattr(impl, "_locator_classes", None), list) or None in bases:
        return [], None
    out = []
    for base in bases:
        def get_source_stamp(self):
            stamp = (super(type(self), self).get_source_stamp(), digest())
            extra = compiled_in(getattr(self, "_py_file", ""))
            return stamp if extra is None else stamp + (extra,)

        def from_function(cls, py_func, py_file, _base=base):
            if not _in_package(py_file):
                return None  # someone else's function: numba's own locators decide
            return _base.from_function.__func__(cls, py_func, py_file)

        out.append(type("Bsl" + base.__name__.lstrip("_"), (base,), {
            "get_source_stamp": get_source_stamp, "from_function": classmethod(from_function),
            "__module__": __name__}))
    return out, impl


def install() -> bool:
    """Put the package locator first in numba's list (once, before any kernel module is imported).
    Returns False where numba's internals differ (then numba's own stamps apply: see the module doc;
    tests/test_jitcache.py fails there, so a numba that breaks this is noticed)."""
    global _installed
    if _installed is None:
        try:
            locators, impl = _locator_classes()
        except ImportError:  # no numba: nothing to cache
            locators, impl = [], None
        _installed = bool(locators)
        if _installed:
            impl._locator_classes[:0] = locators
    return _installed


def loaded(fn) -> bool:
    """Whether calling the cached kernel ``fn`` now is cheap: numba has it loaded in this process, or numba's CPU
    target is initialised (the registries it loads on its first compile or cache load import ``numba.np.arraymath``),
    so that loading ``fn`` costs a few ms once; True for a plain function (NUMBA_DISABLE_JIT).

    A process's first call of any cached kernel costs 0.3-0.7 s (numba initialises its registries and, through
    its BLAS check, imports scipy.linalg). Host-side table work of a few microseconds a tensor
    (``rans_header.parse_header`` and ``gpu_table``, ``golomb_header.parse_tables``, ``fexp_header``'s checks and
    decoding table) has a numpy twin that runs until then, so a process that only loads onto a GPU (a serving
    replica) never imports numba (those modules do not), and a process that has run any kernel keeps the
    compiled forms (parse 0.9 against 12 us, slot table 4 against 21 us on the 2-core box); the twins are tested
    equal to the kernels. The kernel modules register their compiled forms in each header module's ``KERNELS``.
    """
    return bool(getattr(fn, "signatures", True)) or "numba.np.arraymath" in sys.modules


def ready(kernels: dict, name: str):
    """The compiled kernel a header module's ``kernels`` holds under ``name`` (registered there by its kernel
    module) where calling it now is cheap (:func:`loaded`), else None: the caller runs its numpy twin."""
    fn = kernels.get(name)
    return fn if fn is not None and loaded(fn) else None
