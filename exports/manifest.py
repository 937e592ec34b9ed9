"""Writing `manifest.json` (the schema, reading and listing live in inference/manifest.py, which serving uses).

The manifest is written last, inside the temporary build folder, so a folder that has one was exported
completely.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from exports.errors import MANIFEST_INVALID, ExportError
from inference import manifest as schema
from inference.errors import InferenceError
from inference.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    BrokenExport,
    Capabilities,
    Dtype,
    FileEntry,
    Manifest,
    Quantization,
    Source,
    SourceKind,
    Validation,
    Versions,
    list_manifests,
    scan_manifests,
)

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "BrokenExport",
    "Capabilities",
    "Dtype",
    "FileEntry",
    "Manifest",
    "Quantization",
    "Source",
    "SourceKind",
    "Validation",
    "Versions",
    "encode_manifest",
    "list_manifests",
    "read_manifest",
    "scan_manifests",
    "write_manifest",
]


def encode_manifest(manifest: Manifest) -> bytes:
    """Indented JSON, so a person can read the file."""
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"


def write_manifest(model_dir: Path, manifest: Manifest) -> Path:
    path = model_dir / MANIFEST_NAME
    path.write_bytes(encode_manifest(manifest))
    return path


def read_manifest(model_dir: Path) -> Manifest:
    """Read and type-check `<model_dir>/manifest.json`; raise ExportError(EXPORT_MANIFEST_INVALID) if unusable."""
    try:
        return schema.read_manifest(model_dir)
    except InferenceError as exc:
        raise ExportError(MANIFEST_INVALID, exc.message) from exc
