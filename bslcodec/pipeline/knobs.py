"""The encoder's knobs: one target, what stays exact, and an expert escape hatch (docs/using.md).

Every front end (``save_file``/``save``/``encode``/``encode_tensors``, ``encode_checkpoint``, the CLI,
``bslcodec.torch``) takes the same spelling and turns it into a :class:`Knobs` with :func:`resolve`:

- a target, at most one of ``bits=`` (size: average bits/weight of the file), ``rel_error=`` (quality:
  the root mean square over tensors of each one's relative L2 error, the equal-slope allocation; the default is
  ``DEFAULT_REL_ERROR``) or ``max_error=`` (a guarantee: every element within it);
- ``exact=``: fnmatch patterns of tensor names stored bit-exact, or True for every tensor;
- ``expert=``: a dict with any of ``EXPERT_KEYS`` (``quantizer``, ``codec``, ``rdoq``, ``rel_step``).

The keywords these replace (``lossless``, ``rel_step``, ``quantizer``, ``codec``, ``rdoq``) still work and
give one ``DeprecationWarning`` naming the new spelling; a call in the old spelling and the same call in
the new one write identical bytes. ``sensitivity=`` is not a knob of this module: it is data (per-tensor
weights of the allocation), checked where it is used.

Example::

    >>> k = resolve(bits=4.0, exact=["*.norm*"], expert={"codec": "eg"})
    >>> k.bits, k.exact, k.codec, k.quantizer
    (4.0, ('*.norm*',), 'eg', 'uniform')
"""

import warnings
from dataclasses import dataclass

from ..container.errors import EncodeError
from . import codec as _codec

TARGETS = ("bits", "rel_error", "max_error")
# expert key -> (what it takes, for messages); values are checked by Settings (codec.py) and below
EXPERT_KEYS = {
    "quantizer": "'auto', 'uniform' or 'dq'",
    "codec": "'auto', 'eg' or 'ans'",
    "rdoq": "True, False or a number c >= 0 (λ = c·step²)",
    "rel_step": "a positive number: every tensor's step = rel_step x its std (no allocation)",
}
# old keyword -> its new spelling, for the DeprecationWarning
DEPRECATED = {
    "lossless": "exact=",
    "rel_step": "expert={'rel_step': ...}",
    "quantizer": "expert={'quantizer': ...}",
    "codec": "expert={'codec': ...}",
    "rdoq": "expert={'rdoq': ...}",
}


@dataclass(frozen=True)
class Knobs:
    """The resolved options of one encode. ``quantizer`` is resolved ("uniform" or "dq"); ``codec`` and
    ``rdoq`` stay as given (None: the default for the mode), which is what the settings record."""

    bits: float | None = None
    rel_error: float | None = None
    max_error: float | None = None
    exact: tuple = ()
    rel_step: float | None = None
    quantizer: str = "uniform"
    codec: str | None = None
    rdoq: object = None
    expert_given: tuple = ()  # the expert keys the caller named (for new_kwargs)

    def settings(self) -> "_codec.Settings":
        return _codec.Settings(max_error=self.max_error, rel_step=self.rel_step, bits=self.bits,
                               rel_error=self.rel_error, lossless=self.exact, rdoq=self.rdoq,
                               quantizer=self.quantizer)

    def new_kwargs(self) -> dict:
        """The same options in the new spelling (passing them on gives no warning)."""
        kw = {k: getattr(self, k) for k in TARGETS if getattr(self, k) is not None}
        if self.exact:
            kw["exact"] = self.exact
        expert = {k: getattr(self, k) for k in self.expert_given}
        if expert:
            kw["expert"] = expert
        return kw


def _exact_patterns(exact, name="exact") -> tuple:
    if exact is True:
        return ("*",)
    if exact is None or exact is False:
        return ()
    if isinstance(exact, str):
        return (exact,)
    if isinstance(exact, (tuple, list)) and all(isinstance(p, str) for p in exact):
        return tuple(exact)
    raise EncodeError(f"{name}= must be True, a name pattern or a list of name patterns, got {exact!r}")


def deprecation_message(where: str, old) -> str:
    """One line naming the old keywords in ``old`` and their new spelling."""
    names = [k for k in DEPRECATED if k in old]
    new = ["exact="] if "lossless" in names else []
    keys = [k for k in names if k != "lossless"]
    if keys:
        new.append("expert={" + ", ".join(f"'{k}': ..." for k in keys) + "}")
    return (f"{where}: {', '.join(k + '=' for k in names)} {'is' if len(names) == 1 else 'are'} deprecated; "
            f"use {' and '.join(new)} (docs/using.md)")


def resolve(bits=None, rel_error=None, max_error=None, exact=None, expert=None, deprecated=None, *,
            where: str = "save_file", allowed=tuple(EXPERT_KEYS), stacklevel: int = 3, warn: bool = True) -> Knobs:
    """:class:`Knobs` from the new keywords plus ``deprecated`` (a dict of old keywords the caller got;
    None values count as not given). Raises EncodeError for an unknown or bad value, two targets, or one
    option given in both spellings; warns once (``DeprecationWarning``, at ``stacklevel`` from here) when
    an old keyword was used."""
    old = {k: v for k, v in (deprecated or {}).items() if v is not None}
    unknown = sorted(k for k in old if k not in DEPRECATED)
    if unknown:
        raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r}")
    if expert is None:
        expert = {}
    if not isinstance(expert, dict):
        raise EncodeError(f"expert= must be a dict with keys among {', '.join(allowed)}, got {type(expert).__name__}")
    bad = sorted(k for k in expert if k not in allowed)
    if bad:
        raise EncodeError(f"expert= has unknown key(s) {', '.join(map(repr, bad))}: {where} takes "
                          + "; ".join(f"{k} ({EXPERT_KEYS[k]})" for k in allowed))
    if "lossless" in old and exact not in (None, False):
        raise EncodeError("give exact= or its old name lossless=, not both")
    for k in EXPERT_KEYS:
        if k in old and k in expert:
            raise EncodeError(f"give expert={{'{k}': ...}} or its old keyword {k}=, not both")
        if k in old and k not in allowed:
            raise EncodeError(f"{where} does not take {k}=")
    if old and warn:
        warnings.warn(deprecation_message(where, old), DeprecationWarning, stacklevel=stacklevel)
    ex = {**{k: v for k, v in old.items() if k != "lossless"}, **expert}
    exact = _exact_patterns(old["lossless"], "lossless") if "lossless" in old else _exact_patterns(exact)
    rel_step = ex.get("rel_step")
    given = [k for k, v in (("bits", bits), ("rel_error", rel_error), ("max_error", max_error),
                            ("rel_step", rel_step)) if v is not None]
    if len(given) > 1:
        named = [f"expert['rel_step']" if k == "rel_step" and "rel_step" in expert else f"{k}=" for k in given]
        raise EncodeError(f"give at most one target: bits=, rel_error= or max_error= (or expert rel_step), "
                          f"got {' and '.join(named)}")
    codec = ex.get("codec")
    if codec is not None and codec not in _codec.CODEC_CHOICES:
        raise EncodeError(f"codec= must be one of {', '.join(_codec.CODEC_CHOICES)}, not {codec!r}")
    quantizer = _codec.resolve_quantizer(ex.get("quantizer"), max_error, codec, ex.get("rdoq"))
    if quantizer == "dq" and codec == "eg":
        raise EncodeError("quantizer='dq' is coded with ans (codec ans-dq): codec='eg' cannot hold it")
    k = Knobs(bits=bits, rel_error=rel_error, max_error=max_error, exact=exact, rel_step=rel_step,
              quantizer=quantizer, codec=codec, rdoq=ex.get("rdoq"),
              expert_given=tuple(sorted(k for k in ex if ex[k] is not None)))
    k.settings()  # checks the numbers (positive, finite) and the combinations (rdoq with dq, ...)
    return k
