"""The built-in preference losses, each a function of the policy and reference log-probabilities
of the chosen and rejected responses (summed over tokens), and of β. Each returns the loss per
pair, shape [batch]. With ρ = β·((π_c − ref_c) − (π_r − ref_r)), the log-ratio margin:

- dpo: −log σ(ρ) (Rafailov et al. 2023)
- ipo: (ρ/β − 1/(2β))², the squared distance of the raw margin from 1/(2β) (Azar et al. 2023)
- slic: max(0, δ − ρ) − λ·π_c, the hinge of SLiC-HF with its optional SFT term (Zhao et al. 2023)
- kto: the paired KTO loss, with the batch's KL estimates as reference points, not
  back-propagated through (Ethayarajh et al. 2024)
- lrml: DiscoPOP, a mix of the logistic and exponential losses weighted by σ(ρ/τ), τ = 0.05
  (Lu et al. 2024)
- cdpo: conservative DPO, DPO with labels flipped with probability ε (Mitchell 2023)

Each function's source is what the proposer sees in the archive, so each stands alone given
``torch`` and ``F`` (torch.nn.functional), the names every candidate may use.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

SIGNATURE = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps",
             "beta")


def dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    logits = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * logits)


def ipo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    logits = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return (logits - 1 / (2 * beta)) ** 2


def slic(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta,
         margin=1.0, sft_weight=0.0):
    logits = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return torch.relu(margin - beta * logits) - sft_weight * policy_chosen_logps


def kto(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen = policy_chosen_logps - reference_chosen_logps
    rejected = policy_rejected_logps - reference_rejected_logps
    chosen_kl = chosen.mean().clamp(min=0).detach()
    rejected_kl = rejected.mean().clamp(min=0).detach()
    return (1 - torch.sigmoid(beta * (chosen - rejected_kl))) + (1 - torch.sigmoid(beta * (chosen_kl - rejected)))


def lrml(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta,
         tau=0.05):
    logits = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    logits = beta * logits
    mix = torch.sigmoid(logits / tau)
    return -F.logsigmoid(logits) * (1 - mix) + torch.exp(-logits) * mix


def cdpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta,
         label_smoothing=0.1):
    logits = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -(1 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(-beta * logits)


BUILTIN = {f.__name__: f for f in (dpo, ipo, slic, kto, lrml, cdpo)}


def source(name: str) -> str:
    """The built-in's code as a candidate would write it."""
    return inspect.getsource(BUILTIN[name])
