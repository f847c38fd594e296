"""PyTorch helpers for ``.bsl`` (each name imports torch and its module on first use; the core ``import bslcodec``
never imports this package, nor does it import the GPU decoder). Loading weights (``load_state_dict``,
``shard_state_dict``, ``load_compressed``) imports no numba until something is decoded on the CPU.

- :class:`RateLoss`: differentiable estimate of the ``.bsl`` payload bits of a model's weights, a
  BackSlash rate regulariser (``loss = task + rate()``, or ``rate.attach()`` as gradient hooks).
- :func:`save_trained`: encode trained weights with exactly the parameters the rate loss assumed.
- :class:`CoLALinear`, :func:`to_cola`: CoLA low-rank layers ``B σ(A x)`` (and CoLA-M recomputation);
  :func:`load_trained` loads a ``.bsl`` file (dense or CoLA) back into a model.
- :func:`load_compressed`: keep weights compressed on the device, decoded per block just in time.
- :func:`shard_state_dict`: a tensor-parallel rank's slices of a ``.bsl`` file, reading only its part.
"""

import importlib

# name -> submodule: each is imported on first use (PEP 562), so that loading weights (load_state_dict,
# shard_state_dict, load_compressed onto a GPU) does not import the rate loss' numba kernels
_WHERE = {"CoLALinear": "cola", "cola_spec": "cola", "load_trained": "cola", "to_cola": "cola",
          "CompressedModel": "compressed", "load_compressed": "compressed", "RateLoss": "rate",
          "exact_lengths": "rate_eg", "soft_bits": "rate_eg", "load_state_dict": "state_dict",
          "LLAMA_PLAN": "tp", "shard_state_dict": "tp", "save_trained": "trained"}

__all__ = list(_WHERE)


def __getattr__(name):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
