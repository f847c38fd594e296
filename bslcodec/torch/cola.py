"""CoLA (arXiv 2502.10940): low-rank linear layers ``y = B σ(A x) + b``, conversion of a model's
``nn.Linear`` layers, the memory-saving CoLA-M mode, and loading a ``.bsl`` file back into such a model.

``CoLALinear(d_in, d_out, rank)`` holds ``cola_a`` (``nn.Linear(d_in, rank)``, no bias) and ``cola_b``
(``nn.Linear(rank, d_out)``), so its state dict has ``cola_a.weight``, ``cola_b.weight`` (and
``cola_b.bias``): ordinary matrices, which ``bslcodec`` quantizes and :class:`~bslcodec.torch.RateLoss`
covers like any dense weight.

CoLA-M (``memory_efficient=True``): the layer keeps only its input for backward and recomputes the rank-r
activations ``A x`` and ``σ(A x)`` there (one extra ``r x d_in`` matmul), instead of storing them: 2 r values
per token per layer less activation memory, same result and gradients. (The paper's CoLA-M checkpoints
whole transformer blocks with the rank-r tensors as boundaries; this is the per-layer form of it.)
"""

import fnmatch
import json

import torch
import torch.nn.functional as F
from torch import nn

COLA_METADATA_KEY = "bslcodec.cola"

ACTIVATIONS = {
    "silu": F.silu,
    "gelu": F.gelu,
    "relu": F.relu,
    "tanh": torch.tanh,
    "identity": lambda x: x,
}


def _activation(name):
    name = "identity" if name is None else str(name).lower()
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, not {name!r}")
    return name, ACTIVATIONS[name]


class _CoLAM(torch.autograd.Function):
    """y = B act(A x) + b that saves only x (and the weights) and recomputes A x, act(A x) in backward."""

    @staticmethod
    def forward(ctx, x, a, b, bias, act):
        z = act(F.linear(x, a))
        y = F.linear(z, b, bias)
        ctx.save_for_backward(x, a, b)
        ctx.act, ctx.has_bias = act, bias is not None
        return y

    @staticmethod
    def backward(ctx, gy):
        x, a, b = ctx.saved_tensors
        with torch.enable_grad():
            h = F.linear(x, a).detach().requires_grad_(True)
            z = ctx.act(h)
        gz = gy @ b  # [..., r]
        (gh,) = torch.autograd.grad(z, h, gz)
        z = z.detach()
        gy2, gh2 = gy.reshape(-1, gy.shape[-1]), gh.reshape(-1, gh.shape[-1])
        gb = gy2.t() @ z.reshape(-1, z.shape[-1]) if ctx.needs_input_grad[2] else None
        ga = gh2.t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        gbias = gy2.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        gx = gh @ a if ctx.needs_input_grad[0] else None
        return gx, ga, gb, gbias, None


class CoLALinear(nn.Module):
    """``y = B σ(A x) + b``: a rank-``rank`` auto-encoder replacing ``nn.Linear(in_features, out_features)``.

    Parameters: ``in_features*rank + rank*out_features (+ out_features)``. ``activation``: "silu" (the
    paper's), "gelu", "relu", "tanh" or "identity"/None. ``memory_efficient``: CoLA-M recomputation.
    Initialisation as the official code: both factors ``N(0, 1) * rank^-1/4 * (in+out)^-1/4``, so the
    product has the variance of a Xavier-initialised dense matrix.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, activation="silu", bias: bool = True,
                 memory_efficient: bool = False, device=None, dtype=None):
        super().__init__()
        if not (isinstance(rank, int) and rank >= 1):
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.activation, self._act = _activation(activation)
        self.memory_efficient = bool(memory_efficient)
        self.cola_a = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.cola_b = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        scale = self.rank ** -0.25 * (self.in_features + self.out_features) ** -0.25
        self.cola_a.weight.normal_(0.0, scale)
        self.cola_b.weight.normal_(0.0, scale)
        if self.cola_b.bias is not None:
            self.cola_b.bias.zero_()

    def forward(self, x):
        if self.memory_efficient and torch.is_grad_enabled():
            return _CoLAM.apply(x, self.cola_a.weight, self.cola_b.weight, self.cola_b.bias, self._act)
        return self.cola_b(self._act(self.cola_a(x)))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"activation={self.activation}, bias={self.cola_b.bias is not None}, "
                f"memory_efficient={self.memory_efficient}")

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, activation="silu", init: str = "random",
                    memory_efficient: bool = False) -> "CoLALinear":
        """A CoLA layer shaped like ``linear``. ``init="svd"`` warm-starts from the truncated SVD of its
        weight (``A = S^1/2 V^T``, ``B = U S^1/2``) and copies the bias; with a nonlinear σ that is not
        the same function, only a start. ``init="random"``: the CoLA initialisation."""
        w = linear.weight
        m = cls(linear.in_features, linear.out_features, rank, activation, linear.bias is not None,
                memory_efficient, device=w.device, dtype=w.dtype)
        if init == "svd":
            with torch.no_grad():
                u, s, vh = torch.linalg.svd(w.detach().float(), full_matrices=False)
                r = min(rank, s.numel())
                root = s[:r].sqrt()
                m.cola_a.weight.zero_()
                m.cola_b.weight.zero_()
                m.cola_a.weight[:r].copy_((root[:, None] * vh[:r]).to(w.dtype))
                m.cola_b.weight[:, :r].copy_((u[:, :r] * root[None, :]).to(w.dtype))
                if linear.bias is not None:
                    m.cola_b.bias.copy_(linear.bias.detach())
        elif init != "random":
            raise ValueError(f"init must be 'random' or 'svd', not {init!r}")
        return m


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _rank_for(lin: nn.Linear, rank, rank_ratio) -> int:
    if rank is not None:
        return int(rank)
    return max(1, int(round(rank_ratio * min(lin.in_features, lin.out_features))))


def to_cola(model: nn.Module, include=("*",), exclude=(), *, rank: int | None = None, rank_ratio: float = 0.25,
            activation="silu", memory_efficient: bool = False, init: str = "random",
            only_if_smaller: bool = True, spec: dict | None = None) -> nn.Module:
    """Replace ``model``'s ``nn.Linear`` layers by :class:`CoLALinear`, in place; returns ``model``.

    Chosen: layers whose qualified name matches one of ``include`` and none of ``exclude`` (fnmatch).
    Rank: ``rank``, or ``round(rank_ratio * min(in, out))`` (the paper: ``d_model / 4`` for every layer).
    ``only_if_smaller``: skip layers where the factors would not have fewer parameters than the matrix.
    ``spec`` (from :func:`cola_spec` or a ``.bsl`` file's metadata) converts exactly the layers it lists,
    with their ranks and activations. The layout is recorded on the model (``cola_spec(model)``).
    """
    include = (include,) if isinstance(include, str) else tuple(include)
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    record = dict(getattr(model, "_bsl_cola_spec", {}) or {})
    if spec is not None:
        layers = spec.get("layers", spec)
        for name, cfg in layers.items():
            cur = model.get_submodule(name)
            if isinstance(cur, CoLALinear):
                if (cur.in_features, cur.out_features, cur.rank) != (cfg["in"], cfg["out"], cfg["rank"]):
                    raise ValueError(f"layer {name!r} is CoLA of another shape than the spec says")
            else:
                if type(cur) is not nn.Linear:
                    raise ValueError(f"layer {name!r} is {type(cur).__name__}, not nn.Linear")
                if (cur.in_features, cur.out_features) != (cfg["in"], cfg["out"]):
                    raise ValueError(f"layer {name!r} has shape {cur.in_features}->{cur.out_features}, "
                                     f"the spec says {cfg['in']}->{cfg['out']}")
                new = CoLALinear.from_linear(cur, int(cfg["rank"]), cfg.get("activation", "silu"),
                                             memory_efficient=memory_efficient)
                if bool(cfg.get("bias", True)) != (new.cola_b.bias is not None):
                    raise ValueError(f"layer {name!r}: bias differs from the spec")
                _set_module(model, name, new)
            record[name] = dict(cfg)
    else:
        targets = []
        inside = set()
        for name, mod in model.named_modules():
            if any(name.startswith(p + ".") for p in inside):
                continue
            if isinstance(mod, CoLALinear):
                inside.add(name)
                continue
            if type(mod) is not nn.Linear or not name:
                continue
            if not any(fnmatch.fnmatchcase(name, p) for p in include):
                continue
            if any(fnmatch.fnmatchcase(name, p) for p in exclude):
                continue
            targets.append((name, mod))
        for name, lin in targets:
            r = _rank_for(lin, rank, rank_ratio)
            if only_if_smaller and r * (lin.in_features + lin.out_features) >= lin.in_features * lin.out_features:
                continue
            new = CoLALinear.from_linear(lin, r, activation, init=init, memory_efficient=memory_efficient)
            _set_module(model, name, new)
            record[name] = {"in": lin.in_features, "out": lin.out_features, "rank": r,
                            "activation": new.activation, "bias": lin.bias is not None}
    model._bsl_cola_spec = record
    return model


def cola_spec(model: nn.Module) -> dict:
    """The CoLA layout of ``model`` (``{"version": 1, "layers": {name: {in, out, rank, activation, bias}}}``),
    or ``{}`` for a model without CoLA layers. Found from the modules themselves."""
    layers = {}
    for name, mod in model.named_modules():
        if isinstance(mod, CoLALinear):
            layers[name] = {"in": mod.in_features, "out": mod.out_features, "rank": mod.rank,
                            "activation": mod.activation, "bias": mod.cola_b.bias is not None}
    return {"version": 1, "layers": layers} if layers else {}


def set_memory_efficient(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch CoLA-M recomputation on or off in every :class:`CoLALinear` of ``model``."""
    for mod in model.modules():
        if isinstance(mod, CoLALinear):
            mod.memory_efficient = bool(enabled)
    return model


def _read(source):
    """(tensors as torch, metadata) of a ``.bsl`` path or bytes."""
    import os

    from ..files.api import _Source
    from ..pipeline.arrays import _to_framework

    src = _Source(data=source) if isinstance(source, (bytes, bytearray, memoryview)) else \
        _Source(path=os.fspath(source))
    try:
        tensors = {name: _to_framework(src.tensor(name), "pt", "cpu") for name in src.entries}
        return tensors, dict(src.index.metadata)
    finally:
        src.close()


def load_trained(model: nn.Module, source, *, strict: bool = True, memory_efficient: bool = False) -> nn.Module:
    """Load a ``.bsl`` file (path or bytes) written by :func:`~bslcodec.torch.save_trained` (or any
    ``.bsl`` of a state dict) into ``model``; layers the file stores as CoLA are converted first, so a
    freshly built dense model of the same architecture loads a CoLA checkpoint. Returns ``model``."""
    tensors, meta = _read(source)
    if COLA_METADATA_KEY in meta:
        to_cola(model, spec=json.loads(meta[COLA_METADATA_KEY]), memory_efficient=memory_efficient)
    ref = model.state_dict()
    for k, v in tensors.items():
        if k in ref and ref[k].dtype != v.dtype:
            tensors[k] = v.to(ref[k].dtype)
    model.load_state_dict(tensors, strict=strict)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def linear_params(in_features: int, out_features: int, rank: int | None = None) -> int:
    """Weight parameters of a dense (``rank=None``) or CoLA layer (the paper's r (d_in + d_out))."""
    return in_features * out_features if rank is None else rank * (in_features + out_features)


__all__ = ["CoLALinear", "to_cola", "cola_spec", "set_memory_efficient", "load_trained", "count_parameters",
           "linear_params", "COLA_METADATA_KEY", "ACTIVATIONS"]
