"""bslcodec."""
