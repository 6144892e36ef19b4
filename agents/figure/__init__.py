"""Coder / critic / commander: a figure-making team on AutoGen AgentChat (``agents.figure.team``)."""

from agents.figure.config import FigureConfig, FigureError
from agents.figure.figure import arun, run
from agents.figure.trace import FigureResult, Iteration

__all__ = ["FigureConfig", "FigureError", "FigureResult", "Iteration", "arun", "run"]
