"""Entropy coders, each beside its slow reference (golomb/golomb_ref, rans/rans_ref, fexp/fexp_ref), the
lossless zstd stage, re-coding between entropy stages, and the encoder-side searches that need a coder's
model (dependent-quantization trellis, RDOQ)."""

from .. import jitcache

jitcache.install()  # before any module here defines a cached kernel (bslcodec/jitcache.py)
