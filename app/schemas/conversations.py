"""msgspec Structs for the conversation and message REST API (`/api/v1`). JSON names are camelCase."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from app.db.tables import Conversation, Message
from app.errors import ErrorCode, ServiceError
from app.providers.types import GenerationOptions
from app.schemas.boundary import Identifier, MessageText, Name, PasswordText, RequiredName
from app.schemas.common import ErrorDetail, epoch_ms
from app.services.conversations import ReplySource


class CreateConversationRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    tab_name: RequiredName
    id: Identifier | None = None
    llm_model: Name | None = None
    password: PasswordText | None = None


class ConversationOut(msgspec.Struct, rename="camel"):
    id: str
    tab_name: str
    llm_model: str
    is_private: bool
    created_at: str
    updated_at: str
    message_count: int
    #: the provider and model of the latest reply (null before the first); `llmModel` is the one chosen
    provider: str | None = None
    model: str | None = None

    @classmethod
    def of(cls, row: Conversation, message_count: int, latest: ReplySource | None = None) -> ConversationOut:
        return cls(
            id=row.id,
            tab_name=row.tab_name,
            llm_model=row.llm_model,
            is_private=row.is_private,
            created_at=epoch_ms(row.created_at),
            updated_at=epoch_ms(row.updated_at),
            message_count=message_count,
            provider=latest.provider if latest else None,
            model=latest.model if latest else None,
        )


class ConversationPage(msgspec.Struct, rename="camel"):
    conversations: list[ConversationOut]
    count: int
    total: int
    limit: int
    offset: int


# The bounds of each per-request generation option: ReplyOptions (every chat surface) and `/v1` share them.
Temperature = Annotated[float, msgspec.Meta(ge=0, le=10)]
TopP = Annotated[float, msgspec.Meta(ge=0, le=1)]
TopK = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Seed = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
StopText = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
StopTexts = Annotated[list[StopText], msgspec.Meta(max_length=16)]
RepetitionPenalty = Annotated[float, msgspec.Meta(gt=0, le=10)]


class ReplyOptions(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    """Generation options for one reply; each one left out falls back to the model's configured option,
    then to the model's own `generation_config`, then to the service's defaults."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    max_tokens: MaxTokens | None = None
    seed: Seed | None = None
    stop: StopTexts = []
    repetition_penalty: RepetitionPenalty | None = None

    def as_generation_options(self) -> GenerationOptions:
        return GenerationOptions(**msgspec.structs.asdict(self))


def reply_options(value: object) -> GenerationOptions:
    """`options` sent where msgspec does not decode the body (GraphQL, the legacy stream route), checked by
    `ReplyOptions`' rules: one rule set for every chat surface. A bad value is INVALID_REQUEST naming it."""
    try:
        return msgspec.convert(value, ReplyOptions).as_generation_options()
    except msgspec.ValidationError as exc:
        problem = str(exc).replace("`$", "`options")
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"Invalid options: {problem}",
            details={"field": "options", "problems": [problem]},
        ) from None


class AddMessageRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A message to store. With `reply` (or `stream`) a user message also gets the model's answer:
    as JSON once complete, or with `stream` as server-sent events while it is generated. `images` go
    with such a turn only."""

    text: MessageText
    sender: Literal["user", "llm"] = "user"
    reply: bool = False
    stream: bool = False
    model: Name | None = None
    options: ReplyOptions | None = None
    # base64 or `data:image/...;base64,` URLs; checked like multipart uploads (count, size, real type)
    images: list[str] = msgspec.field(default_factory=list)


class MessageOut(msgspec.Struct, rename="camel"):
    id: str
    conversation_id: str
    text: str
    sender: str
    timestamp: str
    has_images: bool
    status: str
    provider: str | None = None
    model: str | None = None
    #: the model asked for, when it could not start and `model` (a fallback) answered instead
    fallback_from: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    time_to_first_token_ms: float | None = None
    duration_ms: float | None = None
    finish_reason: str | None = None

    @classmethod
    def of(cls, row: Message) -> MessageOut:
        return cls(
            id=str(row.id),
            conversation_id=row.conversation_id,
            text=row.text,
            sender=row.sender,
            timestamp=epoch_ms(row.timestamp),
            has_images=row.has_images,
            status=row.status,
            provider=row.provider,
            model=row.model,
            fallback_from=row.fallback_from,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            time_to_first_token_ms=row.time_to_first_token_ms,
            duration_ms=row.duration_ms,
            finish_reason=row.finish_reason,
        )


class MessageList(msgspec.Struct, rename="camel"):
    conversation_id: str
    messages: list[MessageOut]
    count: int


class DeletedMessages(msgspec.Struct, rename="camel"):
    conversation_id: str
    deleted_count: int


class VerifyPasswordRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=72)]


class VerifiedPassword(msgspec.Struct, rename="camel"):
    conversation_id: str
    tab_name: str
    verified: bool = True


class ChatReply(msgspec.Struct, rename="camel"):
    """The JSON answer of a turn: the stored user message, the stored reply (if any), and why not."""

    user_message: MessageOut
    reply: MessageOut | None
    model: str
    response_time_ms: float
    error: ErrorDetail | None = None
