"""Opening models by name: which backend serves which name, and the errors when none can."""

import pytest

from conclave.agents.backends import open_llm
from conclave.agents.backends.local import LocalLLM
from conclave.agents.backends.openai_api import OpenAILLM
import conclave.local_models.rwkv  # noqa: F401  (registered before a test empties the registry)
import conclave.local_models.transformer  # noqa: F401
from conclave.local_models import native
from conclave.local_models.errors import BackendUnavailable, ModelNotFound


def test_openai_prefix_opens_the_openai_backend(tmp_path):
    llm = open_llm("openai:gpt-4o-mini", data_dir=tmp_path, base_url="http://127.0.0.1:9/v1", api_key="k")
    assert isinstance(llm, OpenAILLM) and llm.model == "gpt-4o-mini" and llm.base_url == "http://127.0.0.1:9/v1"
    llm.close()


def test_unknown_backend_and_unknown_model(tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        open_llm("smollm2-135m-instruct", backend="tpu", data_dir=tmp_path)
    with pytest.raises(ModelNotFound):
        open_llm("no-such-model", data_dir=tmp_path)


def test_gguf_path_opens_llamacpp(smollm2_path, tmp_path):
    llm = open_llm(str(smollm2_path), data_dir=tmp_path, n_ctx=512)
    assert isinstance(llm, LocalLLM) and llm.backend == "llamacpp" and llm.context_length == 512
    assert llm.count_tokens("hello world") == 2


def test_native_backend_refuses_an_architecture_it_has_no_engine_for(model_dir, monkeypatch):
    monkeypatch.setattr(native, "ENGINES", {})
    with pytest.raises(BackendUnavailable, match="no engine for architecture 'llama'.*--backend llamacpp"):
        open_llm("smollm2-135m-instruct", backend="native", data_dir=model_dir)
