"""Where model calls run: in this process through the seam's async API, or on Ray workers.

An executor makes one call; the run decides what to call, how many at once, and what
to cache, so both executors give identical results for the same model answers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable, Protocol

from conclave.agents.llm import LLM
from conclave.agents.mapreduce.cache import Answer


@dataclass(frozen=True)
class Call:
    messages: list[dict]
    prompt_ref: str
    params: dict  # max_tokens, temperature, seed


class Executor(Protocol):
    async def call(self, llm: LLM, call: Call) -> Answer: ...


class LocalExecutor:
    async def call(self, llm: LLM, call: Call) -> Answer:
        return Answer.of(await llm.achat(call.messages, prompt_ref=call.prompt_ref, **call.params))


class RayExecutor:
    """Each call is a Ray task. A worker cannot be handed the driver's model (an open
    llama.cpp context or HTTP client does not pickle), so it builds its own, once, with
    ``make_llm``: a picklable function of no arguments, such as
    ``functools.partial(agents.backends.open_llm, "openai:m", base_url=..., data_dir=...)``
    for a served model, or the same with a catalog name, which loads the weights in each
    worker process. Its calls are logged through the driver's sink, as local ones are.

    ``num_cpus`` is what each call reserves: 1 for an in-process model; a fraction for
    a served one, whose work happens on the server. Ray is started (``ray.init(**init)``)
    unless it already is.
    """

    def __init__(self, make_llm: Callable[[], LLM], *, num_cpus: float = 1.0, **init):
        import ray

        if not ray.is_initialized():
            ray.init(**init)
        self._ray = ray
        self._make_llm = ray.put(make_llm)  # shipped once, not with every task
        self._key = uuid.uuid4().hex  # which of a worker's cached models is this executor's
        self._task = ray.remote(num_cpus=num_cpus, max_retries=0)(_call_in_worker)

    async def call(self, llm: LLM, call: Call) -> Answer:
        try:
            answer, records = await self._task.remote(self._make_llm, self._key, call)
        except self._ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            raise (cause if isinstance(cause, Exception) else e) from None  # the model's own error, not Ray's wrapper
        if llm.sink is not None:
            for rec in records:
                llm.sink(rec)
        return answer


_worker_llms: dict[str, LLM] = {}


def _call_in_worker(make_llm, key: str, call: Call):
    llm = _worker_llms.get(key)
    if llm is None:
        llm = _worker_llms[key] = make_llm()
    records: list = []
    llm.sink = records.append  # handed back to the driver's call log
    out = llm.chat(call.messages, prompt_ref=call.prompt_ref, **call.params)
    return Answer.of(out), records
