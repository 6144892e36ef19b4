import hashlib
import shutil
import sys

import pytest

from conclave.local_models import catalog
from conclave.local_models.catalog import ModelSpec, Part
from conclave.local_models.errors import ModelNotFound, ModelNotInstalled, WeightsCorrupt

SMOL = catalog.CATALOG["smollm2-135m-instruct"]


def test_catalog_has_the_design_models_with_pinned_hashes():
    assert catalog.DEFAULT_MODEL == "smollm2-135m-instruct"
    for name in ("smollm2-135m-instruct", "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct", "gemma-3-270m"):
        spec = catalog.CATALOG[name]
        assert len(spec.sha256) == 64 and spec.parts
    assert len(catalog.CATALOG["qwen2.5-coder-1.5b-instruct"].parts) == 22
    assert catalog.CATALOG["qwen2.5-coder-1.5b-instruct"].parts[-1].relpath == "data/part22.bin"
    assert catalog.CATALOG["gemma-3-270m"].parts[0].relpath == "data/gemma-3-270m-q4_k_m.gguf.part00"


def test_unknown_name_lists_the_catalog():
    with pytest.raises(ModelNotFound, match="smollm2-135m-instruct"):
        catalog.resolve("gpt-7")
    with pytest.raises(ModelNotFound, match="not found"):
        catalog.resolve("/nowhere/model.gguf")


def test_a_user_gguf_path_resolves_with_its_architecture(smollm2_path):
    spec = catalog.resolve(str(smollm2_path))
    assert spec.path == smollm2_path and spec.arch == "llama" and spec.sha256 is None


def test_a_non_gguf_file_is_refused(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_bytes(b"hello world, not a model" * 10)
    with pytest.raises(WeightsCorrupt, match="not a GGUF"):
        catalog.resolve(str(bad))


def test_missing_weights_name_the_command_that_fixes_it(tmp_path):
    with pytest.raises(ModelNotInstalled, match="conclave models pull smollm2-135m-instruct"):
        catalog.ensure_weights(SMOL, tmp_path)


def test_corrupt_weights_are_caught_and_pull_force_repairs_them(tmp_path, smollm2_path):
    target = catalog.weights_path(SMOL, tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copyfile(smollm2_path, target)
    assert catalog.ensure_weights(SMOL, tmp_path) == target  # hashes once, then stamps
    with target.open("r+b") as f:
        f.seek(5_000_000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(WeightsCorrupt, match="conclave models pull smollm2-135m-instruct --force"):
        catalog.ensure_weights(SMOL, tmp_path)
    ok, msg = catalog.verify(SMOL, tmp_path)
    assert not ok and "mismatch" in msg
    catalog.pull(SMOL, tmp_path, force=True)
    assert catalog.verify(SMOL, tmp_path) == (True, f"sha256 ok ({SMOL.sha256[:16]}…)")


def test_truncated_weights_are_caught(tmp_path, smollm2_path):
    target = catalog.weights_path(SMOL, tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(smollm2_path.read_bytes()[:1_000_000])
    with pytest.raises(WeightsCorrupt):
        catalog.ensure_weights(SMOL, tmp_path)


def _fake_package(root, name, files: dict[str, bytes]):
    """An installed distribution on sys.path: a module with data files and its dist-info."""
    pkg = root / name
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for rel, data in files.items():
        (pkg / rel).write_bytes(data)
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0\n")


@pytest.fixture
def parts_on_path(tmp_path, monkeypatch):
    site = tmp_path / "site"
    blobs = [bytes([i]) * 300_000 for i in range(3)]
    for i, blob in enumerate(blobs, 1):
        _fake_package(site, f"fakemodel_part{i}", {f"data/part{i:02d}.bin": blob})
    monkeypatch.syspath_prepend(str(site))
    for i in range(1, 4):
        sys.modules.pop(f"fakemodel_part{i}", None)
    parts = tuple(Part(f"fakemodel-part{i}", "1.0", f"fakemodel_part{i}", f"data/part{i:02d}.bin") for i in range(1, 4))
    return parts, hashlib.sha256(b"".join(blobs)).hexdigest()


def test_pull_concatenates_parts_in_order_and_verifies(tmp_path, parts_on_path):
    parts, digest = parts_on_path
    spec = ModelSpec("fake", "llama", "fake.gguf", digest, None, parts)
    seen = []
    path = catalog.pull(spec, tmp_path / "data", progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes()[:300_000] == b"\x00" * 300_000 and path.stat().st_size == 900_000
    assert seen[-1] == (900_000, 900_000)
    assert catalog.ensure_weights(spec, tmp_path / "data") == path


def test_pull_with_a_wrong_hash_leaves_nothing_behind(tmp_path, parts_on_path):
    parts, _ = parts_on_path
    spec = ModelSpec("fake", "llama", "fake.gguf", "0" * 64, None, parts)
    with pytest.raises(WeightsCorrupt, match="damaged"):
        catalog.pull(spec, tmp_path / "data")
    assert list((tmp_path / "data" / "models").iterdir()) == []
