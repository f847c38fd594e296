"""``save_trained``: encode trained weights with exactly the parameters a :class:`RateLoss` assumed."""

import json

import torch

from ..pipeline import knobs
from . import rate_dq
from .rate import RATE_EXPERT, RateLoss

METADATA_KEY = "bslcodec.rate"


def save_trained(model, path=None, *, rate: RateLoss | None = None, bits=None, max_error=None, include=None,
                 exact=None, metadata=None, expert=None, **deprecated):
    """Encode trained weights with exactly the parameters a :class:`RateLoss` assumed.

    ``model``: an ``nn.Module`` (its ``state_dict()``) or a dict name -> tensor. Give the ``rate`` used in
    training, or the same ``bits`` / ``max_error`` / ``expert`` (and ``include``) it was built with;
    ``exact``: name patterns stored bit-exact (as in ``save_file``).
    ``bits=`` resolves, as the rate loss does, to the one ``rel_step`` at which the covered tensors meet
    the target, and the whole file is then written with that ``rel_step`` (the encoder's step, center and
    orders are then those the rate loss computed). A CoLA model's layer layout is stored in the metadata,
    so :func:`bslcodec.torch.load_trained` can rebuild it. Returns the file's bytes when ``path`` is None.
    """
    from ..files import api
    from .cola import COLA_METADATA_KEY, cola_spec

    given = knobs.resolve(bits, None, max_error, exact, expert, deprecated, where="save_trained",
                          allowed=RATE_EXPERT)
    rate_kw = {k: v for k, v in given.new_kwargs().items() if k != "exact"}
    if isinstance(model, torch.nn.Module):
        tensors = dict(model.state_dict())
        if rate is None:
            rate = RateLoss(model, 0.0, include=include, **rate_kw)
    else:
        tensors = dict(model)
        if rate is None:
            rate = RateLoss(list((k, v) for k, v in tensors.items()), 0.0, include=include, **rate_kw)
    kw = rate.encode_settings(refresh=True)
    meta = dict(metadata or {})
    meta[METADATA_KEY] = json.dumps({"lam": rate.lam, **{k: v for k, v in (
        ("rel_step", rate.settings.rel_step), ("max_error", rate.settings.max_error),
        ("bits", rate.settings.bits)) if v is not None}, "encoded_with": kw})
    if isinstance(model, torch.nn.Module):
        spec = cola_spec(model)
        if spec:
            meta[COLA_METADATA_KEY] = json.dumps(spec)
    tensors = {k: rate_dq.full_tensor(v).detach() for k, v in tensors.items()}  # FSDP: whole tensors
    # the new spelling of encode_settings(): max_error=, or expert rel_step and quantizer
    save_kw = {"max_error": kw["max_error"]} if "max_error" in kw else {"expert": kw}
    if path is None:
        return api.save(tensors, metadata=meta, exact=given.exact, **save_kw)
    api.save_file(tensors, path, metadata=meta, exact=given.exact, **save_kw)
    return None
