"""Past runs read back: each workflow's stored result as its own result type, and its report
(``conclave runs``, the UI)."""

from __future__ import annotations

import json

from agents.evoprompt import EvoResult
from agents.figure import FigureResult
from agents.flare.trace import FlareResult
from agents.losslab import LossLabResult
from agents.mapreduce import MapReduceResult
from app.store import Run

RESULTS = {"evoprompt": EvoResult, "mapreduce": MapReduceResult, "flare": FlareResult, "losslab": LossLabResult,
           "figure": FigureResult}


def result(run: Run):
    """The run's result as its workflow's result type; None when it has none, and the plain
    JSON for a workflow without one."""
    if run.result is None:
        return None
    kind = RESULTS.get(run.workflow)
    return kind.from_dict(run.result) if kind else run.result


def report(run: Run) -> str:
    """Markdown: the workflow's own report, or the result as JSON."""
    r = result(run)
    if r is None:
        return f"_No result: the run is {run.status}{': ' + run.error if run.error else ''}._"
    return r.report() if hasattr(r, "report") else f"```json\n{json.dumps(r, indent=1, ensure_ascii=False)}\n```"
