"""File I/O: the safetensors-shaped API (api), checkpoint readers and folder encode/decode (checkpoint),
process-parallel encode (parallel_encode) and recode."""
