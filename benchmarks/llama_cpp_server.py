"""llama-cpp-python's own OpenAI-compatible server, with our AMX workaround applied.

``python -m llama_cpp.server`` builds a stock ``Llama``, which segfaults on the first
multi-token batch on CPUs that advertise AMX (see ``without_amx_buffers`` in
local_models/llamacpp.py). This launcher patches ``llama_model_default_params`` the
same way ``stock_llama`` does, then hands its arguments to llama_cpp.server's own
entry point unchanged, so the anchor in benchmarks/server_throughput.py runs on the
same kernels as our server:

    python benchmarks/llama_cpp_server.py --model PATH --model_alias NAME --n_ctx 2048 --port 8001 ...

Opt-in, with ``LLAMA_CPP_SERVER_ONE_THREAD=1`` in the environment: run every
non-streaming model call on one dedicated thread. The stock server runs each request
on whichever worker of its thread pool is free; this build of llama.cpp uses OpenMP,
which gives every calling thread its own team of workers, and once two teams exist
on a machine with fewer cores than their threads, libgomp stops spinning between
graph computations and every token pays for waking its workers (measured on 2 cores:
about 36 tok/s instead of 95, for every call after the second thread's first one).
"""

from __future__ import annotations

import os
import sys


def _one_model_thread() -> None:
    import asyncio
    import functools
    from concurrent.futures import ThreadPoolExecutor

    import llama_cpp.server.app as server_app

    pool = ThreadPoolExecutor(1, thread_name_prefix="llama")

    async def run_in_threadpool(func, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(func, *args, **kwargs))

    server_app.run_in_threadpool = run_in_threadpool  # the endpoints look it up at call time


def main(argv: list[str] | None = None) -> None:
    import llama_cpp.llama_cpp as lib  # the module llama_cpp.llama.Llama calls into

    from conclave.local_models.llamacpp import without_amx_buffers

    original = lib.llama_model_default_params
    lib.llama_model_default_params = lambda: without_amx_buffers(original())
    if os.environ.get("LLAMA_CPP_SERVER_ONE_THREAD") == "1":
        _one_model_thread()

    from llama_cpp.server.__main__ import main as server_main  # parses sys.argv itself

    sys.argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    server_main()


if __name__ == "__main__":
    main()
