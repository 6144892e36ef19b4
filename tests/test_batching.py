"""Continuous batching on the real model: batched sequences give what each gives alone."""

import threading

import pytest

from conclave.local_models.batching import Job, Overloaded, PromptLogprobs, Scheduler
from conclave.local_models.errors import ContextOverflow
from conclave.local_models.generate import GenParams, generate, score
from conclave.local_models.llamacpp import LlamaCppEngine

PROMPTS = ["The three primary colors are", "Once upon a time", "def fibonacci(n):", "In 1492,", "My favourite food is", "Water boils at"]


@pytest.fixture(scope="module")
def engine(smollm2_path):
    return LlamaCppEngine(smollm2_path, n_ctx=1024, n_slots=3, n_batch=64)


class Collector:
    def __init__(self, n):
        self.events = [[] for _ in range(n)]
        self.left = n
        self.done = threading.Event()

    def sink(self, i):
        def put(ev):
            self.events[i].append(ev)
            if isinstance(ev, Exception) or getattr(ev, "finish_reason", None):
                self.left -= 1
                if not self.left:
                    self.done.set()
        return put

    def text(self, i):
        return "".join(e.text for e in self.events[i] if hasattr(e, "text"))


def test_batched_greedy_equals_one_at_a_time(engine):
    alone = ["".join(c.text for c in generate(engine, engine.tokenize(p, add_bos=False), GenParams(max_tokens=40, temperature=0))) for p in PROMPTS]
    sched = Scheduler(engine)
    got = Collector(len(PROMPTS))
    for i, p in enumerate(PROMPTS):  # more requests than slots, and prompts longer than a step's budget
        sched.submit(Job(engine.tokenize(p * 8, add_bos=False)[-70:] if i == 0 else engine.tokenize(p, add_bos=False),
                         GenParams(max_tokens=40, temperature=0), got.sink(i)))
    assert got.done.wait(120)
    sched.close()
    assert [got.text(i) for i in range(1, len(PROMPTS))] == alone[1:]
    assert all(got.events[i][-1].completion_tokens == 40 or got.events[i][-1].finish_reason == "stop" for i in range(len(PROMPTS)))


def test_echo_gives_the_prompts_own_logprobs(engine):
    sched = Scheduler(engine)
    got = Collector(1)
    prompt = "The capital of France is Paris"
    tokens = engine.tokenize(prompt, add_bos=False)
    sched.submit(Job(tokens, GenParams(max_tokens=1, top_logprobs=1), got.sink(0), echo=True, generate=False))
    assert got.done.wait(60)
    sched.close()
    (echo,) = [e for e in got.events[0] if isinstance(e, PromptLogprobs)]
    assert len(echo.tokens) == len(tokens) and echo.tokens[0] is None
    (ref,) = score(engine, "The capital of France is", [" Paris"])
    assert echo.tokens[-1].logprob == pytest.approx(ref.logprob, abs=1e-4)
    assert got.events[0][-1].completion_tokens == 0


def test_cancelled_jobs_free_their_slot(engine):
    sched = Scheduler(engine)
    got = Collector(1)
    job = Job(engine.tokenize("1, 2, 3,", add_bos=False), GenParams(max_tokens=900, temperature=0), got.sink(0))
    sched.submit(job)
    while not got.events[0]:
        threading.Event().wait(0.01)
    job.cancel()
    for _ in range(200):
        if sched.stats()["active"] == 0:
            break
        threading.Event().wait(0.02)
    assert sched.stats() == {"slots": 3, "active": 0, "queued": 0}
    assert not any(getattr(e, "finish_reason", None) for e in got.events[0])
    sched.close()


def test_the_queue_is_bounded_and_bad_jobs_are_refused_up_front(engine):
    sched = Scheduler(engine, max_queue=2)
    got = Collector(5)
    with pytest.raises(ValueError, match="empty"):
        sched.submit(Job([], GenParams(), got.sink(0)))
    with pytest.raises(ContextOverflow):
        sched.submit(Job([1] * 2000, GenParams(), got.sink(0)))
    jobs = [Job(engine.tokenize("Tell me a story.", add_bos=False), GenParams(max_tokens=200), got.sink(i)) for i in range(5)]
    with sched._cv:  # hold the loop still so that nothing is admitted meanwhile
        sched.submit(jobs[0])
        sched.submit(jobs[1])
        with pytest.raises(Overloaded):
            sched.submit(jobs[2])
    for job in jobs[:2]:
        job.cancel()
    sched.close()
