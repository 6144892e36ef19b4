"""Every knob of an EvoPrompt run; the defaults are the paper's (Guo et al. 2023)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["ga", "de", "paraphrase"] = Field(
        "ga", description="ga (Algorithm 1), de (Algorithm 2), or paraphrase: the APE-like baseline on the same budget")
    population: int = Field(10, ge=2, le=200, description="prompts kept each generation")
    generations: int = Field(10, ge=0, le=1000)
    selection: Literal["roulette", "tournament", "random"] = Field("roulette", description="ga: how parents are chosen")
    tournament_size: int = Field(3, ge=2, le=50)
    de_variant: Literal["v1", "v2", "v3"] = Field(
        "v1", description="de: v1 with the best prompt, v2 without it, v3 without the difference step")
    patience: int | None = Field(None, ge=1, description="stop after this many generations without a better best dev score")
    token_budget: int | None = Field(None, ge=1, description="stop once evolver and task model have used this many tokens")
    top_k_test: int = Field(3, ge=1, le=50, description="the final top prompts scored on the test set")
    evolver_temperature: float = Field(0.5, ge=0.0, le=2.0)
    evolver_max_tokens: int = Field(256, ge=16, le=4096)
    generation_max_tokens: int = Field(96, ge=1, le=4096, description="generation tasks: output budget per example")
    max_concurrency: int = Field(4, ge=1, le=256, description="model calls in flight at once")
    score_batch: int = Field(
        8, ge=1, le=256, description="classification: examples scored in one call (one request to an endpoint)")
    seed: int = 0
