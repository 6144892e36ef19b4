"""Every setting, in one place.

Precedence: command-line flags > environment (``CONCLAVE_*``) > the TOML file
(``$CONCLAVE_CONFIG``, else ``~/.config/conclave/config.toml`` if present) > defaults.
The OpenAI-compatible endpoint also honours the usual ``OPENAI_BASE_URL`` and
``OPENAI_API_KEY``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from conclave.local_models.catalog import DEFAULT_MODEL
from conclave.local_models.errors import ConclaveError


class SettingsError(ConclaveError):
    pass


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "conclave"


def config_file() -> Path | None:
    explicit = os.environ.get("CONCLAVE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    default = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "conclave" / "config.toml"
    return default if default.is_file() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONCLAVE_", extra="forbid", validate_default=True)

    data_dir: Path = Field(default_factory=_default_data_dir, description="runs, call log and model weights live here")
    model: str = Field(DEFAULT_MODEL, description="a catalog name, a .gguf path, or openai:<model>")
    backend: Literal["llamacpp", "native", "openai"] | None = Field(None, description="force a backend")
    n_ctx: int = Field(4096, ge=256, description="context length for in-process models")
    n_threads: int | None = Field(None, ge=1, description="CPU threads for in-process models (default: all cores)")
    openai_base_url: str = Field(
        "https://api.openai.com/v1",
        validation_alias=AliasChoices("CONCLAVE_OPENAI_BASE_URL", "OPENAI_BASE_URL", "openai_base_url"),
    )
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("CONCLAVE_OPENAI_API_KEY", "OPENAI_API_KEY", "openai_api_key")
    )
    openai_tokenizer: str | None = Field(
        None, description="a catalog name or .gguf with the endpoint model's vocabulary, to count tokens locally"
    )
    request_timeout: float = Field(60.0, gt=0, description="seconds before an endpoint call gives up")
    max_retries: int = Field(3, ge=0, le=10, description="retries on connection errors, timeouts, 429 and 5xx")
    chroma_url: str | None = Field(None, description="a Chroma server (http://host:port); unset: embedded, under the data dir")

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @property
    def db_path(self) -> Path:
        return self.data_dir / "conclave.db"

    def open_llm(self, model: str | None = None, *, backend: str | None = None, sink=None):
        return self.llm_factory(model, backend=backend)(sink=sink)

    def llm_factory(self, model: str | None = None, *, backend: str | None = None):
        """``open_llm`` with these settings, as a picklable function: what a Ray worker
        rebuilds the model with. It carries the API key, if one is set."""
        from functools import partial

        from conclave.agents.backends import open_llm

        return partial(
            open_llm,
            model or self.model,
            backend=backend or self.backend,
            data_dir=self.data_dir,
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            base_url=self.openai_base_url,
            api_key=self.openai_api_key.get_secret_value() if self.openai_api_key else None,
            timeout=self.request_timeout,
            max_retries=self.max_retries,
            tokenizer=self.openai_tokenizer,
        )


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls):
        super().__init__(settings_cls)
        path = config_file()
        self.data: dict = {}
        if path is None:
            return
        try:
            self.data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"config file {path} (from CONCLAVE_CONFIG) does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"config file {path} is not valid TOML: {e}") from None
        self.path = path

    def get_field_value(self, field, field_name):
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict:
        return dict(self.data)


def load_settings(**overrides) -> Settings:
    """Settings with ``overrides`` (from CLI flags; None means 'not given') on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        where = config_file()
        lines = [f"  {'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors()]
        origin = f" (environment, flags or {where})" if where else " (environment or flags)"
        raise SettingsError("invalid settings" + origin + ":\n" + "\n".join(lines)) from None
