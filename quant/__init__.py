"""Fixed-point formats, QAT hooks and the quantize pass."""
