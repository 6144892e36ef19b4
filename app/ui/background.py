"""Workflow runs in background threads, so the UI stays live while one works.

A run's thread owns its models; the page polls the run's events and, once it is over,
shows the result from the run store, where every run lands however it ends. The
registry lives as long as the Streamlit server, so reloading a page, or opening a
second tab, finds the runs still going.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Background:
    workflow: str
    label: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    started: float = field(default_factory=time.time)
    events: list[dict] = field(default_factory=list)
    run_id: str | None = None  # the run store's id, once the run is recorded
    result: Any = None
    error: str | None = None
    finished: float | None = None

    @property
    def done(self) -> bool:
        return self.finished is not None

    def on_event(self, event: dict) -> None:
        if event.get("kind") == "run":
            self.run_id = event["run_id"]
        self.events.append({**event, "at": time.time()})

    def last(self, *kinds: str) -> dict | None:
        """The latest event of one of these kinds."""
        return next((e for e in reversed(self.events) if e.get("kind") in kinds), None)


class Registry:
    """Every background run this server started, newest first."""

    def __init__(self) -> None:
        self._runs: list[Background] = []
        self._lock = threading.Lock()

    def start(self, workflow: str, label: str, target: Callable[[Callable[[dict], None]], tuple[str, Any]]) -> Background:
        """Run ``target(on_event) -> (run id, result)`` in a thread of its own."""
        bg = Background(workflow, label)

        def work() -> None:
            try:
                bg.run_id, bg.result = target(bg.on_event)
            except Exception as e:  # the page shows it; the run store has it too, when the run got that far
                bg.error = f"{type(e).__name__}: {e}"
                bg.events.append({"kind": "error", "message": bg.error, "trace": traceback.format_exc(), "at": time.time()})
            finally:
                bg.finished = time.time()

        with self._lock:
            self._runs.insert(0, bg)
        threading.Thread(target=work, name=f"conclave-{workflow}-{bg.id}", daemon=True).start()
        return bg

    def of(self, workflow: str) -> list[Background]:
        with self._lock:
            return [b for b in self._runs if b.workflow == workflow]

    def active(self) -> list[Background]:
        with self._lock:
            return [b for b in self._runs if not b.done]
