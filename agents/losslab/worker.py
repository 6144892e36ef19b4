"""One candidate loss, judged inside the sandbox: ``python -I -m agents.losslab.worker``.

Reads ``job.json`` ({"code", "fitness", "task", "weights"}) from the working directory, and writes
``result.json``: the stage reached (load, gate, train, done), the error if one stopped it,
and the fitness with its per-seed values and trajectories. A crash the worker cannot catch
(a kill, a limit) leaves no result; the caller then reports the sandbox's stderr.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import traceback


def judge(job: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from conclave.agents.losslab.gate import GateError, check_function, check_source
    from conclave.agents.losslab.synthetic import TrainingFailed

    torch.set_num_threads(1)
    out = {"stage": "load", "error": None}
    try:
        name = check_source(job["code"])
        scope = {"torch": torch, "F": F, "math": math, "__name__": "candidate"}
        exec(compile(job["code"], "<candidate>", "exec"), scope)  # this process is the sandbox
        fn = scope[name]
        out["stage"] = "gate"
        check_function(fn)
        out["stage"] = "train"
        per_seed, trajectories = (_synthetic if job["fitness"] == "synthetic" else _lm)(fn, job)
        out |= {"stage": "done", "fitness": statistics.fmean(per_seed), "per_seed": per_seed,
                "trajectories": trajectories}
    except (GateError, TrainingFailed) as e:
        out["error"] = str(e)
    except Exception:
        out["error"] = _short_traceback()
    return out


def _synthetic(fn, job: dict) -> tuple[list[float], list]:
    from conclave.agents.losslab.config import SyntheticConfig
    from conclave.agents.losslab.synthetic import headroom, reward_at_kl, train

    c = SyntheticConfig(**job["task"])
    per_seed, trajectories = [], []
    for seed in c.seeds:
        tr = train(fn, c, seed)
        trajectories.append(tr)
        per_seed.append(reward_at_kl(tr, c.kl_budget) / headroom(c, seed))
    return per_seed, trajectories


def _lm(fn, job: dict) -> tuple[list[float], list]:
    from conclave.agents.losslab.config import LMConfig
    from conclave.agents.losslab.lm import Experiment
    from conclave.agents.losslab.synthetic import reward_at_kl

    c = LMConfig(**job["task"])
    tr = Experiment(c, job["weights"]).train(fn, c.beta)
    return [reward_at_kl(tr, c.kl_budget)], [tr]


def _short_traceback() -> str:
    """The traceback from the candidate's own frames on: the harness's frames say nothing to its author."""
    lines = traceback.format_exc().splitlines()
    start = next((i for i, line in enumerate(lines) if '"<candidate>"' in line), 1)
    return "\n".join(lines[:1] + lines[start:])


if __name__ == "__main__":
    t0 = time.perf_counter()
    with open("job.json", encoding="utf-8") as f:
        result = judge(json.load(f))
    result["seconds"] = time.perf_counter() - t0
    with open("result.json", "w", encoding="utf-8") as f:
        json.dump(result, f)
