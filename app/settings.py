"""One typed settings object, read from defaults < TOML file < environment.

Every other module receives a `Settings` instance instead of reading the environment itself, so a
test or a second app in the same process can run with its own values, and so one invalid value
stops start-up with a single message that names the key, the value and the reason.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from exports.default_model import DEFAULT_ALIAS
from inference.lookahead import MAX_LOOKAHEAD_TOKENS

Source = Literal["default", "file", "env"]

DEFAULT_CORS_ORIGINS: tuple[str, ...] = tuple(
    f"{scheme}://localhost:{port}" for scheme in ("http", "https") for port in range(3000, 3006)
)
EXECUTION_PROVIDERS = ("auto", "cpu", "cuda")
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """An invalid setting: names the key, the offending value, where it came from and why."""

    def __init__(self, key: str, value: object, reason: str, source: Source | str = "default") -> None:
        self.key, self.value, self.reason, self.source = key, value, reason, source
        super().__init__(f"Invalid setting {key}={value!r} (from {source}): {reason}")


@dataclass(frozen=True)
class Settings:
    """The service's whole configuration. Field names are the lower-case TOML keys; `ENV_NAMES` maps env vars."""

    data_dir: Path = Path("./data")
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 4000
    https_port: int = 3443
    https: bool = False
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    public_base_url: str = ""
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    max_body_mb: int = 10
    request_read_timeout_s: float = 10.0
    bcrypt_rounds: int = 10
    # wrong passwords allowed per private conversation and per client address within the window (the names
    # avoid "password": a key with it is a secret, shown as ***)
    auth_failures_per_conversation: int = 10
    auth_failures_per_client: int = 30
    auth_failure_window_s: float = 60.0
    log_level: str = "info"
    log_format: str = "text"
    memory_min_available_mb: int = 512
    provider_retries: int = 2
    provider_retry_backoff_s: float = 0.25
    memory_check_interval_s: float = 10.0
    ollama_host: str = "http://localhost:11434"
    hf_models_dir: Path | None = None
    hf_auto_export_default: bool = True
    hf_execution_provider: str = "auto"
    hf_num_threads: int = 0
    hf_lookahead_tokens: int = 4
    # The chat turn (issue 6)
    system_prompt: str = ""
    chat_max_tokens: int = 1024
    chat_context_length: int = 4096
    stream_timeout_s: float = 300.0
    stream_flush_interval_s: float = 0.25
    stream_stale_s: float = 30.0
    stream_cancel_on_disconnect: bool = False
    vision_fallback_model: str = ""
    image_max_mb: int = 10
    image_max_files: int = 5
    image_retention_days: int = 30
    # Providers, routing and the model catalog (issue 5)
    ollama_enabled: bool = True
    ollama_timeout_s: float = 120.0
    ollama_num_ctx: int = 8192
    ollama_keep_alive_s: float = 300.0
    fallback_models: tuple[str, ...] = ()
    health_check_interval_s: float = 30.0
    circuit_failure_threshold: int = 5
    circuit_cooldown_s: float = 30.0
    catalog_ttl_s: float = 30.0
    catalog_provider_timeout_s: float = 3.0
    catalog_stale_s: float = 300.0
    hf_memory_budget_mb: int = 0
    hf_max_loaded_models: int = 0
    hf_keep_alive_s: float = 300.0
    hf_preload: tuple[str, ...] = ()
    hf_max_batch_size: int = 8
    hf_queue_length: int = 16
    hf_queue_wait_s: float = 30.0
    hf_prefix_cache_mb: int = 512
    # the embedded model: exported on first run, and new conversations' model when Ollama is disabled
    hf_default_model: str = DEFAULT_ALIAS
    # Configuration management (issue 7): the admin endpoints' token (never logged) and the file watch
    beth_admin_token: str = field(default="", repr=False)
    config_reload_interval_s: float = 1.0
    sources: Mapping[str, Source] = field(default_factory=dict, compare=False, repr=False)

    @property
    def models_dir(self) -> Path:
        """Where exported models live: `hf_models_dir`, else `<data_dir>/models`."""
        return self.hf_models_dir or self.data_dir / "models"

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the embedded default: a SQLite file in the data directory."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'beth.sqlite3').resolve()}"

    @property
    def serving_port(self) -> int:
        """The one port the service listens on: the HTTPS port when TLS is on, like the old service."""
        return self.https_port if self.https else self.port

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb * 1024 * 1024

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"


ENV_NAMES: dict[str, tuple[str, ...]] = {
    "data_dir": ("BETH_DATA_DIR",),
    "database_url": ("DATABASE_URL",),
    "host": ("HOST",),
    "port": ("PORT",),
    "https_port": ("HTTPS_PORT",),
    "https": ("FORCE_HTTPS",),
    "tls_cert_path": ("TLS_CERT_PATH", "SSL_CERT_PATH"),
    "tls_key_path": ("TLS_KEY_PATH", "SSL_KEY_PATH"),
    "public_base_url": ("PUBLIC_BASE_URL",),
    "cors_origins": ("CORS_ORIGINS",),
    "max_body_mb": ("MAX_BODY_MB",),
    "request_read_timeout_s": ("REQUEST_READ_TIMEOUT_S",),
    "bcrypt_rounds": ("BCRYPT_ROUNDS",),
    "auth_failures_per_conversation": ("AUTH_FAILURES_PER_CONVERSATION",),
    "auth_failures_per_client": ("AUTH_FAILURES_PER_CLIENT",),
    "auth_failure_window_s": ("AUTH_FAILURE_WINDOW_S",),
    "log_level": ("LOG_LEVEL",),
    "log_format": ("LOG_FORMAT",),
    "memory_min_available_mb": ("MEMORY_MIN_AVAILABLE_MB",),
    "provider_retries": ("PROVIDER_RETRIES",),
    "provider_retry_backoff_s": ("PROVIDER_RETRY_BACKOFF_S",),
    "memory_check_interval_s": ("MEMORY_CHECK_INTERVAL_S",),
    "ollama_host": ("OLLAMA_HOST",),
    "hf_models_dir": ("HF_MODELS_DIR",),
    "hf_auto_export_default": ("HF_AUTO_EXPORT_DEFAULT",),
    "hf_execution_provider": ("HF_EXECUTION_PROVIDER",),
    "hf_num_threads": ("HF_NUM_THREADS",),
    "hf_lookahead_tokens": ("HF_LOOKAHEAD_TOKENS",),
    "system_prompt": ("SYSTEM_PROMPT",),
    "chat_max_tokens": ("CHAT_MAX_TOKENS",),
    "chat_context_length": ("CHAT_CONTEXT_LENGTH",),
    "stream_timeout_s": ("STREAM_TIMEOUT_S",),
    "stream_flush_interval_s": ("STREAM_FLUSH_INTERVAL_S",),
    "stream_stale_s": ("STREAM_STALE_S",),
    "stream_cancel_on_disconnect": ("STREAM_CANCEL_ON_DISCONNECT",),
    "vision_fallback_model": ("VISION_FALLBACK_MODEL",),
    "image_max_mb": ("IMAGE_MAX_SIZE_MB",),
    "image_max_files": ("IMAGE_MAX_FILES",),
    "image_retention_days": ("IMAGE_RETENTION_DAYS",),
    "ollama_enabled": ("OLLAMA_ENABLED",),
    "ollama_timeout_s": ("OLLAMA_TIMEOUT_S",),
    "ollama_num_ctx": ("OLLAMA_NUM_CTX",),
    "ollama_keep_alive_s": ("OLLAMA_KEEP_ALIVE_S",),
    "fallback_models": ("FALLBACK_MODELS",),
    "health_check_interval_s": ("HEALTH_CHECK_INTERVAL_S",),
    "circuit_failure_threshold": ("CIRCUIT_FAILURE_THRESHOLD",),
    "circuit_cooldown_s": ("CIRCUIT_COOLDOWN_S",),
    "catalog_ttl_s": ("CATALOG_TTL_S",),
    "catalog_provider_timeout_s": ("CATALOG_PROVIDER_TIMEOUT_S",),
    "catalog_stale_s": ("CATALOG_STALE_S",),
    "hf_memory_budget_mb": ("HF_MEMORY_BUDGET_MB",),
    "hf_max_loaded_models": ("HF_MAX_LOADED_MODELS",),
    "hf_default_model": ("HF_DEFAULT_MODEL",),
    "hf_keep_alive_s": ("HF_KEEP_ALIVE_S",),
    "hf_preload": ("HF_PRELOAD",),
    "hf_max_batch_size": ("HF_MAX_BATCH_SIZE",),
    "hf_queue_length": ("HF_QUEUE_LENGTH",),
    "hf_queue_wait_s": ("HF_QUEUE_WAIT_S",),
    "hf_prefix_cache_mb": ("HF_PREFIX_CACHE_MB",),
    "beth_admin_token": ("BETH_ADMIN_TOKEN",),
    "config_reload_interval_s": ("CONFIG_RELOAD_INTERVAL_S",),
}


def _to_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be a boolean (true/false, 1/0, yes/no, on/off)")


def to_int(low: int, high: int) -> Callable[[object], int]:
    def convert(raw: object) -> int:
        if isinstance(raw, bool):
            raise ValueError("must be an integer")
        try:
            value = int(str(raw).strip()) if not isinstance(raw, int) else raw
        except ValueError:
            raise ValueError("must be an integer") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return convert


def to_float(low: float, high: float) -> Callable[[object], float]:
    def convert(raw: object) -> float:
        if isinstance(raw, bool):
            raise ValueError("must be a number")
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise ValueError("must be a number") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return convert


def _to_text(raw: object) -> str:
    return str(raw)


def _to_path(raw: object) -> Path:
    text = str(raw).strip()
    if not text:
        raise ValueError("must not be empty")
    return Path(text).expanduser()


def _to_optional_path(raw: object) -> Path | None:
    return _to_path(raw) if str(raw).strip() else None


def _to_choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def convert(raw: object) -> str:
        value = str(raw).strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return convert


def _to_execution_provider(raw: object) -> str:
    """`auto`, `cpu` or `cuda`; `cuda` only where a CUDA session really opens, so that a machine without
    CUDA refuses the setting here instead of failing every request of the `hf` provider later."""
    value = _to_choice(EXECUTION_PROVIDERS)(raw)
    if value == "cuda":
        # imported here: the probe opens an ONNX Runtime session, which only this value needs
        import onnxruntime

        from inference.execution import cuda_usable

        if not cuda_usable():
            listed = onnxruntime.get_available_providers()
            why = (
                "ONNX Runtime lists CUDAExecutionProvider but no CUDA session opens (no GPU, or no CUDA libraries)"
                if "CUDAExecutionProvider" in listed
                else f"this ONNX Runtime has no CUDA support (it offers {', '.join(listed)})"
            )
            raise ValueError(
                f"CUDA is not available on this machine: {why}; the providers available here are auto and cpu"
            )
    return value


def _to_database_url(raw: object) -> str:
    value = str(raw).strip()
    if not value:
        return ""
    scheme = urlparse(value).scheme
    if scheme not in ("sqlite", "postgres", "postgresql"):
        raise ValueError("must start with sqlite:/// or postgresql://")
    if scheme == "sqlite" and not value.startswith("sqlite:///"):
        raise ValueError("a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
    return value


def _to_http_url(raw: object) -> str:
    value = str(raw).strip().rstrip("/")
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


def _to_optional_http_url(raw: object) -> str:
    return _to_http_url(raw) if str(raw).strip() else ""


def _to_origins(raw: object) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    origins = tuple(str(item).strip().rstrip("/") for item in items if str(item).strip())
    for origin in origins:
        if origin != "*" and urlparse(origin).scheme not in ("http", "https"):
            raise ValueError(f"{origin!r} is not an http(s) origin")
    return origins


def _to_alias(raw: object) -> str:
    """An exported model's alias; `hf/<alias>` is accepted and its prefix dropped."""
    value = str(raw).strip().removeprefix("hf/")
    if not value or "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError("must be the alias of an exported model (a folder name in the models directory)")
    return value


def _to_names(raw: object) -> tuple[str, ...]:
    """A comma-separated list (or a TOML array) of model names, in order, without blanks or repeats."""
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    names: list[str] = []
    for item in items:
        name = str(item).strip()
        if name and name not in names:
            names.append(name)
    return tuple(names)


def _to_host(raw: object) -> str:
    value = str(raw).strip()
    if not value:
        raise ValueError("must not be empty")
    return value


CONVERTERS: dict[str, Callable[[object], Any]] = {
    "data_dir": _to_path,
    "database_url": _to_database_url,
    "host": _to_host,
    "port": to_int(1, 65535),
    "https_port": to_int(1, 65535),
    "https": _to_bool,
    "tls_cert_path": _to_optional_path,
    "tls_key_path": _to_optional_path,
    "public_base_url": _to_optional_http_url,
    "cors_origins": _to_origins,
    "max_body_mb": to_int(1, 1024),
    "request_read_timeout_s": to_float(0.1, 3600),
    "bcrypt_rounds": to_int(4, 16),
    "auth_failures_per_conversation": to_int(1, 1_000_000),
    "auth_failures_per_client": to_int(1, 1_000_000),
    "auth_failure_window_s": to_float(1, 86_400),
    "log_level": _to_choice(LOG_LEVELS),
    "log_format": _to_choice(("text", "json")),
    "memory_min_available_mb": to_int(0, 10_000_000),
    "provider_retries": to_int(0, 10),
    "provider_retry_backoff_s": to_float(0, 60),
    "memory_check_interval_s": to_float(0.1, 3600),
    "ollama_host": _to_http_url,
    "hf_models_dir": _to_optional_path,
    "hf_auto_export_default": _to_bool,
    "hf_execution_provider": _to_execution_provider,
    "hf_num_threads": to_int(0, 256),
    "hf_lookahead_tokens": to_int(0, MAX_LOOKAHEAD_TOKENS),
    "system_prompt": _to_text,
    "chat_max_tokens": to_int(1, 1_000_000),
    "chat_context_length": to_int(256, 10_000_000),
    "stream_timeout_s": to_float(1, 86_400),
    "stream_flush_interval_s": to_float(0.05, 10),
    "stream_stale_s": to_float(1, 86_400),
    "stream_cancel_on_disconnect": _to_bool,
    "vision_fallback_model": _to_text,
    "image_max_mb": to_int(1, 100),
    "image_max_files": to_int(1, 20),
    "image_retention_days": to_int(1, 3650),
    "ollama_enabled": _to_bool,
    "ollama_timeout_s": to_float(0.1, 3600),
    "ollama_num_ctx": to_int(256, 10_000_000),
    "ollama_keep_alive_s": to_float(-1, 86_400 * 365),
    "fallback_models": _to_names,
    "health_check_interval_s": to_float(0.1, 86_400),
    "circuit_failure_threshold": to_int(1, 1000),
    "circuit_cooldown_s": to_float(0.05, 86_400),
    "catalog_ttl_s": to_float(0, 86_400),
    "catalog_provider_timeout_s": to_float(0.05, 600),
    "catalog_stale_s": to_float(0, 86_400 * 30),
    "hf_memory_budget_mb": to_int(0, 10_000_000),
    "hf_max_loaded_models": to_int(0, 1000),
    "hf_default_model": _to_alias,
    "hf_keep_alive_s": to_float(0, 86_400 * 365),
    "hf_preload": _to_names,
    "hf_max_batch_size": to_int(1, 256),
    "hf_queue_length": to_int(0, 100_000),
    "hf_queue_wait_s": to_float(0, 3600),
    "hf_prefix_cache_mb": to_int(0, 10_000_000),
    "beth_admin_token": _to_text,
    "config_reload_interval_s": to_float(0.1, 3600),
}


def _config_file_path(environ: Mapping[str, str]) -> Path | None:
    explicit = environ.get("BETH_CONFIG", "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise SettingsError("BETH_CONFIG", explicit, "no such file", "env")
        return path
    default = Path("beth.toml")
    return default if default.is_file() else None


def _read_file(path: Path) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError("BETH_CONFIG", str(path), f"cannot read the TOML file: {exc}", "file") from exc
    section = data.get("service", data)
    if not isinstance(section, dict):
        raise SettingsError("service", section, "must be a table", "file")
    return section


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build `Settings` from defaults < TOML file < environment < explicit overrides (CLI flags).

    Unknown keys in the file are refused: a typo must not silently fall back to a default.
    """
    env = os.environ if environ is None else environ
    known = {f.name for f in fields(Settings) if f.name != "sources"}
    raw: dict[str, tuple[object, str]] = {}

    path = _config_file_path(env)
    if path is not None:
        for key, value in _read_file(path).items():
            if isinstance(value, dict):
                continue  # sections for later capabilities (providers, models) are read by their own services
            if key not in known:
                raise SettingsError(key, value, f"unknown key in {path}", "file")
            raw[key] = (value, "file")
    for key, names in ENV_NAMES.items():
        for name in names:
            if name in env:
                raw[key] = (env[name], "env")
                break
    for key, value in overrides.items():
        if value is not None:
            raw[key] = (value, "env")

    values: dict[str, object] = {}
    sources: dict[str, Source] = {}
    for key, (value, source) in raw.items():
        try:
            values[key] = CONVERTERS[key](value)
        except ValueError as exc:
            env_name = ENV_NAMES[key][0] if source == "env" else key
            raise SettingsError(env_name, value, str(exc), source) from None
        sources[key] = source  # type: ignore[assignment]
    settings = replace(Settings(), **values, sources=sources)
    if (settings.tls_cert_path is None) != (settings.tls_key_path is None):
        raise SettingsError("TLS_CERT_PATH", settings.tls_cert_path, "set both TLS_CERT_PATH and TLS_KEY_PATH")
    return settings
