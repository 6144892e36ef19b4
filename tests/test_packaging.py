"""The distribution: one import name, every folder of code in it, every import a declared
dependency, and nothing of ours answering to another package's name."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import pkgutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TOPS = {"app", "agents", "prompts", "retrieval", "local_models", "kernels"}


def code_folders() -> set[str]:
    found = set(TOPS)
    for top in TOPS:
        found |= {str(p.parent.relative_to(ROOT)) for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts}
    return {"conclave." + f.replace(os.sep, ".") for f in found}


def test_every_code_folder_is_a_listed_package_and_no_top_folder_is_a_regular_package():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert set(setuptools["packages"]) == code_folders()
    assert setuptools["package-dir"] == {f"conclave.{t}": t for t in TOPS}
    # an __init__.py would make the folder a regular package, found as `kernels` (say) from
    # the repository root ahead of Hugging Face's; a namespace portion never is
    assert [t for t in TOPS if (ROOT / t / "__init__.py").exists()] == []


def test_every_module_imports():
    failed = {}
    for top in sorted(TOPS):
        pkg = importlib.import_module(f"conclave.{top}")
        for mod in pkgutil.walk_packages(pkg.__path__, f"conclave.{top}."):
            if ".ui.pages" in mod.name:
                continue  # Streamlit page scripts: they run a page when imported (tests/test_ui.py loads them)
            try:
                importlib.import_module(mod.name)
            except Exception as e:  # collect them all, not just the first
                failed[mod.name] = f"{type(e).__name__}: {e}"
    assert failed == {}


def test_imports_match_the_declared_dependencies():
    """deptry: nothing imported that is not a dependency (or only a dev one), nothing declared unused."""
    done = subprocess.run([sys.executable, "-m", "deptry", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_command_answers_help():
    from typer.main import get_command

    from conclave.app.cli import app

    root = get_command(app)
    paths = []
    for name, cmd in root.commands.items():
        paths.append([name])
        paths += [[name, sub] for sub in getattr(cmd, "commands", {})]
    assert len(paths) > 30
    for path in paths:
        done = subprocess.run([sys.executable, "-m", "conclave.app.cli", *path, "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "Usage" in done.stdout, (path, done.stderr[-2000:])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (whl,) = out.glob("conclave-*.whl")
    return whl


def test_the_wheel_holds_one_import_name_and_the_files_the_code_reads(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"conclave", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for needed in ["conclave/kernels/gemv/panels.c", "conclave/prompts/library/demo.toml", "conclave/app/ui/Home.py",
                   "conclave/agents/legal_audit/data/cases.jsonl", "conclave/app/ui/pages/8_Runs.py"]:
        assert needed in names


def test_a_bare_import_of_another_packages_name_never_finds_ours(wheel, tmp_path):
    """The wheel in an empty venv beside transformers (this environment's packages, less
    Hugging Face's `kernels`): neither `kernels` nor `agents` nor `app` is ours, and
    transformers does not take our kernels for theirs."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    done = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # transformers and what it needs, seen through a folder of links that leaves out HF's kernels
    ours = Path(importlib.import_module("transformers").__file__).parent.parent
    view = tmp_path / "view"
    view.mkdir()
    for entry in ours.iterdir():
        if entry.name == "kernels" or entry.name.startswith("kernels-") or entry.name.startswith("conclave") \
                or entry.name.startswith("__editable__") or entry.suffix == ".pth":
            continue
        (view / entry.name).symlink_to(entry)
    (Path(site) / "view.pth").write_text(str(view) + "\n")
    probe = """
import importlib.util, sys
for name in ("kernels", "agents", "app", "local_models", "retrieval", "prompts"):
    assert importlib.util.find_spec(name) is None, (name, importlib.util.find_spec(name))
import conclave.kernels.wkv4, conclave.agents.llm
assert "site-packages/conclave/" in conclave.agents.llm.__file__
import transformers.utils
is_kernels_available = getattr(transformers.utils, "is_kernels_available", None)  # transformers >= 4.54
assert is_kernels_available is None or is_kernels_available() is False
print("ok")
"""
    done = subprocess.run([str(py), "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_from_the_repository_root_kernels_is_hugging_faces():
    """Where the README's test command runs (the root is on sys.path): transformers gets its own `kernels`."""
    probe = """
import kernels, transformers.utils
assert getattr(kernels, "__file__", None) and "site-packages" in kernels.__file__, kernels
from kernels import CUDAProperties  # what transformers 5.25 imports from it
import conclave.kernels.wkv4
print("ok")
"""
    try:  # by its distribution: from the root, an import would find our namespace portion
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("Hugging Face's kernels is not installed here (transformers before 5.25 does not need it)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
