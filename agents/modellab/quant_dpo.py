"""Quantized-model DPO (Lee et al. 2024, "Improving Conversational Abilities of Quantized LLMs
via Direct Preference Alignment"): the full-precision model's answer is preferred to its
quantized copy's, so the preference data cost nothing to label.

- Full precision: the catalog model's dequantized weights.
- Quantized: the same weights fake-quantized harder, group-wise and asymmetric (``bits`` bits,
  one scale and offset per ``group`` weights) in every attention and MLP projection; the
  embeddings and norms stay as they are.
- Training: LoRA adapters on the frozen quantized weights, with the DPO loss; the reference is
  the quantized model itself (the adapters switched off).

Reported on held-out chat prompts, along the full-precision model's greedy answers: how often
the quantized model's top token agrees with the full-precision one, and KL(p_full ‖ p_quant)
per token, before and after.
"""

from __future__ import annotations

import copy
import random

import torch

from conclave.agents.losslab.losses import dpo
from conclave.agents.modellab.config import QuantDPOConfig
from conclave.agents.modellab.data import chat, instructions
from conclave.agents.modellab.lab import Lab
from conclave.agents.modellab.trace import Curve, LabError, LabResult
from conclave.local_models import torch_lm
from conclave.local_models.trainer import LORA_TARGETS


def fake_quantize(w: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """``w`` rounded to ``bits`` bits, asymmetric, one scale and offset per ``group``
    consecutive weights of a row (the layout of GGUF's and GPTQ's group-wise formats)."""
    rows, cols = w.shape
    pad = (-cols) % group
    g = torch.nn.functional.pad(w, (0, pad)).reshape(rows, -1, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / (2 ** bits - 1)).clamp(min=1e-12)
    q = ((g - lo) / scale).round().clamp(0, 2 ** bits - 1) * scale + lo
    return q.reshape(rows, -1)[:, :cols]


def quantize(model, bits: int, group: int) -> int:
    """Fake-quantizes ``model``'s projections in place; the number of weights changed."""
    n = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LORA_TARGETS:
                module.weight.copy_(fake_quantize(module.weight, bits, group))
                n += module.weight.numel()
    return n


@torch.no_grad()
def agreement(full, quant, prompts: list[list[int]], answers: list[list[int]]) -> tuple[float, float]:
    """(top-token agreement, mean KL(p_full ‖ p_quant)) over the answers' positions."""
    agree = kl = count = 0.0
    for i in range(0, len(prompts), 4):
        p, y = prompts[i:i + 4], answers[i:i + 4]
        _, mask, f = torch_lm.token_logps(full, p, y)
        _, _, q = torch_lm.token_logps(quant, p, y)
        agree += ((f.argmax(-1) == q.argmax(-1)).float() * mask).sum().item()
        kl += ((f.exp() * (f - q)).sum(-1) * mask).sum().item()
        count += mask.sum().item()
    return agree / count, kl / count


def run(c: QuantDPOConfig, lab: Lab) -> LabResult:
    tok, full = lab.model(c.model)
    changed = []
    _, quant = lab.trainable(c.model, c.train, lambda m: changed.append(quantize(m, c.bits, c.group)))
    prompts = chat(tok, instructions(c.prompts + c.eval_prompts, c.seed))
    train, held = prompts[:c.prompts], prompts[c.prompts:]

    def answers(model, ps):
        return [a + [tok.eos_token_id] if len(a) < c.new_tokens else a for a in torch_lm.greedy(model, tok, ps, c.new_tokens)]

    def pairs() -> dict:
        with quant.disable_adapter():
            rejected = answers(quant, train)
        chosen = answers(full, train)
        keep = [i for i in range(len(train)) if chosen[i] != rejected[i]]
        return {"idx": keep, "chosen": [chosen[i] for i in keep], "rejected": [rejected[i] for i in keep]}

    data = lab.phase("pairs", pairs)
    if not data["idx"]:
        raise LabError(f"the {c.bits}-bit model answers every training prompt as the full-precision one does, so "
                       "there are no preference pairs: quantize harder (fewer bits) or use more prompts")
    held_answers = lab.phase("held-answers", lambda: answers(full, held))
    with quant.disable_adapter():
        before = lab.phase("before", lambda: agreement(full, quant, held, held_answers))
    ps = [train[i] for i in data["idx"]]
    with quant.disable_adapter():
        ref_c = torch_lm.chunked(lambda p, y: torch_lm.seq_logps(quant, p, y), ps, data["chosen"], 4)
        ref_r = torch_lm.chunked(lambda p, y: torch_lm.seq_logps(quant, p, y), ps, data["rejected"], 4)

    def batch_at(i: int) -> list[int]:
        return random.Random(c.seed * 1_000_003 + i).sample(range(len(ps)), min(c.batch, len(ps)))

    def loss_of(idx: list[int]):
        p = [ps[i] for i in idx]
        both = torch_lm.seq_logps(quant, p + p, [data["chosen"][i] for i in idx] + [data["rejected"][i] for i in idx])
        loss = dpo(both[:len(idx)], both[len(idx):], ref_c[idx], ref_r[idx], c.beta).mean()
        return loss, sum(len(data["chosen"][i]) + len(data["rejected"][i]) for i in idx)

    def trained() -> dict:
        t = lab.trainer("dpo", quant, c.train, steps=c.steps)
        t.fit(batch_at, loss_of, lambda t: lab.step("dpo", t.step, c.steps, loss=t.log[-1][2]))
        requantized = copy.deepcopy(quant).merge_and_unload()  # the adapters folded in, then quantized again
        quantize(requantized, c.bits, c.group)
        return {"after": agreement(full, quant, held, held_answers),
                "requantized": agreement(full, requantized, held, held_answers),
                "curve": [[s, x] for s, _, x in t.log]}

    out = lab.phase("dpo", trained)
    after, requantized = out["after"], out["requantized"]
    table = [{"model": "full precision (reference)", "top-token agreement": 1.0, "KL(full ‖ model) / token": 0.0},
             {"model": f"{c.bits}-bit, before DPO", "top-token agreement": before[0], "KL(full ‖ model) / token": before[1]},
             {"model": f"{c.bits}-bit + LoRA, after DPO", "top-token agreement": after[0],
              "KL(full ‖ model) / token": after[1]},
             {"model": f"the same, adapters merged and {c.bits}-bit again", "top-token agreement": requantized[0],
              "KL(full ‖ model) / token": requantized[1]}]
    better = after[0] > before[0] and after[1] < before[1]
    notes = [
        f"{c.model}: {changed[0]:,} projection weights fake-quantized to {c.bits} bits in groups of {c.group}. "
        f"{len(ps)} of {c.prompts} training prompts gave the two models different greedy answers (the pairs); "
        f"{c.steps} DPO steps of {c.batch} pairs, β = {c.beta}, LoRA rank {c.train.lora}, lr {c.train.lr}.",
        f"Measured along the full-precision model's greedy answers to {c.eval_prompts} held-out prompts. The trained "
        "model keeps its adapters in full precision (QLoRA-style); the paper updates the quantized weights "
        "themselves, so the last row folds the adapters in and quantizes again to show what survives.",
        ("As the paper reports, aligning the quantized model to the full-precision one's preferences brings its "
         "token distribution closer." if better else
         "Unlike the paper, DPO did not bring the quantized model closer on both measures here."),
    ]
    return LabResult("quant_dpo", "DPO from full-precision preferences for a quantized model", c.model_dump(mode="json"),
                     {"Held-out chat prompts": table}, [Curve("DPO loss", "step", "loss", {"DPO": out["curve"]})],
                     notes)
