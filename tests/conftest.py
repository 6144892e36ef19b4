import os
import shutil
from pathlib import Path

import pytest
import torch

from conclave.local_models import catalog

pytest_plugins = ["pytester", "tests.reporting"]

# Tests never touch the user's data dir or config.
os.environ.pop("CONCLAVE_CONFIG", None)

# Without a GPU, Triton kernels run through Triton's interpreter (tiny shapes); it is read
# when a kernel is defined, so before any test imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


MODEL_FIXTURES = {"model_dir"}  # every fixture that opens a real model pulls it through this one


def pytest_collection_modifyitems(items):
    """The ``model`` marker on every test that loads a real model, so ``-m "not model"`` is the fast suite."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("model")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    for var in list(os.environ):
        if var.startswith("CONCLAVE_") or var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CONCLAVE_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A data dir holding the embedded SmolLM2, pulled the way a user pulls it."""
    data = tmp_path_factory.mktemp("models")
    catalog.pull(catalog.CATALOG[catalog.DEFAULT_MODEL], data)
    return data


@pytest.fixture(scope="session")
def smollm2_path(model_dir) -> Path:
    return catalog.weights_path(catalog.CATALOG[catalog.DEFAULT_MODEL], model_dir)


@pytest.fixture(scope="session")
def engine(smollm2_path):
    from conclave.local_models.llamacpp import LlamaCppEngine

    return LlamaCppEngine(smollm2_path, name=catalog.DEFAULT_MODEL, n_ctx=2048)


@pytest.fixture
def with_model(model_dir, monkeypatch):
    """Points the settings at the session's pulled models."""
    monkeypatch.setenv("CONCLAVE_DATA_DIR", str(model_dir))
    return model_dir


@pytest.fixture
def exact_fp32():
    """float32 products in full float32 on a GPU (no TF32; the rwkv package turns it on),
    for comparisons at 1e-5."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)
