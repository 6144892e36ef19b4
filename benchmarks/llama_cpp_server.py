"""llama-cpp-python's own OpenAI-compatible server, with our AMX workaround applied.

``python -m llama_cpp.server`` builds a stock ``Llama``, which segfaults on the first
multi-token batch on CPUs that advertise AMX (see ``without_amx_buffers`` in
local_models/llamacpp.py). This launcher patches ``llama_model_default_params`` the
same way ``stock_llama`` does, then hands its arguments to llama_cpp.server's own
entry point unchanged, so the anchor in benchmarks/server_throughput.py runs on the
same kernels as our server:

    python benchmarks/llama_cpp_server.py --model PATH --model_alias NAME --n_ctx 2048 --port 8001 ...
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    import llama_cpp.llama_cpp as lib  # the module llama_cpp.llama.Llama calls into

    from local_models.llamacpp import without_amx_buffers

    original = lib.llama_model_default_params
    lib.llama_model_default_params = lambda: without_amx_buffers(original())

    from llama_cpp.server.__main__ import main as server_main  # parses sys.argv itself

    sys.argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    server_main()


if __name__ == "__main__":
    main()
