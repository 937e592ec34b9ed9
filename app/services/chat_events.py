"""What one chat turn tells its client, in order. Each transport (SSE, REST, GraphQL) renders these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class UserMessageSaved:
    message_id: int


@dataclass(frozen=True)
class ImagesProcessed:
    processed: int
    warnings: list[str]
    images: list[dict[str, Any]]


@dataclass(frozen=True)
class SessionStarted:
    session_id: str
    model: str
    provider: str


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Terminated:
    session_id: str
    partial_response: str
    token_count: int
    reason: str
    message_id: int | None


@dataclass(frozen=True)
class ReplyUsage:
    """What a completed reply cost (each transport names the fields its own way)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    time_to_first_token_ms: float | None = None
    duration_ms: float | None = None


@dataclass(frozen=True)
class Completed:
    session_id: str
    message_id: int
    text: str
    model: str
    provider: str
    usage: ReplyUsage = field(default_factory=ReplyUsage)
    finish_reason: str = "stop"
    # the model asked for, when it could not start and the fallback list's `model` answered instead
    fallback_from: str | None = None


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


TurnEvent = UserMessageSaved | ImagesProcessed | SessionStarted | Token | Terminated | Completed | Failed
FINAL_EVENTS = (Terminated, Completed, Failed)
