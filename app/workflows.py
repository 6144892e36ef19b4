"""Every workflow, run from a configuration (a TOML table): what ``conclave run <workflow>
--config file.toml`` and batch jobs use. One flat table per run; its keys are the workflow's
own settings plus the models (and, per workflow, the task, files or question):

    # evoprompt.toml                     # mapreduce.toml            # flare.toml
    task = "rotten-tomatoes"             task = "ask"                question = "Who founded X?"
    algorithm = "de"                     files = ["notes/"]          index = "notes"
    population = 10                      question = "Who is X?"      method = "direct"
    evolver = "qwen2.5-coder-1.5b-instruct"  max_concurrency = 4

    # legal_audit.toml: one [[systems]] table per system under test
    judge = "qwen2.5-coder-1.5b-instruct"     [[systems]]
    limit = 10                                name = "rag"
                                              kind = "rag"        # rag | closed_book | endpoint

    # goldfish.toml (every model-lab recipe: goldfish, rest, minillm, ademamix, quant_dpo, squash;
    # each runs on its defaults with no config at all)
    epochs = 8
    [train]
    lr = 3e-4

    # figure.toml                                   # losslab.toml: nested tables for nested settings
    request = "Monthly sales by region"             candidates = 10
    data = "sales.csv"                              model = "qwen2.5-coder-1.5b-instruct"
    coder = "qwen2.5-coder-1.5b-instruct"           [synthetic]
    critic = "smollm2-135m-instruct"                steps = 300

Bad keys and values are refused, with what is known, before any model loads.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from conclave.local_models.errors import ConclaveError


class WorkflowError(ConclaveError):
    pass


@dataclass(frozen=True)
class Prepared:
    """A checked configuration, ready to run, as ``f(resume=None, on_event=None, ...)``: ``cli``
    draws progress on the terminal and prints the report (it takes ``console``, ``status`` and
    ``out_file``), ``execute`` only reports events and returns (run id, result). Both record
    the run."""

    workflow: str
    cli: Callable[..., Any]
    execute: Callable[..., tuple[str, Any]]
    resumable: bool = False


def read_config(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkflowError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkflowError(f"cannot read the config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise WorkflowError(f"config file {path} is not valid TOML: {e}") from None


def _split(workflow: str, cfg: dict, model: type[BaseModel], own: set[str]) -> tuple[BaseModel, dict]:
    """The keys of ``model`` (validated) and the workflow's own keys; anything else is an error."""
    known = set(model.model_fields) | own
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise WorkflowError(f"{workflow}: unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
    try:
        return model(**{k: v for k, v in cfg.items() if k in model.model_fields}), {k: v for k, v in cfg.items() if k in own}
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise WorkflowError(f"{workflow}: invalid settings:\n" + "\n".join(lines)) from None


def _need(workflow: str, own: dict, *keys: str) -> None:
    missing = [k for k in keys if own.get(k) in (None, "", [])]
    if missing:
        raise WorkflowError(f"{workflow}: the config needs {', '.join(missing)}")


EVOPROMPT_OWN = {"task", "kind", "verbalizer", "prompts", "text_field", "label_field", "dev_size", "test_size",
                 "split_seed", "model", "backend", "evolver", "evolver_backend"}
MAPREDUCE_OWN = {"files", "model", "backend", "ray", "cache"}
FLARE_OWN = {"question", "index", "search", "model", "backend"}
LOSSLAB_OWN = {"model", "backend"}
FIGURE_OWN = {"coder", "critic", "backend", "critic_backend"}
LEGAL_AUDIT_OWN: set[str] = set()  # the systems and the judge carry their own models


def prepare(settings, store, workflow: str, cfg: dict) -> Prepared:
    """Check ``cfg`` for ``workflow`` (errors name the bad keys) and bind it to a run."""
    if workflow == "evoprompt":
        from conclave.agents.evoprompt import EvoConfig
        from conclave.app import evoprompt

        config, own = _split(workflow, cfg, EvoConfig, EVOPROMPT_OWN)
        _need(workflow, own, "task")
        spec = evoprompt.make_spec(settings, **own)
        evoprompt.load_task(spec)  # a bad task file fails now, not when the job fires
        return Prepared(workflow, lambda resume=None, **io: evoprompt.run_evoprompt(
                            settings, store, None if resume else config, None if resume else spec, resume=resume, **io),
                        lambda resume=None, on_event=None: evoprompt.execute(
                            settings, store, None if resume else config, None if resume else spec, resume=resume,
                            on_event=on_event), resumable=True)
    if workflow == "mapreduce":
        from conclave.agents.mapreduce import MapReduceConfig
        from conclave.app import mapreduce

        config, own = _split(workflow, cfg, MapReduceConfig, MAPREDUCE_OWN)
        _need(workflow, own, "files")
        files = [Path(f).expanduser() for f in ([own["files"]] if isinstance(own["files"], str) else own["files"])]
        kw = {"model": own.get("model"), "backend": own.get("backend"), "use_ray": bool(own.get("ray", False)),
              "cache": bool(own.get("cache", True))}
        return Prepared(workflow, lambda resume=None, **io: mapreduce.run_mapreduce(settings, store, config, files, **kw, **io),
                        lambda resume=None, on_event=None: mapreduce.execute(settings, store, config, files, **kw,
                                                                             on_event=on_event))
    if workflow == "flare":
        from conclave.agents.flare import FlareConfig
        from conclave.app import flare

        config, own = _split(workflow, cfg, FlareConfig, FLARE_OWN)
        _need(workflow, own, "question", "index")
        kw = {"search": own.get("search", "hybrid"), "model": own.get("model"), "backend": own.get("backend")}
        return Prepared(workflow, lambda resume=None, **io: flare.run_flare(settings, store, config, own["question"],
                                                                           own["index"], **kw, **io),
                        lambda resume=None, on_event=None: flare.execute(settings, store, config, own["question"],
                                                                         own["index"], **kw, on_event=on_event))
    if workflow == "losslab":
        from conclave.agents.losslab import LossLabConfig
        from conclave.app import losslab

        config, own = _split(workflow, cfg, LossLabConfig, LOSSLAB_OWN)
        kw = {"model": own.get("model"), "backend": own.get("backend")}
        return Prepared(workflow, lambda resume=None, **io: losslab.run_losslab(
                            settings, store, None if resume else config, resume=resume, **kw, **io),
                        lambda resume=None, on_event=None: losslab.execute(
                            settings, store, None if resume else config, resume=resume, **kw, on_event=on_event),
                        resumable=True)
    if workflow == "figure":
        from conclave.agents.figure import FigureConfig
        from conclave.agents.figure.data import describe
        from conclave.app import figure

        config, own = _split(workflow, cfg, FigureConfig, FIGURE_OWN)
        if config.data is not None:
            describe(config.data)  # a bad data file fails now, not when the job fires
        kw = {k: own.get(k) for k in FIGURE_OWN}
        return Prepared(workflow, lambda resume=None, **io: figure.run_figure(settings, store, config, **kw, **io),
                        lambda resume=None, on_event=None: figure.execute(settings, store, config, **kw,
                                                                          on_event=on_event))
    if workflow == "legal_audit":
        from conclave.agents.legal_audit import AuditConfig
        from conclave.app import legal_audit

        config, _ = _split(workflow, cfg, AuditConfig, LEGAL_AUDIT_OWN)
        legal_audit.prepare(config)  # bad corpus or query files fail now, not when the job fires
        return Prepared(workflow, lambda resume=None, **io: legal_audit.run_audit(
                            settings, store, None if resume else config, resume=resume, **io),
                        lambda resume=None, on_event=None: legal_audit.execute(
                            settings, store, None if resume else config, resume=resume, on_event=on_event),
                        resumable=True)
    from conclave.agents.modellab import RECIPES

    if workflow in RECIPES:
        from conclave.app import modellab

        config, _ = _split(workflow, cfg, RECIPES[workflow].config, set())
        return Prepared(workflow, lambda resume=None, **io: modellab.run_recipe(
                            settings, store, workflow, config, resume=resume, **io),
                        lambda resume=None, on_event=None: modellab.execute(
                            settings, store, workflow, config, resume=resume, on_event=on_event), resumable=True)
    raise WorkflowError(f"unknown workflow {workflow!r}; known: {', '.join(WORKFLOWS)}")


# the model lab's recipes (agents.modellab.RECIPES) are workflows too
WORKFLOWS = ("evoprompt", "mapreduce", "flare", "losslab", "figure", "legal_audit", "goldfish", "rest", "minillm",
             "ademamix", "quant_dpo", "squash")
