"""The benchmark's models: the default model's fp32 and int4 exports, cached, and the prompts they run on.

The exports are built once with `exports.export.export_model("default", quantize=...)` into
`~/.cache/beth-chat-bench/models` (override with BETH_BENCH_CACHE) and reused; unlike the test fixture the
cache is not keyed by the exports code, so a benchmark never waits for a fresh export after an unrelated edit.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

ALIAS = "SmolLM2-135M-Instruct"
VARIANTS = {"fp32": (ALIAS, "none"), "int4": (f"{ALIAS}-int4", "int4")}
THREADS = 2
NEW_TOKENS = 128
PROMPT_LENGTHS = (32, 1000)
LOOKAHEAD_TOKENS = 4  # the engine's default (HF_LOOKAHEAD_TOKENS); the engine also runs with 0, no drafts
# Chat questions for a second decode figure: drafting gains depend on the text, so prose alone says too little.
CHAT_QUESTIONS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain how a bicycle works.",
    "Give me three tips for learning Python.",
)
_TEXT = (
    "The lighthouse keeper walked along the cliff every evening, counting the ships that passed, writing their "
    "names in a worn notebook and wondering where each of them was going and who was waiting for it. "
)


def models_dir() -> Path:
    return Path(os.environ.get("BETH_BENCH_CACHE", Path.home() / ".cache" / "beth-chat-bench")) / "models"


def export_folder(variant: str) -> Path:
    """The export folder of `variant` (fp32 or int4), exported on first use (a minute or two)."""
    alias, quantize = VARIANTS[variant]
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / alias
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "manifest.json").is_file():
            from exports.export import export_model

            export_model("default", models_dir=root, alias=alias, quantize=quantize)
    return folder


def prompt_ids(encode: Callable[[str], list[int]], length: int) -> list[int]:
    """Exactly `length` token ids of plain English prose (fixed, so every run feeds the same prompt)."""
    ids: list[int] = []
    while len(ids) < length:
        ids = encode(_TEXT * (1 + len(ids) // 10 + length // 30))
    return ids[:length]
