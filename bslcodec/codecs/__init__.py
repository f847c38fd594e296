"""Entropy coders, each beside its slow reference (golomb/golomb_ref, rans/rans_ref, fexp/fexp_ref), the
lossless zstd stage, re-coding between entropy stages, and the encoder-side searches that need a coder's
model (dependent-quantization trellis, RDOQ).

Importing this package imports no numba: the ``*_header`` modules (``rans_header``, ``golomb_header``,
``fexp_header``) read payload headers and build decoding tables in numpy, for a process that only decodes on a
GPU; each module that defines numba kernels calls ``jitcache.install()`` first (bslcodec/jitcache.py)."""
