"""The objective checklist every iteration is scored on, and the figure report a text-only
critic reads. Both come from the harness's ``report.json``, not from any model's opinion."""

from __future__ import annotations

import re

ITEMS = {
    "runs": "the code runs",
    "figure_written": "a figure is written to figure.png",
    "series_present": "the requested series are present",
    "title_and_labels": "there is a title and axis labels",
    "legend": "there is a legend when there are several series",
    "ticks_readable": "no tick labels overlap",
}
# series kinds that carry no x/y axis labels of their own, or need no legend entry
_NO_AXES = {"pie", "image"}
_GROUPS = {"bar": "bars", "box": "boxes", "violin": "violins", "pie": "wedges"}  # one call, many shapes
_PLOTTED = {"line", "markers", "scatter", "area", *_GROUPS} - {"pie"}


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", s.lower()).split())


def _data_axes(fig: dict) -> list[dict]:
    return [ax for ax in fig["axes"] if ax["series"] and not ax["colorbar"]]


def plotted(ax: dict) -> list[dict]:
    """The axes' data series: a line, a scatter, one bar() call, a filled area, one box plot."""
    return [s for s in ax["series"] if s["kind"] in _PLOTTED
            and (s["label"] or s["kind"] in _GROUPS or s.get("points", 0) > 2)]


def check(report: dict | None, series: list[str]) -> dict[str, bool]:
    """Each item of ``ITEMS``: True when it holds. Items after the first two are judged on the
    figure written to figure.png; with none written they fail."""
    return {k: not why for k, why in findings(report, series).items()}


def findings(report: dict | None, series: list[str]) -> dict[str, list[str]]:
    """Per item, what is wrong, each as an instruction the coder can act on; empty when it holds."""
    if report is None:
        return {k: ["no script ran"] for k in ITEMS}
    fig = report.get("figure") if report.get("written") else None
    out = {"runs": [] if report["ran"] else ["the script failed"],
           "figure_written": [] if report["written"] and report["bytes"] > 0 else ["save it with plt.savefig('figure.png')"]}
    axes = _data_axes(fig) if fig else []
    if not axes:
        return out | {k: ["no figure with data was written"] for k in ITEMS if k not in out}
    words = [fig["suptitle"], *fig["legends"]]
    for ax in axes:
        words += [ax["title"], ax["xlabel"], ax["ylabel"], *ax["legend"], *ax["xticks"], *ax["yticks"],
                  *(s["label"] or "" for s in ax["series"])]
    seen = " " + " ".join(_norm(w) for w in words if w) + " "
    missing = [s for s in series if f" {_norm(s)} " not in seen]
    out["series_present"] = [f"show and label the series {', '.join(missing)}"] if missing else []
    single = len(axes) == 1
    out["title_and_labels"], out["legend"], out["ticks_readable"] = [], [], []
    for i, ax in enumerate(fig["axes"], 1):
        where = f" (axes {i})" if len(fig["axes"]) > 1 else ""
        if ax in axes:
            needs = [("title", ax["title"] or (single and fig["suptitle"]))]
            if not all(s["kind"] in _NO_AXES for s in ax["series"]):
                needs += [("x label", ax["xlabel"]), ("y label", ax["ylabel"])]
            absent = [name for name, text in needs if not text]
            # a label cut off at the image's edge is not there for a reader
            cut = [name for name, text in needs if text and name in ax["cut_off"]]
            if absent:
                out["title_and_labels"].append(f"add the {' and the '.join(absent)}{where}")
            if cut:
                out["title_and_labels"].append(f"the {' and the '.join(cut)}{where} is cut off at the edge of the "
                                               "image: call plt.tight_layout() before saving")
            n = len(plotted(ax))
            if n >= 2 and not ax["legend"] and not fig["legends"]:
                out["legend"].append(f"add a legend: {n} series are drawn{where}")
        for axis in ("x", "y"):
            if ax[f"{axis}ticks_overlap"]:
                out["ticks_readable"].append(f"{ax[f'{axis}ticks_overlap']} pairs of {axis} tick labels overlap{where}: "
                                             "rotate them, or show fewer")
    return out


def score(checks: dict[str, bool]) -> float:
    return sum(checks.values()) / len(ITEMS)


def _series_line(s: dict) -> str:
    bits = [s["kind"] + (f" {s['label']!r}" if s["label"] else " (no label)")]
    if "points" in s:
        bits.append(f"{s['points']} {_GROUPS.get(s['kind'], 'points')}")
    for axis in ("x", "y", "values"):
        if s.get(axis):
            lo, hi = s[axis]
            bits.append(f"{axis} {lo:.4g}..{hi:.4g}" if isinstance(lo, float) else f"{axis} {lo}..{hi}")
    if "shape" in s:
        bits.append("shape " + "x".join(map(str, s["shape"])))
    return ", ".join(bits)


def describe(report: dict, series: list[str]) -> str:
    """The figure as text: what a critic without vision reviews, and what the coder reads back."""
    lines = []
    if not report["written"]:
        lines.append("The code ran but wrote no figure.png: call plt.savefig('figure.png')."
                     + (f" It saved to: {', '.join(report['saved'])}." if report["saved"] else ""))
    fig = report.get("figure")
    if fig:
        w, h = fig["size_in"]
        lines.append(f"Figure {w:g} x {h:g} in at {fig['dpi']:g} dpi, {len(fig['axes'])} axes"
                     + (f", suptitle {fig['suptitle']!r}" if fig["suptitle"] else "")
                     + (f", figure legend {fig['legends']}" if fig["legends"] else "") + ".")
        for i, ax in enumerate(fig["axes"], 1):
            kind = "colorbar" if ax["colorbar"] else "axes"
            lines.append(f"{kind} {i}: title {ax['title']!r}, x label {ax['xlabel']!r}, y label {ax['ylabel']!r}, "
                         f"legend {ax['legend'] if ax['legend'] else 'none'}")
            lines += [f"  - {_series_line(s)}" for s in ax["series"]] or ["  - no data drawn"]
            if ax["cut_off"]:
                lines.append(f"  cut off at the edge of the image: {', '.join(ax['cut_off'])}")
            for axis in ("x", "y"):
                n = ax[f"{axis}ticks_overlap"]
                shown = ax[f"{axis}ticks"]
                if shown:
                    lines.append(f"  {axis} tick labels: {len(shown)} ({', '.join(shown[:6])}{', …' if len(shown) > 6 else ''})"
                                 + (f", {n} overlapping pairs" if n else ""))
    elif report.get("figure_error"):
        lines.append(f"The figure could not be drawn: {report['figure_error']}")
    if series:
        lines.append(f"Requested series: {', '.join(series)}.")
    failed = [(k, why) for k, why in findings(report, series).items() if why and k != "runs"]
    lines.append("Automatic checks: all pass." if not failed else "Automatic checks failing:")
    lines += [f"- {ITEMS[k]}: {'; '.join(why)}" for k, why in failed]
    return "\n".join(lines)
