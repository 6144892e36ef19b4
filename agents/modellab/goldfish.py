"""Goldfish loss (Hans et al. 2024, "Be like a Goldfish, Don't Memorize!").

Each token is left out of the next-token loss with probability 1/k. Whether it is left out is
decided by a hash of the h tokens before it, so a passage seen again drops the same tokens
and the model never learns them verbatim; dropped tokens still serve as context.

The experiment: fine-tune the model for several epochs on a few Wikipedia extracts, once with
the standard loss and once with the goldfish loss. On the trained passages, measure verbatim
extraction (the greedy continuation of a prefix matches the true next tokens exactly) and the
continuation's ROUGE-L; on held-out extracts, the loss. The paper's claim: extraction near
zero, at a small cost in held-out loss.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct

import torch

from conclave.agents.modellab.config import GoldfishConfig
from conclave.agents.modellab.data import extracts
from conclave.agents.modellab.lab import Lab
from conclave.agents.modellab.trace import Curve, LabResult
from conclave.local_models import torch_lm
from conclave.local_models.trainer import eval_loss, lm_loss


def keep_mask(ids: list[int], k: int, h: int, key: int = 0) -> list[bool]:
    """For each position, whether its token counts in the loss. Position i is dropped when a
    hash of ids[i-h:i] falls in one of k buckets; the first h positions, which lack a full
    context, always count. k = 1 would drop everything, so k >= 2."""
    if k < 2:
        raise ValueError("goldfish k must be at least 2")
    salt = key.to_bytes(8, "little")
    keep = [True] * min(h, len(ids))
    for i in range(h, len(ids)):
        window = struct.pack(f"<{h}q", *ids[i - h:i])
        digest = hashlib.blake2b(window, digest_size=8, key=salt).digest()
        keep.append(int.from_bytes(digest, "little") % k != 0)
    return keep


def extraction(model, tok, trained: list[list[int]], c: GoldfishConfig) -> dict:
    """Exact-match rate and mean ROUGE-L of greedy continuations of the trained prefixes."""
    from rouge_score import rouge_scorer

    conts = torch_lm.greedy(model, tok, [p[:c.prefix] for p in trained], c.suffix, stop_at_eos=False)
    truth = [p[c.prefix:] for p in trained]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [scorer.score(tok.decode(t), tok.decode(g))["rougeL"].fmeasure for t, g in zip(truth, conts)]
    exact = [g[:c.suffix] == t for g, t in zip(conts, truth)]
    token = [sum(a == b for a, b in zip(g, t)) / len(t) for g, t in zip(conts, truth)]
    return {"exact": sum(exact) / len(exact), "rouge_l": sum(rouge) / len(rouge), "token_match": sum(token) / len(token)}


def run(c: GoldfishConfig, lab: Lab) -> LabResult:
    tok, base = lab.model(c.model)
    both = extracts(tok, c.passages + c.held_out, c.prefix + c.suffix, c.seed)
    trained, held = both[:c.passages], both[c.passages:]

    def measure(model) -> dict:
        return {**extraction(model, tok, trained, c), "held_out_loss": eval_loss(model, held)}

    rows = {"base model": lab.phase("base", lambda: measure(base))}
    curves = {}
    per_epoch = math.ceil(c.passages / c.batch)
    steps = c.epochs * per_epoch
    for arm in ("standard", "goldfish"):
        def train(arm=arm) -> dict:
            _, model = lab.trainable(c.model, c.train)
            weights = None
            if arm == "goldfish":  # aligned with the continuation, which starts at position 1
                weights = [torch.tensor(keep_mask(p, c.k, c.h, c.seed)[1:], dtype=torch.float32) for p in trained]

            def batch_at(i: int) -> list[int]:
                epoch, j = divmod(i, per_epoch)
                order = list(range(c.passages))
                random.Random(c.seed * 7919 + epoch).shuffle(order)
                return order[j * c.batch:(j + 1) * c.batch]

            def loss_of(idx: list[int]):
                w = torch.stack([weights[i] for i in idx]) if weights else None
                return lm_loss(model, [trained[i][:1] for i in idx], [trained[i][1:] for i in idx], w)

            def after(t) -> None:
                lab.step(arm, t.step, steps, loss=t.log[-1][2])

            t = lab.trainer(arm, model, c.train, steps=steps).fit(batch_at, loss_of, after)
            return {**measure(model), "curve": [[s / per_epoch, loss] for s, _, loss in t.log]}

        out = lab.phase(arm, train)
        curves[arm] = out.pop("curve")
        rows[f"{arm} loss"] = out
    table = [{"model": name, "exact extraction": r["exact"], "ROUGE-L": r["rouge_l"], "token match": r["token_match"],
              "held-out loss": r["held_out_loss"]} for name, r in rows.items()]
    std, gold = rows["standard loss"], rows["goldfish loss"]
    masks = [keep_mask(p, c.k, c.h, c.seed)[1:] for p in trained]
    dropped = 1 - sum(map(sum, masks)) / sum(map(len, masks))
    notes = [
        f"{c.passages} Wikipedia extracts trained for {c.epochs} epochs ({c.model}, lr {c.train.lr}); extraction is "
        f"the greedy {c.suffix}-token continuation of each extract's first {c.prefix} tokens; held-out loss over "
        f"{c.held_out} other extracts.",
        f"Goldfish k = {c.k}, h = {c.h}: {dropped:.0%} of the trained tokens never enter the loss (1/k of those "
        f"after the first h of each passage). Its training loss is over the kept tokens only.",
        _verdict(std, gold),
        f"Held-out loss: {rows['base model']['held_out_loss']:.3f} before training, {std['held_out_loss']:.3f} "
        f"standard, {gold['held_out_loss']:.3f} goldfish: "
        + ("both arms overfit the few passages, so the held-out comparison is between two overfit models."
           if min(std["held_out_loss"], gold["held_out_loss"]) > rows["base model"]["held_out_loss"] else
           "training on the passages helped held-out loss."),
    ]
    return LabResult("goldfish", "Goldfish loss: memorisation and held-out loss", c.model_dump(mode="json"),
                     {"Extraction on the trained passages; loss on held-out passages": table},
                     [Curve("Training loss", "epoch", "loss (nats/token)", curves)], notes)


def _verdict(std: dict, gold: dict) -> str:
    cost = gold["held_out_loss"] - std["held_out_loss"]
    if std["exact"] == 0:
        return ("The standard loss did not memorise any passage verbatim here, so this run cannot show the goldfish "
                "effect: train longer or at a higher learning rate.")
    agree = gold["exact"] <= 0.25 * std["exact"]
    return (f"Exact extraction fell from {std['exact']:.0%} to {gold['exact']:.0%} with goldfish loss, at a held-out "
            f"loss cost of {cost:+.3f} nats/token: "
            + ("as the paper reports." if agree else "a weaker effect than the paper reports."))
