"""Runs model-written figure code inside the sandbox, then describes the figure it drew.

Shipped into the sandbox as a plain file and run as ``python harness.py code.py``: it imports
nothing from Conclave. It writes ``report.json``: whether the code ran (and its traceback,
from the code's own frames on), what it saved, and for the figure that went to ``figure.png``
(or else the last one drawn): size, and per axes the title, axis labels, legend entries, the
series with their kind, label, size and data range, and how many tick labels overlap.
"""

import json
import math
import os
import runpy
import sys
import traceback

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import dates as mdates  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

TARGET = "figure.png"
saved = []  # (figure, path, tight), in call order
_savefig = Figure.savefig


def _recording_savefig(self, fname, *args, **kwargs):
    tight = kwargs.get("bbox_inches", matplotlib.rcParams["savefig.bbox"]) == "tight"
    saved.append((self, os.fspath(fname) if isinstance(fname, (str, os.PathLike)) else "<file object>", tight))
    return _savefig(self, fname, *args, **kwargs)


Figure.savefig = _recording_savefig


def _grouping(method: str, kind: str, members: str):
    """A box or violin plot draws many lines and shapes for one series; remember them as one."""
    original = getattr(Axes, method)

    def wrapper(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        parts = [a for v in out.values() for a in (v if isinstance(v, (list, tuple)) else [v])]
        self._harness_parts = getattr(self, "_harness_parts", set()) | {id(a) for a in parts}
        self._harness_groups = getattr(self, "_harness_groups", []) + [
            {"kind": kind, "label": None, "points": len(out[members])}]
        return out

    setattr(Axes, method, wrapper)


_grouping("bxp", "box", "boxes")  # what boxplot(), pandas and seaborn draw boxes with
_grouping("violin", "violin", "bodies")


def run(code_path: str) -> tuple[bool, str | None]:
    try:
        runpy.run_path(code_path, run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            return False, f"the code called sys.exit({e.code!r})"
    except BaseException as e:  # noqa: BLE001 - whatever the code raised is the report
        tb = e.__traceback__
        while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != os.path.abspath(code_path):
            tb = tb.tb_next  # drop the harness's and runpy's frames
        return False, "".join(traceback.format_exception(type(e), e, tb or e.__traceback__))
    return True, None


def _label(artist) -> str | None:
    label = artist.get_label()
    return None if not label or str(label).startswith("_") else str(label)


def _range(values) -> list | None:
    finite = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            finite.append(f)
    return [min(finite), max(finite)] if finite else None


def _dated(axis, span):
    if span is None or not isinstance(axis.get_major_formatter(),
                                      (mdates.AutoDateFormatter, mdates.DateFormatter, mdates.ConciseDateFormatter)):
        return span
    try:
        return [mdates.num2date(v).date().isoformat() for v in span]
    except (ValueError, OverflowError):
        return span


def _series(ax) -> list[dict]:
    out = list(getattr(ax, "_harness_groups", []))
    parts = set(getattr(ax, "_harness_parts", set()))
    labels = {}  # an errorbar's label sits on its container, not on its data line
    for c in ax.containers:
        kind = type(c).__name__
        if kind == "ErrorbarContainer":  # the data line stays a series; its caps and bars do not
            line, caps, bars = c.lines
            parts |= {id(a) for a in (*caps, *bars)}
            labels[id(line)] = _label(c)
        if kind == "BarContainer":
            horizontal = getattr(c, "orientation", "vertical") == "horizontal"
            sizes = [p.get_width() if horizontal else p.get_height() for p in c.patches]
            out.append({"kind": "bar", "label": _label(c), "points": len(c.patches), "values": _range(sizes)})
    for line in ax.get_lines():
        if id(line) in parts:
            continue
        xy = line.get_xydata()
        kind = "markers" if line.get_linestyle() in ("None", "", " ") else "line"
        out.append({"kind": kind, "label": _label(line) or labels.get(id(line)), "points": len(xy),
                    "x": _dated(ax.xaxis, _range(xy[:, 0]) if len(xy) else None),
                    "y": _dated(ax.yaxis, _range(xy[:, 1]) if len(xy) else None)})
    for coll in ax.collections:
        if id(coll) in parts:
            continue
        kind = {"PathCollection": "scatter", "PolyCollection": "area", "FillBetweenPolyCollection": "area",
                "QuadMesh": "mesh", "LineCollection": "segments"}.get(type(coll).__name__, type(coll).__name__)
        item = {"kind": kind, "label": _label(coll)}
        if kind == "scatter":
            xy = coll.get_offsets()
            item |= {"points": len(xy), "x": _dated(ax.xaxis, _range(xy[:, 0]) if len(xy) else None),
                     "y": _dated(ax.yaxis, _range(xy[:, 1]) if len(xy) else None)}
        out.append(item)
    wedges = [p for p in ax.patches if type(p).__name__ == "Wedge"]
    if wedges:
        out.append({"kind": "pie", "label": None, "points": len(wedges)})
    for image in ax.images:
        out.append({"kind": "image", "label": _label(image), "shape": list(image.get_array().shape[:2])})
    return out


def _overlaps(labels, renderer) -> int:
    """Pairs of neighbouring tick labels whose text boxes overlap. A rotated label is a rotated
    rectangle, not its axis-aligned bounding box, so rotating long labels counts as the fix it is."""
    boxes = []
    for t in labels:
        if not t.get_visible() or not t.get_text().strip():
            continue
        angle = t.get_rotation()
        bb = t.get_window_extent(renderer)
        cx, cy = (bb.x0 + bb.x1) / 2, (bb.y0 + bb.y1) / 2
        t.set_rotation(0)
        flat = t.get_window_extent(renderer)
        t.set_rotation(angle)
        boxes.append((cx, cy, flat.width, flat.height, math.radians(angle)))
    n = 0
    for a, b in zip(boxes, boxes[1:]):
        if abs(a[4] - b[4]) > 1e-6:
            continue  # labels are drawn at one angle per axis; mixed angles are not ticks in a row
        ux, uy = math.cos(a[4]), math.sin(a[4])
        dx, dy = b[0] - a[0], b[1] - a[1]
        along, across = abs(dx * ux + dy * uy), abs(-dx * uy + dy * ux)
        if along < (a[2] + b[2]) / 2 - 1 and across < (a[3] + b[3]) / 2 - 1:
            n += 1
    return n


def _cut(texts, renderer, edge) -> bool:
    """Whether any of these texts runs past the edge of the saved image."""
    if edge is None:
        return False
    for t in texts:
        if t.get_visible() and t.get_text().strip():
            bb = t.get_window_extent(renderer)
            if bb.x0 < edge.x0 - 1 or bb.y0 < edge.y0 - 1 or bb.x1 > edge.x1 + 1 or bb.y1 > edge.y1 + 1:
                return True
    return False


def _axes(ax, renderer, edge) -> dict:
    legend = ax.get_legend()
    ticks_x = sorted(ax.get_xticklabels(), key=lambda t: t.get_position()[0])
    ticks_y = sorted(ax.get_yticklabels(), key=lambda t: t.get_position()[1])
    return {
        "title": " ".join(t for t in (ax.get_title("left"), ax.get_title(), ax.get_title("right")) if t),
        "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
        "legend": [t.get_text() for t in legend.get_texts()] if legend and legend.get_visible() else [],
        "series": _series(ax),
        "xticks": [t.get_text() for t in ticks_x if t.get_text()][:50],
        "yticks": [t.get_text() for t in ticks_y if t.get_text()][:50],
        "xticks_overlap": _overlaps(ticks_x, renderer), "yticks_overlap": _overlaps(ticks_y, renderer),
        "colorbar": hasattr(ax, "_colorbar"),
        "cut_off": [name for name, texts in (("title", [ax.title, ax._left_title, ax._right_title]),
                                             ("x label", [ax.xaxis.label]), ("y label", [ax.yaxis.label]),
                                             ("x tick labels", ticks_x), ("y tick labels", ticks_y))
                    if _cut(texts, renderer, edge)],
    }


def describe(fig, tight: bool) -> dict:
    """``tight``: saved with bbox_inches="tight", which grows the image to hold every label."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    edge = None if tight else fig.bbox
    w, h = fig.get_size_inches()
    sup = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else ""
    return {"size_in": [round(float(w), 2), round(float(h), 2)], "dpi": float(fig.dpi), "suptitle": sup,
            "legends": [t.get_text() for leg in fig.legends for t in leg.get_texts()],
            "axes": [_axes(ax, renderer, edge) for ax in fig.axes if ax.get_visible()]}


def main(code_path: str) -> None:
    ran, error = run(code_path)
    target = [(fig, tight) for fig, path, tight in saved if os.path.abspath(path) == os.path.abspath(TARGET)]
    last = target[-1] if target else saved[-1][::2] if saved else (plt.gcf(), False) if plt.get_fignums() else None
    fig, tight = last if last else (None, False)
    report = {"ran": ran, "error": error, "saved": [path for _, path, _ in saved],
              "written": os.path.isfile(TARGET), "bytes": os.path.getsize(TARGET) if os.path.isfile(TARGET) else 0,
              "figure": None}
    if fig is not None:
        try:
            report["figure"] = describe(fig, tight)
        except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is described as such
            report["figure_error"] = f"{type(e).__name__}: {e}"
    with open("report.json", "w") as f:
        json.dump(report, f)
    sys.exit(0 if ran else 1)


if __name__ == "__main__":
    main(sys.argv[1])
