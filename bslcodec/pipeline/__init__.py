"""The per-tensor pipeline: which codec a tensor gets and with what parameters (codec), rate control across
tensors (ratecontrol), and array conversion between numpy and the frameworks (arrays)."""
