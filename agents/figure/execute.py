"""One iteration's code, run in the sandbox under the harness: the only way figure code runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from conclave.agents import sandbox

HARNESS = Path(__file__).with_name("harness.py").read_text(encoding="utf-8")
RESERVED = ("_harness.py", "figure_code.py", "report.json", "figure.png")
TRACEBACK_CHARS = 3000  # the tail the coder gets back: enough for the frames that matter


@dataclass
class CodeRun:
    status: str  # figure | no_figure | error | timeout
    error: str | None
    report: dict | None
    png: bytes | None
    seconds: float
    network_isolated: bool = False


def run_code(code: str, data: Path | None, limits: sandbox.Limits) -> CodeRun:
    files: dict[str, str | bytes] = {"_harness.py": HARNESS, "figure_code.py": code}
    if data is not None:
        files[data.name] = data.read_bytes()
    out = sandbox.run_python(["_harness.py", "figure_code.py"], files=files, collect=("report.json", "figure.png"),
                             limits=limits)
    if "report.json" not in out.files:
        return CodeRun("timeout" if out.timed_out else "error", out.failure()[-TRACEBACK_CHARS:], None, None,
                       out.wall_s, out.network_isolated)
    report = json.loads(out.files["report.json"])
    png = out.files.get("figure.png")
    if not report["ran"]:
        status, error = "error", (report["error"] or out.failure())[-TRACEBACK_CHARS:]
    elif not report["written"]:
        status, error = "no_figure", None
    elif png is None or not png.startswith(b"\x89PNG"):
        big = report["bytes"] > 10 * limits.output_bytes
        status, error = "error", (f"figure.png is {report['bytes'] / 1e6:.1f} MB, over the {limits.output_bytes / 1e5:.1f} MB "
                                  "limit: lower the dpi or the figure size" if big else
                                  "figure.png is not a PNG image: save it with plt.savefig('figure.png')")
    else:
        status, error = "figure", None
    return CodeRun(status, error, report, png if status == "figure" else None, out.wall_s, out.network_isolated)
