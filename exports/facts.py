"""Facts about a loaded model and the tools that exported it, for the manifest."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from exports.hashing import sha256_file
from exports.manifest import MANIFEST_NAME, Capabilities, FileEntry, Versions

if TYPE_CHECKING:
    from exports.loading import TorchSourceModel

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def parameter_count(loaded: TorchSourceModel) -> int:
    """Unique parameters (tied embeddings counted once), as model cards count them."""
    seen: set[int] = set()
    total = 0
    for parameter in loaded.model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total


def context_length(loaded: TorchSourceModel) -> int:
    config = loaded.model.config
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def architecture(loaded: TorchSourceModel) -> str:
    names = getattr(loaded.model.config, "architectures", None) or [type(loaded.model).__name__]
    return str(names[0])


def capabilities(loaded: TorchSourceModel) -> Capabilities:
    return Capabilities(text=True, vision=hasattr(loaded.model.config, "vision_config"))


def has_chat_template(folder: Path) -> bool:
    """True when the saved tokenizer carries a template (in tokenizer_config.json or chat_template.jinja)."""
    if (folder / "chat_template.jinja").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and '"chat_template"' in config.read_text(encoding="utf-8")


def file_entries(folder: Path) -> list[FileEntry]:
    """Every file of the export except the manifest itself, sorted by name."""
    return [
        FileEntry(path.name, path.stat().st_size, sha256_file(path))
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST_NAME
    ]


def tool_versions() -> Versions:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return ""

    return Versions(
        transformers=version("transformers"),
        optimum=version("optimum"),
        onnxruntime=version("onnxruntime-gpu") or version("onnxruntime"),
        torch=version("torch"),
        onnx=version("onnx"),
    )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
