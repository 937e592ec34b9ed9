"""Which model families the export supports, in one place, so every refusal names the same list."""

from __future__ import annotations

# Decoder-only families that Optimum exports for `text-generation-with-past` with one
# `past_key_values.N.key` / `.value` pair per layer: the layout `inference/` decodes with.
# Families with a fused or multi-query cache layout (bloom, gpt_bigcode, mpt, falcon) are left out on purpose.
SUPPORTED_MODEL_TYPES: tuple[str, ...] = (
    "arcee",
    "cohere",
    "gemma",
    "gemma2",
    "gemma3_text",
    "glm",
    "gpt2",
    "gpt_neox",
    "gptj",
    "granite",
    "helium",
    "llama",
    "mistral",
    "nemotron",
    "olmo",
    "olmo2",
    "opt",
    "phi",
    "phi3",
    "qwen2",
    "qwen3",
    "qwen3_moe",
    "smollm3",
    "stablelm",
)

# Vision-language families (exports/vision.py): a vision tower with its connector, and a text decoder fed
# `inputs_embeds`.
VISION_MODEL_TYPES: tuple[str, ...] = ("idefics3", "llava")

# GGUF `general.architecture` names whose model_type differs from the GGUF name.
GGUF_TO_MODEL_TYPE: dict[str, str] = {"gemma3": "gemma3_text"}


def supported_list() -> str:
    """The supported families as one readable string for error messages."""
    return ", ".join(SUPPORTED_MODEL_TYPES)


def is_supported(model_type: str) -> bool:
    return model_type in SUPPORTED_MODEL_TYPES
