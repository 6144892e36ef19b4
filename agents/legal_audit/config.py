"""Every knob of a legal-RAG hallucination audit: the systems under test, the queries, and
the grader."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conclave.local_models.errors import ConclaveError


class AuditError(ConclaveError):
    pass


class SystemSpec(BaseModel):
    """One system under test. ``rag``: our retrieval-augmented answerer over the corpus;
    ``closed_book``: the same model without retrieval; ``endpoint``: any OpenAI-compatible
    chat endpoint (a RAG product or a plain model), asked the bare question."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}$")
    kind: Literal["rag", "closed_book", "endpoint"]
    model: str | None = Field(None, description="a catalog name, a .gguf path, or the endpoint's model id")
    backend: Literal["llamacpp", "native", "openai"] | None = None
    base_url: str | None = Field(None, description="endpoint: its OpenAI-compatible base URL (…/v1)")
    api_key_env: str | None = Field(None, description="endpoint: the environment variable holding its API key")
    k: int = Field(4, ge=1, le=20, description="rag: passages retrieved per question")
    search: Literal["hybrid", "dense", "lexical"] = "hybrid"

    @model_validator(mode="after")
    def _endpoint(self):
        if self.kind == "endpoint" and not (self.base_url and self.model):
            raise ValueError("an endpoint system needs base_url and model")
        if self.kind != "endpoint" and (self.base_url or self.api_key_env):
            raise ValueError("base_url and api_key_env are for endpoint systems")
        return self


def _default_systems() -> list[SystemSpec]:
    return [SystemSpec(name="rag", kind="rag"), SystemSpec(name="closed-book", kind="closed_book")]


class AuditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    systems: list[SystemSpec] = Field(default_factory=_default_systems, min_length=1)
    corpus: Path | None = Field(None, description="a folder with cases.jsonl (and more documents); default: the sample")
    queries: Path | None = Field(None, description="a query JSONL file; default: the sample's dev queries")
    generate: int = Field(0, ge=0, le=50, description="instead of a file: this many queries per template from the cases")
    categories: list[Literal["general_research", "jurisdiction_time", "false_premise", "factual_recall"]] | None = None
    limit: int | None = Field(None, ge=1, description="at most this many queries per category")
    constitution: bool = Field(True, description="index the US Constitution too, where Debian's miscfiles is installed")
    judge: str | None = Field(None, description="the judge's model (catalog name, .gguf or openai:<id>); none: rules")
    judge_backend: Literal["llamacpp", "native", "openai"] | None = None
    support: Literal["judge", "lexical"] = Field("lexical", description="how a citation's support is checked")
    max_answer_tokens: int = Field(256, ge=16, le=2048)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int = 0

    @field_validator("systems")
    @classmethod
    def _unique(cls, v: list[SystemSpec]) -> list[SystemSpec]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"system names must be unique: {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _judge(self):
        if self.support == "judge" and not self.judge:
            raise ValueError("support = 'judge' needs a judge model")
        if self.generate and self.queries:
            raise ValueError("give a query file or generate, not both")
        return self
