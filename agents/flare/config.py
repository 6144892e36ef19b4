"""Every knob of a FLARE run, with the defaults of Jiang et al. (2023) where the paper gives one."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

METHODS = ("none", "single", "interval", "direct", "instruct")


class FlareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["none", "single", "interval", "direct", "instruct"] = "direct"
    theta: float = Field(0.4, gt=0.0, le=1.0, description="a token with probability <= theta triggers retrieval")
    beta: float = Field(0.4, ge=0.0, le=1.0, description="masked query: tokens with probability <= beta are dropped")
    query_mode: Literal["masked", "questions"] = "masked"
    lookahead_tokens: int = Field(64, ge=1, le=1024)
    max_steps: int = Field(8, ge=1, le=256)
    k: int = Field(3, ge=1, le=50, description="passages per retrieval")
    interval_tokens: int = Field(32, ge=1, le=1024, description="window of the fixed-interval baseline")
    max_answer_tokens: int = Field(200, ge=1, le=4096)
    question_tokens: int = Field(32, ge=1, le=256, description="budget of one generated query question")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int | None = None
