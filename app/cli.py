"""`beth-chat`: serve the API, migrate the database, export, list and remove models.

Commands are thin: they read the settings, call the module that does the work, and turn its
errors into a message and a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from app.config.load import load_settings
from app.config.settings import Settings, SettingsError

if TYPE_CHECKING:
    from app.services.model_removal import RemovedModel

log = logging.getLogger("beth-chat")
T = TypeVar("T")


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        click.echo(f"beth-chat: {exc}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """beth-chat-service: a self-hosted chat service for large language models.

    Configuration comes from defaults < a TOML file (BETH_CONFIG, else ./beth.toml) < environment
    variables; see the README for every key.
    """


@main.command()
@click.option("--https", "use_https", is_flag=True, default=None, help="Serve TLS on HTTPS_PORT (default 3443).")
@click.option("--host", default=None, help="Interface to listen on (HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port for plain HTTP (PORT, default 4000).")
def serve(use_https: bool | None, host: str | None, port: int | None) -> None:
    """Migrate the database, export the default model on first run, and serve the API."""
    from app.logging_setup import configure_logging
    from app.main import create_app
    from app.server import run

    settings = _settings(https=use_https, host=host, port=port)
    configure_logging(settings.log_level, settings.log_format)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _auto_export_default(settings)
    ssl: dict[str, str] = {}
    if settings.https:
        from app.tls import ensure_dev_certificate

        if settings.tls_cert_path and settings.tls_key_path:
            cert, key = settings.tls_cert_path, settings.tls_key_path
        else:
            cert, key = ensure_dev_certificate(settings.data_dir / "tls")
            log.info("using the development certificate %s", cert)
        ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    scheme = "https" if settings.https else "http"
    log.info("serving on %s://%s:%d (GraphQL at /graphql)", scheme, settings.host, settings.serving_port)
    run(
        create_app(settings),
        host=settings.host,
        port=settings.serving_port,
        log_level=settings.log_level,
        ssl=ssl,
        read_timeout_s=settings.request_read_timeout_s,
    )


def _auto_export_default(settings: Settings) -> None:
    """First run: export the default model once, before serving (HF_AUTO_EXPORT_DEFAULT)."""
    if not settings.hf_auto_export_default:
        return
    try:
        from exports.default_model import DEFAULT_ALIAS, ensure_default_export
    except ImportError:  # the export code is not there: nothing to do
        return
    if settings.hf_default_model != DEFAULT_ALIAS:  # another model is the default: the operator exports it
        if not (settings.models_dir / settings.hf_default_model).is_dir():
            log.warning(
                "HF_DEFAULT_MODEL %s is not exported in %s; export it with `beth-chat export SOURCE --name %s`",
                settings.hf_default_model,
                settings.models_dir,
                settings.hf_default_model,
            )
        return
    try:
        ensure_default_export(settings.models_dir)
    except Exception as exc:  # serving without the default model beats not serving at all
        log.error("could not export the default model: %s", exc)


@main.group()
def db() -> None:
    """Database commands."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (safe to run any number of times)."""
    from app.db.migrate import MigrationError, migrate

    settings = _settings()
    try:
        report = _on_database(settings, migrate)
    except MigrationError as exc:
        click.echo(f"beth-chat: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"beth-chat: cannot reach the database: {exc}", err=True)
        sys.exit(1)
    click.echo(report.strip() or "migrations applied")


@main.command("export")
@click.argument("source")
@click.option("--name", "alias", default=None, help="Alias for the model (default: derived from SOURCE).")
@click.option(
    "--quantize",
    type=click.Choice(["none", "int8", "int4"]),
    default="none",
    show_default=True,
    help="Weight quantization with ONNX Runtime's quantizers.",
)
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "fp16"]),
    default="fp32",
    show_default=True,
    help="Precision of weights and cache; fp16 is for CUDA (its attention kernel takes float16), not with --quantize.",
)
@click.option("--force", is_flag=True, help="Replace an existing export of the same alias.")
@click.option(
    "--max-logit-diff",
    type=float,
    default=None,
    help="Refuse the export above this ONNX/PyTorch logit gap (fp16: its own).",
)
@click.option(
    "--min-agreement", type=float, default=None, help="Refuse a quantized or fp16 export below this top-1 agreement."
)
def export(
    source: str,
    alias: str | None,
    quantize: str,
    dtype: str,
    force: bool,
    max_logit_diff: float | None,
    min_agreement: float | None,
) -> None:
    """Export SOURCE to ONNX: a Hugging Face folder, a GGUF file, a hub id, or `default`."""
    from exports.command import run_export

    settings = _settings()
    sys.exit(
        run_export(
            source,
            models_dir=settings.models_dir,
            alias=alias,
            quantize=quantize,
            dtype=dtype,
            force=force,
            max_logit_diff=max_logit_diff,
            min_agreement=min_agreement,
        )
    )


@main.group()
def config() -> None:
    """The configuration's documentation."""


@config.command("table")
@click.option(
    "--write",
    "readme",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Replace the configuration table in this README instead of printing it.",
)
@click.option(
    "--check",
    "check",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Exit 1 when this README's configuration table is not current.",
)
def config_table(readme: Path | None, check: Path | None) -> None:
    """Print the configuration table (one line per key), or write it into the README."""
    from app.config.table import current_section, readme_section, write_readme

    if check is not None:
        if current_section(check.read_text(encoding="utf-8")) != readme_section():
            click.echo(
                f"beth-chat: the configuration table in {check} is not current; run `beth-chat config table --write {check}`",
                err=True,
            )
            sys.exit(1)
        return
    if readme is not None:
        click.echo("updated" if write_readme(readme) else "already current")
        return
    from app.config.table import markdown_table

    click.echo(markdown_table(), nl=False)


@main.group()
def models() -> None:
    """Exported models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_list(as_json: bool) -> None:
    """List exported models from their manifests."""
    from exports.command import run_models_list

    settings = _settings()
    sys.exit(run_models_list(Path(settings.models_dir), as_json=as_json))


@models.command("remove")
@click.argument("alias")
def models_remove(alias: str) -> None:
    """Delete the export ALIAS (or hf/ALIAS) and its stored configuration; refused while it is generating.

    A running service that has the model loaded and idle keeps it in memory until its keep-alive ends;
    `POST /api/v1/models/hf/ALIAS/remove` on the service unloads it first.
    """
    from app.errors import ServiceError
    from app.services.model_removal import remove_export

    settings = _settings()

    def remove() -> Awaitable[RemovedModel]:
        return remove_export(
            alias.removeprefix("hf/"), models_dir=settings.models_dir, pool=None, stale_s=settings.stream_stale_s
        )

    try:
        removed = _on_database(settings, remove)
    except ServiceError as exc:
        click.echo(f"beth-chat: {exc.message}", err=True)
        sys.exit(1)
    except Exception as exc:  # an unreachable or unmigrated database, a folder that cannot be deleted
        click.echo(f"beth-chat: could not remove {alias}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"removed {removed.name} ({removed.path})")


def _on_database(settings: Settings, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` with the configured database open, for the commands that read or write it."""
    from app.db.engine import close_database, open_database

    async def run() -> T:
        engine = await open_database(settings.effective_database_url)
        try:
            return await work()
        finally:
            await close_database(engine)

    return asyncio.run(run())


if __name__ == "__main__":
    main()
