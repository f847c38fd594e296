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
