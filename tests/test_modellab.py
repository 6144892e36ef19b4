"""The model lab: the recipes' own pieces on tiny random models and hand-computed values, the
shared trainer's resume, and every recipe end to end on a tiny configuration of SmolLM2."""

import math
import random

import pytest
import torch

from conclave.agents.modellab import RECIPES, Lab, LabError, LabResult
from conclave.agents.modellab.config import (SMOL, AdemamixConfig, GoldfishConfig, MiniLLMConfig, QuantDPOConfig, RestConfig,
                                    SquashConfig)
from conclave.agents.modellab.goldfish import keep_mask
from conclave.agents.modellab.minillm import forward_kl, reverse_kl_terms
from conclave.agents.modellab.quant_dpo import fake_quantize
from conclave.agents.modellab.rest import keep, threshold
from conclave.agents.modellab.squash import run_ids
from conclave.local_models.trainer import TrainConfig, Trainer, lm_loss, prepare


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


# --- goldfish ---------------------------------------------------------------------------


def test_the_goldfish_mask_drops_one_token_in_k_and_keeps_the_first_h():
    rng = random.Random(0)
    ids = [rng.randrange(50_000) for _ in range(40_000)]
    for k in (2, 4, 8):
        mask = keep_mask(ids, k, 13)
        assert all(mask[:13])
        dropped = 1 - sum(mask[13:]) / len(mask[13:])
        assert abs(dropped - 1 / k) < 0.01, (k, dropped)
    with pytest.raises(ValueError):
        keep_mask(ids, 1, 13)


def test_the_goldfish_mask_depends_only_on_the_h_preceding_tokens():
    rng = random.Random(1)
    passage = [rng.randrange(1000) for _ in range(200)]
    a = keep_mask([5, 6, 7] * 10 + passage, 4, 13)
    b = keep_mask([9] * 57 + passage, 4, 13)
    # once 13 tokens of the passage are in the window, the same passage drops the same tokens anywhere
    assert a[30 + 13:] == b[57 + 13:]
    assert keep_mask(passage, 4, 13) == keep_mask(passage, 4, 13)
    assert keep_mask(passage, 4, 13, key=1) != keep_mask(passage, 4, 13)  # the key changes the hash


def test_dropped_tokens_leave_the_loss_but_stay_in_the_context():
    model = tiny_llama()
    seq = [random.Random(2).randrange(64) for _ in range(24)]
    keep_ = torch.tensor([float(i % 3 != 0) for i in range(23)])
    loss, n = lm_loss(model, [seq[:1]], [seq[1:]], keep_[None])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seq])).logits[0, :-1]
    per_token = torch.nn.functional.cross_entropy(logits, torch.tensor(seq[1:]), reduction="none")
    assert n == int(keep_.sum())
    assert loss.item() == pytest.approx((per_token * keep_).sum().item() / n, rel=1e-5)
    # the full forward pass is what the loss saw: a dropped token still shapes the next prediction
    changed = list(seq)
    changed[4] = (seq[4] + 1) % 64  # the target of position 3, which is dropped
    loss2, _ = lm_loss(model, [changed[:1]], [changed[1:]], keep_[None])
    assert keep_[3] == 0 and loss2.item() != pytest.approx(loss.item(), rel=1e-6)


# --- ReST -------------------------------------------------------------------------------


def test_rest_keeps_the_samples_at_or_above_a_rising_threshold():
    samples = [([1], [2]), ([1], [3]), ([4], [5]), ([4], [6])]
    assert keep(samples, [0.2, 0.7, 0.69, 0.95], 0.7) == [([1], [3]), ([4], [6])]
    assert keep(samples, [0.1] * 4, 0.5) == []
    c = RestConfig(grow=2, improve=2, thresholds=(0.5, 0.7, 0.9))
    assert [threshold(c, s) for s in (1, 2, 3, 4, 5)] == [0.5, 0.7, 0.9, 0.9, 0.9]


# --- MiniLLM ----------------------------------------------------------------------------


def test_the_minillm_terms_match_hand_computed_values():
    # one response of two tokens over a two-token vocabulary
    q = torch.tensor([[[0.8, 0.2], [0.5, 0.5]]])  # student, per position
    p = torch.tensor([[[0.6, 0.4], [0.9, 0.1]]])  # teacher
    y = [0, 1]  # the sampled tokens
    s_all = q.log().requires_grad_()
    t_all = p.log()
    s_tok = s_all[0, [0, 1], y][None]
    t_tok = t_all[0, [0, 1], y][None]
    mask = torch.ones(1, 2)
    mix = 0.2
    long_term, single = reverse_kl_terms(s_tok, t_tok, s_all, t_all, mask, mix)
    w0 = 0.8 / (0.2 * 0.6 + 0.8 * 0.8)
    w1 = 0.5 / (0.2 * 0.1 + 0.8 * 0.5)
    r1 = math.log(0.1) - math.log(0.5)  # the reward of the second token
    # the first token's future is the mean reward after it (r1); the last token has none
    assert long_term.item() == pytest.approx(-(w0 * r1 * math.log(0.8)) / 2, rel=1e-6)
    kl0 = 0.8 * math.log(0.8 / 0.6) + 0.2 * math.log(0.2 / 0.4)
    kl1 = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert single.item() == pytest.approx((w0 * kl0 + w1 * kl1) / 2, rel=1e-6)
    assert forward_kl(s_all, t_all, mask).item() == pytest.approx(
        (0.6 * math.log(0.6 / 0.8) + 0.4 * math.log(0.4 / 0.2) + 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)) / 2,
        rel=1e-6)
    (long_term + single).backward()
    assert s_all.grad is not None and torch.isfinite(s_all.grad).all()


def test_the_length_normalised_future_reward_is_a_mean_over_later_tokens():
    s_tok = torch.zeros(1, 4, requires_grad=True)  # log q = 0 at every sampled token
    t_tok = torch.tensor([[-1.0, -2.0, -3.0, -4.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last position is padding
    s_all = torch.zeros(1, 4, 1)
    long_term, _ = reverse_kl_terms(s_tok, t_tok, s_all, s_all, mask, 0.0)
    long_term.backward()
    # d/d log q_t of the long-term term: -future_t / n, future = mean of later rewards in the response
    assert s_tok.grad.tolist()[0] == pytest.approx([-(-2.5) / 3, -(-3.0) / 3, 0.0, 0.0])


# --- quantized DPO ----------------------------------------------------------------------


def test_fake_quantization_uses_2_to_the_bits_levels_per_group():
    w = torch.randn(8, 100, dtype=torch.float64)
    for bits in (2, 3, 4):
        q = fake_quantize(w, bits, 32)
        assert q.shape == w.shape
        for g in range(0, 100, 32):
            block, orig = q[:, g:g + 32], w[:, g:g + 32]
            for row, o in zip(block, orig):
                assert len(torch.unique(row)) <= 2 ** bits
                step = (o.max() - o.min()) / (2 ** bits - 1)
                assert (row - o).abs().max() <= step / 2 + 1e-12
    assert (fake_quantize(w, 8, 32) - w).norm() < (fake_quantize(w, 2, 32) - w).norm()


# --- over-squashing ---------------------------------------------------------------------


def test_runs_of_a_token_with_and_without_commas():
    assert run_ids([7], 7, [0], 3) == [7, 7, 7, 0, 7, 7, 7, 0, 7]
    assert run_ids([7], 6, [0], 3) == [7, 7, 7, 0, 7, 7, 7]  # no comma after the last group
    assert run_ids([7, 8], 2, None, 3) == [7, 8, 7, 8]


# --- the trainer ------------------------------------------------------------------------


def _fit(model, directory, steps, stop=None, c=TrainConfig(lr=1e-2, checkpoint_every=2)):
    data = [[random.Random(i).randrange(64) for _ in range(12)] for i in range(16)]
    seen = []

    def batch_at(i):
        seen.append(i)
        return [data[j] for j in random.Random(i).sample(range(16), 4)]

    def loss_of(b):
        return lm_loss(model, [r[:1] for r in b], [r[1:] for r in b])

    def after(t):
        t.notes.setdefault("steps", []).append(t.step)
        if stop and t.step == stop:
            raise KeyboardInterrupt  # the machine goes down mid-run

    return Trainer(model, c, steps=steps, directory=directory).fit(batch_at, loss_of, after), seen


def test_an_empty_prompt_is_refused_rather_than_misaligned():
    from conclave.local_models.torch_lm import batch

    with pytest.raises(ValueError, match="at least one token"):
        batch([[1], []], [[2], [3]])
    ids, mask, target = batch([[1, 2], [3]], [[4], [5, 6]])
    assert ids.tolist() == [[1, 2, 4], [3, 5, 6]] and target.tolist() == [[0, 1], [1, 1]]


def test_a_stopped_training_run_resumes_where_its_checkpoint_left_it(tmp_path):
    straight, _ = _fit(prepare(tiny_llama(), TrainConfig(lr=1e-2, checkpoint_every=2)), tmp_path / "a", 6)
    with pytest.raises(KeyboardInterrupt):
        _fit(prepare(tiny_llama(), TrainConfig(lr=1e-2, checkpoint_every=2)), tmp_path / "b", 6, stop=5)
    resumed_model = prepare(tiny_llama(), TrainConfig(lr=1e-2, checkpoint_every=2))
    resumed, seen = _fit(resumed_model, tmp_path / "b", 6)
    assert seen == [4, 5]  # from the last checkpoint (step 4), with the batches the stopped run would have seen
    assert resumed.resumed and resumed.log == straight.log and resumed.notes["steps"] == [1, 2, 3, 4, 5, 6]
    for (n, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), n
    with pytest.raises(ValueError, match="another training setup"):
        _fit(prepare(tiny_llama(), TrainConfig(lr=1e-3)), tmp_path / "b", 6, c=TrainConfig(lr=1e-3))


def test_the_trainer_stops_at_its_token_budget_and_accumulates_micro_batches(tmp_path):
    model = prepare(tiny_llama(), TrainConfig(accumulate=2))
    t, seen = _fit(model, None, 100, c=TrainConfig(accumulate=2))
    assert len(t.log) == 100 and seen[:4] == [0, 1, 2, 3]
    t2 = Trainer(prepare(tiny_llama(), TrainConfig()), TrainConfig(), steps=100, tokens=200)
    rows = [[1] * 12] * 4
    t2.fit(lambda i: rows, lambda b: lm_loss(t2.model, [r[:1] for r in b], [r[1:] for r in b]))
    assert t2.tokens == 220 and t2.step == 5  # 44 tokens a step: the budget is met within the fifth


def test_ademamix_and_lora_train_through_the_same_loop():
    torch.manual_seed(0)
    finals = {}
    for name, c in {"adamw": TrainConfig(lr=1e-2), "ademamix": TrainConfig(lr=1e-2, optimizer="ademamix"),
                    "lora": TrainConfig(lr=1e-2, lora=4)}.items():
        model = prepare(tiny_llama(), c)
        t, _ = _fit(model, None, 8, c=c)
        finals[name] = t.log[-1][2]
        assert t.log[-1][2] < t.log[0][2], name
    assert type(Trainer(prepare(tiny_llama(), TrainConfig(optimizer="ademamix")), TrainConfig(optimizer="ademamix"),
                        steps=1).opt).__name__ == "AdEMAMix"
    assert len(set(finals.values())) == 3
    lora_model = prepare(tiny_llama(), TrainConfig(lora=4))
    trainable = {n for n, p in lora_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


# --- results ----------------------------------------------------------------------------


def test_a_lab_result_reports_and_plots_and_survives_json(tmp_path):
    import json

    from conclave.agents.modellab.trace import Curve

    r = LabResult("goldfish", "Title", {"k": 4}, {"Table": [{"model": "a", "x": 0.5}, {"model": "b", "x": 0.25}]},
                  [Curve("c", "x", "y", {"s": [[0, 1.0], [1, 0.5]]})], ["a note"], 60.0)
    back = LabResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r
    md = back.report()
    assert "| model | x |" in md and "| a | 0.500 |" in md and "- a note" in md and "1.0 min" in md
    assert back.plot(tmp_path / "p.png").stat().st_size > 0


def test_bad_recipe_settings_are_refused_before_anything_loads(tmp_path):
    from conclave.app.settings import Settings
    from conclave.app.store import RunStore
    from conclave.app.workflows import WorkflowError, prepare as prepare_workflow

    s = Settings()
    store = RunStore(tmp_path / "r.db")
    with pytest.raises(WorkflowError, match="goldfish: invalid settings:\n  k:"):
        prepare_workflow(s, store, "goldfish", {"k": 1})
    with pytest.raises(WorkflowError, match="unknown setting epoch;"):
        prepare_workflow(s, store, "goldfish", {"epoch": 3})
    with pytest.raises(WorkflowError, match="train.lora"):
        prepare_workflow(s, store, "quant_dpo", {"train": {"lora": -1}})
    with pytest.raises(WorkflowError, match="train.lora must be at least 1"):
        prepare_workflow(s, store, "quant_dpo", {"train": {"lora": 0}})
    with pytest.raises(WorkflowError, match="no token is ever dropped"):
        prepare_workflow(s, store, "goldfish", {"h": 64})
    with pytest.raises(WorkflowError, match="mix"):
        prepare_workflow(s, store, "minillm", {"mix": 1.0})
    with pytest.raises(WorkflowError, match="lengths"):
        prepare_workflow(s, store, "squash", {"lengths": [0, 4]})
    with pytest.raises(WorkflowError, match="seed"):
        prepare_workflow(s, store, "goldfish", {"seed": -1})
    assert set(RECIPES) == {"goldfish", "rest", "minillm", "ademamix", "quant_dpo", "squash"}
    lab = Lab(tmp_path / "nowhere", tmp_path / "w")
    with pytest.raises(LabError, match="not installed"):
        lab.model("smollm2-135m-instruct")
    with pytest.raises(LabError, match="unknown model"):
        lab.model("gpt-5")


# --- end to end on SmolLM2 --------------------------------------------------------------

TINY = {
    "goldfish": GoldfishConfig(passages=4, held_out=2, prefix=8, suffix=8, epochs=2, batch=4),
    "ademamix": AdemamixConfig(seeds=(0,), passages=4, held_out=2, length=16, tokens=120, batch=2, eval_every=2),
    "rest": RestConfig(prompts=4, eval_prompts=2, new_tokens=6, samples=2, grow=1, improve=1, batch=4),
    "quant_dpo": QuantDPOConfig(prompts=4, eval_prompts=2, new_tokens=6, steps=2, batch=2, bits=2),
    "squash": SquashConfig(lengths=(2, 8), count_lengths=(3,)),
    # SmolLM2 teaching itself at temperature 2: the recipe's sampling, losses and evaluation
    # run in every CI, which pulls only SmolLM2 (the Qwen pair is below)
    "minillm": MiniLLMConfig(teacher=SMOL, student=SMOL, temperature=2.0, prompts=2, eval_prompts=2, new_tokens=8,
                             steps=2, batch=2, train=TrainConfig(lr=1e-2, lora=8, clip=1.0)),
}


@pytest.mark.model
@pytest.mark.timeout(900)
@pytest.mark.parametrize("recipe", list(TINY))
def test_each_recipe_runs_end_to_end_on_smollm2_and_is_recorded(recipe, with_model, tmp_path):
    from conclave.app.modellab import execute
    from conclave.app.settings import Settings
    from conclave.app.store import RunStore

    store = RunStore(tmp_path / "runs.db")
    events = []
    run_id, res = execute(Settings(), store, recipe, TINY[recipe], on_event=events.append)
    assert res.recipe == recipe and res.tables and res.notes and res.wall_s > 0
    rows = next(iter(res.tables.values()))
    numbers = [v for r in rows for v in r.values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) for v in numbers)
    assert store.get_run(run_id).status == "done" and LabResult.from_dict(store.get_run(run_id).result) == res
    assert {"run", "phase"} <= {e["kind"] for e in events}
    assert not (with_model / "modellab" / run_id).exists()  # training checkpoints are gone once the result is in
    assert res.plot(tmp_path / "p.png").stat().st_size > 0
    if recipe != "squash":  # a probe of the untrained model; every other recipe trains, and training shows
        measured = [tuple(v for v in r.values() if isinstance(v, float)) for r in rows]
        assert len(set(measured)) > 1, f"every arm of {recipe} measured the same: the training changed nothing"


@pytest.fixture(scope="session")
def qwen_pair(model_dir):
    """The MiniLLM teacher and student, assembled into the session's data dir when their packages
    are installed (conclave models pull …); CI does not pull these 1.6 GB, so there it skips."""
    from conclave.local_models import catalog

    specs = [catalog.CATALOG[n] for n in (MiniLLMConfig().teacher, MiniLLMConfig().student)]
    if not all(catalog._installed_version(p.dist) == p.version for s in specs for p in s.parts):
        pytest.skip("the Qwen2.5-Coder 1.5B and 0.5B packages are not installed: "
                    "conclave models pull qwen2.5-coder-1.5b-instruct (and qwen2.5-coder-0.5b-instruct)")
    for s in specs:
        catalog.pull(s, model_dir)
    return model_dir


@pytest.mark.model
@pytest.mark.timeout(1800)
def test_minillm_distils_qwen_1_5b_into_0_5b_end_to_end(qwen_pair, with_model, tmp_path):
    from conclave.app.modellab import execute
    from conclave.app.settings import Settings
    from conclave.app.store import RunStore

    c = MiniLLMConfig(prompts=2, eval_prompts=2, new_tokens=4, steps=1, batch=2)
    _, res = execute(Settings(), RunStore(tmp_path / "runs.db"), "minillm", c)
    rows = {r["student"]: r for r in res.tables["Held-out instructions"]}
    assert set(rows) == {"student, before", "teacher (reference)", "MiniLLM (reverse KL)", "forward-KL distillation",
                         "SFT on teacher answers"}
    assert all(math.isfinite(r["teacher log-lik / token"]) and 0 <= r["ROUGE-L vs teacher"] <= 1 for r in rows.values())
    assert all(rows[k]["trained tokens"] > 0 for k in ("MiniLLM (reverse KL)", "forward-KL distillation"))


@pytest.mark.model
@pytest.mark.timeout(900)
def test_a_crashed_recipe_resumes_without_redoing_finished_phases_or_steps(with_model, tmp_path):
    from conclave.app.modellab import execute
    from conclave.app.settings import Settings
    from conclave.app.store import RunStore

    store = RunStore(tmp_path / "runs.db")
    c = GoldfishConfig(passages=4, held_out=2, prefix=8, suffix=8, epochs=3, batch=4,
                       train=TrainConfig(lr=3e-4, checkpoint_every=1))

    def crash(e):
        if e["kind"] == "step" and e["phase"] == "goldfish" and e["step"] == 2:
            raise KeyboardInterrupt  # the machine goes down in the second arm's second step

    with pytest.raises(KeyboardInterrupt):
        execute(Settings(), store, "goldfish", c, on_event=crash)
    [failed] = store.list_runs("goldfish")
    assert failed.status == "failed" and (with_model / "modellab" / failed.id / "goldfish" / "state.pt").is_file()
    events = []
    run_id, res = execute(Settings(), store, "goldfish", None, resume=failed.id[:8], on_event=events.append)
    assert run_id == failed.id and store.get_run(run_id).status == "done"
    assert [e["phase"] for e in events if e["kind"] == "phase"] == ["goldfish"]  # base and standard were done
    assert [e["step"] for e in events if e["kind"] == "step"] == [2, 3]  # from the step-1 checkpoint
    assert [r["model"] for r in res.tables[next(iter(res.tables))]] == ["base model", "standard loss", "goldfish loss"]
    with pytest.raises(LabError, match="is a goldfish run; only a rest run resumes here"):
        execute(Settings(), store, "rest", None, resume=run_id)


@pytest.mark.model
@pytest.mark.timeout(600)
def test_conclave_run_takes_a_recipe_with_a_config_file_and_writes_its_plot(with_model, tmp_path):
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "sq.toml").write_text("lengths = [2, 4]\ncount_lengths = [3]\n")
    done = subprocess.run([sys.executable, "-m", "conclave.app.cli", "run", "squash", "-c", str(tmp_path / "sq.toml"),
                           "--plot", str(tmp_path / "sq.png"), "--out", str(tmp_path / "sq.json")],
                          env=dict(os.environ), capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr
    assert "Over-squashing" in done.stdout and "Counting the run" in done.stdout
    assert json.loads((tmp_path / "sq.json").read_text())["config"]["lengths"] == [2, 4]
    assert (tmp_path / "sq.png").stat().st_size > 0
    (tmp_path / "bad.toml").write_text("[train]\nlr = -1\n")
    bad = subprocess.run([sys.executable, "-m", "conclave.app.cli", "run", "goldfish", "-c", str(tmp_path / "bad.toml")],
                         env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "train.lr" in bad.stderr and "Traceback" not in bad.stderr
