"""Loss discovery: the built-in losses against hand-computed values and gradients, the gate,
the sandboxed judge, the proposal loop on a scripted model, and one run on SmolLM2."""

import json
import math

import pytest
import torch

from conclave.agents.losslab import LossLabConfig, LossLabError, LossLabResult, SyntheticConfig, judge, parse_proposal, run
from conclave.agents.losslab import losses
from conclave.agents.losslab.gate import GateError, check_function, check_source
from conclave.agents.losslab.losslab import ProposalError
from conclave.agents.losslab.synthetic import headroom, reward_at_kl, train
from conclave.agents.memo import Memo
from tests.scripted import ScriptedLLM

BETA = 0.5
# two pairs: (policy chosen, policy rejected, reference chosen, reference rejected)
PAIRS = [(-3.0, -5.0, -4.0, -4.5), (-6.0, -2.0, -5.0, -2.5)]
MARGINS = [(pc - rc) - (pr - rr) for pc, pr, rc, rr in PAIRS]  # 1.5 and -1.5


def sig(x):
    return 1 / (1 + math.exp(-x))


def call(fn, **kw):
    t = [torch.tensor(col, dtype=torch.float64, requires_grad=i < 2) for i, col in enumerate(zip(*PAIRS))]
    out = fn(*t, BETA, **kw)
    out.sum().backward()
    return out.detach().tolist(), t[0].grad.tolist(), t[1].grad.tolist()


def close(a, b):
    return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) for x, y in zip(a, b, strict=True))


def test_dpo():
    val, gc, gr = call(losses.dpo)
    assert close(val, [-math.log(sig(BETA * m)) for m in MARGINS])
    assert close(gc, [-BETA * sig(-BETA * m) for m in MARGINS])
    assert close(gr, [BETA * sig(-BETA * m) for m in MARGINS])


def test_ipo_pulls_the_raw_margin_to_one_over_two_beta():
    val, gc, gr = call(losses.ipo)
    assert close(val, [(m - 1 / (2 * BETA)) ** 2 for m in MARGINS])  # (1.5-1)^2, (-1.5-1)^2
    assert close(val, [0.25, 6.25])
    assert close(gc, [2 * (m - 1 / (2 * BETA)) for m in MARGINS])


def test_slic_hinge_and_its_sft_term():
    val, gc, _ = call(losses.slic, margin=1.0, sft_weight=0.0)
    assert close(val, [max(0.0, 1 - BETA * m) for m in MARGINS])  # 0.25 and 1.75
    assert close(gc, [-BETA, -BETA])
    val, gc, _ = call(losses.slic, margin=0.5, sft_weight=0.1)
    assert close(val, [max(0.0, 0.5 - BETA * m) - 0.1 * pc for m, (pc, *_) in zip(MARGINS, PAIRS)])
    assert close(gc, [-0.1, -BETA - 0.1])  # the first pair is past the margin: only the SFT term pulls


def test_kto_paired_uses_the_batch_kl_as_a_fixed_reference_point():
    chosen = [pc - rc for pc, pr, rc, rr in PAIRS]  # 1.0, -1.0
    rejected = [pr - rr for pc, pr, rc, rr in PAIRS]  # -0.5, 0.5
    kl_c, kl_r = max(0.0, sum(chosen) / 2), max(0.0, sum(rejected) / 2)  # both 0
    val, gc, gr = call(losses.kto)
    assert close(val, [(1 - sig(BETA * (c - kl_r))) + (1 - sig(BETA * (kl_c - r))) for c, r in zip(chosen, rejected)])
    d = lambda x: sig(x) * (1 - sig(x))  # noqa: E731
    assert close(gc, [-BETA * d(BETA * (c - kl_r)) for c in chosen])  # no gradient through the KL estimate
    assert close(gr, [BETA * d(BETA * (kl_c - r)) for r in rejected])


def test_lrml_mixes_logistic_and_exponential_by_the_margin():
    tau = 0.05
    val, gc, _ = call(losses.lrml, tau=tau)
    want = []
    for m in MARGINS:
        rho = BETA * m
        w = sig(rho / tau)
        want.append((1 - w) * math.log1p(math.exp(-rho)) + w * math.exp(-rho))
    assert close(val, want)
    # at a zero margin the gradient points the wrong way: d/dρ = (1 - ln 2)/(4τ) - 3/4 > 0,
    # the non-convexity that makes LRML move away from the chosen responses from a cold start
    z = [torch.zeros(1, dtype=torch.float64, requires_grad=True)] + [torch.zeros(1, dtype=torch.float64) for _ in range(3)]
    losses.lrml(*z, 1.0, tau=tau).sum().backward()
    assert math.isclose(z[0].grad.item(), (1 - math.log(2)) / (4 * tau) - 0.75, rel_tol=1e-9)


def test_cdpo_is_dpo_with_smoothed_labels():
    eps = 0.1
    val, gc, _ = call(losses.cdpo, label_smoothing=eps)
    assert close(val, [-(1 - eps) * math.log(sig(BETA * m)) - eps * math.log(sig(-BETA * m)) for m in MARGINS])
    assert close(gc, [-BETA * ((1 - eps) * sig(-BETA * m) - eps * sig(BETA * m)) for m in MARGINS])
    assert close(call(losses.cdpo, label_smoothing=0.0)[0], call(losses.dpo)[0])


def test_every_builtin_passes_its_own_gate():
    for name, fn in losses.BUILTIN.items():
        assert check_source(losses.source(name)) == name
        check_function(fn)


SIG = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta"


@pytest.mark.parametrize("code, message", [
    ("def f(:\n  pass", "not valid Python"),
    ("x = 1", "exactly one top-level function"),
    (f"def f({SIG}):\n    return g()\ndef g():\n    return 0", r"defines 2 \(f, g\)"),
    ("def f(policy_rejected_logps, policy_chosen_logps, reference_chosen_logps, reference_rejected_logps, beta):\n  pass",
     "in that order"),
    (f"def f({SIG}, tau):\n  pass", "needs a default"),
    (f"async def f({SIG}):\n  pass", "not async"),
])
def test_the_gate_reads_the_code_without_running_it(code, message):
    with pytest.raises(GateError, match=message):
        check_source(code)


def test_the_gate_accepts_helpers_inside_the_function_and_extra_defaults():
    assert check_source(f"import math\ndef f({SIG}, tau=0.1):\n    def h(x):\n        return x\n    return h(beta)") == "f"


@pytest.mark.parametrize("body, message", [
    ("return (policy_chosen_logps - policy_rejected_logps).mean()", r"shape \(\)"),
    ("return (policy_chosen_logps - policy_rejected_logps) / 0.0", "not finite"),
    ("return reference_chosen_logps - reference_rejected_logps", "does not depend"),
    ("return (policy_chosen_logps * 0.0).round()", "zero everywhere"),
    ("return [0.0] * 16", "not a torch tensor"),
])
def test_the_gate_calls_the_loss_on_random_inputs(body, message):
    scope = {"torch": torch}
    exec(f"def f({SIG}):\n    {body}", scope)  # test-authored code, not a model's
    with pytest.raises(GateError, match=message):
        check_function(scope["f"])


def test_synthetic_fitness_is_a_share_of_the_possible_gain():
    c = SyntheticConfig(steps=60, seeds=(0,))
    tr = train(losses.dpo, c, 0)
    assert tr[0][0] == 0 and tr[0][1] == pytest.approx(0.0, abs=1e-6)
    assert [s for s, _, _ in tr] == list(range(0, 61, 10))
    gain = reward_at_kl(tr, c.kl_budget)
    assert 0 < gain <= headroom(c, 0)
    # reading the crossing: KL 0 → 2 while reward 0 → 1, budget 1: a gain of 0.5
    assert reward_at_kl([(0, 0.0, 0.0), (10, 2.0, 1.0)], 1.0) == pytest.approx(0.5)
    assert reward_at_kl([(0, 0.0, 0.0), (10, 2.0, -1.0)], 1.0) == 0.0


def test_the_judge_trains_in_the_sandbox_and_caches_its_verdict(tmp_path):
    cfg = LossLabConfig(synthetic=SyntheticConfig(steps=20, seeds=(0, 1)))
    memo = Memo(tmp_path / "verdicts.db")
    v = judge(losses.source("dpo"), cfg, memo)
    assert v.valid and v.stage == "done" and len(v.per_seed) == 2 and len(v.trajectories) == 2
    assert v.fitness == pytest.approx(sum(v.per_seed) / 2)
    assert len(memo) == 1 and judge(losses.source("dpo"), cfg, memo) == v


def test_a_loss_that_breaks_training_sends_back_its_error_and_stderr():
    code = (f"def blows_up({SIG}):\n    import sys\n    print('diagnostic from the loss', file=sys.stderr)\n"
            "    m = (policy_chosen_logps - policy_rejected_logps)\n"
            "    return torch.exp(-m * 1e4 * (reference_chosen_logps.abs() > 1e9).float() + m * 0) * 0 + m.exp() ** 40\n")
    v = judge(code, LossLabConfig(synthetic=SyntheticConfig(steps=50, seeds=(0,))))
    assert not v.valid and v.stage in ("gate", "train")
    assert v.error


def test_a_loss_that_hangs_is_stopped_by_the_time_limit():
    code = f"def slow({SIG}):\n    while True:\n        pass\n"
    v = judge(code, LossLabConfig(timeout_s=5))
    assert not v.valid and v.stage == "sandbox" and "timed out" in v.error


def test_proposals_are_read_from_the_forms_models_write():
    code = f"def f({SIG}):\n    return -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps))\n"
    plain = json.dumps({"thought": "t", "name": "my loss!", "code": code})
    assert parse_proposal(plain).name == "my_loss" and parse_proposal(plain).code == code
    fenced = f"Here it is:\n```json\n{plain}\n```\nHope it helps."
    assert parse_proposal(fenced).code == code
    raw_newlines = '{"thought": "t", "name": "n", "code": "' + code.replace("\n", "\n") + '"}'
    assert parse_proposal(raw_newlines).code.startswith("def f(")
    code_fenced_inside = json.dumps({"thought": "t", "name": "n", "code": f"```python\n{code}```"})
    assert parse_proposal(code_fenced_inside).code == code
    only_block = f"I propose:\n```python\n{code}```"
    p = parse_proposal(only_block)
    assert p.name == "f" and p.code == code
    after_an_empty_one = f"Example:\n```python\n```\n\n```python\nimport torch\n\n{code}```"
    assert parse_proposal(after_an_empty_one).code == f"import torch\n\n{code}"
    cut_at_the_budget = f"```python\n{code}    # and then"
    assert parse_proposal(cut_at_the_budget).code == f"{code}    # and then"
    for bad in ["no code here", '{"thought": "t", "name": "n"}', '{"code": ""}']:
        with pytest.raises(ProposalError):
            parse_proposal(bad)


TINY = SyntheticConfig(prompts=32, pairs=128, steps=20, seeds=(0,))
GOOD = {"thought": "a smooth hinge", "name": "softplus_hinge",
        "code": f"def softplus_hinge({SIG}):\n    m = (policy_chosen_logps - reference_chosen_logps) - "
                "(policy_rejected_logps - reference_rejected_logps)\n    return F.softplus(1 - beta * m)\n"}
BAD_SHAPE = {"thought": "t", "name": "scalar", "code": f"def scalar({SIG}):\n    return policy_chosen_logps.sum()\n"}


def test_the_loop_feeds_back_fitness_and_failures_in_one_conversation(tmp_path):
    llm = ScriptedLLM([json.dumps(GOOD), "I would rather chat.", json.dumps(BAD_SHAPE)])
    cfg = LossLabConfig(candidates=3, baselines=("dpo", "ipo"), synthetic=TINY)
    events = []
    res = run(cfg, llm, cache=Memo(tmp_path / "v.db"), on_event=events.append)
    assert [c.origin for c in res.candidates] == ["builtin", "builtin", "proposed", "proposed", "proposed"]
    assert [c.stage for c in res.proposed] == ["done", "parse", "gate"]
    assert res.validity == pytest.approx(1 / 3) and res.best.name == "softplus_hinge"
    first = llm.requests[0].messages
    assert first[0]["role"] == "system" and "policy_chosen_logps" in first[0]["content"]
    archive = json.loads(first[1]["content"].split("(higher is better):")[1].split("Propose")[0])
    assert [a["name"] for a in archive] == ["dpo", "ipo"] and archive[0]["fitness"] == round(res.candidates[0].fitness, 4)
    assert llm.requests[0].prompt_ref == "losslab_propose@1"
    second, third = llm.requests[1].messages, llm.requests[2].messages
    assert second[-2]["content"] == json.dumps(GOOD) and "scored fitness" in second[-1]["content"]
    assert "failed to parse" in third[-1]["content"] and len(third) == len(second) + 2
    assert "shape" in res.proposed[2].error
    assert sum(e["kind"] == "candidate" for e in events) == 5
    md = res.report()
    assert "softplus_hinge" in md and "Valid proposals: 1 of 3" in md
    assert LossLabResult.from_dict(json.loads(json.dumps(res.to_dict()))).report() == md
    assert res.plot(tmp_path / "fitness.png").stat().st_size > 10_000


def test_a_stopped_run_resumes_after_its_last_judged_candidate(tmp_path):
    cfg = LossLabConfig(candidates=2, baselines=("dpo",), synthetic=TINY)
    memo = Memo(tmp_path / "v.db")
    saved = []
    with pytest.raises(RuntimeError, match="connection lost"):
        run(cfg, ScriptedLLM([json.dumps(GOOD), RuntimeError("connection lost")]), cache=memo,
            checkpoint=lambda i, s: saved.append(json.loads(json.dumps(s))))
    assert [len(s["candidates"]) for s in saved] == [1, 2]
    llm = ScriptedLLM([json.dumps(BAD_SHAPE)])
    res = run(cfg, llm, cache=memo, resume=saved[-1])
    assert [c.name for c in res.candidates] == ["dpo", "softplus_hinge", "scalar"]
    assert llm.requests[0].messages[-2]["content"] == json.dumps(GOOD)  # the history is rebuilt
    with pytest.raises(LossLabError, match="another configuration"):
        run(LossLabConfig(candidates=3, baselines=("dpo",), synthetic=TINY), llm, resume=saved[-1])


def test_bad_settings_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="'dpo', 'ipo', 'slic', 'kto', 'lrml' or 'cdpo'"):
        LossLabConfig(baselines=("dpoo",))
    assert set(LossLabConfig.model_fields["baselines"].default) == set(losses.BUILTIN)
    with pytest.raises(LossLabError, match="needs a model"):
        run(LossLabConfig(candidates=1), None)
    with pytest.raises(ValueError):
        LossLabConfig(synthetic={"steps": 0})


@pytest.mark.model
def test_end_to_end_on_smollm2(with_model, tmp_path):
    from conclave.app.settings import Settings

    llm = Settings().open_llm()
    try:
        res = run(LossLabConfig(candidates=2, baselines=("dpo",), synthetic=TINY, max_tokens=256), llm)
    finally:
        llm.close()
    assert len(res.proposed) == 2 and res.tokens > 0
    for c in res.proposed:
        assert c.reply and c.stage in ("parse", "load", "gate", "train", "sandbox", "done")
        assert c.valid == (c.stage == "done") and (c.error is None) == c.valid
    # the outcome: code was read out of a real reply and reached the loader (SmolLM2 fences a
    # function after an empty fence, and is cut at its budget); reaching the gate is issue 32's
    assert any(c.stage != "parse" for c in res.proposed), [c.error for c in res.proposed]
    assert "Loss discovery (2 proposals by smollm2-135m-instruct)" in res.report()


def test_the_cli_and_a_config_file_run_and_record_the_builtins(tmp_path):
    import os
    import subprocess
    import sys

    from conclave.app.store import RunStore

    env = dict(os.environ)
    cli = [sys.executable, "-m", "conclave.app.cli"]
    done = subprocess.run(cli + ["losslab", "-n", "0", "--baselines", "dpo,kto", "--steps", "20", "--seeds", "0",
                                 "--out", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "Loss discovery (0 proposals" in done.stdout and "kto" in done.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert [c["name"] for c in result["candidates"]] == ["dpo", "kto"] and (tmp_path / "r.png").stat().st_size > 0
    (tmp_path / "ll.toml").write_text('candidates = 0\nbaselines = ["ipo"]\n[synthetic]\nsteps = 20\nseeds = [1]\n')
    by_config = subprocess.run(cli + ["run", "losslab", "--config", str(tmp_path / "ll.toml")], env=env,
                               capture_output=True, text=True, timeout=240)
    assert by_config.returncode == 0, by_config.stderr
    runs = RunStore(tmp_path / "data" / "conclave.db").list_runs("losslab")
    assert [r.status for r in runs] == ["done", "done"] and runs[0].result["candidates"][0]["name"] == "ipo"
    (tmp_path / "bad.toml").write_text('candidates = 0\n[synthetic]\nsteps = -1\n')
    bad = subprocess.run(cli + ["run", "losslab", "--config", str(tmp_path / "bad.toml")], env=env,
                         capture_output=True, text=True, timeout=240)
    assert bad.returncode != 0 and "synthetic.steps" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run(cli + ["losslab", "--baselines", "dpo,nope"], env=env, capture_output=True, text=True, timeout=240)
    assert bad.returncode != 0 and "'dpo', 'ipo'" in bad.stderr and "Traceback" not in bad.stderr


def test_the_reward_model_tells_fresh_from_rotten_on_snippets_it_never_saw():
    from conclave.agents.losslab.lm import Sentiment, snippets

    texts, labels = snippets(0)
    reward = Sentiment(texts[1000:], labels[1000:])
    p = reward(texts[:1000])
    accuracy = sum((x > 0.5) == bool(y) for x, y in zip(p, labels[:1000])) / 1000
    assert accuracy > 0.7
    assert reward(["a wonderful, moving, brilliant film"])[0] > 0.5 > reward(["a dull, tedious mess"])[0]


@pytest.mark.model
@pytest.mark.timeout(900)  # loading SmolLM2 into transformers and sampling, on two cores
def test_the_language_model_task_trains_smollm2_in_the_sandbox(with_model, tmp_path):
    from conclave.agents.losslab.config import LMConfig

    lm = LMConfig(prompts=4, eval_prompts=2, new_tokens=8, steps=2, batch=2, eval_every=1, kl_budget=100.0)
    cfg = LossLabConfig(candidates=0, baselines=("dpo",), fitness="lm", lm=lm)
    memo = Memo(tmp_path / "v.db")
    v = judge(losses.source("dpo"), cfg, memo, data_dir=with_model)
    assert v.valid, v.error
    [tr] = v.trajectories
    assert [s for s, _, _ in tr] == [0, 1, 2]
    assert tr[0][1] == pytest.approx(0.0, abs=1e-4)  # the policy starts as the reference
    assert all(0.0 <= r <= 1.0 for _, _, r in tr)
    res = run(cfg, None, cache=memo, data_dir=with_model)  # the loop reads the verdict back
    assert "trained 2 steps on sampled review continuations" in res.report()
    with pytest.raises(LossLabError, match="not installed"):
        run(cfg, None, data_dir=with_model / "nowhere")
