"""The figure team on ten plotting tasks, with data files made here (time series, categories,
distributions): per iteration, the success rate (the code ran and wrote the figure) and the
mean checklist score, and whether the critic loop raises the score over iteration 0, the coder
alone (the anchor).

    python benchmarks/figure_eval.py [--coder qwen2.5-coder-1.5b-instruct] [--critic smollm2-135m-instruct]
        [--iterations 3] [--tasks 0,1,2] [--artifacts DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from conclave.agents.figure import FigureConfig, run
from conclave.agents.figure.checklist import ITEMS
from conclave.app.settings import load_settings


def datasets(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    days = pd.date_range("2023-01-01", "2023-12-31")
    months = pd.date_range("2023-01-01", periods=12, freq="MS").strftime("%Y-%m")
    frames = {
        "temperature.csv": pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "temperature": np.round(
            12 + 10 * np.sin((days.day_of_year - 110) / 365 * 2 * np.pi) + rng.normal(0, 2, len(days)), 1)}),
        "sales.csv": pd.DataFrame({"month": months, **{r: np.round(100 + 10 * np.arange(12) * k + rng.normal(0, 8, 12))
                                                       for r, k in (("north", 1.0), ("south", 0.5), ("east", 1.5))}}),
        "fruit.csv": pd.DataFrame({"fruit": ["apple", "banana", "cherry", "mango", "pear", "plum"],
                                   "count": [34, 52, 12, 27, 19, 8]}),
        "countries.csv": pd.DataFrame({"country": ["United States of America", "United Kingdom of Great Britain",
                                                   "Democratic Republic of the Congo", "Central African Republic",
                                                   "Bosnia and Herzegovina", "Saint Vincent and the Grenadines",
                                                   "Trinidad and Tobago", "Papua New Guinea", "Antigua and Barbuda",
                                                   "São Tomé and Príncipe", "Federated States of Micronesia",
                                                   "Dominican Republic"],
                                       "population": [335, 68, 102, 5.6, 3.2, 0.1, 1.5, 10.3, 0.09, 0.23, 0.11, 11.3]}),
        "scores.csv": pd.DataFrame({"student": np.arange(400), "score": np.clip(np.round(rng.normal(68, 12, 400)), 0, 100)}),
        "body.csv": pd.DataFrame({"height": np.round(rng.normal(172, 9, 150), 1)}).assign(
            weight=lambda d: np.round(0.9 * d.height - 85 + rng.normal(0, 7, 150), 1)),
        "revenue.csv": pd.DataFrame([{"quarter": q, "product": p, "revenue": round(float(v), 1)}
                                     for q in ("Q1", "Q2", "Q3", "Q4") for p, v in
                                     (("Alpha", rng.uniform(20, 60)), ("Beta", rng.uniform(20, 60)))]),
        "energy.csv": pd.DataFrame({"year": np.arange(2010, 2024), "coal": np.linspace(40, 18, 14).round(1),
                                    "gas": np.linspace(30, 36, 14).round(1), "solar": np.geomspace(1, 14, 14).round(1),
                                    "wind": np.linspace(5, 22, 14).round(1)}),
        "latency.csv": pd.DataFrame([{"server": s, "ms": round(float(rng.lognormal(mu, 0.4)), 1)}
                                     for s, mu in (("alpha", 3.0), ("beta", 3.3), ("gamma", 2.8)) for _ in range(80)]),
        "stock.csv": pd.DataFrame({"date": days[:120].strftime("%Y-%m-%d"),
                                   "price": np.round(100 + np.cumsum(rng.normal(0, 1.5, 120)), 2),
                                   "volume": rng.integers(1_000, 9_000, 120)}),
    }
    paths = {}
    for name, df in frames.items():
        paths[name] = root / name
        df.to_csv(paths[name], index=False)
    return paths


TASKS = [  # (data file, request, series the figure must show)
    ("temperature.csv", "Plot the daily temperature over the year as a line chart.", ["temperature"]),
    ("sales.csv", "Plot monthly sales for the north, south and east regions, one line per region.",
     ["north", "south", "east"]),
    ("fruit.csv", "Make a bar chart of the count of each fruit.", ["count"]),
    ("countries.csv", "Make a bar chart of the population of each country.", ["population"]),
    ("scores.csv", "Plot a histogram of the exam scores.", ["score"]),
    ("body.csv", "Make a scatter plot of weight against height.", ["height", "weight"]),
    ("revenue.csv", "Make a grouped bar chart of revenue per quarter, one bar per product (Alpha and Beta).",
     ["Alpha", "Beta"]),
    ("energy.csv", "Plot the share of coal, gas, solar and wind over the years.", ["coal", "gas", "solar", "wind"]),
    ("latency.csv", "Make a box plot of the response time in ms for each server.", ["ms"]),
    ("stock.csv", "Plot the stock price and the trading volume over time, volume on a second y axis.",
     ["price", "volume"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coder", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--critic", default=None, help="default: the coder's model")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--tasks", default=",".join(map(str, range(len(TASKS)))))
    ap.add_argument("--artifacts", type=Path, help="write each task's chosen figure here")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    console = Console(width=160)
    settings = load_settings()
    picked = [int(i) for i in args.tasks.split(",")]
    coder = settings.open_llm(args.coder)
    critic = settings.open_llm(args.critic) if args.critic and args.critic != args.coder else None
    critic_name = args.critic or args.coder
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = datasets(Path(tmp))
        for i in picked:
            name, request, series = TASKS[i]
            t = time.perf_counter()
            res = run(FigureConfig(request=request, data=data[name], series=series, max_iterations=args.iterations),
                      coder, critic)
            seconds = time.perf_counter() - t
            its = res.iterations
            console.print(f"task {i} ({name}): " + " → ".join(f"{it.status} {it.score:.2f}" for it in its)
                          + f"; {res.stopped}, final {res.final}; {seconds:.0f} s")
            if args.artifacts and res.figure is not None:
                args.artifacts.mkdir(parents=True, exist_ok=True)
                res.save_png(args.artifacts / f"task{i}-{Path(name).stem}.png")
            rows.append({"task": i, "data": name, "request": request, "stopped": res.stopped, "final": res.final,
                         "seconds": seconds, "tokens": res.tokens,
                         "iterations": [{"status": it.status, "score": it.score, "checks": it.checks,
                                         "critique": it.critique, "error": (it.error or "")[-300:]} for it in its],
                         "final_score": its[res.final].score if res.final is not None else 0.0})
    coder.close()
    if critic is not None:
        critic.close()
    wall = time.perf_counter() - t0

    table = Table(title=f"Figure team on {len(rows)} tasks: coder {args.coder}, critic {critic_name} "
                        f"(text report), up to {args.iterations} iterations; {wall:.0f} s")
    for col in ("iteration", "tasks reaching it", "success (ran, wrote figure)", "mean checklist",
                "carried forward: success", "carried forward: checklist", "vs iteration 0"):
        table.add_column(col, justify="right")
    base = None
    for k in range(args.iterations):
        reached = [r["iterations"][k] for r in rows if len(r["iterations"]) > k]
        carried = [r["iterations"][min(k, len(r["iterations"]) - 1)] for r in rows]
        mean = statistics.fmean(c["score"] for c in carried)
        base = mean if k == 0 else base
        table.add_row(str(k), str(len(reached)),
                      f"{sum(x['status'] == 'figure' for x in reached)}/{len(reached)}" if reached else "-",
                      f"{statistics.fmean(x['score'] for x in reached):.3f}" if reached else "-",
                      f"{sum(x['status'] == 'figure' for x in carried)}/{len(carried)}", f"{mean:.3f}",
                      f"{mean / base:.2f}x" if base else "-")
    final = statistics.fmean(r["final_score"] for r in rows)
    table.add_row("chosen", "", f"{sum(r['final'] is not None for r in rows)}/{len(rows)}", "", "", f"{final:.3f}",
                  f"{final / base:.2f}x" if base else "-")
    console.print(table)
    items = Table(title="Checklist items passed, iteration 0 against the chosen figure")
    for col in ("item", "iteration 0", "chosen"):
        items.add_column(col)
    for key, text in ITEMS.items():
        first = sum(r["iterations"][0]["checks"][key] for r in rows)
        chosen = sum(r["iterations"][r["final"]]["checks"][key] for r in rows if r["final"] is not None)
        items.add_row(text, f"{first}/{len(rows)}", f"{chosen}/{len(rows)}")
    console.print(items)
    stops = {s: sum(r["stopped"] == s for r in rows) for s in ("approved", "limit")}
    console.print(f"stopped: {stops['approved']} approved by the critic, {stops['limit']} at the limit; "
                  f"{sum(r['tokens'] for r in rows):,} tokens")
    if args.json:
        args.json.write_text(json.dumps({"coder": args.coder, "critic": critic_name, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
