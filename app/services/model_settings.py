"""Per-model settings the chat turn applies: enabled, system prompt, default generation options, context budget.

The configuration service (hot-reloaded from the config file and the API) implements
`ModelSettingsSource`; the chat turn asks it once per turn, so a change applies to the next turn and
never to a reply already being generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from app.providers.types import GenerationOptions, ModelInfo


@dataclass(frozen=True)
class ModelSettings:
    enabled: bool = True
    system_prompt: str | None = None
    options: GenerationOptions | None = None
    # Tokens of context the turn may use (history trimmed to fit); None: the model's whole context.
    context_budget: int | None = None
    # How long the provider keeps the model loaded after this turn (Ollama's keep_alive); None: its default.
    keep_alive_s: float | None = None


class ModelSettingsSource(Protocol):
    def for_model(self, name: str, info: ModelInfo | None) -> ModelSettings: ...


class NoModelSettings:
    """Until a configuration service is attached: every model enabled, service-wide defaults."""

    def for_model(self, name: str, info: ModelInfo | None) -> ModelSettings:
        return ModelSettings()
