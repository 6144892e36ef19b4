"""What a model-lab recipe leaves behind: its tables (rows of named figures) and its curves,
with the notes that say how to read them. One result type serves every recipe."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from conclave.local_models.errors import ConclaveError


class LabError(ConclaveError):
    pass


@dataclass
class Curve:
    """Series of (x, y) points drawn on one chart."""

    title: str
    x: str
    y: str
    series: dict[str, list[list[float]]]
    log_y: bool = False


@dataclass
class LabResult:
    recipe: str
    title: str
    config: dict
    tables: dict[str, list[dict]]  # caption: rows
    curves: list[Curve] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LabResult":
        return cls(**{**d, "curves": [Curve(**c) for c in d.get("curves", [])]})

    def report(self) -> str:
        out = [f"# {self.title}", ""]
        for caption, rows in self.tables.items():
            out += [f"**{caption}**", "", *_markdown(rows), ""]
        out += [f"- {n}" for n in self.notes]
        out += ["", f"_{self.wall_s / 60:.1f} min._"]
        return "\n".join(out)

    def figure(self):
        import matplotlib.pyplot as plt

        n = max(len(self.curves), 1)
        fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4), squeeze=False)
        for ax, c in zip(axes[0], self.curves):
            for name, pts in c.series.items():
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, marker="o" if len(pts) < 12 else None, ms=3, label=name)
            ax.set(title=c.title, xlabel=c.x, ylabel=c.y)
            if c.log_y:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(self.title)
        fig.tight_layout()
        return fig

    def plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = self.figure()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 1000 or (v and abs(v) < 0.001) else f"{v:.3f}"
    return str(v)


def _markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return ["_(none)_"]
    cols = list(rows[0])
    return (["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            + ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows])
