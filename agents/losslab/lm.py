"""The expensive fitness: the paper's IMDb experiment in miniature, on SmolLM2-135M.

- Policy and reference: SmolLM2-135M-Instruct from our GGUF, dequantized into transformers'
  Llama (fp32 on CPU; the embeddings stay frozen, which halves the optimiser's memory).
- Reward: P(fresh) from a TF-IDF + logistic-regression classifier trained with scikit-learn
  on the rotten-tomatoes snippets (fresh against rotten).
- Prompts: the first words of review snippets the classifier did not train on.
- Pairs: two continuations sampled from the reference per prompt; the higher reward is chosen.
- Training: the loss on the continuations' summed log-probabilities, AdamW, ``steps`` steps.
- Along the way, every ``eval_every`` steps: continuations of held-out prompts sampled from
  the policy give the mean reward, and the mean of log π(y) − log π_ref(y) over those samples
  estimates KL(π‖π_ref), as the paper does. These points are the reward–KL frontier.

The trajectory is a list of (step, KL, reward), the shape the synthetic task gives.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from conclave.agents.losslab.config import LMConfig
from conclave.agents.losslab.synthetic import mean_loss
from conclave.local_models import torch_lm
from conclave.local_models.torch_lm import chunked, sample, seq_logps
from conclave.local_models.trainer import TrainConfig, Trainer, prepare


@dataclass
class Pairs:
    prompts: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    margin: float  # mean reward of chosen minus rejected


class Sentiment:
    """P(fresh) of a text: the reward model, trained on every fresh/rotten snippet but the prompts'."""

    def __init__(self, texts: list[str], labels: list[int]):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        self.clf = LogisticRegression(max_iter=1000, C=4.0).fit(self.vec.fit_transform(texts), labels)

    def __call__(self, texts: list[str]) -> list[float]:
        return self.clf.predict_proba(self.vec.transform(texts))[:, 1].tolist()


def snippets(seed: int) -> tuple[list[str], list[int]]:
    from conclave.agents.evoprompt.tasks import read_rows
    from conclave.retrieval import corpora
    rows = [(t, 1 if c == "fresh" else 0) for t, c in read_rows(corpora.data_file("rotten-tomatoes"), "text", "category")
            if c in ("fresh", "rotten")]
    random.Random(seed).shuffle(rows)
    return [t for t, _ in rows], [y for _, y in rows]


class Experiment:
    """One reward model, prompt set and preference data set, shared by every loss trained on it."""

    def __init__(self, c: LMConfig, weights: Path):
        self.c = c
        texts, labels = snippets(c.seed)
        held = c.prompts + c.eval_prompts
        self.reward = Sentiment(texts[held:], labels[held:])
        self.tok, self.ref = torch_lm.load(weights, threads=c.threads)
        torch_lm.frozen(self.ref)
        self.training = TrainConfig(lr=c.lr, clip=10.0)
        self.policy = prepare(copy.deepcopy(self.ref), self.training)
        self._init = {k: v.clone() for k, v in self.policy.state_dict().items()}
        opening = [" ".join(t.split()[:c.prompt_words]) for t in texts[:held]]
        enc = [self.tok(o, add_special_tokens=False)["input_ids"] for o in opening]
        self.train_prompts, self.eval_prompts = enc[:c.prompts], enc[c.prompts:]
        self.pairs = self._pairs()

    def text(self, prompt: list[int], cont: list[int]) -> str:
        return self.tok.decode(prompt + cont, skip_special_tokens=True)

    def _pairs(self) -> Pairs:
        c = self.c
        conts = sample(self.ref, self.tok, self.train_prompts, c.new_tokens, c.seed, n=2)
        prompts, chosen, rejected, gaps = [], [], [], []
        for i, p in enumerate(self.train_prompts):
            a, b = conts[2 * i], conts[2 * i + 1]
            ra, rb = self.reward([self.text(p, a), self.text(p, b)])
            if ra == rb:
                continue
            prompts.append(p)
            chosen.append(a if ra > rb else b)
            rejected.append(b if ra > rb else a)
            gaps.append(abs(ra - rb))
        ref = partial(seq_logps, self.ref)
        return Pairs(prompts, chosen, rejected, chunked(ref, prompts, chosen), chunked(ref, prompts, rejected),
                     sum(gaps) / len(gaps))

    def evaluate(self, seed: int) -> tuple[float, float]:
        """(KL estimate, mean reward) of the policy on the held-out prompts."""
        self.policy.eval()
        conts = sample(self.policy, self.tok, self.eval_prompts, self.c.new_tokens, seed)
        with torch.no_grad():
            kl = (seq_logps(self.policy, self.eval_prompts, conts) - seq_logps(self.ref, self.eval_prompts, conts)).mean()
        reward = self.reward([self.text(p, y) for p, y in zip(self.eval_prompts, conts)])
        self.policy.train()
        return float(kl), sum(reward) / len(reward)

    def train(self, loss_fn, beta: float) -> list[tuple[int, float, float]]:
        """Train the policy from the reference with ``loss_fn``; the trajectory (step, KL, reward)."""
        c, pb = self.c, self.pairs
        self.policy.load_state_dict(self._init)
        trajectory = [(0, *self.evaluate(c.seed + 1000))]

        def batch_at(i: int) -> tuple[int, list[int]]:
            idx = random.Random(c.seed * 1_000_003 + i).sample(range(len(pb.prompts)), min(c.batch, len(pb.prompts)))
            return i + 1, idx  # the step it trains, for the loss's error messages

        def loss_of(b: tuple[int, list[int]]) -> tuple[torch.Tensor, int]:
            step, idx = b
            prompts = [pb.prompts[i] for i in idx]
            both = seq_logps(self.policy, prompts + prompts, [pb.chosen[i] for i in idx] + [pb.rejected[i] for i in idx])
            loss = mean_loss(loss_fn, step, both[:len(idx)], both[len(idx):], pb.ref_chosen[idx],
                             pb.ref_rejected[idx], beta)
            return loss, sum(len(pb.chosen[i]) + len(pb.rejected[i]) for i in idx)

        def after(t: Trainer) -> None:
            if t.step % c.eval_every == 0 or t.step == c.steps:
                trajectory.append((t.step, *self.evaluate(c.seed + 1000 + t.step)))

        Trainer(self.policy, self.training, steps=c.steps).fit(batch_at, loss_of, after)
        return trajectory
