"""The public API: ``save_file / load_file / safe_open / save / load / encode / decode``.

Example::

    >>> import numpy as np, bslcodec
    >>> w = np.random.default_rng(0).normal(0, 0.02, (256, 256)).astype(np.float32)
    >>> blob = bslcodec.save({"w": w}, max_error=1e-4)
    >>> back = bslcodec.load(blob)["w"]
    >>> bool(np.abs(back - w).max() <= 1e-4)
    True
"""

from ..pipeline import knobs as _knobs
from .atomic import atomic_write, check_signals, lock_temp, remove_stale_temps  # noqa: F401 - importers use api.<name>
from .encoder import SETTINGS_KEY, _encode_tensors, _write  # noqa: F401

# the read side (no codecs until the first decode; none at all for a GPU load): api.<name> as before
from .source import FRAMEWORKS, _load, _Source, decode, load, load_file, safe_open  # noqa: F401

# ---------------------------------------------------------------- writing

def encode_tensors(tensors: dict, *, metadata=None, bits=None, rel_error=None, max_error=None, sensitivity=None,
                   exact=None, expert=None, progress=False, **deprecated) -> tuple:
    """Encode a state dict into (entries, payloads, metadata) without writing anything; the options are
    :func:`save_file`'s.

    The metadata gains ``bslcodec.settings``: JSON of the options used (``bits=``, ``rel_error=`` and the
    default add ``"allocation": "equal-slope"``; each tensor's step is in its params), which ``bslcodec
    verify`` reads to know each tensor's bound.
    """
    knobs = _knobs.resolve(bits, rel_error, max_error, exact, expert, deprecated, where="encode_tensors")
    return _encode_tensors(tensors, metadata, knobs, sensitivity, progress)


def save(tensors: dict, *, metadata=None, bits=None, rel_error=None, max_error=None, sensitivity=None, exact=None,
         expert=None, **deprecated) -> bytes:
    """Encode ``tensors`` into the bytes of a ``.bsl`` file (the options are :func:`save_file`'s)."""
    import io

    knobs = _knobs.resolve(bits, rel_error, max_error, exact, expert, deprecated, where="save")
    entries, payloads, metadata = _encode_tensors(tensors, metadata, knobs, sensitivity, False)
    buf = io.BytesIO()
    _write(buf, entries, payloads, metadata)
    return buf.getvalue()


def save_file(tensors: dict, path, *, metadata=None, bits=None, rel_error=None, max_error=None, sensitivity=None,
              exact=None, expert=None, progress=False, **deprecated) -> None:
    """Write ``tensors`` (name -> numpy array or torch tensor) to ``path`` as a ``.bsl`` file.

    Float tensors are quantized to at most one target (docs/using.md):

    - ``bits=B``: size; the file averages B bits/weight (within 2 %), steps split across tensors at equal
      slope; a :class:`~bslcodec.QualityWarning` when the weights' relative L2 error comes out above 5 %.
    - ``rel_error=r``: quality; the same allocation with the root mean square over tensors of each tensor's
      relative L2 error ‖W_i − Ŵ_i‖/‖W_i‖ at about ``r`` (no tensor's above ~4x the relative error of all
      quantized weights together). The default (no target): ``r = 2^-8`` (0.39 %).
    - ``max_error=E``: a guarantee; ``|x - x̂| <= E`` for every element (plain rounding, one step).

    ``sensitivity`` (name -> output distortion per unit squared weight error, e.g. from
    :func:`bslcodec.calibrate.sensitivity`) weighs each tensor's error in the allocation (not with
    ``max_error``). ``exact``: fnmatch patterns of tensor names stored bit-exact, or True for every
    tensor (floats with the ``fexp`` codec where it is smallest); integer and bool tensors are always
    exact, and small 1-D float tensors (norms, biases) are quantized at a fine fixed step (about
    std/1024) by the allocation targets, else stored exactly (also where that is smaller).

    ``expert``: a dict for the escape hatch, any of ``quantizer`` (``"auto"``: dependent quantization,
    codec ``ans-dq``, except plain rounding with ``max_error``, a named ``codec`` or ``rdoq``;
    ``"uniform"``; ``"dq"``), ``codec`` (``"auto"``: ans or ans-dq, whichever is smaller per tensor;
    ``"eg"``: exp-Golomb, the GPU's layer-by-layer format; ``"ans"``), ``rdoq`` (c: rate-distortion
    optimised plain rounding, λ = c·step², bound one step) and ``rel_step`` (no allocation: every tensor's
    step = rel_step x its std; then no target). The old keywords ``lossless``, ``rel_step``,
    ``quantizer``, ``codec``, ``rdoq`` still work, with a ``DeprecationWarning``.
    ``progress``: True for a tqdm bar, or a callable ``progress(phase, name, nbytes)``.
    The write is atomic: a temporary file in the same folder, fsync, then rename.
    """
    knobs = _knobs.resolve(bits, rel_error, max_error, exact, expert, deprecated, where="save_file")
    entries, payloads, metadata = _encode_tensors(tensors, metadata, knobs, sensitivity, progress)
    atomic_write(path, lambda fh: _write(fh, entries, payloads, metadata))


# ---------------------------------------------------------------- reading

def encode(array, *, bits=None, rel_error=None, max_error=None, exact: bool = False, expert=None,
           **deprecated) -> bytes:
    """One tensor -> bytes of a one-tensor ``.bsl`` file (its name is ``"tensor"``); the options are
    :func:`save_file`'s (``exact=True``: stored bit-exact)."""
    if deprecated.get("lossless") is not None:  # the old bool: True -> this tensor
        deprecated["lossless"] = ("tensor",) if deprecated["lossless"] else False
    knobs = _knobs.resolve(bits, rel_error, max_error, ("tensor",) if exact else None, expert, deprecated,
                           where="encode")
    entries, payloads, metadata = _encode_tensors({"tensor": array}, None, knobs, None, False)
    import io

    buf = io.BytesIO()
    _write(buf, entries, payloads, metadata)
    return buf.getvalue()


