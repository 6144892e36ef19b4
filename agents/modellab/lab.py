"""What a recipe runs with: the catalog's weights as torch models, a directory for training
checkpoints, progress events, and the phases already finished.

A recipe is a sequence of named phases (train one arm and evaluate it, say), each giving a
JSON-able record. A finished phase is checkpointed; a resumed run skips it, and a phase that
was stopped mid-training continues from its trainer's own checkpoint.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Callable

from conclave.agents.modellab.trace import LabError
from conclave.local_models.trainer import TrainConfig, Trainer, prepare

Event = Callable[[dict], None]


class Lab:
    def __init__(self, data_dir: Path, workdir: Path, *, on_event: Event | None = None,
                 done: dict | None = None, checkpoint: Callable[[dict], None] | None = None, threads: int | None = None):
        self.data_dir, self.workdir = Path(data_dir), Path(workdir)
        self.emit = on_event or (lambda e: None)
        self.done: dict[str, Any] = dict(done or {})
        self._checkpoint = checkpoint
        self.threads = threads
        self._models: dict[str, tuple] = {}

    def weights(self, name: str) -> Path:
        from conclave.local_models import catalog
        from conclave.local_models.errors import ConclaveError as ModelError

        spec = catalog.CATALOG.get(name)
        if spec is None:
            raise LabError(f"unknown model {name!r}; the catalog has {', '.join(catalog.CATALOG)}")
        try:
            return catalog.ensure_weights(spec, self.data_dir)
        except ModelError as e:
            raise LabError(str(e)) from None

    def model(self, name: str):
        """(tokenizer, model) for a catalog model, loaded once per run; the model is frozen and
        shared: train a ``copy``."""
        from conclave.local_models import torch_lm

        if name not in self._models:
            self.emit({"kind": "loading", "model": name})
            tok, model = torch_lm.load(self.weights(name), threads=self.threads)
            torch_lm.frozen(model)
            self._models[name] = (tok, model)
        return self._models[name]

    def trainable(self, name: str, c: TrainConfig, alter: Callable | None = None):
        """A fresh copy of ``name``'s base model, changed by ``alter`` if given, set up for
        training under ``c``."""
        tok, base = self.model(name)
        model = copy.deepcopy(base)
        if alter is not None:
            alter(model)
        return tok, prepare(model, c)

    def trainer(self, phase: str, model, c: TrainConfig, *, steps: int, tokens: int | None = None) -> Trainer:
        """A trainer that checkpoints under this run's directory (and resumes from it)."""
        return Trainer(model, c, steps=steps, tokens=tokens, directory=self.workdir / phase)

    def phase(self, name: str, fn: Callable[[], Any], *, keep: bool = False) -> Any:
        """``fn()``'s record, computed once per run. Once it is recorded, the phase's training
        checkpoint (a gigabyte or so for full fine-tuning) is deleted unless ``keep``."""
        if name not in self.done:
            self.emit({"kind": "phase", "phase": name})
            self.done[name] = fn()
            if self._checkpoint is not None:
                self._checkpoint(self.done)
            if not keep:
                self.drop(name)
        return copy.deepcopy(self.done[name])  # the caller may change its copy; the record stays as saved

    def drop(self, phase: str) -> None:
        shutil.rmtree(self.workdir / phase, ignore_errors=True)

    def step(self, phase: str, step: int, steps: int, **figures) -> None:
        self.emit({"kind": "step", "phase": phase, "step": step, "steps": steps, **figures})
