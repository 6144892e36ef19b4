"""A candidate loss judged: the gate and the fitness task, run in the sandbox, never in-process.
Verdicts are cached by (code, task settings), so the built-ins are trained once per setting."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from conclave.agents import sandbox
from conclave.agents.losslab.config import LossLabConfig
from conclave.agents.losslab.gate import GateError, check_source
from conclave.agents.losslab.trace import LossLabError
from conclave.agents.memo import Memo, digest

STDERR_TAIL = 1500  # characters of the sandbox's stderr sent back with a failure


@dataclass
class Verdict:
    valid: bool
    stage: str  # where judging stopped: parse, load, gate, train, sandbox, done
    error: str | None = None
    fitness: float | None = None
    per_seed: list[float] = field(default_factory=list)
    trajectories: list[list[list[float]]] = field(default_factory=list)  # per seed: [step, KL, reward]
    seconds: float = 0.0


def judge(code: str, config: LossLabConfig, cache: Memo | None = None, data_dir: Path | None = None) -> Verdict:
    """``data_dir``: where the catalog's weights are, for the language-model task."""
    try:
        check_source(code)  # reads the code without running it: a malformed proposal costs no subprocess
    except GateError as e:
        return Verdict(False, "load", str(e))
    key = digest("losslab-verdict", 3, code, config.fitness, config.task.model_dump(mode="json"))
    if cache is not None and (hit := cache.get(key)) is not None:
        return Verdict(**hit)
    verdict = _in_sandbox(code, config, data_dir)
    if cache is not None and verdict.stage != "sandbox":  # a timeout may be the machine's fault: try again next time
        cache.put(key, asdict(verdict))
    return verdict


def weights(config: LossLabConfig, data_dir: Path | None) -> str | None:
    """The language-model task's GGUF, checked before any candidate is judged."""
    if config.fitness != "lm":
        return None
    from conclave.local_models import catalog

    model = catalog.CATALOG.get(config.lm.model)
    if model is None or model.arch != "llama":
        llamas = ", ".join(m.name for m in catalog.CATALOG.values() if m.arch == "llama")
        raise LossLabError(f"the language-model task needs a llama-architecture catalog model ({llamas}), "
                           f"not {config.lm.model!r}")
    if data_dir is None or not catalog.is_installed(model, Path(data_dir)):
        raise LossLabError(f"{model.name} is not installed: conclave models pull {model.name}")
    path = catalog.weights_path(model, Path(data_dir))
    from conclave.local_models.torch_lm import dequantize

    dequantize(path)  # once, here: the sandbox's file-size limit keeps candidates from writing it
    return str(path)


def _in_sandbox(code: str, config: LossLabConfig, data_dir: Path | None) -> Verdict:
    job = {"code": code, "fitness": config.fitness, "task": config.task.model_dump(mode="json"),
           "weights": weights(config, data_dir)}
    seconds, memory = config.limits
    threads = config.lm.threads if config.fitness == "lm" else 1
    out = sandbox.run_python(["-m", "conclave.agents.losslab.worker"], files={"job.json": json.dumps(job)},
                             collect=("result.json",),
                             limits=sandbox.Limits(timeout_s=seconds, memory_mb=memory, threads=threads))
    if "result.json" not in out.files:
        return Verdict(False, "sandbox", out.failure()[-STDERR_TAIL:], seconds=out.wall_s)
    r = json.loads(out.files["result.json"])
    error = r["error"]
    if error and r["stage"] == "train" and out.stderr.strip():
        error += "\nstderr (last lines):\n" + out.stderr.strip()[-STDERR_TAIL:]
    return Verdict(r["stage"] == "done", r["stage"], error, r.get("fitness"), r.get("per_seed", []),
                   r.get("trajectories", []), r.get("seconds", out.wall_s))
