"""Quantization below the entropy coders: plain rounding and its dequantization, the dependent-quantization
state machine, the generalized-Gaussian fit. The decoders of bslcodec.codecs fuse these."""
