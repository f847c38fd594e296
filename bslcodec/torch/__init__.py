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

from .. import jitcache

jitcache.install()  # before any module here defines a cached kernel (bslcodec/jitcache.py)

from .cola import CoLALinear, cola_spec, load_trained, to_cola  # noqa: E402
from .compressed import CompressedModel, load_compressed  # noqa: E402
from .rate import RateLoss  # noqa: E402
from .rate_eg import exact_lengths, soft_bits  # noqa: E402
from .state_dict import load_state_dict  # noqa: E402
from .tp import LLAMA_PLAN, shard_state_dict  # noqa: E402
from .trained import save_trained  # noqa: E402

__all__ = ["RateLoss", "save_trained", "soft_bits", "exact_lengths", "CoLALinear", "to_cola", "cola_spec",
           "load_trained", "load_state_dict", "load_compressed", "CompressedModel", "shard_state_dict",
           "LLAMA_PLAN"]
