"""Lowerings of the fixed-point IR, one subpackage each (integer simulator, memory image)."""
