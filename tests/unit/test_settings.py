"""Settings: defaults < TOML file < environment, and one clear message for an invalid value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import settings as settings_rows
from app.config.load import load_settings
from app.config.settings import DEFAULT_CORS_ORIGINS, KEYS, SettingsError
from app.config.table import current_section, readme_section
from tests.fixtures.config_files import write_config


def test_defaults_are_the_embedded_ones() -> None:
    settings = load_settings({})
    assert settings.port == 4000
    assert settings.https_port == 3443
    assert settings.data_dir == Path("data")
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_database_url.endswith("data/beth.sqlite3")
    assert settings.models_dir == Path("data/models")
    assert "https://localhost:3000" in settings.cors_origins
    assert "http://localhost:3005" in settings.cors_origins
    assert len(DEFAULT_CORS_ORIGINS) == 12
    assert settings.ollama_host == "http://localhost:11434"


def test_file_overrides_defaults_and_environment_overrides_file(tmp_path: Path) -> None:
    config = tmp_path / "beth.toml"
    write_config(config, 'port = 5000\nhost = "0.0.0.0"\nollama_host = "http://gpu-box:11434"\n')
    settings = load_settings({"BETH_CONFIG": str(config), "PORT": "6000"})
    assert settings.port == 6000
    assert settings.host == "0.0.0.0"
    assert settings.ollama_host == "http://gpu-box:11434"
    assert settings.sources["port"] == "env"
    assert settings.sources["host"] == "file"


def test_postgres_url_and_data_dir_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings({"DATABASE_URL": "postgresql://u@db/x", "BETH_DATA_DIR": str(tmp_path)})
    assert settings.effective_database_url == "postgresql://u@db/x"
    assert settings.models_dir == tmp_path / "models"


@pytest.mark.parametrize(
    ("env", "key", "reason"),
    [
        ({"PORT": "eighty"}, "PORT", "must be an integer"),
        ({"PORT": "70000"}, "PORT", "between 1 and 65535"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL", "sqlite:/// or postgresql://"),
        ({"OLLAMA_HOST": "localhost"}, "OLLAMA_HOST", "http:// or https://"),
        ({"FORCE_HTTPS": "maybe"}, "FORCE_HTTPS", "must be a boolean"),
        ({"CORS_ORIGINS": "localhost:3000"}, "CORS_ORIGINS", "not an http(s) origin"),
        ({"HF_EXECUTION_PROVIDER": "tpu"}, "HF_EXECUTION_PROVIDER", "auto, cpu, cuda"),
        ({"HF_LOOKAHEAD_TOKENS": "32"}, "HF_LOOKAHEAD_TOKENS", "between 0 and 16"),
    ],
)
def test_invalid_values_name_key_value_and_reason(env: dict[str, str], key: str, reason: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert key in message
    assert repr(next(iter(env.values()))) in message
    assert reason in message


def test_the_lookahead_setting_reaches_the_hf_model_pool(tmp_path: Path) -> None:
    from app.providers.assembly import build_hf_provider

    assert load_settings({}).hf_lookahead_tokens == 4
    settings = load_settings({"HF_LOOKAHEAD_TOKENS": "0", "BETH_DATA_DIR": str(tmp_path)})
    assert build_hf_provider(settings).pool.settings.lookahead_tokens == 0


def test_unknown_and_unreadable_file_keys_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "beth.toml"
    write_config(config, "prot = 5000\n")
    with pytest.raises(SettingsError, match="unknown key"):
        load_settings({"BETH_CONFIG": str(config)})
    write_config(config, "port = \n")
    with pytest.raises(SettingsError, match="cannot read the TOML file"):
        load_settings({"BETH_CONFIG": str(config)})
    with pytest.raises(SettingsError, match="no such file"):
        load_settings({"BETH_CONFIG": str(tmp_path / "missing.toml")})


def test_serve_stops_with_one_message_on_an_invalid_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PORT": "eighty", "HF_AUTO_EXPORT_DEFAULT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "beth-chat: Invalid setting PORT='eighty' (from env): must be an integer"


def test_cli_help_lists_the_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "app.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("serve", "db", "export", "models"):
        assert command in result.stdout


def test_the_readme_configuration_table_is_written_from_the_settings_rows() -> None:
    readme = Path(__file__).resolve().parents[2] / "README.md"
    assert current_section(readme.read_text(encoding="utf-8")) == readme_section(), (
        "run `beth-chat config table --write README.md`"
    )
    assert all(f"`{row.env_name}`" in readme_section() for row in KEYS.values())


def test_loading_settings_loads_neither_the_engine_nor_the_exporter() -> None:
    code = "import app.settings, app.config.load, sys; assert not [m for m in sys.modules if m.split('.')[0] in ('onnxruntime', 'inference', 'exports', 'numpy', 'tokenizers')], sorted(sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_settings_limits_match_the_engine_and_the_exporter() -> None:
    from exports.default_model import DEFAULT_ALIAS
    from inference.lookahead import MAX_LOOKAHEAD_TOKENS

    assert settings_rows.MAX_LOOKAHEAD_TOKENS == MAX_LOOKAHEAD_TOKENS
    assert settings_rows.DEFAULT_ALIAS == DEFAULT_ALIAS
