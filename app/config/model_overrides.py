"""What the configuration says about one model, as the chat turn applies it.

An operator's `[models."<name>"]` table (enabled, system prompt, default generation options, context budget,
keep-alive) becomes a `ModelOverrides`; a model without a table gets the defaults (enabled, service-wide values).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.providers.types import GenerationOptions


@dataclass(frozen=True)
class ModelOverrides:
    enabled: bool = True
    system_prompt: str | None = None
    options: GenerationOptions | None = None
    # Tokens of context the turn may use (history trimmed to fit); None: the model's whole context.
    context_budget: int | None = None
    # How long the provider keeps the model loaded after this turn (Ollama's keep_alive); None: its default.
    keep_alive_s: float | None = None
