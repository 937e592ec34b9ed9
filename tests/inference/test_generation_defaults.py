"""Sampling defaults come from the export's `generation_config.json` when it sets them, else from the service:
a request's option (already over the model's configuration) always wins."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from app.providers.hf import SAMPLING_DEFAULTS, sampling_for
from app.providers.types import GenerationOptions
from inference.export_folder import read_export, sampling_defaults


def test_generation_config_sampling_values_are_read_leniently() -> None:
    found = sampling_defaults(
        {"temperature": 0.6, "top_p": 0.95, "top_k": "forty", "repetition_penalty": -1, "do_sample": True}
    )
    assert found == {"temperature": 0.6, "top_p": 0.95}
    assert sampling_defaults({"temperature": True}) == {}


def test_an_export_carries_its_generation_config_sampling(tmp_path: Path, tiny_export: Path) -> None:
    copy = tmp_path / tiny_export.name
    shutil.copytree(tiny_export, copy)
    config = (
        json.loads((copy / "generation_config.json").read_text()) if (copy / "generation_config.json").exists() else {}
    )
    config.update({"temperature": 0.3, "top_k": 20})
    (copy / "generation_config.json").write_text(json.dumps(config))
    assert read_export(copy).sampling_defaults == {"temperature": 0.3, "top_k": 20}


def test_request_over_generation_config_over_service_defaults() -> None:
    model = {"temperature": 0.3, "top_k": 20}
    assert sampling_for(GenerationOptions(), {}) == SAMPLING_DEFAULTS
    assert sampling_for(GenerationOptions(), model) == {**SAMPLING_DEFAULTS, **model}
    assert sampling_for(GenerationOptions(temperature=0, top_p=0.5), model) == {
        "temperature": 0,
        "top_k": 20,
        "top_p": 0.5,
        "repetition_penalty": 1.1,
    }
    assert SAMPLING_DEFAULTS == {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "repetition_penalty": 1.1}
