"""Reading an export folder's facts without loading it: its manifest (inference/manifest.py), and the
architecture figures of `config.json` that size the key-value cache.

The pool needs a model's size before it decides to load it. A folder without `manifest.json` (a graph
exported by other tools) is read leniently from `config.json`, `generation_config.json` and `model.onnx`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.errors import HF_MODEL_LOAD_FAILED, HF_MODEL_NOT_FOUND, InferenceError
from inference.manifest import MANIFEST_NAME, Manifest, Vision, read_manifest

DEFAULT_ONNX_FILE = "model.onnx"
DEFAULT_CONTEXT_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """What serving needs to know about one export folder before and after opening it."""

    path: Path
    alias: str
    onnx_path: Path
    context_length: int
    eos_token_ids: tuple[int, ...]
    quantization: str = "none"
    capabilities: dict[str, Any] = field(default_factory=dict)
    num_layers: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    weights_bytes: int = 0
    graph_rewrites: tuple[str, ...] = ()  # exports/optimize.py's steps, from the manifest
    kv_bytes_per_value: int = 4  # float32 unless the manifest says otherwise
    vision: Vision | None = None  # the image side of a vision-language export
    #: the sampling values the model's authors set in `generation_config.json` (temperature, top_p, top_k,
    #: repetition_penalty); what it leaves out is the serving side's choice
    sampling_defaults: dict[str, float] = field(default_factory=dict)

    @property
    def kv_bytes_per_token(self) -> int:
        """Key plus value bytes that one token of context holds in the cache, over all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.kv_bytes_per_value

    def estimated_bytes(self, sequences: int = 1) -> int:
        """Memory the model needs: its weights plus a full-context KV cache for `sequences` requests."""
        return self.weights_bytes + sequences * self.context_length * self.kv_bytes_per_token


def is_export_folder(path: Path) -> bool:
    """Whether `path` looks like an export (a manifest, or a graph file) rather than any folder."""
    return path.is_dir() and ((path / MANIFEST_NAME).is_file() or (path / DEFAULT_ONNX_FILE).is_file())


def read_export(path: Path) -> ExportInfo:
    """Read the folder's facts; raise MODEL_NOT_FOUND for a missing folder, LOAD_FAILED for a broken one."""
    if not is_export_folder(path):
        raise InferenceError(
            HF_MODEL_NOT_FOUND,
            f"no exported model at {path}: run `beth-chat export` first",
            {"path": str(path)},
        )
    manifest = read_manifest(path) if (path / MANIFEST_NAME).is_file() else None
    config = _read_json(path / "config.json")
    generation_config = _read_json(path / "generation_config.json")
    onnx_path = path / (manifest.onnx_file if manifest is not None else DEFAULT_ONNX_FILE)
    if not onnx_path.is_file():
        raise InferenceError(
            HF_MODEL_LOAD_FAILED,
            f"the export at {path} has no graph file {onnx_path.name}; export it again",
            {"path": str(path), "onnx_file": onnx_path.name},
        )
    heads = int(config.get("num_attention_heads") or 0)
    hidden = int(config.get("hidden_size") or 0)
    architecture = {
        "num_layers": int(config.get("num_hidden_layers") or 0),
        "num_kv_heads": int(config.get("num_key_value_heads") or heads),
        "head_dim": int(config.get("head_dim") or (hidden // heads if heads else 0)),
        "weights_bytes": graph_bytes(onnx_path),
    }
    if manifest is not None:
        if manifest.vision is not None:  # the vision encoder and the embedding table are loaded too
            architecture["weights_bytes"] += sum(
                file.stat().st_size
                for name in (manifest.vision.encoder_file, manifest.vision.embed_file)
                for file in path.glob(name + "*")
                if file.is_file()
            )
        return _from_manifest(path, onnx_path, manifest, architecture, generation_config)
    return ExportInfo(
        path=path,
        alias=path.name,
        onnx_path=onnx_path,
        context_length=_context_length(config),
        eos_token_ids=_eos_ids(generation_config, config),
        capabilities={"text": True},
        sampling_defaults=sampling_defaults(generation_config),
        **architecture,
    )


def _from_manifest(
    path: Path,
    onnx_path: Path,
    manifest: Manifest,
    architecture: dict[str, int],
    generation_config: dict[str, Any],
) -> ExportInfo:
    return ExportInfo(
        path=path,
        alias=manifest.alias,
        onnx_path=onnx_path,
        context_length=manifest.context_length,
        eos_token_ids=tuple(manifest.eos_token_ids),
        quantization=manifest.quantization,
        capabilities={"text": manifest.capabilities.text, "vision": manifest.capabilities.vision},
        graph_rewrites=tuple(manifest.graph_rewrites),
        kv_bytes_per_value=np.dtype(manifest.kv_cache_dtype).itemsize,
        vision=manifest.vision,
        sampling_defaults=sampling_defaults(generation_config),
        **architecture,
    )


#: the sampling keys of `generation_config.json` that serving takes, with the values each may have
_SAMPLING_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 10.0),
    "top_p": (0.0, 1.0),
    "top_k": (0.0, 100_000.0),
    "repetition_penalty": (1e-6, 10.0),
}


def sampling_defaults(generation_config: dict[str, Any]) -> dict[str, float]:
    """The sampling values a `generation_config.json` sets, leniently: a missing, non-numeric or out-of-range
    value is left out, so a careless file cannot break serving."""
    found: dict[str, float] = {}
    for key, (low, high) in _SAMPLING_RANGES.items():
        value = generation_config.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high:
            found[key] = value
    return found


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InferenceError(HF_MODEL_LOAD_FAILED, f"cannot read {path}: {exc}", {"path": str(path)}) from exc
    return data if isinstance(data, dict) else {}


def _context_length(config: dict[str, Any]) -> int:
    value = config.get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else DEFAULT_CONTEXT_LENGTH


def _eos_ids(*sources: dict[str, Any]) -> tuple[int, ...]:
    """All stop ids: the generation config's, else the model config's."""
    for source in sources:
        value = source.get("eos_token_id")
        if isinstance(value, int):
            return (value,)
        if isinstance(value, list) and value:
            return tuple(int(v) for v in value)
    return ()


def graph_bytes(onnx_path: Path) -> int:
    """Bytes on disk of a graph file and its external data files (`model.onnx_data`, `model.onnx.data`)."""
    total = onnx_path.stat().st_size
    for sibling in onnx_path.parent.glob(onnx_path.name + "*"):
        if sibling != onnx_path and sibling.is_file():
            total += sibling.stat().st_size
    return total
