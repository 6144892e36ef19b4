"""The one sandbox: limits, environment, network and output, each checked on a real subprocess."""

import os
import textwrap

from conclave.agents import sandbox
from conclave.agents.sandbox import Limits, run_python


def code(src: str) -> dict:
    return {"main.py": textwrap.dedent(src)}


def test_runs_in_a_temporary_directory_and_returns_the_files_asked_for():
    out = run_python(["main.py"], files=code("""
        import os, pathlib
        pathlib.Path("out.txt").write_text(os.getcwd())
        print("hello")
    """), collect=("out.txt", "missing.txt"))
    assert out.ok and out.stdout == "hello\n"
    cwd = out.files["out.txt"].decode()
    assert "conclave-sandbox-" in cwd and not os.path.exists(cwd)  # removed afterwards
    assert "missing.txt" not in out.files


def test_the_environment_holds_no_secrets(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    out = run_python(["main.py"], files=code("import os; print(sorted(os.environ))"))
    assert out.ok
    assert "OPENAI_API_KEY" not in out.stdout and "AWS_SECRET_ACCESS_KEY" not in out.stdout
    assert "secret" not in out.stdout


def test_a_child_that_runs_too_long_is_killed_with_everything_it_started():
    out = run_python(["main.py"], files=code("""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("started", flush=True)
        time.sleep(60)
    """), limits=Limits(timeout_s=2))
    assert out.timed_out and not out.ok
    assert out.stdout == "started\n"
    assert "timed out after 2 s" in out.failure()
    assert out.wall_s < 30


def test_the_memory_limit_stops_a_greedy_child():
    out = run_python(["main.py"], files=code("x = bytearray(3 * 1024 ** 3)"), limits=Limits(memory_mb=512))
    assert not out.ok and "MemoryError" in out.stderr


def test_the_cpu_limit_stops_a_spinning_child():
    out = run_python(["main.py"], files=code("while True: pass"), limits=Limits(timeout_s=30, cpu_s=1))
    assert not out.ok and not out.timed_out
    assert out.signal in ("SIGXCPU", "SIGKILL")  # the soft limit signals, the hard one kills
    assert out.signal in out.failure()


def test_output_is_capped_keeping_the_tail():
    out = run_python(["main.py"], files=code("""
        import sys
        print("x" * 100_000)
        sys.exit("the last words")
    """), limits=Limits(output_bytes=1000))
    assert out.truncated and len(out.stdout) < 1100
    assert out.returncode == 1 and "the last words" in out.stderr
    assert "the last words" in out.failure() and "status 1" in out.failure()


def test_no_network_where_the_os_allows_it():
    out = run_python(["main.py"], files=code("""
        import socket
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=3)
            print("connected")
        except OSError as e:
            print("refused", e.errno)
    """))
    assert out.ok
    if sandbox._can_unshare():
        assert out.network_isolated and out.stdout.startswith("refused")
    else:
        assert not out.network_isolated


def test_files_may_not_escape_the_directory():
    import pytest

    with pytest.raises(ValueError, match="outside"):
        run_python(["main.py"], files={"../evil.py": "print(1)"})
