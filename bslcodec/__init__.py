"""bslcodec: small neural-network checkpoints that load fast (the ``.bsl`` format, BackSlash codec).

Public API (safetensors-like): :func:`save_file`, :func:`load_file`, :func:`safe_open`, :func:`save`,
:func:`load`, :func:`encode`, :func:`decode`; every bad-input error is a :class:`BslError`.

``import bslcodec`` loads neither numba nor numpy: the API (and with it the codecs) is imported on first use of
any name other than the error types and ``__version__`` (``bslcodec --help`` took 1.6 s of imports).
``safe_open`` alone brings only the reader: keys, metadata and entries without numba (0.09 s in a fresh
process on the 2-core box, against 0.44-0.59 s with it); the first ``get_tensor`` imports the codecs.
"""

__version__ = "0.1.0"

from . import jitcache  # noqa: E402,F401 - (kernel packages call jitcache.install() before defining kernels)
from .container.errors import (  # noqa: E402
    BslError, ChecksumError, EncodeError, FormatError, LimitError, QualityWarning)

__all__ = ["save_file", "load_file", "safe_open", "save", "load", "encode", "decode", "BslError", "QualityWarning",
           "FormatError", "ChecksumError", "LimitError", "EncodeError", "__version__"]


def __getattr__(name):
    """The API and everything ``import bslcodec`` used to import (``bslcodec.files.api``, the codecs, ...),
    imported on the first access to a name this module does not have yet (PEP 562); then the same names as
    before, no more (a submodule the API does not import still needs its own import)."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name == "safe_open":  # the same class as api.safe_open, without the encoder and codecs (numba) behind it
        from .files.source import safe_open

        globals()[name] = safe_open
        return safe_open
    from .files import api
    g = globals()
    for k in ("decode", "encode", "load", "load_file", "safe_open", "save", "save_file"):
        g[k] = getattr(api, k)
    if name in g:
        return g[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
