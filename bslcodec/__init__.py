"""bslcodec: small neural-network checkpoints that load fast (the ``.bsl`` format, BackSlash codec).

Public API (safetensors-like): :func:`save_file`, :func:`load_file`, :func:`safe_open`, :func:`save`,
:func:`load`, :func:`encode`, :func:`decode`; every bad-input error is a :class:`BslError`.

``import bslcodec`` loads neither numba nor numpy: the API (and with it the codecs) is imported on first use of
any name other than the error types and ``__version__`` (``bslcodec --help`` took 1.6 s of imports).
The read side (``safe_open``, ``load_file``, ``load``, ``decode``) brings only the reader: keys, metadata and
entries without numba (0.09 s in a fresh process on the 2-core box, against 0.44-0.59 s with it); the first CPU
decode imports the codecs, and a load onto a CUDA device (``load_file(..., framework="pt", device="cuda")``)
imports no numba at all (``bslcodec.gpu`` reads payload headers with ``codecs.*_header``).
"""

__version__ = "0.1.0"

from . import jitcache  # noqa: E402,F401 - (kernel modules call jitcache.install() before defining kernels)
from .container.errors import (  # noqa: E402
    BslError, ChecksumError, EncodeError, FormatError, LimitError, QualityWarning)

__all__ = ["save_file", "load_file", "safe_open", "save", "load", "encode", "decode", "BslError", "QualityWarning",
           "FormatError", "ChecksumError", "LimitError", "EncodeError", "__version__"]


_READ_SIDE = ("safe_open", "load_file", "load", "decode")


def __getattr__(name):
    """The API and everything ``import bslcodec`` used to import (``bslcodec.files.api``, the codecs, ...),
    imported on the first access to a name this module does not have yet (PEP 562); then the same names as
    before, no more (a submodule the API does not import still needs its own import)."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _READ_SIDE:  # the same objects as api.<name>, without the encoder and codecs (numba) behind them:
        from .files import source  # a GPU load imports no numba at all, a CPU one the decoders on first use

        globals()[name] = getattr(source, name)
        return globals()[name]
    from .files import api
    g = globals()
    for k in ("decode", "encode", "load", "load_file", "safe_open", "save", "save_file"):
        g[k] = getattr(api, k)
    if name in g:
        return g[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
