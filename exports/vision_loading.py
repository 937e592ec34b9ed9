"""Loading a vision-language model and its processor into PyTorch, for the export steps that need it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exports import errors
from exports.errors import ExportError


@dataclass
class LoadedVision:
    model: Any  # the PyTorch vision-language model
    processor: Any
    model_type: str


def load_vision(folder: Path) -> LoadedVision:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(
            errors.NOT_A_MODEL, f"{folder}: transformers cannot load a vision-language model and processor ({exc})."
        ) from exc
    return LoadedVision(model.eval(), processor, model.config.model_type)
