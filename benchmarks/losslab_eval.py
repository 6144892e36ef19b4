"""Loss discovery, evaluated (Lu et al. 2024 in miniature).

1. The built-in losses on the synthetic preference task over several seeds: fitness
   (mean ± sd), each loss's rank per seed, and how stable the ranking is (Kendall's τ between
   every two seeds' rankings, and Kendall's W over all of them). Built-ins are our own code,
   so they train in this process; proposals never do.
2. Discovery runs, one per ``--proposer MODEL:N``: N proposals through the sandbox, with the
   validity rate and the best proposal's fitness against DPO's, in the same settings.
3. With ``--lm-betas``: the language-model task (SmolLM2 on sampled review continuations),
   LRML against DPO at each β, as reward–KL points along training (the paper's IMDb figure,
   where LRML's frontier lies above DPO's). ``--plot`` draws the frontiers.

    python benchmarks/losslab_eval.py [--seeds 0,1,2,3,4] [--steps 300]
        [--proposer qwen2.5-coder-1.5b-instruct:10 --proposer smollm2-135m-instruct:5]
        [--lm-betas 0.05,0.1 --lm-steps 40 --plot frontier.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from scipy.stats import kendalltau, rankdata

from conclave.agents.losslab import BUILTIN, LossLabConfig, SyntheticConfig, run
from conclave.agents.losslab.synthetic import headroom, reward_at_kl, train
from conclave.agents.memo import Memo
from conclave.app.settings import load_settings


def ranking(console: Console, c: SyntheticConfig) -> dict:
    torch.set_num_threads(1)
    fit = {name: [] for name in BUILTIN}
    t0 = time.perf_counter()
    for seed in c.seeds:
        room = headroom(c, seed)
        for name, fn in BUILTIN.items():
            fit[name].append(reward_at_kl(train(fn, c, seed), c.kl_budget) / room)
    seconds = time.perf_counter() - t0
    names = list(BUILTIN)
    # rank 1 = best, per seed
    ranks = [list(rankdata([-fit[n][i] for n in names], method="average")) for i in range(len(c.seeds))]
    taus = [kendalltau(a, b).statistic for a, b in itertools.combinations(ranks, 2)]
    m, n = len(ranks), len(names)
    totals = [sum(r[j] for r in ranks) for j in range(n)]
    mean_total = sum(totals) / n
    w = 12 * sum((t - mean_total) ** 2 for t in totals) / (m ** 2 * (n ** 3 - n))
    table = Table(title=f"Built-in losses on the synthetic task: fitness over seeds {list(c.seeds)} "
                        f"(β {c.beta}, {c.steps} steps, KL ≤ {c.kl_budget}; {seconds:.0f} s)")
    for col in ("loss", "fitness mean", "± sd", "vs dpo", *[f"rank s{s}" for s in c.seeds], "mean rank"):
        table.add_column(col, justify="left" if col == "loss" else "right")
    dpo = statistics.fmean(fit["dpo"])
    for j, name in sorted(enumerate(names), key=lambda x: -statistics.fmean(fit[x[1]])):
        mu, sd = statistics.fmean(fit[name]), statistics.stdev(fit[name]) if len(c.seeds) > 1 else 0.0
        table.add_row(name, f"{mu:.4f}", f"{sd:.4f}", f"{mu / dpo:.3f}x" if dpo else "-",
                      *[f"{r[j]:g}" for r in ranks], f"{statistics.fmean(r[j] for r in ranks):.1f}")
    console.print(table)
    if taus:
        console.print(f"Ranking stability: Kendall's τ between two seeds' rankings, mean {statistics.fmean(taus):.2f} "
                      f"(min {min(taus):.2f}, max {max(taus):.2f}); Kendall's W over all seeds {w:.2f} "
                      "(1 = the same ranking every seed, 0 = none shared).")
    return {"fitness": fit, "ranks": ranks, "kendall_tau": taus, "kendall_w": w, "seconds": seconds}


def discovery(console: Console, settings, proposer: str, n: int, c: SyntheticConfig, timeout: float) -> dict:
    llm = settings.open_llm(proposer)
    config = LossLabConfig(candidates=n, synthetic=c, timeout_s=timeout)
    memo = Memo(settings.data_dir / "losslab" / "verdicts.db")

    def show(e: dict) -> None:
        if e["kind"] == "candidate":
            verdict = f"{e['fitness']:.4f}" if e["valid"] else f"failed at {e['stage']}: {(e['error'] or '').splitlines()[-1][:100]}"
            console.print(f"  {e['origin']} {e['name']}: {verdict}", markup=False)

    try:
        res = run(config, llm, cache=memo, on_event=show)
    finally:
        memo.close()
        llm.close()
    dpo, best = res.builtin("dpo"), res.best
    table = Table(title=f"Discovery: {n} proposals by {proposer} ({res.wall_s:.0f} s, {res.tokens:,} proposer tokens)")
    for col in ("#", "name", "stage", "fitness", "vs dpo", "error"):
        table.add_column(col)
    for cand in res.proposed:
        table.add_row(str(cand.index), cand.name, cand.stage, "-" if cand.fitness is None else f"{cand.fitness:.4f}",
                      "-" if cand.fitness is None else f"{cand.fitness - dpo.fitness:+.4f}",
                      escape((cand.error or "").strip().splitlines()[-1][:70]) if cand.error else "")
    console.print(table)
    console.print(f"validity {sum(x.valid for x in res.proposed)}/{n}; best "
                  + (f"{best.name} {best.fitness:.4f} against dpo {dpo.fitness:.4f} ({best.fitness - dpo.fitness:+.4f})"
                     if best else "none valid"))
    return res.to_dict()


def lm_frontier(console: Console, settings, betas: list[float], c, plot: Path | None) -> dict:
    from conclave.agents.losslab.fitness import weights
    from conclave.agents.losslab.lm import Experiment

    path = weights(LossLabConfig(fitness="lm", lm=c), settings.data_dir)
    t0 = time.perf_counter()
    exp = Experiment(c, Path(path))  # one reward model and one set of pairs for every run below
    console.print(f"LM task: {len(exp.pairs.prompts)} pairs (chosen minus rejected reward {exp.pairs.margin:.3f}), "
                  f"{len(exp.eval_prompts)} held-out prompts; set up in {time.perf_counter() - t0:.0f} s")
    out = {}
    table = Table(title=f"LRML against DPO on the LM task ({c.model}, {c.steps} steps, batch {c.batch}, lr {c.lr})")
    for col in ("β", "loss", "(step, KL, reward) along training", f"reward gain at KL ≤ {c.kl_budget}", "s"):
        table.add_column(col)
    for beta in betas:
        for name in ("dpo", "lrml"):
            t = time.perf_counter()
            tr = exp.train(BUILTIN[name], beta)
            seconds = time.perf_counter() - t
            out[f"{name} β={beta}"] = tr
            table.add_row(f"{beta:g}", name, " ".join(f"({s}, {k:.2f}, {r:.3f})" for s, k, r in tr),
                          f"{reward_at_kl(tr, c.kl_budget):+.4f}", f"{seconds:.0f}")
            console.print(f"  {name} β={beta}: final KL {tr[-1][1]:.2f}, reward {tr[-1][2]:.3f} ({seconds:.0f} s)")
    console.print(table)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for label, tr in out.items():
            ax.plot([x[1] for x in tr], [x[2] for x in tr], marker="o", ls="-" if "dpo" in label else "--", label=label)
        ax.set_xlabel("estimated KL(π‖π_ref), nats")
        ax.set_ylabel("mean P(positive)")
        ax.set_title(f"reward–KL along training, {c.model}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot)
        console.print(f"frontier plot: {plot}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4", help="the ranking's synthetic problems")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--proposer", action="append", default=[], help="MODEL:N, repeatable")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per candidate in the sandbox")
    ap.add_argument("--lm-betas", default="", help="e.g. 0.05,0.1: LRML against DPO on the language-model task")
    ap.add_argument("--lm-steps", type=int, default=40)
    ap.add_argument("--lm-prompts", type=int, default=64)
    ap.add_argument("--plot", type=Path, help="the LM task's reward–KL frontiers")
    ap.add_argument("--skip-ranking", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    console = Console(width=150)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    out = {}
    if not args.skip_ranking:
        out["ranking"] = ranking(console, SyntheticConfig(steps=args.steps, beta=args.beta, seeds=seeds))
    settings = load_settings()
    for spec in args.proposer:
        model, _, n = spec.rpartition(":")
        out[f"discovery {model}"] = discovery(console, settings, model, int(n), SyntheticConfig(steps=args.steps,
                                                                                               beta=args.beta),
                                              args.timeout)
    if args.lm_betas:
        from conclave.agents.losslab.config import LMConfig

        betas = [float(b) for b in args.lm_betas.split(",")]
        out["lm"] = lm_frontier(console, settings, betas, LMConfig(steps=args.lm_steps, prompts=args.lm_prompts),
                                args.plot)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
