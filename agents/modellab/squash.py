"""Over-squashing probe (Barbero et al. 2024, "Transformers need glasses! Information
over-squashing in language tasks").

A decoder's last-token representation of a run of n copies of one token and of n+1 copies
grow indistinguishable as n grows: the information that one more token came in is squashed
away, layer by layer. Breaking the run with commas every few tokens keeps them apart. Here:

- the distance ‖h_L(n+1) − h_L(n)‖ between the last token's hidden states, for every layer L
  and length n, for the plain run and the comma-broken run;
- the same model asked to count the run, plain and with commas: its answer is the count it
  scores most likely among n ± a few, each candidate scored as the whole reply (a 135M model
  left to generate copies the run back instead of counting it).
"""

from __future__ import annotations

import torch

from conclave.agents.modellab.config import SquashConfig
from conclave.agents.modellab.data import chat
from conclave.agents.modellab.lab import Lab
from conclave.agents.modellab.trace import Curve, LabError, LabResult
from conclave.local_models import torch_lm


def run_ids(unit: list[int], n: int, comma: list[int] | None, every: int) -> list[int]:
    """n copies of ``unit``, with ``comma`` after every ``every`` copies (not after the last)."""
    out: list[int] = []
    for i in range(n):
        out += unit
        if comma and (i + 1) % every == 0 and i + 1 < n:
            out += comma
    return out


@torch.no_grad()
def last_states(model, ids: list[int]) -> torch.Tensor:
    """The last position's hidden state after the embeddings and after every layer, [layers+1, d]."""
    out = model(input_ids=torch.tensor([ids], device=model.device), output_hidden_states=True)
    return torch.stack([h[0, -1].float() for h in out.hidden_states]).cpu()


def distances(model, head: list[int], unit: list[int], lengths, comma, every) -> list[list[float]]:
    """Per length n, per layer: ‖h(n+1) − h(n)‖₂ of the last token."""
    return [(last_states(model, head + run_ids(unit, n + 1, comma, every))
             - last_states(model, head + run_ids(unit, n, comma, every))).norm(dim=-1).tolist() for n in lengths]


def run(c: SquashConfig, lab: Lab) -> LabResult:
    tok, model = lab.model(c.model)
    unit = tok(c.token, add_special_tokens=False)["input_ids"]
    comma = tok(",", add_special_tokens=False)["input_ids"]
    if not unit:
        raise LabError(f"{c.token!r} encodes to no token")
    head = [tok.bos_token_id] if tok.bos_token_id is not None else []
    plain = lab.phase("plain", lambda: distances(model, head, unit, c.lengths, None, c.comma_every))
    commas = lab.phase("commas", lambda: distances(model, head, unit, c.lengths, comma, c.comma_every))
    layers = len(plain[0])

    def asks(with_commas: bool) -> list[list[int]]:
        qs = []
        for n in c.count_lengths:
            seq = tok.decode(run_ids(unit, n, comma if with_commas else None, c.comma_every))
            qs.append(f"How many times does {c.token!r} appear in this sequence? {seq}\nAnswer with a number only.")
        return chat(tok, qs)

    def counting() -> dict:
        """Per format, per n: (the most likely count, its probability among the candidates,
        the probability of the true count)."""
        out = {}
        for key, with_commas in (("plain", False), ("commas", True)):
            rows = []
            for n, prompt in zip(c.count_lengths, asks(with_commas)):
                cands = list(range(max(1, n - c.count_spread), n + c.count_spread + 1))
                answers = [tok(str(k), add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for k in cands]
                p = torch.softmax(torch_lm.chunked(lambda ps, ys: torch_lm.seq_logps(model, ps, ys),
                                                   [prompt] * len(cands), answers), 0)
                best = int(p.argmax())
                rows.append([cands[best], float(p[best]), float(p[cands.index(n)])])
            out[key] = rows
        return out

    counts = lab.phase("counting", counting)
    shown = sorted({1, layers // 2, layers - 1})
    dist_rows = [{"n": n, **{f"layer {L} plain": plain[i][L] for L in shown},
                  **{f"layer {L} commas": commas[i][L] for L in shown}} for i, n in enumerate(c.lengths)]
    count_rows = [{"n": n, "answer (plain)": counts["plain"][i][0], "P(n) plain": counts["plain"][i][2],
                   "answer (commas)": counts["commas"][i][0], "P(n) commas": counts["commas"][i][2]}
                  for i, n in enumerate(c.count_lengths)]
    exact = {k: sum(row[0] == n for row, n in zip(v, c.count_lengths)) for k, v in counts.items()}
    last = layers - 1
    first_p, last_p, first_c, last_c = plain[0][last], plain[-1][last], commas[0][last], commas[-1][last]
    notes = [
        f"{c.model}: last-token hidden states after the embeddings (layer 0) and each of its {layers - 1} layers "
        f"(the last one after the final norm, as transformers returns it, so on its own scale), for runs of "
        f"{c.token!r} of n and n+1 tokens; with commas, one after every {c.comma_every}.",
        f"Final layer, n = {c.lengths[0]} → {c.lengths[-1]}: the distance goes {first_p:.3g} → {last_p:.3g} plain "
        f"and {first_c:.3g} → {last_c:.3g} with commas. "
        + ("As in the paper, the plain run's representations converge as n grows and the commas keep them apart."
           if last_p < first_p and last_c > last_p else
           "This does not match the paper's picture on every count; see the table."),
        f"Counting: the model's answer is the count it finds most likely among n ± {c.count_spread} (each scored as a "
        f"whole reply to the question); exact for {exact['plain']} of {len(c.count_lengths)} lengths plain and "
        f"{exact['commas']} with commas.",
    ]
    series = {f"layer {L} plain": [[n, plain[i][L]] for i, n in enumerate(c.lengths)] for L in shown}
    series |= {f"layer {L} commas": [[n, commas[i][L]] for i, n in enumerate(c.lengths)] for L in shown}
    curves = [Curve("‖h(n+1) − h(n)‖ of the last token", "n (run length)", "distance", series, log_y=True),
              Curve("Counting the run", "n", "model's answer",
                    {"truth": [[n, n] for n in c.count_lengths],
                     **{k: [[n, row[0]] for n, row in zip(c.count_lengths, v)] for k, v in counts.items()}})]
    return LabResult("squash", "Over-squashing: long runs of one token", c.model_dump(mode="json"),
                     {"Distance between the last-token states of n and n+1 repeats": dist_rows,
                      "Counting the run": count_rows}, curves, notes)

