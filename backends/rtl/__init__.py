"""The reference RTL core (``hw_models/rtl/snn_core.sv``): co-simulation with Verilator, golden vectors
for third-party testbenches, and synthesis figures with Yosys."""

from snncompile.backends.rtl.driver import (
    RtlError,
    RtlToolError,
    RtlUnsupportedError,
    check_supported,
    core_params,
    golden_files,
    host_command,
    host_flags,
    host_load,
    host_simulate,
    host_step,
    rtl_simulate,
    rtl_sources,
    synthesis_params,
    synthesize,
)

__all__ = [
    "RtlError",
    "RtlToolError",
    "RtlUnsupportedError",
    "check_supported",
    "core_params",
    "golden_files",
    "host_command",
    "host_flags",
    "host_load",
    "host_simulate",
    "host_step",
    "rtl_simulate",
    "rtl_sources",
    "synthesis_params",
    "synthesize",
]
