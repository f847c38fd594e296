"""PyTorch helpers for ``.bsl`` files: ``load_state_dict(model, path, device=..., strict=True)``."""

from .state_dict import load_state_dict
