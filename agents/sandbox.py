"""The one sandbox for model-written code (proposed losses, figure code).

The code runs as a Python subprocess, in a fresh temporary directory, under:
- a wall-clock timeout, enforced by killing the whole process group;
- CPU-time, address-space, file-size and open-file rlimits;
- an environment that holds only what Python needs (no keys, no tokens, no proxies);
- no network, where the OS lets an unprivileged process have its own network
  namespace (``unshare -rn``); ``Outcome.network_isolated`` says whether it did;
- captured output capped (the tail is kept: that is where tracebacks are).

The child runs ``python -I``: no user site, no PYTHONPATH, and the working
directory is the temporary one, so it imports only installed packages and the
files it is given. This isolates resources and secrets, not Python itself: the
code can import what the environment has installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# Variables a child may inherit; everything else (API keys, tokens, proxies, cloud config) is dropped.
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 60.0
    cpu_s: int | None = None  # default: twice the timeout (threads burn CPU time in parallel)
    memory_mb: int = 2048  # address space; a torch import needs about 700 MB of it
    output_bytes: int = 64_000  # per stream; a file read back is capped at ten times this
    file_mb: int = 64  # the largest file the code may write
    threads: int = 1  # OMP/MKL threads for numeric libraries
    network: bool = False


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool = False
    signal: str | None = None  # the signal that ended the child, if one did
    truncated: bool = False  # stdout or stderr was longer than the cap
    network_isolated: bool = False
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def failure(self) -> str:
        """One paragraph on why the child failed: what to show a person or a model."""
        if self.timed_out:
            head = f"timed out after {self.wall_s:.0f} s (the wall-clock limit)"
        elif self.signal:
            hint = {"SIGKILL": " (often the memory limit)", "SIGXCPU": " (the CPU-time limit)",
                    "SIGXFSZ": " (the file-size limit)", "SIGSEGV": ""}.get(self.signal, "")
            head = f"killed by {self.signal}{hint}"
        else:
            head = f"exited with status {self.returncode}"
        tail = self.stderr.strip()
        return f"{head}\n{tail}" if tail else head


def run_python(args: list[str], *, files: dict[str, str | bytes] | None = None, collect: tuple[str, ...] = (),
               limits: Limits = Limits()) -> Outcome:
    """Run ``python -I *args`` in a new temporary directory holding ``files`` (name -> content),
    and read back the files named in ``collect`` that the child wrote there."""
    with tempfile.TemporaryDirectory(prefix="conclave-sandbox-") as tmp:
        root = Path(tmp)
        for name, content in (files or {}).items():
            path = root / name
            if root not in path.resolve().parents:
                raise ValueError(f"sandbox file {name!r} lies outside the sandbox directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        isolated = not limits.network and _can_unshare()
        cmd = ([_unshare(), "-rn"] if isolated else []) + [sys.executable, "-I", "-c", _LAUNCH, *_rlimits(limits),
                                                           "--", *args]
        env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
        threads = str(limits.threads)
        env |= {"HOME": tmp, "TMPDIR": tmp, "MPLCONFIGDIR": tmp, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "PYTHONHASHSEED": "0"}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        out, err = _Tail(proc.stdout, limits.output_bytes), _Tail(proc.stderr, limits.output_bytes)
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc)
            out.join()
            err.join()
        wall = time.perf_counter() - t0
        rc = proc.returncode
        sig = signal.Signals(-rc).name if rc is not None and rc < 0 and not timed_out else None
        got = {}
        for name in collect:
            path = root / name
            if path.is_file() and path.stat().st_size <= 10 * limits.output_bytes:
                got[name] = path.read_bytes()
        return Outcome(rc, out.text(), err.text(), wall, timed_out, sig, out.cut or err.cut, isolated, got)


class _Tail:
    """Drains a pipe on a thread, keeping its last ``cap`` bytes."""

    def __init__(self, pipe, cap: int):
        self.buf, self.cap, self.cut = bytearray(), cap, False
        self.thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self.thread.start()

    def _drain(self, pipe) -> None:
        with pipe:
            for chunk in iter(lambda: pipe.read1(65536), b""):
                self.buf += chunk
                if len(self.buf) > self.cap:
                    del self.buf[:len(self.buf) - self.cap]
                    self.cut = True

    def join(self) -> None:
        self.thread.join(timeout=5)

    def text(self) -> str:
        return ("[… earlier output cut …]\n" if self.cut else "") + self.buf.decode("utf-8", "replace")


# Sets the rlimits, then becomes ``python -I ARGS``. Limits are set in the child itself, not in a
# preexec_fn: that is unsafe in a parent with threads (the web UI runs workflows on threads).
_LAUNCH = """import os, resource, sys
i = sys.argv.index("--")
for spec in sys.argv[1:i]:
    name, soft, hard = spec.split("=")[0], *map(int, spec.split("=")[1].split(":"))
    resource.setrlimit(getattr(resource, name), (soft, hard))
os.execv(sys.executable, [sys.executable, "-I", *sys.argv[i + 1:]])
"""


def _rlimits(limits: Limits) -> list[str]:
    cpu = limits.cpu_s or max(1, int(2 * limits.timeout_s))
    memory, fsize = limits.memory_mb << 20, limits.file_mb << 20
    # the soft CPU limit signals SIGXCPU, the hard one a second later kills
    return [f"RLIMIT_CPU={cpu}:{cpu + 1}", f"RLIMIT_AS={memory}:{memory}", f"RLIMIT_FSIZE={fsize}:{fsize}",
            "RLIMIT_NOFILE=256:256", "RLIMIT_CORE=0:0"]


def _kill_group(proc: subprocess.Popen) -> None:
    """The child and anything it started: a forked grandchild must not outlive the sandbox."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _unshare() -> str | None:
    return shutil.which("unshare")


@lru_cache(maxsize=1)
def _can_unshare() -> bool:
    """Whether this OS lets us start a process in its own, empty network namespace."""
    tool = _unshare()
    if tool is None:
        return False
    try:
        return subprocess.run([tool, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
