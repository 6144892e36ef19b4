"""Every knob of a loss-discovery run (Lu et al. 2024, "Discovering Preference Optimization
Algorithms with and for Large Language Models")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SyntheticConfig(BaseModel):
    """The synthetic preference task: seconds a candidate on one CPU core."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: int = Field(256, ge=4, le=100_000)
    responses: int = Field(8, ge=2, le=1024, description="candidate responses per prompt (K)")
    features: int = Field(16, ge=1, le=1024)
    hidden: int = Field(32, ge=1, le=4096, description="width of the MLP policy")
    pairs: int = Field(1024, ge=8, le=10_000_000, description="preference pairs drawn from the reference")
    steps: int = Field(300, ge=1, le=100_000)
    batch: int = Field(64, ge=2, le=65_536)
    lr: float = Field(0.003, gt=0, le=10)
    beta: float = Field(0.1, gt=0, le=100)
    kl_budget: float = Field(1.0, gt=0, description="fitness: the best reward gain with KL(π‖π_ref) at most this")
    eval_every: int = Field(10, ge=1)
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1, max_length=100, description="fitness is the mean over these")


class LMConfig(BaseModel):
    """The language-model task (the paper's IMDb experiment in miniature): minutes a loss on CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("smollm2-135m-instruct", description="a catalog GGUF of the llama architecture")
    prompts: int = Field(64, ge=2, le=100_000, description="review openings the preference pairs are sampled from")
    eval_prompts: int = Field(32, ge=2, le=100_000)
    prompt_words: int = Field(4, ge=1, le=64)
    new_tokens: int = Field(24, ge=1, le=512)
    steps: int = Field(40, ge=1, le=100_000)
    batch: int = Field(4, ge=1, le=1024, description="pairs a step")
    lr: float = Field(1e-5, gt=0, le=1)
    beta: float = Field(0.1, gt=0, le=100)
    kl_budget: float = Field(2.0, gt=0, description="fitness: the best reward gain with estimated KL at most this (nats)")
    eval_every: int = Field(10, ge=1)
    threads: int = Field(2, ge=1, le=256)
    seed: int = 0


Builtin = Literal["dpo", "ipo", "slic", "kto", "lrml", "cdpo"]  # agents.losslab.losses.BUILTIN


class LossLabConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: int = Field(10, ge=0, le=1000, description="proposals asked of the model")
    baselines: tuple[Builtin, ...] = Field(("dpo", "ipo", "slic", "kto", "lrml", "cdpo"),
                                       description="built-in losses scored first; the archive starts with them")
    fitness: Literal["synthetic", "lm"] = Field(
        "synthetic", description="synthetic: seconds a loss; lm: SmolLM2 trained on sentiment pairs, minutes a loss")
    synthetic: SyntheticConfig = SyntheticConfig()
    lm: LMConfig = LMConfig()
    timeout_s: float | None = Field(None, gt=0, le=86_400,
                                    description="wall-clock limit per candidate (default: 120 s synthetic, 3600 s lm)")
    memory_mb: int | None = Field(None, ge=256, le=1_000_000,
                                  description="address-space limit per candidate (default: 2 GB synthetic, 16 GB lm)")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(768, ge=64, le=8192, description="the proposer's output budget per proposal")
    seed: int = 0

    @property
    def task(self) -> SyntheticConfig | LMConfig:
        return self.synthetic if self.fitness == "synthetic" else self.lm

    @property
    def limits(self) -> tuple[float, int]:
        """(seconds, MB) a candidate may take in the sandbox."""
        lm = self.fitness == "lm"
        return self.timeout_s or (3600.0 if lm else 120.0), self.memory_mb or (16_384 if lm else 2048)
