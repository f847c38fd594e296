"""The container: the bytes of a .bsl file (preamble, JSON index, payload placement, checksums), its limits,
dtypes and error types. Imports nothing else of bslcodec."""
