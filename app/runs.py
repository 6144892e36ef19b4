"""Past runs read back: each workflow's stored result as its own result type, and its report
(``conclave runs``, the UI)."""

from __future__ import annotations

import json

from conclave.agents.evoprompt import EvoResult
from conclave.agents.figure import FigureResult
from conclave.agents.flare.trace import FlareResult
from conclave.agents.legal_audit import AuditResult
from conclave.agents.losslab import LossLabResult
from conclave.agents.mapreduce import MapReduceResult
from conclave.agents.modellab import RECIPES as LAB_RECIPES
from conclave.agents.modellab import LabResult
from conclave.app.store import Run

RESULTS = {"evoprompt": EvoResult, "mapreduce": MapReduceResult, "flare": FlareResult, "losslab": LossLabResult,
           "figure": FigureResult, "legal_audit": AuditResult} | {name: LabResult for name in LAB_RECIPES}


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


def present(result, run_id: str, store, *, console, status, out_file=None, plot=None, plot_name: str = "plot") -> None:
    """How a CLI run ends: the report on stdout, where the run is stored, and the JSON and plot
    if asked for."""
    from rich.markdown import Markdown

    console.print(Markdown(result.report()))
    status.print(f"[dim]run {run_id[:8]} in {store.path}[/]")
    if out_file:
        out_file.write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    if plot:
        result.plot(plot)
        status.print(f"[dim]{plot_name}: {plot}[/]")
