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
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from agents.losslab.config import LMConfig
from agents.losslab.synthetic import mean_loss


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
    from agents.evoprompt.tasks import read_rows
    from retrieval import corpora

    rows = [(t, 1 if c == "fresh" else 0) for t, c in read_rows(corpora.data_file("rotten-tomatoes"), "text", "category")
            if c in ("fresh", "rotten")]
    random.Random(seed).shuffle(rows)
    return [t for t, _ in rows], [y for _, y in rows]


def load(weights: Path, threads: int):
    """(tokenizer, reference, policy) from a GGUF file; no hub is ever asked."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    torch.set_num_threads(threads)
    weights = Path(weights)
    tok = AutoTokenizer.from_pretrained(weights.parent, gguf_file=weights.name)
    ref = AutoModelForCausalLM.from_pretrained(weights.parent, gguf_file=weights.name, dtype=torch.float32).eval()
    policy = copy.deepcopy(ref).train()  # dequantizing the GGUF once is the slow part of loading
    for p in ref.parameters():
        p.requires_grad_(False)
    policy.get_input_embeddings().weight.requires_grad_(False)  # tied to the output head in SmolLM2
    return tok, ref, policy


def sample(model, tok, prompts: list[list[int]], new_tokens: int, seed: int, n: int = 1) -> list[list[int]]:
    """``n`` continuations per prompt at temperature 1 over the whole vocabulary (so the KL
    estimate is unbiased), cut after the first end-of-sequence."""
    width = max(map(len, prompts))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=True,
                             temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=n, pad_token_id=pad)
    conts = []
    for row in out[:, width:].tolist():
        cut = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
        conts.append(row[:cut] or [tok.eos_token_id])
    return conts


def seq_logps(model, prompts: list[list[int]], conts: list[list[int]]) -> torch.Tensor:
    """log P(continuation | prompt), summed over the continuation's tokens, one per row."""
    seqs = [p + c for p, c in zip(prompts, conts)]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
    target = torch.zeros_like(ids[:, 1:], dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, conts)):
        target[i, len(p) - 1:len(p) - 1 + len(c)] = 1.0  # positions that predict the continuation
    picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (picked * target).sum(-1)


class Experiment:
    """One reward model, prompt set and preference data set, shared by every loss trained on it."""

    def __init__(self, c: LMConfig, weights: Path):
        self.c = c
        texts, labels = snippets(c.seed)
        held = c.prompts + c.eval_prompts
        self.reward = Sentiment(texts[held:], labels[held:])
        self.tok, self.ref, self.policy = load(weights, c.threads)
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
        with torch.no_grad():
            rc = torch.cat([seq_logps(self.ref, prompts[i:i + 8], chosen[i:i + 8]) for i in range(0, len(prompts), 8)])
            rr = torch.cat([seq_logps(self.ref, prompts[i:i + 8], rejected[i:i + 8]) for i in range(0, len(prompts), 8)])
        return Pairs(prompts, chosen, rejected, rc, rr, sum(gaps) / len(gaps))

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
        params = [p for p in self.policy.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=0.0)
        order = random.Random(c.seed + 1)
        kl, reward = self.evaluate(c.seed + 1000)
        trajectory = [(0, kl, reward)]
        for step in range(1, c.steps + 1):
            idx = order.sample(range(len(pb.prompts)), min(c.batch, len(pb.prompts)))
            prompts = [pb.prompts[i] for i in idx]
            both = seq_logps(self.policy, prompts + prompts, [pb.chosen[i] for i in idx] + [pb.rejected[i] for i in idx])
            loss = mean_loss(loss_fn, step, both[:len(idx)], both[len(idx):], pb.ref_chosen[idx], pb.ref_rejected[idx],
                             beta)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            if step % c.eval_every == 0 or step == c.steps:
                kl, reward = self.evaluate(c.seed + 1000 + step)
                trajectory.append((step, kl, reward))
        return trajectory
