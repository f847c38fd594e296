"""Triton kernels of the dq rate estimate (:class:`bslcodec.torch.rate_dq.DQRate` on CUDA): the four passes
of a step over the flat layout ``F`` [rows, ROW] (float32; row ``r`` holds elements of tensor ``row_t[r]``, the
first ``row_valid[r]`` of them real, the rest padding), all covered tensors in one launch each:

1. :func:`row_moments`: per row, sum w and sum w² (float64);
2. :func:`histogram`: per tensor and bin, the counts of round(P0) and round(P1) (int32 atomics: exact and
   deterministic). A program counts the ``WIN`` bins around the center, where nearly all weights fall, with
   one-hot sums in registers and adds them with ``WIN`` atomics; the few weights outside that window go
   straight to the global histogram with one atomic each. So the atomics do not pile up on the hot bins
   (a ``tl.histogram`` block histogram of 63 bins was no faster on the H100: 4.13 against 3.90 ms for the
   rate term's forward and backward, eighth session);
3. :func:`slopes`: G = (slope of L at P0 + slope at P1) x gscale, stored, and per row sum G·w (float64);
4. :func:`gradient`: G <- scale G - beta (w - mean), in place.

The arithmetic is the eager path's (``DQRate._positions`` and friends) in the same float32 order, up to the
fused multiply-adds Triton may form (a weight on a bin edge can land in the neighbouring bin: far below the
float tolerance the tests allow). Tested on CPU under ``TRITON_INTERPRET=1`` (``tests/test_torch_rate_dq.py``).
Imported only where Triton is installed (the import fails otherwise, and the engine uses eager torch).
"""

import torch
import triton
import triton.language as tl

from .rate_dq import HALF_BINS, ROW

WIN = 32  # bins around the center counted in registers (y std ~7 bins at rel_step 1/8: ~97 % of weights)
SUB = 512  # elements a program handles per inner step


@triton.jit
def _positions(w, iv, ce, s, K: tl.constexpr):
    v = w * iv - ce
    sg = tl.where(v > 0, 1.0, 0.0) - tl.where(v < 0, 1.0, 0.0)
    p0 = tl.minimum(tl.maximum(v * s, -K), K)
    p1 = tl.minimum(tl.maximum((v + sg) * s, -K), K)
    return p0, p1


@triton.jit
def _moments_kernel(F, out, ROWLEN: tl.constexpr, SUBN: tl.constexpr):
    r = tl.program_id(0)
    base = F + r.to(tl.int64) * ROWLEN
    s1 = tl.zeros([SUBN], dtype=tl.float64)
    s2 = tl.zeros([SUBN], dtype=tl.float64)
    for i in range(0, ROWLEN, SUBN):
        w = tl.load(base + i + tl.arange(0, SUBN))
        s1 += w.to(tl.float64)
        s2 += (w * w).to(tl.float64)
    tl.store(out + 2 * r, tl.sum(s1, axis=0))
    tl.store(out + 2 * r + 1, tl.sum(s2, axis=0))


@triton.jit
def _hist_kernel(F, row_t, row_valid, inv, cen, sc, hist, ROWLEN: tl.constexpr, SUBN: tl.constexpr,
                 K: tl.constexpr, NB: tl.constexpr, W: tl.constexpr):
    r = tl.program_id(0)
    t = tl.load(row_t + r)
    nv = tl.load(row_valid + r)
    iv = tl.load(inv + t)
    ce = tl.load(cen + t)
    s = tl.load(sc + t)
    base = F + r.to(tl.int64) * ROWLEN
    hrow = hist + t.to(tl.int64) * NB
    lo = K - W // 2
    wins = lo + tl.arange(0, W)
    cnt = tl.zeros([W], dtype=tl.int32)
    one = tl.full([SUBN], 1, tl.int32)
    for i in range(0, ROWLEN, SUBN):
        offs = i + tl.arange(0, SUBN)
        ok = offs < nv
        w = tl.load(base + offs, mask=ok, other=0.0)
        p0, p1 = _positions(w, iv, ce, s, K)
        b0 = tl.floor(p0 + (K + 0.5)).to(tl.int32)  # histc's bins: floor(P - (-K - 0.5)), float32
        b1 = tl.floor(p1 + (K + 0.5)).to(tl.int32)
        cnt += tl.sum(((b0[:, None] == wins[None, :]) & ok[:, None]).to(tl.int32), axis=0)
        cnt += tl.sum(((b1[:, None] == wins[None, :]) & ok[:, None]).to(tl.int32), axis=0)
        tl.atomic_add(hrow + b0, one, mask=ok & ((b0 < lo) | (b0 >= lo + W)), sem="relaxed")
        tl.atomic_add(hrow + b1, one, mask=ok & ((b1 < lo) | (b1 >= lo + W)), sem="relaxed")
    tl.atomic_add(hrow + wins, cnt, mask=cnt > 0, sem="relaxed")


@triton.jit
def _slopes_kernel(F, G, gw, row_t, row_valid, inv, cen, sc, L, gscale, ROWLEN: tl.constexpr,
                   SUBN: tl.constexpr, K: tl.constexpr, NB: tl.constexpr):
    r = tl.program_id(0)
    t = tl.load(row_t + r)
    nv = tl.load(row_valid + r)
    iv = tl.load(inv + t)
    ce = tl.load(cen + t)
    s = tl.load(sc + t)
    gs = tl.load(gscale + t)
    base = r.to(tl.int64) * ROWLEN
    lrow = L + t.to(tl.int64) * NB
    acc = tl.zeros([SUBN], dtype=tl.float64)
    for i in range(0, ROWLEN, SUBN):
        offs = i + tl.arange(0, SUBN)
        ok = offs < nv
        w = tl.load(F + base + offs, mask=ok, other=0.0)
        p0, p1 = _positions(w, iv, ce, s, K)
        i0 = tl.minimum(tl.floor(p0), K - 1).to(tl.int32) + K
        i1 = tl.minimum(tl.floor(p1), K - 1).to(tl.int32) + K
        s0 = tl.load(lrow + i0 + 1, mask=ok, other=0.0) - tl.load(lrow + i0, mask=ok, other=0.0)
        s1 = tl.load(lrow + i1 + 1, mask=ok, other=0.0) - tl.load(lrow + i1, mask=ok, other=0.0)
        g = tl.where(ok, (s0 + s1) * gs, 0.0)
        tl.store(G + base + offs, g)
        acc += (g * w).to(tl.float64)
    tl.store(gw + r, tl.sum(acc, axis=0))


@triton.jit
def _gradient_kernel(F, G, row_t, scale, beta, mean, ROWLEN: tl.constexpr, SUBN: tl.constexpr):
    r = tl.program_id(0)
    t = tl.load(row_t + r)
    sc = tl.load(scale)
    be = tl.load(beta + t)
    mu = tl.load(mean + t)
    base = r.to(tl.int64) * ROWLEN
    for i in range(0, ROWLEN, SUBN):
        offs = base + i + tl.arange(0, SUBN)
        g = tl.load(G + offs)
        w = tl.load(F + offs)
        tl.store(G + offs, g * sc - be * (w - mu))


def row_moments(F: torch.Tensor) -> torch.Tensor:
    """[R, 2] float64: per row sum w, sum w² (squares in float32, sums in float64, like the eager path)."""
    out = torch.empty(F.shape[0], 2, dtype=torch.float64, device=F.device)
    if F.shape[0]:
        _moments_kernel[(F.shape[0],)](F, out, ROWLEN=ROW, SUBN=SUB)
    return out


def histogram(F, row_t, row_valid, inv, cen, sc, T) -> torch.Tensor:
    """[T, 2K+1] int32 counts of round(P0) and round(P1) of the real elements."""
    nb = 2 * HALF_BINS + 1
    hist = torch.zeros(T * nb, dtype=torch.int32, device=F.device)
    if F.shape[0]:
        _hist_kernel[(F.shape[0],)](F, row_t, row_valid, inv, cen, sc, hist, ROWLEN=ROW, SUBN=SUB, K=HALF_BINS,
                                    NB=nb, W=WIN)
    return hist.view(T, nb)


def slopes(F, row_t, row_valid, inv, cen, sc, L, gscale):
    """(G float32 [R, ROW], 0 on padding; per-row sum G·w float64 [R])."""
    G = torch.empty_like(F)
    gw = torch.empty(F.shape[0], dtype=torch.float64, device=F.device)
    if F.shape[0]:
        _slopes_kernel[(F.shape[0],)](F, G, gw, row_t, row_valid, inv, cen, sc, L, gscale, ROWLEN=ROW, SUBN=SUB,
                                      K=HALF_BINS, NB=2 * HALF_BINS + 1)
    return G, gw


def gradient(F, G, row_t, scale, beta, mean) -> None:
    """G <- scale G - beta[t] (F - mean[t]) in place (``scale``: a 1-element float32 device tensor)."""
    if F.shape[0]:
        _gradient_kernel[(F.shape[0],)](F, G, row_t, scale, beta, mean, ROWLEN=ROW, SUBN=SUB)
