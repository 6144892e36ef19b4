"""``run``: one request through the figure team, from the brief to the chosen figure."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from autogen_agentchat.messages import BaseChatMessage, TextMessage

from conclave.prompts import loader as prompts
from conclave.agents import sandbox
from conclave.agents.agentchat import SeamClient
from conclave.agents.figure.config import FigureConfig, FigureError
from conclave.agents.figure.data import describe
from conclave.agents.figure.execute import RESERVED
from conclave.agents.figure.team import Board, build
from conclave.agents.figure.trace import FigureResult
from conclave.agents.llm import LLM

SEES = {"report": "a report of what the figure holds, taken from the figure the code drew (you do not see the image)",
        "image": "the figure as an image, with a report of what it holds"}


def run(config: FigureConfig, coder: LLM, critic: LLM | None = None, *, on_event=None) -> FigureResult:
    """The team's run, synchronously; ``arun`` is the same inside an event loop. Called where a
    loop is already running (a notebook, Playwright), it runs on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(config, coder, critic, on_event=on_event))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, arun(config, coder, critic, on_event=on_event)).result()


async def arun(config: FigureConfig, coder: LLM, critic: LLM | None = None, *, on_event=None) -> FigureResult:
    """``critic`` defaults to the coder's model. ``on_event`` gets {"kind": "start" | "message"
    | "iteration" | "critique", ...} as the team works."""
    emit = on_event or (lambda e: None)
    critic = critic or coder
    t0 = time.perf_counter()
    info = describe(config.data) if config.data is not None else None
    if info is not None and info.name in RESERVED:
        raise FigureError(f"data file {info.name}: the sandbox uses that name; rename the file")
    series = config.series or (info.named_in(config.request) if info else [])
    brief = prompts.render("figure_coder", request=config.request, schema=info.schema() if info else "", series=series)
    critic_prompt = prompts.render("figure_critic", sees=SEES[config.critic_sees])
    gen = {"temperature": config.temperature, "seed": config.seed}
    coder_client = SeamClient(coder, prompt_ref=brief.ref, max_tokens=config.coder_max_tokens, **gen)
    critic_client = SeamClient(critic, vision=config.critic_sees == "image", prompt_ref=critic_prompt.ref,
                               max_tokens=config.critic_max_tokens, **gen)
    board = Board(config.max_iterations, series, on_event=emit)
    limits = sandbox.Limits(timeout_s=config.timeout_s, memory_mb=config.memory_mb, output_bytes=200_000)
    flow, commander = build(board, coder_client, critic_client, coder_system=brief.messages[0]["content"],
                            critic_system=critic_prompt.messages[0]["content"], data=config.data, limits=limits,
                            vision=config.critic_sees == "image")
    emit({"kind": "start", "series": series, "max_iterations": config.max_iterations})
    transcript = []
    with _quiet("autogen_core"):
        try:
            async for item in flow.run_stream(task=TextMessage(content=brief.messages[1]["content"],
                                                               source="commander")):
                if isinstance(item, BaseChatMessage):
                    transcript.append({"source": item.source, "text": item.to_model_text()})
                    emit({"kind": "message", **transcript[-1]})
        except Exception:
            failure = coder_client.failure or critic_client.failure
            if failure is not None:
                raise failure from None  # the model's own error, not AgentChat's rewrap of its text
            raise
    final, stopped = board.choose()
    answer = transcript[-1]["text"] if transcript and transcript[-1]["source"] == "commander" else commander.answer()
    used = [c.total_usage() for c in (coder_client, critic_client)]
    return FigureResult(config.model_dump(mode="json"), coder.model, critic.model, board.iterations, final, stopped,
                        answer, transcript, sum(u.prompt_tokens + u.completion_tokens for u in used),
                        time.perf_counter() - t0)


@contextmanager
def _quiet(logger: str):
    """AgentChat's runtime logs every agent error as a traceback, then the team re-raises it:
    the error reaches the caller once, as itself."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)
