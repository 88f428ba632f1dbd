"""The reference RTL core (``hw_models/rtl/snn_core.sv``): co-simulation with Verilator, golden vectors
for third-party testbenches, and synthesis figures with Yosys."""

from snncompile.backends.rtl.driver import (
    RtlError,
    RtlToolError,
    RtlUnsupportedError,
    check_supported,
    core_params,
    golden_files,
    rtl_simulate,
    rtl_sources,
    synthesize,
)

__all__ = [
    "RtlError",
    "RtlToolError",
    "RtlUnsupportedError",
    "check_supported",
    "core_params",
    "golden_files",
    "rtl_simulate",
    "rtl_sources",
    "synthesize",
]
