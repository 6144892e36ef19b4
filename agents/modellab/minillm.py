"""MiniLLM (Gu et al. 2023, "MiniLLM: Knowledge Distillation of Large Language Models"):
distill a teacher into a student by minimising the reverse KL, KL(q_student ‖ p_teacher),
with a policy gradient. Three of the paper's devices are here:

- the single-step term: each position's KL(q_t ‖ p_t) is taken exactly over the vocabulary
  and differentiated directly, leaving the policy gradient only the future reward;
- teacher-mixed sampling: responses are sampled from α·p + (1−α)·q, and every token is
  reweighted by q/(α·p + (1−α)·q) (bounded by 1/(1−α));
- length normalisation: a token's future reward is the mean, not the sum, of the later
  rewards r_t = log p(y_t) − log q(y_t).

Baselines on the same prompts and steps: forward-KL distillation (token-level KL(p ‖ q) on
the teacher's answers) and supervised fine-tuning on the teacher's answers. Reported on
held-out instructions: ROUGE-L of the student's greedy answer against the teacher's, and the
teacher's log-likelihood of the student's answer (per token).
"""

from __future__ import annotations

import random
import statistics

import torch

from conclave.agents.modellab.config import MiniLLMConfig
from conclave.agents.modellab.data import chat, instructions
from conclave.agents.modellab.lab import Lab
from conclave.agents.modellab.trace import Curve, LabError, LabResult
from conclave.local_models import torch_lm
from conclave.local_models.trainer import lm_loss


def reverse_kl_terms(student_tok: torch.Tensor, teacher_tok: torch.Tensor, student_all: torch.Tensor,
                     teacher_all: torch.Tensor, mask: torch.Tensor, mix: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(long-term, single-step) losses of one batch, each averaged over the response tokens.
    ``*_tok``: log-probabilities of the sampled tokens [B, T]; ``*_all``: log-softmax over the
    vocabulary [B, T, V]; ``mask`` marks response positions. Gradients flow through the
    student's tensors only."""
    q = student_tok.detach().exp()
    weight = q / (mix * teacher_tok.exp() + (1 - mix) * q)  # teacher-mixed sampling's importance weight
    reward = (teacher_tok - student_tok.detach()) * mask
    later = reward.flip(-1).cumsum(-1).flip(-1) - reward  # sum over t' > t
    count = mask.flip(-1).cumsum(-1).flip(-1) - mask
    future = torch.where(count > 0, later / count.clamp(min=1), torch.zeros_like(later))  # length-normalised
    n = mask.sum().clamp(min=1)
    long_term = -(weight * future * student_tok * mask).sum() / n
    kl = (student_all.exp() * (student_all - teacher_all)).sum(-1)  # KL(q_t ‖ p_t), exact over the vocabulary
    single = (weight * kl * mask).sum() / n
    return long_term, single


def forward_kl(student_all: torch.Tensor, teacher_all: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-level KL(p_t ‖ q_t), averaged over the masked positions."""
    kl = (teacher_all.exp() * (teacher_all - student_all)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def mixed_sample(student, teacher, prompts: list[list[int]], new_tokens: int, mix: float, seed: int, pad: int,
                 eos: int) -> list[list[int]]:
    """Responses sampled token by token from mix·p_teacher + (1−mix)·q_student, both models
    decoding with their own KV cache."""
    width = max(map(len, prompts))
    dev = student.device
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=dev)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    gen = torch.Generator(device=dev).manual_seed(seed)
    caches, step, out = [None, None], ids, []
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=dev)
    for _ in range(new_tokens):
        probs = []
        for k, model in enumerate((student, teacher)):
            o = model(input_ids=step, attention_mask=mask, position_ids=pos, cache=caches[k], use_cache=True)
            caches[k] = o.cache
            probs.append(torch.softmax(o.logits[:, -1].float(), -1))
        nxt = torch.multinomial(mix * probs[1] + (1 - mix) * probs[0], 1, generator=gen).squeeze(-1)
        nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
        out.append(nxt)
        finished |= nxt == eos
        if finished.all():
            break
        step, pos = nxt[:, None], pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(step)], -1)
    rows = torch.stack(out, -1).tolist()
    return [r[:r.index(eos) + 1] if eos in r else r for r in rows]


class Tempered(torch.nn.Module):
    """A model whose logits are divided by a temperature: its distribution, flattened (T > 1)
    or sharpened (T < 1); the greedy answer is the same."""

    def __init__(self, model, temperature: float):
        super().__init__()
        self.model, self.temperature = model, temperature

    @property
    def device(self):
        return self.model.device

    def forward(self, **kw):
        out = self.model(**kw)
        out.logits = out.logits / self.temperature
        return out

    def generate(self, **kw):  # greedy decoding: the temperature changes no argmax
        return self.model.generate(**kw)


def run(c: MiniLLMConfig, lab: Lab) -> LabResult:
    ttok, teacher = lab.model(c.teacher)
    if c.temperature != 1:
        teacher = Tempered(teacher, c.temperature)
    stok, base = lab.model(c.student)
    if len(ttok) != len(stok) or ttok.eos_token_id != stok.eos_token_id:
        raise LabError(f"{c.teacher} and {c.student} do not share a tokenizer; distillation here needs one")
    texts = instructions(c.prompts + c.eval_prompts, c.seed)
    prompts = chat(stok, texts)
    train, held = prompts[:c.prompts], prompts[c.prompts:]
    pad, eos = stok.pad_token_id, stok.eos_token_id

    def finished(answers: list[list[int]]) -> list[list[int]]:
        """An answer that stopped before the budget ends with its end token, as sampled ones do."""
        return [a + [eos] if len(a) < c.new_tokens else a for a in answers]

    answers = lab.phase("teacher", lambda: finished(torch_lm.greedy(teacher, ttok, prompts, c.new_tokens)))
    t_train, t_held = answers[:c.prompts], answers[c.prompts:]

    def batch_at(i: int) -> list[int]:
        return random.Random(c.seed * 1_000_003 + i).sample(range(len(train)), min(c.batch, len(train)))

    def teacher_logps(p, y):
        with torch.no_grad():
            return torch_lm.token_logps(teacher, p, y)

    def minillm_loss(model, idx: list[int], step_seed: int):
        p = [train[i] for i in idx]
        y = [r or [eos] for r in mixed_sample(model, teacher, p, c.new_tokens, c.mix, step_seed, pad, eos)]
        s_tok, mask, s_all = torch_lm.token_logps(model, p, y)
        t_tok, _, t_all = teacher_logps(p, y)
        long_term, single = reverse_kl_terms(s_tok, t_tok, s_all, t_all, mask, c.mix)
        return long_term + single, int(mask.sum().item())

    def fkd_loss(model, idx: list[int]):
        p, y = [train[i] for i in idx], [t_train[i] for i in idx]
        _, mask, s_all = torch_lm.token_logps(model, p, y)
        _, _, t_all = teacher_logps(p, y)
        return forward_kl(s_all, t_all, mask), int(mask.sum().item())

    def sft_loss(model, idx: list[int]):
        return lm_loss(model, [train[i] for i in idx], [t_train[i] for i in idx])

    def teacher_ll(answers: list[list[int]]) -> float:
        """The teacher's log-likelihood of held-out answers, per token."""
        answers = [a or [eos] for a in answers]
        ll = torch_lm.chunked(lambda p, y: torch_lm.seq_logps(teacher, p, y), held, answers, 4)
        return float(ll.sum()) / sum(map(len, answers))

    def evaluate(model) -> dict:
        from rouge_score import rouge_scorer

        out = torch_lm.greedy(model, stok, held, c.new_tokens)
        scorer = rouge_scorer.RougeScorer(["rougeL"])
        rouge = [scorer.score(stok.decode(t, skip_special_tokens=True), stok.decode(s, skip_special_tokens=True))
                 ["rougeL"].fmeasure for t, s in zip(t_held, out)]
        return {"rouge_l": statistics.fmean(rouge), "teacher_ll": teacher_ll(out),
                "length": statistics.fmean(len(s) for s in out)}

    rows = {"student, before": lab.phase("initial", lambda: evaluate(base)),
            "teacher (reference)": {"rouge_l": 1.0, "teacher_ll": lab.phase("teacher-ll", lambda: teacher_ll(t_held)),
                                    "length": statistics.fmean(len(a) for a in t_held)}}
    curves = {}
    arms = {"MiniLLM (reverse KL)": lambda m, idx, step: minillm_loss(m, idx, c.seed * 7 + step),
            "forward-KL distillation": lambda m, idx, step: fkd_loss(m, idx),
            "SFT on teacher answers": lambda m, idx, step: sft_loss(m, idx)}
    for name, loss in arms.items():
        phase = name.split(" ")[0].lower()

        def distil(name=name, loss=loss, phase=phase) -> dict:
            _, model = lab.trainable(c.student, c.train)
            t = lab.trainer(phase, model, c.train, steps=c.steps)
            t.fit(lambda i: (i + 1, batch_at(i)), lambda b: loss(model, b[1], b[0]),
                  lambda t: lab.step(phase, t.step, c.steps, loss=t.log[-1][2]))
            return {**evaluate(model), "curve": [[s, x] for s, _, x in t.log], "tokens": t.tokens}

        out = lab.phase(phase, distil)
        curves[name] = out.pop("curve")
        rows[name] = out
    table = [{"student": k, "ROUGE-L vs teacher": r["rouge_l"], "teacher log-lik / token": r["teacher_ll"],
              "answer tokens": r["length"], **({"trained tokens": r["tokens"]} if "tokens" in r else {})}
             for k, r in rows.items()]
    mini, fkd, sft = (rows[k] for k in arms)
    best_ll = max((mini, fkd, sft), key=lambda r: r["teacher_ll"])
    notes = [
        f"Teacher {c.teacher}, student {c.student} (LoRA rank {c.train.lora}, lr {c.train.lr}); {c.steps} steps of "
        f"{c.batch} of {c.prompts} instructions, responses up to {c.new_tokens} tokens; held-out: {c.eval_prompts} "
        f"instructions, greedy answers. Teacher-mixed sampling α = {c.mix}"
        + (f"; the teacher at temperature {c.temperature:g}." if c.temperature != 1 else "."),
        "The paper's pre-training loss term and PPO-style ratio clipping are left out: the mixed-sampling weight is "
        "already bounded by 1/(1−α).",
        ("As in the paper, MiniLLM's answers get the highest teacher log-likelihood."
         if best_ll is mini else
         f"Unlike the paper, {next(k for k in arms if rows[k] is best_ll)} gets the highest teacher log-likelihood "
         "here; at a few steps on a few prompts the policy gradient is noisy."),
    ]
    return LabResult("minillm", "MiniLLM: reverse-KL distillation", c.model_dump(mode="json"),
                     {"Held-out instructions": table},
                     [Curve("Training loss", "step", "loss", curves)], notes)
