"""Per-tensor sensitivity for bit allocation: how much the model's output moves per unit of weight error.

Framework-agnostic: you pass ``forward(tensors) -> array`` (the model's output on a small calibration
batch for the given weights). For each tensor, Gaussian noise of a known size is added to it alone and the
mean squared change of the output is measured; the sensitivity is that change per unit of per-element
squared weight error. Quantization noise is small, independent and zero-mean, so its output distortion is
the same trace of the Jacobian's Gram matrix that the probe measures.

Example::

    >>> import numpy as np, bslcodec
    >>> from bslcodec.calibrate import sensitivity
    >>> rng = np.random.default_rng(0)
    >>> w = {"a": rng.normal(size=(8, 8)).astype(np.float32), "b": rng.normal(size=(8, 8)).astype(np.float32)}
    >>> s = sensitivity(lambda t: t["a"].sum(1) + 10 * t["b"].sum(1), w)
    >>> bool(s["b"] > 10 * s["a"])
    True
"""

import numpy as np

from .container.errors import BslError
from .pipeline.arrays import as_numpy


def sensitivity(forward, tensors: dict, names=None, rel_noise: float = 1 / 64, repeats: int = 1,
                seed: int = 0, progress: bool = False) -> dict:
    """name -> E||f(W + E_i) - f(W)||^2 / (n_out * sigma_i^2) for noise E_i ~ N(0, sigma_i^2) in tensor i.

    ``names`` defaults to every float tensor with at least 2 dimensions. ``rel_noise`` sets
    sigma_i = rel_noise * std(W_i): small enough to stay in the linear regime, large enough to be seen
    above float32 round-off. Cost: ``len(names) * repeats + 1`` calls of ``forward``.
    """
    base_t = {k: as_numpy(v, k) for k, v in tensors.items()}
    if names is None:
        names = [k for k, v in base_t.items() if v.dtype.kind == "f" or v.dtype.name == "bfloat16"]
        names = [k for k in names if base_t[k].ndim >= 2]
    ref = np.asarray(forward(base_t), dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = {}
    it = names
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="calibrate", unit="tensor")
    for name in it:
        w = base_t[name]
        w64 = w.astype(np.float64)
        sigma = rel_noise * float(w64.std())
        if not sigma > 0:
            out[name] = 1.0  # constant tensors are stored exactly; any positive value will do
            continue
        acc = 0.0
        for _ in range(repeats):
            noisy = dict(base_t)
            noisy[name] = (w64 + rng.normal(0.0, sigma, w.shape)).astype(w.dtype)
            real_sigma2 = float(((noisy[name].astype(np.float64) - w64) ** 2).mean())
            y = np.asarray(forward(noisy), dtype=np.float64)
            if y.shape != ref.shape:
                raise BslError(f"forward() returned shape {y.shape} for {name!r}, expected {ref.shape}")
            acc += float(((y - ref) ** 2).mean()) / real_sigma2
        out[name] = max(acc / repeats, 1e-30)
    return out


def fisher(model, forward, names=None, probes: int = 4, seed: int = 0) -> dict:
    """name -> sensitivity of each parameter of a torch ``model`` from gradients: the diagonal of the
    Fisher information of a Gaussian output model (J^T J, J = d output / d weights) summed over the tensor
    and divided by the number of outputs, the quantity :func:`sensitivity` probes with noise, estimated
    with ``probes`` random projections of the output (E_v (v^T J)_j^2 = (J^T J)_jj) from ONE forward pass
    and ``probes`` backward passes, instead of one forward pass per tensor.

    ``forward(model) -> tensor``: the model's output on a small calibration batch. ``names`` defaults to
    every parameter with at least 2 dimensions. Pass the result as ``sensitivity=``.

    Example::

        >>> import torch
        >>> from bslcodec.calibrate import fisher
        >>> m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        >>> s = fisher(m, lambda m: m(torch.randn(16, 8)))
        >>> sorted(s)
        ['0.weight', '1.weight']
    """
    import torch

    params = {n: p for n, p in model.named_parameters()
              if (names is None and p.ndim >= 2) or (names is not None and n in names)}
    if names is not None and set(names) - set(params):
        raise BslError(f"fisher(): not parameters of the model: {sorted(set(names) - set(params))[:5]}")
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        y = forward(model)
        if not isinstance(y, torch.Tensor) or not y.requires_grad:
            raise BslError("forward(model) must return a tensor that depends on the model's parameters")
        acc = {n: 0.0 for n in params}
        plist = list(params.values())
        for r in range(probes):
            v = torch.randn(y.shape, generator=gen, dtype=y.dtype).to(y.device)
            grads = torch.autograd.grad((y * v).sum(), plist, retain_graph=r < probes - 1, allow_unused=True)
            for n, g in zip(params, grads):
                if g is not None:
                    acc[n] += float(g.detach().double().pow(2).sum())
    n_out = y.numel()
    return {n: max(a / probes / n_out, 1e-30) for n, a in acc.items()}
