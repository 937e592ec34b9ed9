"""The configuration as data: validation messages, per-model lookup, redaction, diff and the TOML backup."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from app.config import effective as cm
from app.config import toml as documents
from app.config.load import load_settings
from app.config.settings import RESTART_KEYS
from app.providers.types import ModelInfo

HF_POOL_KEYS = (
    "hf_execution_provider",
    "hf_num_threads",
    "hf_lookahead_tokens",
    "hf_memory_budget_mb",
    "hf_max_loaded_models",
    "hf_keep_alive_s",
    "hf_preload",
)

TOML = """
system_prompt = "Be brief."
fallback_models = ["hf/tiny"]

[models."ollama/llama3.1:8b"]
enabled = true
system_prompt = "You are Llama."
context_budget = 2048
keep_alive_s = 60

[models."ollama/llama3.1:8b".options]
temperature = 0.2
top_p = 0.9
top_k = 40
max_tokens = 100
seed = 7
repetition_penalty = 1.1
stop = ["</s>"]

[models."hf/tiny"]
enabled = false
"""


def start_settings(**env: str):
    return load_settings({**env})


def info(name: str) -> ModelInfo:
    provider, native = name.split("/", 1)
    return ModelInfo(name=name, provider=provider, native_name=native)


def test_a_valid_file_gives_settings_and_per_model_tables() -> None:
    config = cm.build(start_settings(), documents.parse_toml(TOML), {})
    assert config.settings.system_prompt == "Be brief."
    assert config.sources["system_prompt"] == "file"
    assert config.settings.fallback_models == ("hf/tiny",)
    llama = config.for_model("llama3.1:8b", info("ollama/llama3.1:8b"))
    assert llama.system_prompt == "You are Llama."
    assert llama.context_budget == 2048
    assert llama.options is not None
    assert (llama.options.temperature, llama.options.max_tokens, llama.options.stop) == (0.2, 100, ["</s>"])
    assert config.for_model("hf/tiny", info("hf/tiny")).enabled is False
    assert config.for_model("llava:7b", info("ollama/llava:7b")).enabled is True


def test_every_error_names_key_value_and_reason() -> None:
    document = documents.parse_toml(
        'chat_max_tokens = "lots"\nolama_host = "x"\n[models."m"]\ncolour = 1\n[models."m".options]\ntemperature = 99\n'
    )
    errors = {e.key: e for e in cm.document_errors(document, "file")}
    assert set(errors) == {"chat_max_tokens", "olama_host", 'models."m".colour', 'models."m".options.temperature'}
    assert errors["chat_max_tokens"].value == "lots"
    assert "integer" in errors["chat_max_tokens"].reason
    assert "between 0 and 10" in errors['models."m".options.temperature'].reason
    assert "unknown" in errors["olama_host"].reason
    with pytest.raises(cm.SettingsError, match="chat_max_tokens"):
        cm.build(start_settings(), document, {})


def test_the_environment_wins_over_file_and_api() -> None:
    start = start_settings(SYSTEM_PROMPT="from env")
    config = cm.build(start, {"system_prompt": "from file"}, {"system_prompt": "from api"})
    assert (config.settings.system_prompt, config.sources["system_prompt"]) == ("from env", "env")
    config = cm.build(start_settings(), {"system_prompt": "from file"}, {"system_prompt": "from api"})
    assert (config.settings.system_prompt, config.sources["system_prompt"]) == ("from api", "api")


def test_secrets_are_redacted() -> None:
    assert cm.redact("database_url", "postgresql://beth:hunter2@db:5432/beth") == "postgresql://beth:***@db:5432/beth"
    assert cm.redact("beth_admin_token", "s3cret") == "***"
    assert cm.redact("smtp_password", "x") == "***"
    assert cm.redact("database_url", "sqlite:///data/beth.sqlite3") == "sqlite:///data/beth.sqlite3"
    view = cm.flat_view(cm.build(load_settings({"BETH_ADMIN_TOKEN": "s3cret"}), {}, {}))
    assert view["beth_admin_token"] == "***"


def test_the_backup_is_toml_that_restores_the_same_configuration() -> None:
    config = cm.build(
        start_settings(), documents.parse_toml(TOML), {"models": {"hf/tiny": {"system_prompt": 'say "hi"\n'}}}
    )
    text = documents.to_toml(cm.configured_document(config))
    restored = cm.build(start_settings(), documents.parse_toml(text), {})
    assert cm.flat_view(restored) == cm.flat_view(config)
    assert tomllib.loads(text)["models"]["hf/tiny"]["system_prompt"] == 'say "hi"\n'


def test_diff_names_what_changed() -> None:
    before = cm.flat_view(cm.build(start_settings(), {}, {}))
    after = cm.flat_view(cm.build(start_settings(), {"chat_max_tokens": 10}, {}))
    assert cm.diff(before, after) == {"chat_max_tokens": {"from": 1024, "to": 10}}


def test_paths_are_plain_strings_in_views() -> None:
    assert documents.plain(Path("/x")) == "/x"
    assert documents.plain(("a", "b")) == ["a", "b"]


def test_provider_tables_are_validated_and_built_with_ollama_defaults() -> None:
    document = documents.parse_toml(
        '[providers.gpu-box]\ntype = "ollama"\nhost = "http://10.0.0.5:11434/"\nnum_ctx = 4096\n'
    )
    config = cm.build(start_settings(), document, {})
    assert config.providers == {"gpu-box": cm.ProviderTable(type="ollama", host="http://10.0.0.5:11434", num_ctx=4096)}
    assert config.provider_sources == {"gpu-box": "file"}
    assert cm.flat_view(config)["providers.gpu-box.host"] == "http://10.0.0.5:11434"
    assert tomllib.loads(documents.to_toml(cm.configured_document(config)))["providers"]["gpu-box"]["num_ctx"] == 4096

    bad = documents.parse_toml(
        '[providers.ollama]\ntype = "ollama"\nhost = "http://x"\n'
        '[providers."Bad Name"]\ntype = "ollama"\nhost = "http://x"\n'
        '[providers.box]\ntype = "vllm"\nport = 1\n'
        '[providers.hostless]\ntype = "ollama"\nnum_ctx = 4096\n'
    )
    errors = {(e.key, e.reason) for e in cm.document_errors(bad, "file")}
    keys = {key for key, _ in errors}
    assert keys == {
        "providers.ollama",
        "providers.Bad Name",
        "providers.box.type",
        "providers.box.port",
        "providers.hostless.host",
    }
    assert any("ollama_* keys" in reason for key, reason in errors if key == "providers.ollama")
    assert any("is required" in reason for key, reason in errors if key == "providers.hostless.host")
    assert any("must be one of: ollama, openai" in reason for key, reason in errors if key == "providers.box.type")


def test_openai_tables_take_their_own_keys_and_keep_their_api_key_out_of_every_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("B_KEY", "sk-from-the-environment")
    document = documents.parse_toml(
        '[providers.b]\ntype = "openai"\nbase_url = "http://10.0.0.6:8000/v1/"\napi_key = "env:B_KEY"\n'
        'models = ["m1", "m2"]\n'
        '[providers.c]\ntype = "openai"\nbase_url = "http://10.0.0.7:8000/v1"\napi_key = "sk-literal-c"\n'
        "timeout_s = 30\n"
    )
    config = cm.build(start_settings(), document, {})
    b, c = config.providers["b"], config.providers["c"]
    assert (b.type, b.base_url, b.api_key, b.models) == ("openai", "http://10.0.0.6:8000/v1", "env:B_KEY", ("m1", "m2"))
    assert b.timeout_s == 120.0
    assert (c.api_key, c.timeout_s, c.models) == ("sk-literal-c", 30.0, ())
    assert "sk-literal-c" not in repr(c)
    view = cm.flat_view(config)
    assert view["providers.b.api_key"] == "env:B_KEY"  # a reference is no secret
    assert view["providers.c.api_key"] == "***"
    assert "providers.b.host" not in view
    assert "providers.b.num_ctx" not in view
    assert "sk-literal-c" not in repr(cm.redact_tree(document))
    backup = tomllib.loads(documents.to_toml(cm.configured_document(config)))["providers"]
    assert backup["b"]["api_key"] == "env:B_KEY"
    assert "api_key" not in backup["c"]
    assert backup["c"]["base_url"] == "http://10.0.0.7:8000/v1"

    bad = documents.parse_toml(
        '[providers.d]\ntype = "openai"\nhost = "http://x"\napi_key = "env:NOT_SET_ANYWHERE"\n'
        '[providers.e]\ntype = "openai"\nbase_url = "http://x/v1"\napi_key = 12345\nmodels = "a, b"\n'
        '[providers.f]\ntype = "openai"\nbase_url = "ftp://x"\napi_key = "env:"\nmodels = [1, 2]\n'
        '[providers.g]\ntype = ["openai"]\n'
    )
    errors = {e.key: e for e in cm.document_errors(bad, "file")}
    assert set(errors) == {
        "providers.d.base_url",
        "providers.d.host",
        "providers.d.api_key",
        "providers.e.api_key",
        "providers.f.base_url",
        "providers.f.api_key",
        "providers.f.models",
        "providers.g.type",
    }
    assert "is required" in errors["providers.d.base_url"].reason
    assert "unknown key of an openai provider" in errors["providers.d.host"].reason
    assert "NOT_SET_ANYWHERE, which is not set" in errors["providers.d.api_key"].reason
    assert errors["providers.e.api_key"].value == "***"  # an error never quotes a key
    assert "12345" not in str(errors["providers.e.api_key"])
    assert "env:NAME" in errors["providers.f.api_key"].reason
    assert "list of model names" in errors["providers.f.models"].reason


def test_hf_pool_keys_apply_live_and_start_up_keys_need_a_restart() -> None:
    assert not {*HF_POOL_KEYS, "hf_models_dir"} & RESTART_KEYS
    assert {"data_dir", "port", "database_url"} <= RESTART_KEYS
    config = cm.build(start_settings(), {"hf_max_loaded_models": 2, "hf_default_model": "hf/tiny"}, {})
    assert (config.settings.hf_max_loaded_models, config.settings.hf_default_model) == (2, "tiny")


def test_an_api_provider_table_replaces_the_files_of_that_name_whole() -> None:
    file = documents.parse_toml('[providers.box]\ntype = "ollama"\nhost = "http://file:11434"\ntimeout_s = 30\n')
    api = {"providers": {"box": {"type": "ollama", "host": "http://api:11434"}}}
    config = cm.build(start_settings(), file, api)
    assert config.providers["box"] == cm.ProviderTable(type="ollama", host="http://api:11434")  # default timeout
    assert config.provider_sources == {"box": "api"}
    # the backup says the same: restored, it runs the same providers
    text = documents.to_toml(cm.configured_document(config))
    assert cm.build(start_settings(), documents.parse_toml(text), {}).providers == config.providers
    assert cm.layered(file, api)["providers"] == api["providers"]
    # a table of another type: none of the file's keys may leak into it (an Ollama `host` is no key of openai)
    openai = {"providers": {"box": {"type": "openai", "base_url": "http://api:8000/v1"}}}
    assert cm.build(start_settings(), file, openai).providers["box"].base_url == "http://api:8000/v1"


def test_a_refused_secret_is_not_repeated() -> None:
    document = {"providers": {"box": {"type": "ollama", "host": "http://x", "api_key": "sk-secret"}}}
    errors = cm.document_errors(document, "api")
    assert [(e.key, e.value) for e in errors] == [("providers.box.api_key", "***")]
    assert "sk-secret" not in str(errors[0])


def test_provider_urls_with_spaces_or_control_characters_are_refused() -> None:
    for host in ("http://a\x00b", "http://a b", "http://a\tb"):
        errors = cm.document_errors({"providers": {"box": {"type": "ollama", "host": host}}}, "file")
        assert [e.key for e in errors] == ["providers.box.host"], host
