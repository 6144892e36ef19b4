"""Coder / critic / commander: a figure-making team on AutoGen AgentChat (``agents.figure.team``)."""

from conclave.agents.figure.config import FigureConfig, FigureError
from conclave.agents.figure.figure import arun, run
from conclave.agents.figure.trace import FigureResult, Iteration

__all__ = ["FigureConfig", "FigureError", "FigureResult", "Iteration", "arun", "run"]
