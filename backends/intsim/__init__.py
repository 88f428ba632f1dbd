"""The integer simulator backend: a fast engine bit-identical to the reference interpreter, and the
cycle model of the target's core."""

from snncompile.backends.intsim.cycles import CycleModel, CycleReport
from snncompile.backends.intsim.engine import PATHS, Choice, describe_plan, plan, simulate

__all__ = ["PATHS", "Choice", "CycleModel", "CycleReport", "describe_plan", "plan", "simulate"]
