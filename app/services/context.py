"""Build what the model sees for one turn: the system prompt and the history that fits its context.

The current user message is saved before the context is built (so it is never lost), which is why
it is excluded from the history and appended exactly once here (the old service sent it twice).
Oldest turns are dropped first; the current turn is never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from app.db.tables import Message
from app.errors import ErrorCode, ServiceError
from app.providers.types import ChatMessage

# A conservative estimate for budgeting across providers whose tokenizers we do not hold: real
# tokenizers average about 4 characters per token on English text, and fewer on code or other scripts.
CHARS_PER_TOKEN = 3.0
# the chat template's role markers and separators around each message
PER_MESSAGE_OVERHEAD_TOKENS = 8


def estimate_text_tokens(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN)


def estimate_tokens(text: str, count_text: Callable[[str], int] = estimate_text_tokens) -> int:
    """One message's cost: its text (counted exactly when the provider holds the tokenizer) plus overhead."""
    return count_text(text) + PER_MESSAGE_OVERHEAD_TOKENS


@dataclass(frozen=True)
class TurnContext:
    messages: list[ChatMessage]


def as_history(messages: Sequence[Message], images: Mapping[int, list[str]] | None = None) -> list[ChatMessage]:
    """Stored messages as a model reads them (empty ones left out), each with its images from `images`
    (base64, by message id) when given."""
    found = images or {}
    return [
        ChatMessage(
            role="user" if message.sender == "user" else "assistant",
            content=message.text,
            images=list(found.get(message.id, ())),
        )
        for message in messages
        if message.text
    ]


def build_context(
    *,
    system_prompt: str,
    history: Sequence[ChatMessage],
    current: ChatMessage,
    context_length: int,
    max_new_tokens: int,
    count_text: Callable[[str], int] | None = None,
    image_tokens: int | None = None,
) -> TurnContext:
    """System prompt + as much recent history as fits + the current turn, within `context_length`.

    `count_text` counts a text's tokens exactly (the hf models' tokenizers); without it they are estimated.
    With `image_tokens` (a vision model: what one image costs), the kept history's images go too while they
    fit after the texts and the current images, newest first, so the oldest are dropped first; without it
    earlier images are never sent.
    Raises CONTEXT_LENGTH_EXCEEDED when the system prompt and the current turn alone do not fit.
    """
    count = count_text or estimate_text_tokens
    budget = context_length - max_new_tokens
    fixed = estimate_tokens(system_prompt, count) + estimate_tokens(current.content, count)
    if fixed > budget:
        raise ServiceError(
            ErrorCode.CONTEXT_LENGTH_EXCEEDED,
            "The message is too long for this model's context window; shorten it or pick a model with a longer context.",
            details={"contextLength": context_length, "estimatedTokens": fixed, "reservedForReply": max_new_tokens},
        )
    kept: list[ChatMessage] = []
    used = fixed
    for message in reversed(history):
        cost = estimate_tokens(message.content, count)
        if used + cost > budget:
            break
        kept.append(msgspec.structs.replace(message, images=[]) if message.images else message)
        used += cost
    if image_tokens is not None:
        room = budget - used - len(current.images) * image_tokens
        _attach_images(kept, history[len(history) - len(kept) :], image_tokens, room)
    kept.reverse()
    messages = [ChatMessage(role="system", content=system_prompt), *kept, current]
    return TurnContext(messages=messages)


def _attach_images(
    kept_newest_first: list[ChatMessage], kept_messages: Sequence[ChatMessage], image_tokens: int, room: int
) -> None:
    """Give the kept messages their images, newest first, until the next message's images do not fit."""
    for index, message in enumerate(reversed(kept_messages)):
        if not message.images:
            continue
        cost = len(message.images) * image_tokens
        if cost > room:
            return
        kept_newest_first[index] = msgspec.structs.replace(kept_newest_first[index], images=list(message.images))
        room -= cost
