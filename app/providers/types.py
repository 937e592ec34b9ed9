"""Provider-agnostic structures: what every provider lists, accepts and streams back.

One shape for streamed chunks and the final answer (as Ollama's API does): text deltas, then a last
chunk with `done=True`, the usage figures and the finish reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import msgspec

HealthStatus = Literal["healthy", "degraded", "unhealthy", "unknown"]
Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "timeout", "error"]


class Capabilities(msgspec.Struct, kw_only=True):
    text: bool = True
    vision: bool = False
    streaming: bool = True


class ModelInfo(msgspec.Struct, kw_only=True, rename="camel"):
    """One model as the catalog shows it. `name` carries the provider prefix (`hf/...`, `ollama/...`)."""

    name: str
    provider: str
    native_name: str
    display_name: str = ""
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    context_length: int | None = None
    capabilities: Capabilities = msgspec.field(default_factory=Capabilities)
    loaded: bool = False
    size_bytes: int | None = None
    metadata: dict[str, object] = msgspec.field(default_factory=dict)


class ProviderHealth(msgspec.Struct, kw_only=True, rename="camel"):
    status: HealthStatus = "unknown"
    latency_ms: float | None = None
    detail: str = ""
    checked_at: datetime = msgspec.field(default_factory=lambda: datetime.now(UTC))


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Role
    content: str
    # base64-encoded image bytes, without a `data:` prefix (Ollama's `images` field)
    images: list[str] = msgspec.field(default_factory=list)


class GenerationOptions(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Sampling and length options; None means "the model's or provider's default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = msgspec.field(default_factory=list)
    context_length: int | None = None


class ChatRequest(msgspec.Struct, kw_only=True):
    """What one provider is sent for one reply.

    `model` is the provider's own name for the model (`tiny`, `llama3.1:8b`), never the full prefixed
    name: the full name lives on the routing `Candidate` and on the `RoutedStream` that answered.
    `timeout_s` is for callers without a deadline of their own (warm-up); a chat turn leaves it unset and
    enforces its one deadline itself.
    """

    model: str
    messages: list[ChatMessage]
    options: GenerationOptions = msgspec.field(default_factory=GenerationOptions)
    timeout_s: float | None = None
    keep_alive_s: float | None = None


class Usage(msgspec.Struct, kw_only=True, rename="camel"):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    time_to_first_token_ms: float | None = None
    duration_ms: float | None = None
    tokens_per_second: float | None = None


class ChatChunk(msgspec.Struct, kw_only=True):
    text: str = ""
    done: bool = False
    usage: Usage | None = None
    finish_reason: FinishReason | None = None


class CircuitStatus(msgspec.Struct, kw_only=True, rename="camel"):
    state: Literal["closed", "open", "half_open"]
    consecutive_failures: int = 0
    retry_in_s: float | None = None


class ProviderStatus(msgspec.Struct, kw_only=True, rename="camel"):
    """One provider as the catalog reports it: health, circuit, and how its last model listing went."""

    name: str
    prefix: str
    health: ProviderHealth
    circuit: CircuitStatus
    model_count: int = 0
    listing_error: str | None = None
    stale: bool = False
