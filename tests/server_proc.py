"""Starting a real `conclave serve` in a subprocess for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(data_dir, *args, env=None, timeout=90):
    port = free_port()
    full_env = {**os.environ, "CONCLAVE_DATA_DIR": str(data_dir), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conclave.app.cli", "serve", "--port", str(port), *args],
        env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not come up")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        assert proc.returncode is not None


def check_served_like_in_process(base: str, name: str, chat: list[dict], local) -> None:
    """What a served local engine owes the official openai client: its model listed, the chat
    answer and prompt count the engine gives in process (``local``, at temperature 0),
    concurrent requests beyond the slots batched and queued with log-probs, streaming that
    agrees with the plain answer, and a 400 naming the context for an oversized prompt
    (servers here run with a context of 512)."""
    import concurrent.futures

    import openai
    import pytest

    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)
    assert [m.id for m in client.models.list().data] == [name]
    r = client.chat.completions.create(model=name, messages=chat, max_tokens=local.usage.completion_tokens, temperature=0)
    assert r.choices[0].message.content == local.text
    assert r.usage.prompt_tokens == local.usage.prompt_tokens
    prompts = ["Once upon a time", "The weather today", "In 1905, Einstein"]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda p: client.completions.create(model=name, prompt=p, max_tokens=5, temperature=0,
                                                                  logprobs=1), prompts))
    for out in outs:
        assert out.usage.completion_tokens >= 1 and all(lp <= 0 for lp in out.choices[0].logprobs.token_logprobs)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=name, prompt=prompts[0], max_tokens=5, temperature=0, stream=True))
    assert streamed == outs[0].choices[0].text
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model=name, prompt="word " * 600, max_tokens=4)
