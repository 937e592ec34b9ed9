"""First run: export the embedded default model (see `exports.default_source`) when no export of it exists."""

from __future__ import annotations

import logging
from pathlib import Path

from exports.default_source import DEFAULT_ALIAS, DEFAULT_PACKAGE, default_source_path
from exports.manifest import Manifest, read_manifest
from exports.progress import ExportProgress, LoggingProgress

log = logging.getLogger(__name__)


def ensure_default_export(models_dir: Path, progress: ExportProgress | None = None) -> Manifest | None:
    """Export `default` once, when no export named DEFAULT_ALIAS exists and the GGUF is installed.

    Returns the manifest (existing or new), or None when the source is not installed. Errors of the
    export itself propagate as ExportError, so `serve` can decide whether to start without the model.
    """
    existing = Path(models_dir) / DEFAULT_ALIAS
    if (existing / "manifest.json").is_file():
        return read_manifest(existing)
    if default_source_path() is None:
        log.info("no export of %s and %s is not installed; skipping the default export", DEFAULT_ALIAS, DEFAULT_PACKAGE)
        return None
    from exports.export import export_model  # loads the converters (torch, onnx) only when an export runs
    from exports.loading import quiet_libraries

    quiet_libraries()
    log.info("first run: exporting the default model %s into %s", DEFAULT_ALIAS, models_dir)
    return export_model(
        "default",
        models_dir=Path(models_dir),
        alias=DEFAULT_ALIAS,
        force=existing.exists(),
        progress=progress or LoggingProgress(),
    )
