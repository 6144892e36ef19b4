"""Map-reduce over documents longer than any context: summarize, ask, or extract into a JSON schema."""

from conclave.agents.mapreduce.cache import Cache
from conclave.agents.mapreduce.config import MapReduceConfig
from conclave.agents.mapreduce.executors import LocalExecutor, RayExecutor
from conclave.agents.mapreduce.mapreduce import SENTINEL, arun, is_irrelevant, read_documents, run
from conclave.agents.mapreduce.trace import MapAnswer, MapReduceError, MapReduceResult, Merge, Part

__all__ = [
    "Cache", "LocalExecutor", "MapAnswer", "MapReduceConfig", "MapReduceError", "MapReduceResult", "Merge", "Part",
    "RayExecutor", "SENTINEL", "arun", "is_irrelevant", "read_documents", "run",
]
