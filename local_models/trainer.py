"""The one training loop, shared by the loss lab and the model lab.

- Full fine-tuning, or LoRA through ``peft`` (``TrainConfig.lora > 0``).
- AdamW by default, or AdEMAMix from ``pytorch-optimizer`` with its α and β3 warm-up.
- Gradient accumulation, gradient clipping, a step limit and a token budget.
- Checkpoints: every ``checkpoint_every`` optimizer steps the trainable weights, the
  optimizer, the counters, the log and the caller's ``notes`` go to ``directory`` (written
  whole, then renamed); a new Trainer on the same directory continues from there.

Batches come from ``batch_at(i)``, a function of the micro-batch index, so a resumed run sees
exactly the batches the stopped one would have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(1e-4, gt=0, le=1)
    optimizer: Literal["adamw", "ademamix"] = "adamw"
    weight_decay: float = Field(0.0, ge=0, le=1)
    betas: tuple[float, float] = (0.9, 0.999)
    beta3: float = Field(0.9999, gt=0, lt=1, description="AdEMAMix: the slow EMA's decay")
    alpha: float = Field(5.0, ge=0, le=100, description="AdEMAMix: the slow EMA's weight")
    warmup: bool = Field(True, description="AdEMAMix: warm α and β3 up over the whole run, as the paper does")
    lora: int = Field(0, ge=0, le=1024, description="LoRA rank; 0 trains every weight")
    lora_alpha: float = Field(16.0, gt=0)
    accumulate: int = Field(1, ge=1, le=1024, description="micro-batches per optimizer step")
    clip: float = Field(1.0, gt=0, description="gradient-norm clip")
    train_embeddings: bool = Field(False, description="the (often tied) embeddings; frozen by default, halving "
                                                      "the optimizer's memory on small models")
    checkpoint_every: int = Field(10, ge=1)


def lora(model, rank: int, alpha: float):
    """``model`` with LoRA adapters on its attention and MLP projections (the rest frozen)."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in names]
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets))


def prepare(model, c: TrainConfig):
    """The model set up for training under ``c``: adapters added, or embeddings frozen."""
    if c.lora:
        return lora(model, c.lora, c.lora_alpha).train()
    for p in model.parameters():
        p.requires_grad_(True)
    if not c.train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model.train()


def optimizer(params: list, c: TrainConfig, steps: int) -> torch.optim.Optimizer:
    if c.optimizer == "ademamix":
        from pytorch_optimizer import AdEMAMix

        return AdEMAMix(params, lr=c.lr, betas=(*c.betas, c.beta3), alpha=c.alpha, weight_decay=c.weight_decay,
                        weight_decouple=True, t_alpha_beta3=float(steps) if c.warmup else None)
    return torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)


class Trainer:
    """Trains whatever of ``model`` requires grad. ``log`` holds (step, tokens, loss) per
    optimizer step; ``notes`` is the caller's own JSON-able record (evaluations along the
    way), checkpointed with the weights."""

    def __init__(self, model, c: TrainConfig, *, steps: int, tokens: int | None = None,
                 directory: Path | None = None):
        self.model, self.c, self.steps, self.budget = model, c, steps, tokens
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self.named:
            raise ValueError("nothing to train: every parameter is frozen")
        self.opt = optimizer([p for _, p in self.named], c, steps)
        self.step, self.tokens = 0, 0
        self.log: list[tuple[int, int, float]] = []
        self.notes: dict[str, Any] = {}
        self.directory = Path(directory) if directory else None
        self.resumed = self._restore()

    @property
    def done(self) -> bool:
        return self.step >= self.steps or (self.budget is not None and self.tokens >= self.budget)

    def fit(self, batch_at: Callable[[int], Any], loss_of: Callable[[Any], tuple[torch.Tensor, int]],
            on_step: Callable[["Trainer"], None] | None = None) -> "Trainer":
        """``loss_of(batch)`` gives (mean loss, tokens it covers); ``on_step(self)`` follows
        every optimizer step, before its checkpoint."""
        self.model.train()
        while not self.done:
            total, count = 0.0, 0
            for m in range(self.c.accumulate):
                loss, n = loss_of(batch_at(self.step * self.c.accumulate + m))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the loss is {loss.item()} at step {self.step + 1}")
                (loss / self.c.accumulate).backward()
                total += loss.item() / self.c.accumulate
                count += n
            torch.nn.utils.clip_grad_norm_([p for _, p in self.named], self.c.clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            self.tokens += count
            self.log.append((self.step, self.tokens, total))
            if on_step is not None:
                on_step(self)
            if self.directory and (self.step % self.c.checkpoint_every == 0 or self.done):
                self.save()
        self.model.eval()
        return self

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {"weights": {n: p.detach().cpu() for n, p in self.named}, "optimizer": self.opt.state_dict(),
                 "step": self.step, "tokens": self.tokens, "log": self.log, "notes": self.notes,
                 "config": self.c.model_dump(mode="json"), "rng": torch.get_rng_state()}
        tmp = self.directory / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.directory / "state.pt")

    def _restore(self) -> bool:
        path = self.directory / "state.pt" if self.directory else None
        if path is None or not path.is_file():
            return False
        state = torch.load(path, weights_only=False)
        if state["config"] != self.c.model_dump(mode="json") or set(state["weights"]) != {n for n, _ in self.named}:
            raise ValueError(f"the checkpoint in {self.directory} was made by another training setup")
        with torch.no_grad():
            for n, p in self.named:
                p.copy_(state["weights"][n])
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.tokens, self.notes = state["step"], state["tokens"], state["notes"]
        self.log = [tuple(x) for x in state["log"]]
        torch.set_rng_state(state["rng"])
        return True


def lm_loss(model, prompts: list[list[int]], conts: list[list[int]],
            weights: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy on the continuation tokens, averaged over those counted:
    ``weights`` (aligned with the continuation positions, as ``torch_lm.batch``'s target
    mask is) can drop or weigh tokens; dropped tokens still serve as context."""
    from conclave.local_models.torch_lm import token_logps

    picked, target, _ = token_logps(model, prompts, conts)
    if weights is not None:
        target = target * weights.to(target.device)
    n = int(target.sum().item())
    return -(picked * target).sum() / max(n, 1), n


def eval_loss(model, rows: list[list[int]], batch: int = 8) -> float:
    """Mean next-token loss (nats per token) over whole sequences, without gradients."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            loss, n = lm_loss(model, [r[:1] for r in rows[i:i + batch]], [r[1:] for r in rows[i:i + batch]])
            total, count = total + loss.item() * n, count + n
    return total / count
