"""``load_state_dict``: fill an existing ``torch.nn.Module`` from a ``.bsl`` file or encoded folder."""

from __future__ import annotations

from typing import NamedTuple


class IncompatibleKeys(NamedTuple):
    """What ``torch.nn.Module.load_state_dict`` returns: keys the file lacks, and keys the model lacks."""

    missing_keys: list
    unexpected_keys: list


def load_state_dict(model, path, device="cpu", strict: bool = True) -> IncompatibleKeys:
    """Load the weights of ``path`` into ``model``, like ``model.load_state_dict(torch.load(...))``.

    ``path``: a ``.bsl`` file, or a folder written by ``bslcodec encode`` (``model.bsl`` or shards with
    ``model.bsl.index.json``; shards are decoded and loaded one at a time). ``device``: where tensors are
    decoded (``"cuda"`` decodes on the GPU); ``None`` means the device of the model's first parameter.
    Values are copied into the model's own parameters and buffers, which keep their device and dtype.

    ``strict=True`` checks the names first and raises ``RuntimeError`` (as torch does) before anything is
    loaded when the file lacks a key of ``model.state_dict()`` or has one the model does not. Returns
    ``(missing_keys, unexpected_keys)``.
    """
    from ..files.readers import BslFile, bsl_files

    files = bsl_files(path)
    if device is None:
        first = next(iter(model.parameters()), None)
        if first is None:
            first = next(iter(model.buffers()), None)
        device = first.device if first is not None else "cpu"
    expected = set(model.state_dict().keys())
    names = []
    for f in files:
        with BslFile(f) as bf:
            names += bf.keys()
    missing = sorted(expected - set(names))
    unexpected = sorted(set(names) - expected)
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if unexpected:
            parts.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        raise RuntimeError(f"Error(s) in loading state_dict for {type(model).__name__} from {path}:\n\t"
                           + "\n\t".join(parts))
    from ..files.source import load_torch

    for f in files:
        sd = load_torch(f, device)
        model.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)
        del sd
    return IncompatibleKeys(missing, unexpected)
