"""Aggregate throughput of ``conclave serve`` against llama-cpp-python's own server.

Both servers run as subprocesses on the same GGUF file, context and thread count, and
get the same chat requests through the official ``openai`` client (AsyncOpenAI), at
most ``concurrency`` in flight. The anchor, measured in the same run, is
``llama_cpp.server`` (launched through benchmarks/llama_cpp_server.py, which applies
the same AMX workaround as our engine, and with ``--logits_all false``, since our
engine reads only the logits a step needs; the server's default is true). Ours runs
once per ``--slots`` value, restarted each time, so the table shows which slot count
serves each load best.

Each request is a short, distinct user prompt, greedy (temperature 0), non-streaming,
``max_tokens`` 64; every round takes fresh prompts (same order for every server), so
no server finds a previous round's prompt in its cache. Throughput is the completion
tokens reported in ``usage`` over the wall time of the round; latencies are per
request, successful ones only; failed requests are counted, not fatal. One untimed
warm-up request precedes the rounds on each server.

Defaults (about 5 1/2 minutes on a 2-core machine, most of it the anchor, which
serves one request at a time): concurrency 1, 8, 32; R = max(8, 2 * concurrency)
requests per round; slots 1, 4, 8; max_tokens 64; n_ctx 2048; threads = all cores.

Read the numbers with two caveats. With as many llama.cpp threads as cores, any other
busy process slows both servers by far more than its share (the "other cpu" column
measures it; rounds above 0.15 cores are flagged). And the stock llama_cpp.server
falls from about 85 to about 36 tok/s per stream once its thread pool has run model
calls on two different threads (libgomp, see benchmarks/llama_cpp_server.py), which
on a busy server is soon; ``--anchor-one-thread`` measures its best case instead.

    python benchmarks/server_throughput.py [--concurrency 1,8,32] [--slots 1,4,8]
        [--requests R] [--max-tokens 64] [--n-ctx 2048] [--threads N] [--model NAME]
        [--anchor-one-thread]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
from openai import AsyncOpenAI
from rich.console import Console
from rich.table import Table

from conclave.app.settings import load_settings
from conclave.local_models import catalog

ROOT = Path(__file__).resolve().parent.parent
ANCHOR = "llama_cpp.server"
OURS = "conclave serve"

SUBJECTS = [
    "the ocean tides", "volcanoes", "honey bees", "the printing press", "black holes", "the Roman aqueducts",
    "photosynthesis", "the violin", "glaciers", "the silk road", "lighthouses", "coral reefs",
    "the steam engine", "owls", "the moon landing", "rainforests", "sourdough bread", "the human heart",
    "chess openings", "desert foxes", "the telescope", "bamboo", "thunderstorms", "the Great Wall of China",
]
FORMS = [
    "Write a short paragraph about {}.",
    "Explain {} to a ten-year-old.",
    "Give three interesting facts about {}.",
    "Describe {} in a few sentences.",
]
PROMPTS = [form.format(s) for form in FORMS for s in SUBJECTS]  # 96 distinct prompts
WARMUP = "Say hello in one sentence."


@dataclass
class Round:
    server: str
    slots: int
    concurrency: int
    requests: int
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    other_cpu: float = math.nan  # cores busy outside the server and this client, on average over the round

    @property
    def tok_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float) -> float:
        """Nearest-rank percentile of the successful latencies, in ms."""
        if not self.latencies:
            return math.nan
        xs = sorted(self.latencies)
        return 1000 * xs[max(math.ceil(q * len(xs)) - 1, 0)]


# --- servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess in its own session (so a Ctrl-C reaches only us), logged to a file."""

    def __init__(self, label: str, cmd: list[str], env: dict, ready_path: str, port: int, log_dir: Path):
        self.label, self.cmd, self.env, self.ready_path, self.port = label, cmd, env, ready_path, port
        self.log_path = log_dir / f"{label.replace(' ', '_').replace('=', '')}.log"
        self.proc: subprocess.Popen | None = None
        self.died: str | None = None  # set when it exits on its own

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float) -> None:
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.label} exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
                try:
                    if http.get(self.base_url + self.ready_path).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
        raise RuntimeError(f"{self.label} did not answer GET {self.ready_path} within {timeout:.0f} s:\n{self.log_tail()}")

    def check_alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None and self.died is None:
            code = self.proc.returncode
            what = f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"code {code}"
            self.died = f"{self.label} exited on its own ({what}); log {self.log_path}:\n{self.log_tail()}"
        return self.died is None

    def stop(self) -> None:
        self.check_alive()
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log_tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


# --- load -------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (Linux; NaN elsewhere)."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
        return (user + nice + system + irq + softirq + steal) / _TICK
    except (OSError, ValueError):
        return math.nan


def process_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except (OSError, ValueError, IndexError):
        return math.nan


async def run_round(rnd: Round, base_url: str, model: str, prompts: list[str], max_tokens: int) -> Round:
    client = AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", timeout=600.0, max_retries=0)
    sem = asyncio.Semaphore(rnd.concurrency)

    async def one(prompt: str):
        async with sem:
            t0 = time.perf_counter()
            try:
                r = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0
                )
            except Exception as e:  # counted and reported, never fatal
                return None, f"{type(e).__name__}: {e}"
            return (time.perf_counter() - t0, r.usage.completion_tokens, r.usage.prompt_tokens), None

    try:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(p) for p in prompts))
        rnd.wall_s = time.perf_counter() - t0
    finally:
        await client.close()
    for ok, error in results:
        if error is not None:
            rnd.errors.append(error)
        else:
            latency, completion, prompt = ok
            rnd.latencies.append(latency)
            rnd.completion_tokens += completion
            rnd.prompt_tokens += prompt
    return rnd


async def warm_up(base_url: str, model: str, max_tokens: int) -> None:
    async with AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", timeout=600.0, max_retries=0) as client:
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": WARMUP}], max_tokens=max_tokens, temperature=0
        )


def measure(server: Server, label: str, slots: int, plan: list[tuple[int, list[str]]], model: str, max_tokens: int,
            startup_timeout: float, status: Console) -> list[Round]:
    t0 = time.perf_counter()
    server.start(startup_timeout)
    rounds = []
    try:
        status.print(f"[dim]{label} (slots {slots}) ready in {time.perf_counter() - t0:.1f} s on port {server.port}[/]")
        asyncio.run(warm_up(server.base_url, model, max_tokens))
        for concurrency, prompts in plan:
            pid = server.proc.pid
            before = busy_cpu_s(), process_cpu_s(pid), process_cpu_s(os.getpid())
            rnd = asyncio.run(run_round(Round(label, slots, concurrency, len(prompts)), server.base_url, model, prompts, max_tokens))
            after = busy_cpu_s(), process_cpu_s(pid), process_cpu_s(os.getpid())
            total, ours, client = (b - a for a, b in zip(before, after))
            rnd.other_cpu = max(total - ours - client, 0.0) / rnd.wall_s
            if not server.check_alive():
                rnd.errors.append(server.died.splitlines()[0])
            status.print(f"[dim]  concurrency {concurrency:>3}: {rnd.requests} requests in {rnd.wall_s:6.1f} s, "
                         f"{rnd.tok_s:6.1f} tok/s, {len(rnd.errors)} errors, other cpu {rnd.other_cpu:.2f}[/]")
            rounds.append(rnd)
            if server.died:
                status.print(f"[red]{server.died}[/]")
                break
    finally:
        server.stop()
    return rounds


# --- report -------------------------------------------------------------------------------


def ints(text: str) -> list[int]:
    vals = [int(x) for x in text.split(",") if x.strip()]
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return vals


def report(console: Console, rounds: list[Round], title: str, concurrencies: list[int], anchor_one_thread: bool) -> None:
    anchor = {r.concurrency: r for r in rounds if r.server == ANCHOR}
    mode = "model calls on one thread: --anchor-one-thread" if anchor_one_thread else "stock thread pool"
    table = Table(title=title, caption=f"{ANCHOR} ({mode}) serves one request at a time (a global lock); vs: tok/s over its "
                                      "tok/s at the same concurrency; other cpu: cores busy outside the server and the client (should be ~0)")
    for col in ("server", "slots", "concurrency", "requests", "errors", "tokens", "tok/s", "p50 ms", "p99 ms", f"vs {ANCHOR}", "other cpu"):
        table.add_column(col, justify="left" if col == "server" else "right", no_wrap=True)
    for c in concurrencies:
        base = anchor.get(c)
        for r in sorted((r for r in rounds if r.concurrency == c), key=lambda r: (r.server != ANCHOR, r.slots)):
            vs = f"{r.tok_s / base.tok_s:.2f}x" if base and base.tok_s else "n/a"
            errors = f"[red]{len(r.errors)}[/]" if r.errors else "0"
            table.add_row(r.server, "1 (serial)" if r.server == ANCHOR else str(r.slots), str(c), str(r.requests), errors,
                          str(r.completion_tokens), f"{r.tok_s:.1f}", f"{r.pct(0.5):.0f}", f"{r.pct(0.99):.0f}", vs,
                          f"[yellow]{r.other_cpu:.2f}[/]" if r.other_cpu > 0.15 else f"{r.other_cpu:.2f}")
        table.add_section()
    console.print(table)
    for c in concurrencies:
        ours = [r for r in rounds if r.server == OURS and r.concurrency == c]
        if not ours:
            continue
        best = max(ours, key=lambda r: r.tok_s)
        base = anchor.get(c)
        vs = f", {best.tok_s / base.tok_s:.2f}x {ANCHOR} ({base.tok_s:.1f} tok/s)" if base and base.tok_s else ""
        others = ", ".join(f"slots {r.slots}: {r.tok_s:.1f}" for r in ours if r is not best)
        console.print(f"concurrency {c}: best is --slots {best.slots} at {best.tok_s:.1f} tok/s{vs}"
                      + (f" [dim](others: {others})[/]" if others else ""))
    noisy = [r for r in rounds if r.other_cpu > 0.15]
    if noisy:
        console.print(f"[yellow]warning: other processes kept the CPU busy during {len(noisy)} of {len(rounds)} rounds "
                      f"(up to {max(r.other_cpu for r in noisy):.2f} cores); those numbers are not trustworthy[/]")
    for r in rounds:
        for e in sorted(set(r.errors))[:3]:
            console.print(f"[red]{r.server} slots {r.slots} concurrency {r.concurrency}:[/] {e[:200]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="catalog name or .gguf path (default: the configured model)")
    ap.add_argument("--concurrency", type=ints, default=[1, 8, 32], help="comma-separated, e.g. 1,8,32")
    ap.add_argument("--slots", type=ints, default=[1, 4, 8], help="our --slots values, comma-separated")
    ap.add_argument("--requests", type=int, default=None, help="requests per round (default: max(8, 2 * concurrency))")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--n-ctx", type=int, default=2048, help="context per request, both servers")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads, both servers (default: CONCLAVE_N_THREADS or all cores)")
    ap.add_argument("--startup-timeout", type=float, default=180.0)
    ap.add_argument("--anchor-one-thread", action="store_true",
                    help=f"run {ANCHOR}'s model calls on one thread (see benchmarks/llama_cpp_server.py): its best case")
    args = ap.parse_args()
    if args.requests is not None and args.requests < 1:
        ap.error("--requests must be at least 1")

    settings = load_settings()
    spec = catalog.resolve(args.model or settings.model)
    path = catalog.ensure_weights(spec, settings.data_dir)
    threads = args.threads or settings.n_threads or os.cpu_count() or 1

    # every round gets fresh prompts, in the same order for every server
    plan, start = [], 0
    for c in args.concurrency:
        n = args.requests or max(8, 2 * c)
        plan.append((c, [PROMPTS[(start + i) % len(PROMPTS)] for i in range(n)]))
        start += n

    console = Console(width=max(Console().width, 150))
    status = Console(stderr=True, width=max(Console(stderr=True).width, 120))
    log_dir = Path(tempfile.mkdtemp(prefix="conclave-server-bench-"))
    env = {**os.environ, "CONCLAVE_N_CTX": str(args.n_ctx), "CONCLAVE_N_THREADS": str(threads),
           "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

    def stock_server() -> Server:
        port = free_port()
        cmd = [sys.executable, str(ROOT / "benchmarks" / "llama_cpp_server.py"), "--model", str(path), "--model_alias", spec.name,
               "--n_ctx", str(args.n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads), "--flash_attn", "true",
               "--logits_all", "false", "--verbose", "false", "--host", "127.0.0.1", "--port", str(port)]
        return Server(ANCHOR, cmd, {**env, "LLAMA_CPP_SERVER_ONE_THREAD": "1" if args.anchor_one_thread else "0"},
                      "/v1/models", port, log_dir)

    def our_server(slots: int) -> Server:
        port = free_port()
        cmd = [sys.executable, "-m", "conclave.app.cli", "serve", "--model", args.model or settings.model, "--port", str(port),
               "--slots", str(slots), "--max-queue", "256"]
        return Server(f"{OURS} slots={slots}", cmd, env, "/health", port, log_dir)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    rounds: list[Round] = []
    current: Server | None = None
    try:
        current = stock_server()
        rounds += measure(current, ANCHOR, 1, plan, spec.name, args.max_tokens, args.startup_timeout, status)
        for slots in args.slots:
            current = our_server(slots)
            rounds += measure(current, OURS, slots, plan, spec.name, args.max_tokens, args.startup_timeout, status)
    except KeyboardInterrupt:
        status.print("[yellow]interrupted; stopping the servers[/]")
        shutil.rmtree(log_dir, ignore_errors=True)
        raise SystemExit(130)
    finally:
        if current is not None:
            current.stop()
    if any(r.errors for r in rounds):
        console.print(f"[yellow]server logs kept in {log_dir}[/]")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)

    machine = platform.processor() or platform.machine()
    title = (f"{spec.name} ({spec.filename}) over HTTP: chat, max_tokens {args.max_tokens}, greedy, n_ctx {args.n_ctx}, "
             f"{threads} threads; {machine}, {os.cpu_count()} cores, {date.today().isoformat()}")
    report(console, rounds, title, args.concurrency, args.anchor_one_thread)
    prompt_tokens = {(r.server, r.slots): sum(x.prompt_tokens for x in rounds if (x.server, x.slots) == (r.server, r.slots)) for r in rounds}
    if len(set(prompt_tokens.values())) > 1 and not any(r.errors for r in rounds):
        console.print(f"[yellow]note: the servers counted different prompt tokens: {prompt_tokens}[/]")
    console.print(f"[dim]total {time.perf_counter() - t_start:.0f} s; mean completion tokens per request "
                  f"{statistics.mean(r.completion_tokens / max(len(r.latencies), 1) for r in rounds):.1f}; "
                  f"1-min load average {load_before:.2f} before the run (other work on the machine skews every number)[/]")


if __name__ == "__main__":
    main()
