"""PyTorch helpers for ``.bsl`` (imports torch; the core ``import bslcodec`` never does, nor does this
package import the GPU decoder).

- :class:`RateLoss`: differentiable estimate of the ``.bsl`` payload bits of a model's weights, a
  BackSlash rate regulariser (``loss = task + rate()``, or ``rate.attach()`` as gradient hooks).
- :func:`save_trained`: encode trained weights with exactly the parameters the rate loss assumed.
- :class:`CoLALinear`, :func:`to_cola`: CoLA low-rank layers ``B σ(A x)`` (and CoLA-M recomputation);
  :func:`load_trained` loads a ``.bsl`` file (dense or CoLA) back into a model.
- :func:`load_compressed`: keep weights compressed on the device, decoded per block just in time.
- :func:`shard_state_dict`: a tensor-parallel rank's slices of a ``.bsl`` file, reading only its part.
"""

from .cola import CoLALinear, cola_spec, load_trained, to_cola
from .compressed import CompressedModel, load_compressed
from .rate import RateLoss
from .rate_eg import exact_lengths, soft_bits
from .state_dict import load_state_dict
from .tp import LLAMA_PLAN, shard_state_dict
from .trained import save_trained

__all__ = ["RateLoss", "save_trained", "soft_bits", "exact_lengths", "CoLALinear", "to_cola", "cola_spec",
           "load_trained", "load_state_dict", "load_compressed", "CompressedModel", "shard_state_dict",
           "LLAMA_PLAN"]
