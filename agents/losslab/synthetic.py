"""The cheap fitness: a synthetic preference task where everything is known exactly.

Each of P prompts has K candidate responses, each a feature vector. A hidden reward is linear
in the features. The reference policy is a small random MLP scoring each response, softmaxed
over the K; the policy starts as a copy of it. Preference pairs are two responses drawn from
the reference, labelled by Bradley–Terry on the hidden reward: the setting of offline
preference optimisation. Training with a loss moves the policy; since K is small, the
expected reward and KL(π‖π_ref) are computed exactly along the way, and fitness is the best
reward gain reached within a KL budget, a point on the paper's reward–KL frontier, as a
fraction of the largest gain possible (so that seeds are comparable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from conclave.agents.losslab.config import SyntheticConfig


class TrainingFailed(Exception):
    """The loss broke training: a wrong shape, a non-finite value, or an exception inside it."""


@dataclass
class Problem:
    features: torch.Tensor  # [P, K, d]
    reward: torch.Tensor  # [P, K], unit variance
    reference: torch.nn.Module
    ref_logp: torch.Tensor  # [P, K]
    pairs: torch.Tensor  # [N, 3]: prompt, chosen, rejected


def _mlp(d: int, hidden: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))


def _logp(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(model(x).squeeze(-1), dim=-1)


def problem(c: SyntheticConfig, seed: int) -> Problem:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(c.prompts, c.responses, c.features, generator=g)
    w = torch.randn(c.features, generator=g)
    reward = x @ w / math.sqrt(c.features)
    torch.manual_seed(seed)
    reference = _mlp(c.features, c.hidden)
    with torch.no_grad():
        ref_logp = _logp(reference, x)
        p = torch.randint(c.prompts, (c.pairs,), generator=g)
        two = torch.multinomial(ref_logp.exp()[p], 2, replacement=False, generator=g)
        a, b = two[:, 0], two[:, 1]
        a_wins = torch.rand(c.pairs, generator=g) < torch.sigmoid(reward[p, a] - reward[p, b])
        chosen, rejected = torch.where(a_wins, a, b), torch.where(a_wins, b, a)
    return Problem(x, reward, reference, ref_logp, torch.stack([p, chosen, rejected], dim=1))


def evaluate(policy: torch.nn.Module, pb: Problem) -> tuple[float, float]:
    """(expected reward, KL(π‖π_ref)), both averaged over prompts."""
    with torch.no_grad():
        logp = _logp(policy, pb.features)
        pi = logp.exp()
        return float((pi * pb.reward).sum(-1).mean()), float((pi * (logp - pb.ref_logp)).sum(-1).mean())


def mean_loss(loss_fn, step: int, policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> torch.Tensor:
    """The batch's mean loss; TrainingFailed says how the loss broke at this step, if it did."""
    batch = len(policy_chosen)
    try:
        losses = loss_fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    except Exception as e:
        raise TrainingFailed(f"step {step}: the loss raised {type(e).__name__}: {e}") from e
    if not isinstance(losses, torch.Tensor) or losses.shape != (batch,):
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise TrainingFailed(f"step {step}: the loss returned {shape}, not a tensor of shape [batch] = ({batch},)")
    loss = losses.mean()
    if not torch.isfinite(loss):
        raise TrainingFailed(f"step {step}: the loss is {loss.item()} (training diverged)")
    return loss


def train(loss_fn, c: SyntheticConfig, seed: int) -> list[tuple[int, float, float]]:
    """Train a copy of the reference with ``loss_fn``; the trajectory as (step, KL, reward)."""
    pb = problem(c, seed)
    policy = _mlp(c.features, c.hidden)
    policy.load_state_dict(pb.reference.state_dict())
    opt = torch.optim.Adam(policy.parameters(), lr=c.lr)
    g = torch.Generator().manual_seed(seed + 1)
    reward, kl = evaluate(policy, pb)
    trajectory = [(0, kl, reward)]
    for step in range(1, c.steps + 1):
        batch = pb.pairs[torch.randint(len(pb.pairs), (c.batch,), generator=g)]
        p, ch, rj = batch[:, 0], batch[:, 1], batch[:, 2]
        logp = _logp(policy, pb.features[p])
        rows = torch.arange(c.batch)
        loss = mean_loss(loss_fn, step, logp[rows, ch], logp[rows, rj], pb.ref_logp[p, ch], pb.ref_logp[p, rj], c.beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % c.eval_every == 0 or step == c.steps:
            reward, kl = evaluate(policy, pb)
            if not (math.isfinite(reward) and math.isfinite(kl)):
                raise TrainingFailed(f"step {step}: the policy's parameters are no longer finite")
            trajectory.append((step, kl, reward))
    return trajectory


def headroom(c: SyntheticConfig, seed: int) -> float:
    """The largest possible reward gain over the reference: always picking the best response."""
    pb = problem(c, seed)
    return float(pb.reward.max(-1).values.mean() - (pb.ref_logp.exp() * pb.reward).sum(-1).mean())


def reward_at_kl(trajectory: list[tuple[int, float, float]], budget: float) -> float:
    """The best reward gain over the reference along the trajectory while KL ≤ budget, reading
    the crossing of the budget off the straight line between evaluations."""
    start = trajectory[0][2]
    best = start
    for (_, kl0, r0), (_, kl1, r1) in zip(trajectory, trajectory[1:]):
        if kl1 <= budget:
            best = max(best, r1)
        elif kl0 < budget:  # crossed the budget between these two evaluations
            best = max(best, r0 + (r1 - r0) * (budget - kl0) / (kl1 - kl0))
    return best - start
