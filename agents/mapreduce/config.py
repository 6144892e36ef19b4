"""Every knob of a map-reduce run. Sizes left unset come from the model's context length."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TASKS = ("summarize", "ask", "extract")


class MapReduceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["summarize", "ask", "extract"] = "summarize"
    question: str | None = Field(None, description="ask: the question every part is read for")
    json_schema: dict | None = Field(None, description="extract: the JSON schema of what to pull out")
    chunk_tokens: int | None = Field(
        None, ge=16, description="tokens per part (the model's own); unset: the most that fits beside the map prompt and output"
    )
    overlap_tokens: int | None = Field(None, ge=0, description="tokens shared by neighbouring parts; unset: a tenth of a part")
    context_tokens: int | None = Field(
        None, ge=128, description="the model's context (prompt + output); unset: what the backend reports"
    )
    reduce_tokens: int | None = Field(
        None, ge=64, description="most prompt tokens one merge may read (the collapse threshold); unset: context - reduce_max_tokens"
    )
    max_concurrency: int = Field(4, ge=1, le=256, description="model calls in flight at once")
    map_max_tokens: int | None = Field(None, ge=1, le=8192, description="output budget of one map call; unset: min(256, context / 8)")
    reduce_max_tokens: int | None = Field(
        None, ge=1, le=8192, description="output budget of one merge (collapse or reduce); unset: min(512, context / 4)"
    )
    max_rounds: int = Field(4, ge=0, le=32, description="collapse rounds before what is left is truncated to fit")
    json_retries: int = Field(2, ge=0, le=5, description="extract: repair requests after a reply that is not valid JSON")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int | None = 0

    @model_validator(mode="after")
    def _task_inputs(self):
        if self.task == "ask" and not (self.question and self.question.strip()):
            raise ValueError("task 'ask' needs a non-empty question")
        if self.task != "ask" and self.question is not None:
            raise ValueError(f"a question only applies to task 'ask', not {self.task!r}")
        if self.task == "extract":
            if not self.json_schema:
                raise ValueError("task 'extract' needs a JSON schema (json_schema)")
            from conclave.agents.mapreduce.extract import schema_problem

            problem = schema_problem(self.json_schema)
            if problem:
                raise ValueError(problem)
        elif self.json_schema is not None:
            raise ValueError(f"a JSON schema only applies to task 'extract', not {self.task!r}")
        if self.chunk_tokens is not None and self.overlap_tokens is not None and self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be smaller than chunk_tokens ({self.chunk_tokens})")
        return self
