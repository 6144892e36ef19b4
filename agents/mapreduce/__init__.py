"""Map-reduce over documents longer than any context: summarize, ask, or extract into a JSON schema."""

from agents.mapreduce.cache import Cache
from agents.mapreduce.config import MapReduceConfig
from agents.mapreduce.executors import LocalExecutor, RayExecutor
from agents.mapreduce.mapreduce import SENTINEL, arun, is_irrelevant, read_documents, run
from agents.mapreduce.trace import MapAnswer, MapReduceError, MapReduceResult, Merge, Part

__all__ = [
    "Cache", "LocalExecutor", "MapAnswer", "MapReduceConfig", "MapReduceError", "MapReduceResult", "Merge", "Part",
    "RayExecutor", "SENTINEL", "arun", "is_irrelevant", "read_documents", "run",
]
