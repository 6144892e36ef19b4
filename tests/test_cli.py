"""The ``conclave`` command, run as a user runs it: a subprocess with its own environment."""

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest


def conclave(*args, env=None, input=None, timeout=120):
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "conclave.app.cli", *args], capture_output=True, text=True, env=full_env, input=input, timeout=timeout
    )


def test_console_script_is_installed():
    exe = shutil.which("conclave", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert exe, "the conclave console script is not on PATH"
    assert subprocess.run([exe, "--help"], capture_output=True, text=True).returncode == 0


@pytest.mark.parametrize("cmd", [[], ["models"], ["models", "list"], ["models", "pull"], ["models", "verify"], ["chat"], ["calls"], ["demo"], ["runs"], ["runs", "list"], ["runs", "show"], ["runs", "export"], ["ui"]])
def test_help_everywhere(cmd):
    r = conclave(*cmd, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout


def test_models_list_shows_the_catalog_and_what_is_installed(with_model):
    r = conclave("models", "list")
    assert r.returncode == 0
    for name in ("smollm2-135m-instruct (default)", "qwen2.5-coder-1.5b-instruct", "gemma-3-270m"):
        assert name in r.stdout
    row = next(line for line in r.stdout.splitlines() if "smollm2" in line)
    assert "yes" in row


def test_pull_then_verify_into_a_fresh_data_dir(tmp_path):
    env = {"CONCLAVE_DATA_DIR": str(tmp_path / "fresh")}
    r = conclave("models", "pull", "smollm2-135m-instruct", env=env)
    assert r.returncode == 0, r.stderr
    assert "sha256 verified" in r.stdout
    assert (tmp_path / "fresh" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    r = conclave("models", "verify", env=env)
    assert r.returncode == 0 and "sha256 ok" in r.stdout


def test_missing_model_names_the_fix_without_a_traceback(tmp_path):
    r = conclave("chat", "hi", env={"CONCLAVE_DATA_DIR": str(tmp_path / "empty")})
    assert r.returncode == 1
    assert "conclave models pull smollm2-135m-instruct" in r.stderr and "Traceback" not in r.stderr


def test_bad_config_file_is_reported(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("n_ctx = 'big'\n")
    r = conclave("--config", str(cfg), "calls")
    assert r.returncode == 1 and "n_ctx" in r.stderr and "Traceback" not in r.stderr


def test_unknown_model_is_reported():
    r = conclave("chat", "hi", "--model", "gpt-99")
    assert r.returncode == 1 and "unknown model 'gpt-99'" in r.stderr


def test_one_shot_chat_streams_an_answer_and_logs_the_call(with_model):
    r = conclave("chat", "What is the capital of France?", "--max-tokens", "12", "-t", "0")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) > 3
    r = conclave("calls", "-n", "5")
    assert r.returncode == 0 and "llamacpp" in r.stdout and "chat" in r.stdout


def test_interactive_chat_keeps_the_history(with_model):
    r = conclave("chat", "--max-tokens", "8", "-t", "0", input="Hello!\nAnd again?\n")
    assert r.returncode == 0, r.stderr
    conn = sqlite3.connect(with_model / "conclave.db")
    last_two = conn.execute("SELECT prompt_tokens FROM calls WHERE kind = 'chat' ORDER BY id DESC LIMIT 2").fetchall()
    assert last_two[0][0] > last_two[1][0]  # the second turn carried the first


def test_bad_parameter_is_reported(with_model):
    r = conclave("chat", "hi", "--temperature", "-1")
    assert r.returncode == 1 and "temperature" in r.stderr


def test_demo_runs_end_to_end_and_is_recorded(with_model):
    r = conclave("demo")
    assert r.returncode == 0, r.stderr
    for section in ("1. A streamed answer", "2. Where the model was least sure", "3. Classification", "4. Every call"):
        assert section in r.stdout
    conn = sqlite3.connect(with_model / "conclave.db")
    run_id, status, result = conn.execute("SELECT id, status, result FROM runs WHERE workflow = 'demo' ORDER BY created_at DESC").fetchone()
    assert status == "done" and '"labels": ["positive", "negative"]' in result
    kinds = [k for (k,) in conn.execute("SELECT kind FROM calls WHERE run_id = ? ORDER BY id", (run_id,))]
    refs = {p for (p,) in conn.execute("SELECT prompt_ref FROM calls WHERE run_id = ?", (run_id,))}
    assert kinds == ["chat", "score", "score"] and refs == {"demo@1", "sentiment@1"}


def test_data_list_shows_every_packaged_data_set_as_installed():
    r = conclave("data", "list")
    assert r.returncode == 0, r.stderr
    for name in ("wikipedia-10k", "fanoutqa-dev", "hamlet", "rotten-tomatoes"):
        row = next(line for line in r.stdout.splitlines() if name in line)
        assert "yes" in row
    bad = conclave("data", "pull", "nope")
    assert bad.returncode == 1 and "unknown corpus nope" in bad.stderr and "Traceback" not in bad.stderr
    assert all(conclave(*cmd, "--help").returncode == 0 for cmd in (["data"], ["data", "pull"], ["flare"], ["evoprompt"]))
