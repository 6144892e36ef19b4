"""FLARE: active retrieval-augmented generation (Jiang et al. 2023), with its baselines."""

from conclave.agents.flare.config import FlareConfig
from conclave.agents.flare.flare import run
from conclave.agents.flare.trace import FlareError, FlareResult, LowToken, Step

__all__ = ["FlareConfig", "FlareError", "FlareResult", "LowToken", "Step", "run"]
