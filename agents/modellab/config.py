"""Every knob of every model-lab recipe, with defaults that finish in under 15 minutes on
2 CPU cores. Each recipe's training settings are a nested ``train`` table (the shared
trainer's ``TrainConfig``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from conclave.local_models.trainer import TrainConfig

SMOL = "smollm2-135m-instruct"


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int | None = Field(None, ge=1, le=256, description="torch CPU threads (default: torch's own)")
    seed: int = Field(0, ge=0)


class GoldfishConfig(Recipe):
    model: str = SMOL
    passages: int = Field(48, ge=2, le=10_000, description="Wikipedia extracts trained on")
    held_out: int = Field(48, ge=1, le=10_000)
    prefix: int = Field(32, ge=1, le=1024, description="tokens given before the continuation")
    suffix: int = Field(32, ge=1, le=1024, description="tokens the continuation must reproduce")
    epochs: int = Field(6, ge=1, le=1000)
    batch: int = Field(8, ge=1, le=1024)
    k: int = Field(4, ge=2, le=1000, description="drop one token in k from the loss")
    h: int = Field(13, ge=1, le=1024, description="tokens hashed to decide a drop")
    train: TrainConfig = TrainConfig(lr=3e-4)

    @model_validator(mode="after")
    def _window_fits(self):
        if self.h >= self.prefix + self.suffix:
            raise ValueError(f"h ({self.h}) must be shorter than a passage (prefix + suffix = "
                             f"{self.prefix + self.suffix}), or no token is ever dropped")
        return self


class AdemamixConfig(Recipe):
    model: str = SMOL
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1, max_length=20)
    passages: int = Field(64, ge=2, le=10_000, description="Wikipedia extracts fine-tuned on")
    held_out: int = Field(16, ge=1, le=10_000)
    length: int = Field(64, ge=8, le=2048, description="tokens per extract")
    tokens: int = Field(7056, ge=64, description="the token budget each run trains on (28 steps of the defaults)")
    batch: int = Field(4, ge=1, le=1024)
    lr: float = Field(1e-4, gt=0, le=1)
    alpha: float = Field(5.0, ge=0, le=100)
    beta3: float = Field(0.9999, gt=0, lt=1)
    eval_every: int = Field(7, ge=1, description="optimizer steps between held-out evaluations")


class RestConfig(Recipe):
    model: str = SMOL
    prompts: int = Field(40, ge=2, le=10_000, description="review openings to grow on")
    eval_prompts: int = Field(32, ge=2, le=10_000)
    eval_samples: int = Field(3, ge=1, le=64, description="samples per held-out opening when measuring reward")
    prompt_words: int = Field(4, ge=1, le=64)
    new_tokens: int = Field(24, ge=1, le=512)
    samples: int = Field(4, ge=1, le=64, description="outputs sampled per prompt in each Grow step")
    grow: int = Field(2, ge=0, le=100, description="Grow steps (G)")
    improve: int = Field(2, ge=0, le=100, description="Improve steps per Grow step (I)")
    thresholds: tuple[float, ...] = Field((0.5, 0.7, 0.85, 0.95), min_length=1,
                                          description="reward thresholds of successive Improve steps (the last repeats)")
    epochs: int = Field(1, ge=1, le=100, description="passes over the filtered data per Improve step")
    batch: int = Field(8, ge=1, le=1024)
    train: TrainConfig = TrainConfig(lr=5e-5)


class MiniLLMConfig(Recipe):
    teacher: str = "qwen2.5-coder-1.5b-instruct"
    student: str = "qwen2.5-coder-0.5b-instruct"
    prompts: int = Field(8, ge=1, le=10_000, description="training instructions")
    eval_prompts: int = Field(8, ge=1, le=10_000, description="held-out instructions")
    new_tokens: int = Field(16, ge=1, le=512)
    steps: int = Field(6, ge=1, le=100_000, description="a step of 4 prompts and 32 tokens took 2 minutes on 2 cores")
    batch: int = Field(2, ge=1, le=256)
    mix: float = Field(0.2, ge=0, lt=1, description="teacher-mixed sampling: the teacher's share of the sampling distribution")
    temperature: float = Field(1.0, gt=0, le=10, description="the teacher's softmax temperature, as in classic "
                               "distillation (above 1 flattens it; the paper uses 1). A model can teach itself at T != 1")
    train: TrainConfig = TrainConfig(lr=2e-4, lora=8, clip=1.0)


class QuantDPOConfig(Recipe):
    model: str = SMOL
    bits: int = Field(3, ge=2, le=8, description="the harder quantisation: bits per weight")
    group: int = Field(64, ge=8, le=4096, description="weights sharing one scale and offset")
    prompts: int = Field(48, ge=2, le=10_000, description="chat prompts the preference pairs are sampled for")
    eval_prompts: int = Field(24, ge=2, le=10_000)
    new_tokens: int = Field(32, ge=1, le=512)
    steps: int = Field(24, ge=1, le=100_000)
    batch: int = Field(4, ge=1, le=256)
    beta: float = Field(0.1, gt=0, le=100)
    train: TrainConfig = TrainConfig(lr=2e-4, lora=16)

    @model_validator(mode="after")
    def _lora(self):
        if not self.train.lora:
            raise ValueError("train.lora must be at least 1: the adapters are what DPO trains, and the quantized "
                             "model without them is the reference")
        return self


class SquashConfig(Recipe):
    model: str = SMOL
    lengths: tuple[PositiveInt, ...] = Field((4, 8, 16, 32, 64, 128, 256, 512), min_length=2)
    token: str = Field("1", min_length=1, description="the repeated token")
    comma_every: int = Field(3, ge=1, le=100, description="the comma trick: a comma after every this many tokens")
    count_lengths: tuple[PositiveInt, ...] = Field((3, 5, 8, 12, 16, 24, 32, 48), min_length=1,
                                           description="run lengths the model is asked to count")
    count_spread: int = Field(4, ge=1, le=100, description="the model picks its answer among n ± this")


Kind = Literal["goldfish", "ademamix", "rest", "minillm", "quant_dpo", "squash"]
