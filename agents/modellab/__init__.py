"""The model lab: the papers' training recipes on our local models (goldfish loss, ReST,
MiniLLM, AdEMAMix, quantized-model DPO) and an over-squashing probe. Each recipe is a
workflow: a config, ``run(config, lab) -> LabResult``, and ``conclave run <recipe>``."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from conclave.agents.modellab import config as _c
from conclave.agents.modellab.lab import Lab
from conclave.agents.modellab.trace import LabError, LabResult


@dataclass(frozen=True)
class Recipe:
    name: str
    config: type
    module: str  # imported when the recipe runs: torch and transformers load then, not at start-up
    summary: str

    def run(self, config, lab: Lab) -> LabResult:
        return importlib.import_module(f"conclave.agents.modellab.{self.module}").run(config, lab)


RECIPES = {r.name: r for r in (
    Recipe("goldfish", _c.GoldfishConfig, "goldfish", "goldfish loss against memorisation (Hans et al. 2024)"),
    Recipe("rest", _c.RestConfig, "rest", "ReST, Grow and Improve on a sentiment reward (Gulcehre et al. 2023)"),
    Recipe("minillm", _c.MiniLLMConfig, "minillm", "MiniLLM reverse-KL distillation, Qwen 1.5B into 0.5B (Gu et al. 2023)"),
    Recipe("ademamix", _c.AdemamixConfig, "ademamix", "AdEMAMix against AdamW (Pagliardini et al. 2024)"),
    Recipe("quant_dpo", _c.QuantDPOConfig, "quant_dpo",
           "DPO from full-precision preferences for a quantized model (Lee et al. 2024)"),
    Recipe("squash", _c.SquashConfig, "squash", "over-squashing probe on runs of one token (Barbero et al. 2024)"),
)}

__all__ = ["RECIPES", "Lab", "LabError", "LabResult", "Recipe"]
