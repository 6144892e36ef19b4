"""The figure team: AutoGen's Figure Creator rebuilt as an AgentChat GraphFlow.

    coder ──> executor ──(figure written)──> critic ──(issues, rounds left)──> coder
                 │  └──(failed, rounds left)──> coder        │
                 └──(failed, no rounds left)──> commander <──┘(NO_ISSUES, or no rounds left)

The commander sends the brief (the request, the data's schema, the series to show), owns
the loop (the edges' conditions are its rules: the iteration limit and termination on
NO_ISSUES) and gives the final answer. The coder and the critic are AssistantAgents on the
model seam. The executor runs code only through the sandbox. Every iteration lands on the
``Board`` the agents share, which becomes the result.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from autogen_agentchat.agents import AssistantAgent, BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, MultiModalMessage, TextMessage
from autogen_agentchat.teams import DiGraphBuilder, GraphFlow
from autogen_core import CancellationToken, Image
from autogen_core.model_context import HeadAndTailChatCompletionContext

from conclave.agents import sandbox
from conclave.agents.figure.checklist import check, describe
from conclave.agents.figure.execute import run_code
from conclave.agents.figure.replies import extract_code, parse_critique
from conclave.agents.figure.trace import Iteration


@dataclass
class Board:
    """What the team has done so far: one ``Iteration`` per run of the coder's code."""

    limit: int
    series: list[str]
    iterations: list[Iteration] = field(default_factory=list)
    on_event: Callable[[dict], None] = lambda e: None

    @property
    def rounds_left(self) -> bool:
        return len(self.iterations) < self.limit

    def choose(self) -> tuple[int | None, str]:
        """The final figure: the one the critic approved, else the best checklist score (the
        latest on a tie); None when no iteration wrote one."""
        last = self.iterations[-1] if self.iterations else None
        if last is not None and last.approved:
            return last.index, "approved"
        drawn = [it for it in self.iterations if it.status == "figure"]
        return (max(drawn, key=lambda it: (it.score, it.index)).index if drawn else None), "limit"


class Executor(BaseChatAgent):
    """Runs the coder's latest script in the sandbox and says what came of it: the error for
    the coder, or the figure (as a report, and as the image for a vision critic)."""

    def __init__(self, board: Board, data: Path | None, limits: sandbox.Limits, *, vision: bool):
        super().__init__("executor", "Runs the coder's script in the sandbox and describes the figure.")
        self.board, self.data, self.limits, self.vision = board, data, limits, vision

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage, MultiModalMessage)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        reply = next((m.to_model_text() for m in reversed(messages) if m.source == "coder"), "")
        code = extract_code(reply)
        index = len(self.board.iterations)
        series = self.board.series
        if code is None:
            it = Iteration(index, None, "no_code", check(None, series), "the reply held no Python code")
            text = ("Your reply held no Python code. Reply with the whole script in one ```python block "
                    "that saves the figure with plt.savefig('figure.png').")
        else:
            run = await asyncio.to_thread(run_code, code, self.data, self.limits)
            checks = check(run.report, series)
            it = Iteration(index, code, run.status, checks, run.error, run.report, run.png, None, run.seconds)
            if run.status in ("error", "timeout"):
                text = (f"The script failed:\n{run.error}\n\nFix it and reply with the whole corrected script "
                        "in one ```python block.")
            else:
                text = ("The script ran and wrote figure.png.\n" if run.status == "figure" else "") + describe(
                    run.report, series)
        self.board.iterations.append(it)
        self.board.on_event({"kind": "iteration", "index": index, "status": it.status, "score": it.score,
                             "checks": it.checks, "seconds": it.seconds})
        meta = {"status": it.status, "iteration": str(index)}
        if it.png is not None and self.vision:
            from PIL import Image as PILImage

            image = Image.from_pil(PILImage.open(io.BytesIO(it.png)))
            return Response(chat_message=MultiModalMessage(content=[text, image], source=self.name, metadata=meta))
        return Response(chat_message=TextMessage(content=text, source=self.name, metadata=meta))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self.board.iterations.clear()


class Critic(AssistantAgent):
    """An AssistantAgent whose reply is read as a structured critique (issues plus a verdict),
    kept on the iteration it reviews and carried on the message for the graph's edges."""

    def __init__(self, board: Board, **kwargs):
        super().__init__("critic", **kwargs)
        self.board = board

    async def on_messages_stream(self, messages, cancellation_token):
        async for item in super().on_messages_stream(messages, cancellation_token):
            if isinstance(item, Response):
                text = item.chat_message.to_model_text()
                critique = parse_critique(text)
                self.board.iterations[-1].critique = critique.to_dict()
                self.board.on_event({"kind": "critique", "index": len(self.board.iterations) - 1,
                                     **critique.to_dict()})
                item = Response(chat_message=TextMessage(content=text, source=self.name,
                                                         models_usage=item.chat_message.models_usage,
                                                         metadata={"verdict": critique.verdict}),
                                inner_messages=item.inner_messages)
            yield item


class Commander(BaseChatAgent):
    """Sends the brief (the team's task), rules the loop through the graph's edge conditions,
    and has the last word: which figure, and why the loop stopped."""

    def __init__(self, board: Board):
        super().__init__("commander", "Owns the loop and gives the final answer.")
        self.board = board

    # edge conditions: each reads only the message it is given and the board
    def drew(self, m: BaseChatMessage) -> bool:
        return m.metadata.get("status") == "figure"

    def retry(self, m: BaseChatMessage) -> bool:
        return not self.drew(m) and self.board.rounds_left

    def give_up(self, m: BaseChatMessage) -> bool:
        return not self.drew(m) and not self.board.rounds_left

    def revise(self, m: BaseChatMessage) -> bool:
        return m.metadata.get("verdict") != "NO_ISSUES" and self.board.rounds_left

    def finish(self, m: BaseChatMessage) -> bool:
        return not self.revise(m)

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        return Response(chat_message=TextMessage(content=self.answer(), source=self.name))

    def answer(self) -> str:
        final, stopped = self.board.choose()
        n = len(self.board.iterations)
        if final is None:
            return f"No figure: none of the {n} iterations wrote figure.png."
        it = self.board.iterations[final]
        why = ("the critic found no issues" if stopped == "approved" else
               f"the limit of {self.board.limit} iterations was reached; it has the best checklist score")
        return f"Final figure: iteration {final} ({why}); checklist score {it.score:.2f} after {n} iterations."

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        pass


def build(board: Board, coder_client, critic_client, *, coder_system: str, critic_system: str, data: Path | None,
          limits: sandbox.Limits, vision: bool) -> tuple[GraphFlow, Commander]:
    # the coder reads the brief and the latest round (its script, the run, the critique);
    # the critic reads the brief and the run it reviews
    coder = AssistantAgent("coder", model_client=coder_client, system_message=coder_system,
                           model_context=HeadAndTailChatCompletionContext(head_size=1, tail_size=3))
    critic = Critic(board, model_client=critic_client, system_message=critic_system,
                    model_context=HeadAndTailChatCompletionContext(head_size=1, tail_size=1))
    executor = Executor(board, data, limits, vision=vision)
    commander = Commander(board)
    g = DiGraphBuilder()
    for agent in (coder, executor, critic, commander):
        g.add_node(agent)
    g.add_edge(coder, executor)
    g.add_edge(executor, critic, condition=commander.drew)
    g.add_edge(executor, coder, condition=commander.retry, activation_group="revise", activation_condition="any")
    g.add_edge(executor, commander, condition=commander.give_up, activation_group="done", activation_condition="any")
    g.add_edge(critic, coder, condition=commander.revise, activation_group="revise", activation_condition="any")
    g.add_edge(critic, commander, condition=commander.finish, activation_group="done", activation_condition="any")
    g.set_entry_point(coder)
    # a bound past the longest legal path (coder, executor, critic per round, then the answer):
    # the edges end the run; this only stops a graph bug from looping
    flow = GraphFlow(g.get_participants(), graph=g.build(), max_turns=3 * board.limit + 2)
    return flow, commander
