"""Token choice and log-probabilities from one row of logits.

Only the last logits are ever needed: the log-prob of a token is
``logits[t] - logsumexp(logits)``, one pass over the vocabulary.
"""

from __future__ import annotations

import numpy as np

_NUCLEUS_PROBE = 64  # the nucleus nearly always lies in the top 64; check, and sort everything only if not


def logsumexp(logits: np.ndarray) -> float:
    m = float(logits.max())
    return m + float(np.log(np.exp(logits - m, dtype=np.float32).sum(dtype=np.float64)))


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest logits, largest first."""
    k = min(k, logits.shape[-1])
    idx = np.argpartition(logits, -k)[-k:]
    return idx[np.argsort(logits[idx])[::-1]]


def choose(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    if temperature == 0.0:
        return int(logits.argmax())
    # shift before scaling: a tiny temperature then sends the others to -inf, never NaN
    z = logits.astype(np.float64)
    with np.errstate(over="ignore"):  # overflow to -inf is the intended result
        z = (z - z.max()) / temperature
    p = np.exp(z)
    p /= p.sum()
    if top_p >= 1.0:
        return int(rng.choice(p.shape[0], p=p))
    order = top_k(p, _NUCLEUS_PROBE)
    if p[order].sum() < top_p:
        order = np.argsort(p)[::-1]
    cum = np.cumsum(p[order])
    keep = order[: int(np.searchsorted(cum, top_p)) + 1]
    q = p[keep] / p[keep].sum()
    return int(keep[rng.choice(keep.shape[0], p=q)])
