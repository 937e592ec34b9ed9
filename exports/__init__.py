"""The model export command: Hugging Face folder / GGUF / hub id -> ONNX (Optimum), quantize or float16, validate, manifest.

Importing this package is cheap and never imports torch: serving imports it for the manifest reader.
PyTorch, transformers and Optimum are imported inside the functions that need them.
"""

from exports.errors import ExportError
from exports.manifest import BrokenExport, Manifest, list_manifests, read_manifest, scan_manifests

__all__ = ["BrokenExport", "ExportError", "Manifest", "list_manifests", "read_manifest", "scan_manifests"]
