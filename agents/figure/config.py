"""Every knob of the figure team, with the defaults of AutoGen's Figure Creator (three rounds)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conclave.local_models.errors import ConclaveError


class FigureError(ConclaveError):
    pass


class FigureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: str = Field(min_length=1, description="what the figure should show")
    data: Path | None = Field(None, description="a CSV, TSV, JSON(L), Parquet or Excel file the code may read")
    series: list[str] = Field(default_factory=list, description="series the figure must show; default: the "
                              "data's columns that the request names")
    max_iterations: int = Field(3, ge=1, le=10, description="code runs, first draft included")
    critic_sees: Literal["report", "image"] = Field("report", description="the critic reads a report of the "
                                                    "figure, or the PNG itself (a vision model behind an endpoint)")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="wall clock per code run, in the sandbox")
    memory_mb: int = Field(2048, ge=256, description="address space per code run")
    coder_max_tokens: int = Field(1024, ge=64)
    critic_max_tokens: int = Field(384, ge=32)
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    seed: int = 0

    @field_validator("request")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the request is blank")
        return v.strip()
