"""bslcodec: small neural-network checkpoints that load fast (the ``.bsl`` format, BackSlash codec).

Public API (safetensors-like): :func:`save_file`, :func:`load_file`, :func:`safe_open`, :func:`save`,
:func:`load`, :func:`encode`, :func:`decode`; every bad-input error is a :class:`BslError`.
"""

__version__ = "0.1.0"

from . import jitcache  # noqa: E402 - before any kernel module: numba's cache keyed on what kernels inline

jitcache.install()

from .container.errors import (  # noqa: E402
    BslError, ChecksumError, EncodeError, FormatError, LimitError, QualityWarning)
from .files.api import decode, encode, load, load_file, safe_open, save, save_file  # noqa: E402

__all__ = ["save_file", "load_file", "safe_open", "save", "load", "encode", "decode", "BslError", "QualityWarning",
           "FormatError", "ChecksumError", "LimitError", "EncodeError", "__version__"]
