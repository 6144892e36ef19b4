import pytest

from conclave.app.settings import SettingsError, load_settings


def test_defaults(tmp_path):
    s = load_settings()
    assert s.model == "smollm2-135m-instruct" and s.backend is None
    assert s.data_dir == tmp_path / "data" and s.db_path == tmp_path / "data" / "conclave.db"


def test_precedence_flags_over_env_over_file(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "gemma-3-270m"\nn_ctx = 1024\nrequest_timeout = 5\n')
    monkeypatch.setenv("CONCLAVE_CONFIG", str(cfg))
    monkeypatch.setenv("CONCLAVE_N_CTX", "2048")
    s = load_settings()
    assert (s.model, s.n_ctx, s.request_timeout) == ("gemma-3-270m", 2048, 5.0)
    assert load_settings(model="openai:gpt-4o-mini").model == "openai:gpt-4o-mini"


def test_default_config_file_location_is_read(tmp_path):
    (tmp_path / "config" / "conclave").mkdir(parents=True)
    (tmp_path / "config" / "conclave" / "config.toml").write_text("max_retries = 7\n")
    assert load_settings().max_retries == 7


def test_openai_variables_and_the_key_stays_secret(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:9999/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    s = load_settings()
    assert s.openai_base_url == "http://localhost:9999/v1"
    assert s.openai_api_key.get_secret_value() == "sk-secret-value"
    assert "sk-secret-value" not in repr(s) and "sk-secret-value" not in str(s.model_dump())
    monkeypatch.setenv("CONCLAVE_OPENAI_BASE_URL", "http://other/v1")
    assert load_settings().openai_base_url == "http://other/v1"


@pytest.mark.parametrize(
    "content, message",
    [
        ("n_ctx = [", "not valid TOML"),
        ("n_ctxx = 10\n", "n_ctxx"),
        ("n_ctx = 10\n", "n_ctx"),
        ('backend = "tpu"\n', "backend"),
        ("max_retries = -1\n", "max_retries"),
    ],
)
def test_bad_config_file_gives_a_clear_error(tmp_path, monkeypatch, content, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    monkeypatch.setenv("CONCLAVE_CONFIG", str(cfg))
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_missing_explicit_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("CONCLAVE_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings()


def test_bad_env_value(monkeypatch):
    monkeypatch.setenv("CONCLAVE_REQUEST_TIMEOUT", "soon")
    with pytest.raises(SettingsError, match="request_timeout"):
        load_settings()
