"""The service's settings, one declarative row per key.

Each field of `Settings` is a row: its type and default, the converter that checks it (bounds included), the
environment names that set it, whether a change applies live or at the next start, whether it is a secret, and the
sentence the README's configuration table shows. Parsing, validation, the configuration API's flags and the README
table are all read from these rows, so a new key is one line here.

Nothing here imports the engine or the exporter: loading settings must stay cheap (`beth-chat db migrate` loads them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from app.config import convert as c

Source = Literal["default", "file", "env"]

DEFAULT_CORS_ORIGINS: tuple[str, ...] = tuple(
    f"{scheme}://localhost:{port}" for scheme in ("http", "https") for port in range(3000, 3006)
)
#: the engine's own limit on drafted tokens per step (inference.lookahead.MAX_LOOKAHEAD_TOKENS; a test keeps
#: the two equal, so that loading settings does not load the engine)
MAX_LOOKAHEAD_TOKENS = 16
#: the packaged embedded model (exports.default_model.DEFAULT_ALIAS; a test keeps the two equal)
DEFAULT_ALIAS = "SmolLM2-135M-Instruct"


class SettingsError(ValueError):
    """An invalid setting: names the key, the offending value, where it came from and why."""

    def __init__(self, key: str, value: object, reason: str, source: Source | str = "default") -> None:
        self.key, self.value, self.reason, self.source = key, value, reason, source
        super().__init__(f"Invalid setting {key}={value!r} (from {source}): {reason}")


@dataclass(frozen=True)
class Row:
    """What the service knows about one key besides its type and default."""

    convert: Callable[[object], Any]
    env: tuple[str, ...] = ()
    restart: bool = False
    secret: bool = False
    doc: str = ""
    #: how the README shows the default, where the value itself would mislead
    shown: str | None = None


def key(
    default: Any,
    convert: Callable[[object], Any],
    doc: str,
    *,
    env: tuple[str, ...] = (),
    restart: bool = False,
    secret: bool = False,
    shown: str | None = None,
) -> Any:
    """One row: `default` and the rest of what the service knows about the key (see `Row`)."""
    row = Row(convert, env, restart, secret, doc, shown)
    return field(default=default, metadata={"row": row}, repr=not secret)


@dataclass(frozen=True)
class Settings:
    """The service's whole configuration. Field names are the lower-case TOML keys."""

    data_dir: Path = key(
        Path("./data"),
        c.to_path,
        "Data directory: SQLite file, exported models, images, development TLS certificate.",
        env=("BETH_DATA_DIR",),
        restart=True,
    )
    database_url: str = key(
        "",
        c.to_database_url,
        "`sqlite:///path` or `postgresql://user@host:5432/db`.",
        restart=True,
        shown="SQLite file in the data dir",
    )
    host: str = key("127.0.0.1", c.to_host, "Where plain HTTP listens.", restart=True)
    port: int = key(4000, c.to_int(1, 65535), "The plain HTTP port.", restart=True)
    https_port: int = key(3443, c.to_int(1, 65535), "The port `serve --https` serves TLS on (only).", restart=True)
    https: bool = key(
        False, c.to_bool, "Serve TLS on `HTTPS_PORT` (like `serve --https`).", env=("FORCE_HTTPS",), restart=True
    )
    tls_cert_path: Path | None = key(
        None,
        c.to_optional_path,
        "Certificate; without it and the key a self-signed localhost certificate is generated into "
        "`<data dir>/tls/` (also read from `SSL_CERT_PATH`).",
        env=("TLS_CERT_PATH", "SSL_CERT_PATH"),
        restart=True,
        shown="generated",
    )
    tls_key_path: Path | None = key(
        None,
        c.to_optional_path,
        "The certificate's key (also read from `SSL_KEY_PATH`).",
        env=("TLS_KEY_PATH", "SSL_KEY_PATH"),
        restart=True,
        shown="generated",
    )
    public_base_url: str = key(
        "", c.to_optional_http_url, "Absolute base for `Image.url` links.", shown="request's base"
    )
    cors_origins: tuple[str, ...] = key(
        DEFAULT_CORS_ORIGINS,
        c.to_origins,
        "Comma-separated allowed origins; the origin is reflected with credentials.",
        restart=True,
        shown="http(s)://localhost:3000…3005",
    )
    max_body_mb: int = key(10, c.to_int(1, 1024), "Largest JSON body.", restart=True)
    request_read_timeout_s: float = key(
        10.0,
        c.to_float(0.1, 3600),
        "A connection is closed when its request head is not complete this long after its first byte, or its body "
        "pauses longer than this between chunks (idle and trickling connections cannot pile up).",
        restart=True,
    )
    bcrypt_rounds: int = key(10, c.to_int(4, 16), "Cost of new password hashes.", restart=True)
    # wrong passwords allowed per private conversation and per client address within the window (the names
    # avoid "password": such a key would read as a secret)
    auth_failures_per_conversation: int = key(
        10,
        c.to_int(1, 1_000_000),
        "Wrong passwords a private conversation accepts per window, from all clients together; past that every "
        "password check of it, the right one included, is refused with `TOO_MANY_ATTEMPTS` (429 with `Retry-After`) "
        "until the oldest failure leaves the window.",
    )
    auth_failures_per_client: int = key(
        30, c.to_int(1, 1_000_000), "Wrong passwords one client address may give per window, over all conversations."
    )
    auth_failure_window_s: float = key(60.0, c.to_float(1, 86_400), "The sliding window of both limits, in seconds.")
    log_level: str = key("info", c.to_choice(c.LOG_LEVELS), "`debug`, `info`, `warning`, `error`.", restart=True)
    log_format: str = key(
        "text",
        c.to_choice(("text", "json")),
        "`json` writes one JSON object per line. Every line carries the request id (`X-Request-ID`, echoed in the "
        "response) and, inside a reply, the stream session id; one access line per request names the route template, "
        "status and duration. Passwords, tokens and message bodies are never logged.",
        restart=True,
    )
    memory_min_available_mb: int = key(
        512,
        c.to_int(0, 10_000_000),
        "Below this much available system memory, idle hf models are unloaded (least recently used first; logged and "
        "counted in `beth_memory_pressure_unloads_total`).",
        restart=True,
    )
    provider_retries: int = key(
        2,
        c.to_int(0, 10),
        "A model whose provider is unavailable or busy is tried again before any fallback, and never once its "
        "circuit is open or after the first token.",
    )
    provider_retry_backoff_s: float = key(
        0.25, c.to_float(0, 60), "First backoff between those tries (doubling each time)."
    )
    memory_check_interval_s: float = key(
        10.0, c.to_float(0.1, 3600), "How often available memory is checked.", restart=True
    )
    ollama_host: str = key("http://localhost:11434", c.to_http_url, "The Ollama server.")
    hf_models_dir: Path | None = key(None, c.to_optional_path, "Exported ONNX models.", shown="<data dir>/models")
    hf_auto_export_default: bool = key(True, c.to_bool, "Export the default model on the first `serve`.", restart=True)
    hf_execution_provider: str = key(
        "auto",
        c.to_execution_provider,
        "`auto` (CUDA when usable, else CPU), `cpu`, `cuda`. `cuda` is refused (at start, and by `PATCH`, validate "
        "and restore) on a machine where no CUDA session opens.",
    )
    hf_num_threads: int = key(0, c.to_int(0, 256), "ONNX Runtime intra-op threads.", shown="0 (all cores)")
    hf_lookahead_tokens: int = key(
        4,
        c.to_int(0, MAX_LOOKAHEAD_TOKENS),
        "Drafted tokens one decoding step checks at once (prompt lookup, see [docs/performance.md](docs/performance.md)); "
        "`0` turns it off.",
    )
    system_prompt: str = key("", c.to_text, "The system prompt of every turn.", shown="built in")
    chat_max_tokens: int = key(1024, c.to_int(1, 1_000_000), "Longest reply (capped at half the model's context).")
    chat_context_length: int = key(4096, c.to_int(256, 10_000_000), "Context budget for models that do not report one.")
    stream_timeout_s: float = key(
        300.0, c.to_float(1, 86_400), "A reply is stopped (and its partial text saved) after this long."
    )
    stream_flush_interval_s: float = key(
        0.25, c.to_float(0.05, 10), "How often the partial text of a stream is written to the database.", restart=True
    )
    stream_stale_s: float = key(
        30.0,
        c.to_float(1, 86_400),
        "A session without heartbeat for this long belonged to a dead process and is closed.",
        restart=True,
    )
    stream_cancel_on_disconnect: bool = key(False, c.to_bool, "Stop generating when the client disconnects.")
    vision_fallback_model: str = key(
        "", c.to_text, "Model that receives images when the chosen one cannot see.", shown="none"
    )
    image_max_mb: int = key(10, c.to_int(1, 100), "Largest uploaded image.", env=("IMAGE_MAX_SIZE_MB",), restart=True)
    image_max_files: int = key(5, c.to_int(1, 20), "Most images per message.", restart=True)
    image_retention_days: int = key(
        30, c.to_int(1, 3650), "Expired images and their files are removed hourly.", restart=True
    )
    ollama_enabled: bool = key(True, c.to_bool, "Register the Ollama provider.")
    ollama_timeout_s: float = key(120.0, c.to_float(0.1, 3600), "Longest wait for the next chunk from Ollama.")
    ollama_num_ctx: int = key(
        8192,
        c.to_int(256, 10_000_000),
        "Upper limit of the `num_ctx` sent with every chat (never Ollama's silent default).",
    )
    ollama_keep_alive_s: float = key(300.0, c.to_float(-1, 86_400 * 365), "`keep_alive` sent to Ollama.")
    openai_base_url: str = key(
        "",
        c.to_optional_http_url,
        "An OpenAI-compatible server's `/v1` root (vLLM, TGI, llama.cpp's server, LiteLLM, another beth-chat); its "
        "models are named `openai/<model>`. Unset, `openai/` names nothing.",
        shown="none",
    )
    openai_api_key: str = key(
        "",
        c.to_api_key,
        "Its API key, sent as `Authorization: Bearer`; `env:NAME` reads it from that environment variable. Never "
        "logged, shown as `***`.",
        secret=True,
        shown="none",
    )
    openai_timeout_s: float = key(
        120.0, c.to_float(0.1, 3600), "Longest wait for an answer, or the next chunk, from that server."
    )
    fallback_models: tuple[str, ...] = key((), c.to_names, "Comma-separated fallback models.", shown="none")
    health_check_interval_s: float = key(
        30.0,
        c.to_float(0.1, 86_400),
        "Background provider health checks. Between checks, a request that cannot reach its provider reports it "
        "(refused, reset, cut off) unhealthy at once, and a later successful request healthy again.",
        restart=True,
    )
    circuit_failure_threshold: int = key(5, c.to_int(1, 1000), "Failures that open a provider's circuit.", restart=True)
    circuit_cooldown_s: float = key(
        30.0, c.to_float(0.05, 86_400), "How long an open circuit waits before a trial request.", restart=True
    )
    catalog_ttl_s: float = key(30.0, c.to_float(0, 86_400), "Model list cache.", restart=True)
    catalog_provider_timeout_s: float = key(3.0, c.to_float(0.05, 600), "Per-provider listing timeout.", restart=True)
    catalog_stale_s: float = key(
        300.0, c.to_float(0, 86_400 * 30), "How long a failing provider's last list stays.", restart=True
    )
    hf_memory_budget_mb: int = key(
        0,
        c.to_int(0, 10_000_000),
        "Loaded hf models (weights plus KV cache) must fit; least recently used idle ones are evicted, and a load "
        "that cannot fit is refused with `MEMORY_EXCEEDED` before anything is loaded.",
        shown="0 (none)",
    )
    hf_max_loaded_models: int = key(
        0,
        c.to_int(0, 1000),
        "Most hf models in memory at once; a load past it evicts the least recently used idle one, or answers "
        "`OVERLOADED` while all are in use.",
        shown="0 (no limit)",
    )
    hf_keep_alive_s: float = key(300.0, c.to_float(0, 86_400 * 365), "Unload an hf model idle this long.")
    hf_preload: tuple[str, ...] = key((), c.to_names, "hf models to load at start-up (and kept loaded).", shown="none")
    hf_max_batch_size: int = key(
        8,
        c.to_int(1, 256),
        "Generations of one hf model that share each step (continuous batching); more wait in its queue.",
    )
    hf_queue_length: int = key(
        16,
        c.to_int(0, 100_000),
        "Requests that wait for a place in a full batch; only a full queue or a wait that runs out answers "
        "`OVERLOADED`.",
    )
    hf_queue_wait_s: float = key(30.0, c.to_float(0, 3600), "How long a request waits in the queue for a place.")
    hf_prefix_cache_mb: int = key(
        512,
        c.to_int(0, 10_000_000),
        "Per hf model: the key-value cache of each conversation's latest turn and of system prompts, kept so the next "
        "turn feeds only its new tokens; least recently used first out, and dropped before any model is unloaded for "
        "room.",
    )
    hf_default_model: str = key(
        DEFAULT_ALIAS,
        c.to_alias,
        "The embedded default model: exported on the first `serve` when it is the packaged one (otherwise a warning "
        "says how to export it), and the model of "
        "new conversations that name none while Ollama is disabled (with Ollama, the old service's `llama3.1:8b`).",
    )
    beth_admin_token: str = key(
        "",
        c.to_text,
        "Bearer token for the admin endpoints (`/api/v1/config`, provider configurations, `/api/v1/model-configs`, "
        "model load, unload and remove; never "
        "logged, shown as `***`). Without it they answer loopback clients that address the service as `localhost`, "
        "`127.0.0.1` or `[::1]` only. See [Security](#security).",
        restart=True,
        secret=True,
        shown="none",
    )
    openai_api_keys: tuple[str, ...] = key(
        (),
        c.to_names,
        "Comma-separated API keys of the OpenAI-compatible API (`/v1`): with keys, a request must send "
        "`Authorization: Bearer <one of them>`; without, it answers loopback clients that address the service as "
        "`localhost`, `127.0.0.1` or `[::1]` only, as the admin endpoints do (not `OPENAI_API_KEY`, which this service "
        "sends upstream). Never logged, shown as `***`. See [docs/openai-api.md](docs/openai-api.md).",
        secret=True,
        shown="none",
    )
    config_reload_interval_s: float = key(
        1.0, c.to_float(0.1, 3600), "How often the config file is checked for changes (hot reload).", restart=True
    )
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


@dataclass(frozen=True)
class KeyInfo:
    """One row, with its name and default filled in: what parsing, the API and the README table read."""

    name: str
    default: Any
    convert: Callable[[object], Any]
    env: tuple[str, ...]
    restart: bool
    secret: bool
    doc: str
    shown: str | None

    @property
    def env_name(self) -> str:
        return self.env[0]


def _rows() -> dict[str, KeyInfo]:
    rows: dict[str, KeyInfo] = {}
    for f in fields(Settings):
        if f.name == "sources":
            continue
        row: Row = f.metadata["row"]
        rows[f.name] = KeyInfo(
            f.name, f.default, row.convert, row.env or (f.name.upper(),), row.restart, row.secret, row.doc, row.shown
        )
    return rows


KEYS: dict[str, KeyInfo] = _rows()
SETTING_KEYS: tuple[str, ...] = tuple(KEYS)
#: keys that only take effect at the next start: they shape the server, the database or objects built once
RESTART_KEYS: frozenset[str] = frozenset(name for name, row in KEYS.items() if row.restart)
SECRET_KEYS: frozenset[str] = frozenset(name for name, row in KEYS.items() if row.secret)
