"""FLARE: active retrieval-augmented generation (Jiang et al. 2023), with its baselines."""

from agents.flare.config import FlareConfig
from agents.flare.flare import run
from agents.flare.trace import FlareError, FlareResult, LowToken, Step

__all__ = ["FlareConfig", "FlareError", "FlareResult", "LowToken", "Step", "run"]
