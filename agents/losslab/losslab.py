"""Loss discovery after DiscoPOP (Lu et al. 2024): a model proposes preference-optimisation
losses as code; each is gated and trained in the sandbox, and its fitness (or the reason it
failed: the gate's message, or the traceback with the stderr tail) goes back into the same
conversation, which keeps the history, as in the paper. The archive starts with the built-in
losses and their fitness.

Every judged candidate is a checkpoint: ``run(..., resume=state)`` continues after it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from conclave.prompts import loader as prompts
from conclave.agents.llm import LLM, UnsupportedFeature
from conclave.agents.losslab import losses
from conclave.agents.losslab.config import LossLabConfig
from conclave.agents.losslab.fitness import Verdict, judge, weights
from conclave.agents.losslab.gate import REQUIRED
from conclave.agents.losslab.trace import Candidate, LossLabError, LossLabResult
from conclave.agents.memo import Memo

Event = Callable[[dict], None]
Checkpoint = Callable[[int, dict], None]
KEEP_EXCHANGES = 4  # proposals kept in the conversation when the model cannot count tokens


class ProposalError(Exception):
    pass


@dataclass(frozen=True)
class Proposal:
    thought: str
    name: str
    code: str


def parse_proposal(text: str) -> Proposal:
    """The {thought, name, code} object in a reply. Models wrap it in a code fence, add prose,
    or write raw newlines inside the code string; all of that is read. A reply with no JSON
    but a fenced Python block that defines a function is taken as that code."""
    decoder = json.JSONDecoder(strict=False)
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("code"), str) and obj["code"].strip():
            name = obj.get("name") if isinstance(obj.get("name"), str) and obj["name"].strip() else _def_name(obj["code"])
            thought = obj.get("thought") if isinstance(obj.get("thought"), str) else ""
            return Proposal(thought.strip(), _clean_name(name), _unfence(obj["code"]))
    # the first fenced block that defines a function (small models open with an empty one, and
    # a reply cut at its token budget leaves the last fence open)
    for block in re.finditer(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", text, re.S):
        if re.search(r"^def \w+\(", block.group(1), re.M):
            code = block.group(1)
            return Proposal("", _clean_name(_def_name(code)), code)
    raise ProposalError('the reply holds no JSON object with a "code" field; answer with '
                        '{"thought": "...", "name": "...", "code": "..."} only')


def _unfence(code: str) -> str:
    m = re.fullmatch(r"\s*```(?:python|py)?\s*\n(.*?)```\s*", code, re.S)
    return (m.group(1) if m else code).strip("\n") + "\n"


def _def_name(code: str) -> str:
    m = re.search(r"def (\w+)\(", code)
    return m.group(1) if m else "unnamed"


def _clean_name(name: str) -> str:
    return re.sub(r"\W+", "_", name.strip()).strip("_")[:60] or "unnamed"


def run(config: LossLabConfig, llm: LLM | None, *, cache: Memo | None = None, on_event: Event | None = None,
        checkpoint: Checkpoint | None = None, resume: dict | None = None, data_dir: Path | None = None) -> LossLabResult:
    """``llm`` proposes (None only with ``candidates = 0``: the built-ins alone). ``cache``
    keeps verdicts across runs. ``checkpoint(i, state)`` follows every judged candidate;
    ``resume`` is such a state. ``data_dir`` holds the weights the language-model task trains."""
    emit = on_event or (lambda e: None)
    if config.candidates and llm is None:
        raise LossLabError("proposing losses needs a model")
    weights(config, data_dir)  # a missing model fails now, not inside every candidate
    t0 = time.perf_counter()
    state = _restore(config, resume) if resume else {"candidates": [], "tokens": 0, "wall_s": 0.0}
    done: list[Candidate] = state["candidates"]
    tokens, wall_before = state["tokens"], state["wall_s"]

    def save() -> None:
        if checkpoint is not None:
            checkpoint(len(done), {"config": config.model_dump(mode="json"), "candidates": [asdict(c) for c in done],
                                   "tokens": tokens, "wall_s": wall_before + time.perf_counter() - t0})

    def add(c: Candidate) -> None:
        done.append(c)
        best = max((x.fitness for x in done if x.valid and x.origin == "proposed"), default=None)
        emit({"kind": "candidate", "index": c.index, "origin": c.origin, "name": c.name, "valid": c.valid,
              "stage": c.stage, "fitness": c.fitness, "error": c.error, "best": best,
              "proposed": sum(x.origin == "proposed" for x in done), "candidates": config.candidates})
        save()

    emit({"kind": "start", "baselines": list(config.baselines), "candidates": config.candidates,
          "done": sum(c.origin == "proposed" for c in done)})
    for name in config.baselines:
        if any(c.origin == "builtin" and c.name == name for c in done):
            continue
        code = losses.source(name)
        add(_candidate(len(done), "builtin", name, code, judge(code, config, cache, data_dir)))
    dpo = next((c for c in done if c.name == "dpo" and c.origin == "builtin" and c.valid), None)
    archive = [c for c in done if c.origin == "builtin"]
    ref, messages = _conversation(config, archive)
    for c in done:
        if c.origin == "proposed":
            messages += _exchange(c, dpo)
    while sum(c.origin == "proposed" for c in done) < config.candidates:
        n = sum(c.origin == "proposed" for c in done)
        emit({"kind": "proposing", "proposal": n + 1, "candidates": config.candidates})
        reply = llm.chat(_fit(llm, messages, config), prompt_ref=ref, temperature=config.temperature,
                         max_tokens=config.max_tokens, seed=config.seed + n)
        tokens += reply.usage.total_tokens
        try:
            p = parse_proposal(reply.text)
        except ProposalError as e:
            c = _candidate(len(done), "proposed", "unparsed", "", Verdict(False, "parse", str(e)))
        else:
            c = _candidate(len(done), "proposed", p.name, p.code, judge(p.code, config, cache, data_dir), p.thought)
        c.reply = reply.text
        add(c)
        messages += _exchange(c, dpo)
    return LossLabResult(config.model_dump(mode="json"), llm.model if llm is not None else "-", done, tokens,
                         wall_before + time.perf_counter() - t0)


def _candidate(index: int, origin: str, name: str, code: str, v: Verdict, thought: str = "") -> Candidate:
    return Candidate(index, origin, name, code, v.valid, v.stage, v.error, v.fitness, v.per_seed, v.trajectories,
                     thought, seconds=v.seconds)


def _task_text(config: LossLabConfig) -> str:
    if config.fitness == "lm":
        m = config.lm
        return (f"a small language model is fine-tuned with your loss for {m.steps} steps (beta = {m.beta}) on pairs "
                f"of sampled movie-review continuations, the more positive one chosen by a sentiment classifier; "
                f"fitness is the gain in the classifier's mean positive probability while the estimated "
                f"KL(policy || reference) stays at most {m.kl_budget} nats. A loss that is not finite, has the wrong "
                "shape or gives no gradient fails.")
    s = config.synthetic
    return (f"a small policy over {s.responses} candidate responses per prompt is trained with your loss for "
            f"{s.steps} steps (beta = {s.beta}) on {s.pairs} preference pairs labelled by a hidden reward; fitness is "
            f"the reward gained while KL(policy || reference) stays at most {s.kl_budget}, as a share of the largest "
            f"possible gain. A loss that is not finite, has the wrong shape or gives no gradient fails.")


def _conversation(config: LossLabConfig, archive: list[Candidate]) -> tuple[str, list[dict]]:
    """The template's id@version, and its first two turns: the task, then the archive."""
    entries = [{"name": c.name, "code": c.code, "fitness": None if c.fitness is None else round(c.fitness, 4)}
               for c in archive]
    r = prompts.render("losslab_propose", signature=REQUIRED, task=_task_text(config),
                       archive=json.dumps(entries, indent=1))
    return r.ref, list(r.messages)


def _exchange(c: Candidate, dpo: Candidate | None) -> list[dict]:
    fb = prompts.render("losslab_feedback", name=c.name, fitness=c.fitness, baseline=dpo.fitness if dpo else 0.0,
                        error=None if c.valid else c.error, stage=_stage_words(c.stage))
    return [{"role": "assistant", "content": c.reply}, {"role": "user", "content": fb.text}]


def _stage_words(stage: str) -> str:
    return {"parse": "to parse", "load": "to load", "gate": "the validation gate", "train": "during training",
            "sandbox": "in the sandbox"}.get(stage, stage)


def _fit(llm: LLM, messages: list[dict], config: LossLabConfig) -> list[dict]:
    """The conversation trimmed to the model's context: the system turn and the archive always,
    then as many of the latest exchanges as fit beside the answer's budget."""
    head, rest = messages[:2], messages[2:]
    try:
        room = llm.context_length - config.max_tokens
        while rest and llm.count_tokens(head + rest) > room:
            rest = rest[2:]
        if llm.count_tokens(head + rest) > room:
            raise LossLabError(f"the system prompt and archive alone take more than the {room} tokens "
                               f"{llm.model} has beside a {config.max_tokens}-token answer; "
                               "use fewer baselines or a model with a longer context")
    except UnsupportedFeature:
        rest = rest[-2 * KEEP_EXCHANGES:]
    return head + rest


def _restore(config: LossLabConfig, s: dict) -> dict:
    if s.get("config") != config.model_dump(mode="json"):
        raise LossLabError("the checkpoint was made with another configuration; resume with the run's own")
    return {"candidates": [Candidate(**c) for c in s["candidates"]], "tokens": s["tokens"], "wall_s": s["wall_s"]}
