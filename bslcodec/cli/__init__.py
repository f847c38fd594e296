"""The ``bslcodec`` command line: ``encode``, ``decode``, ``info``, ``verify``.

::

    bslcodec encode model.safetensors model.bsl [--bits B | --rel-error R | --max-error E] [--exact PAT]...
    bslcodec encode model.safetensors model.bsl --exact '*'              # every tensor bit-exact
    bslcodec encode model.safetensors model.bsl --bits 4 --expert codec=eg
    bslcodec encode ./my-hf-model ./my-hf-model-bsl          # a folder in gives a folder out
    bslcodec decode model.bsl model.safetensors              # or .pt / .npz, by the suffix
    bslcodec info model.bsl [--json]
    bslcodec verify model.bsl [--against model.safetensors [--max-error E | --rel-step C]]

Errors print one line (``bslcodec: error: ...``) and exit non-zero; outputs are staged and renamed into
place, so a failed, interrupted (Ctrl-C) or terminated (SIGTERM, SIGHUP) run leaves nothing behind, and a
run killed outright (SIGKILL) leaves a ``.<output>.<pid>-<random>.bsl-tmp`` that the next run to the same
output removes. Exit codes: 0 success, 1 error or failed verification, 2 bad usage, 130 interrupted,
143 terminated (129 hung up).

The commands live in ``group`` (the click group, its one-line error handling, the shared helpers and
options), ``convert`` (``encode``, ``decode``, ``recode``), ``report`` (``info``) and ``check``
(``verify``); ``python -m bslcodec.cli`` runs ``__main__``.
"""

from .check import verify  # noqa: F401  (importing each module registers its commands on main)
from .convert import decode, encode, recode  # noqa: F401
from .group import main
from .report import info  # noqa: F401

__all__ = ["main"]
