"""GraphQL object and input types: the old service's schema, field for field (docs/compatibility.md, "GraphQL schema").

Nullability and argument types must not change: the web client declares `String!` and `ID!`
variables to match them. Dates are epoch-millisecond digit strings, ids are strings.
"""

from __future__ import annotations

import msgspec
import strawberry
from strawberry.types import Info

from app.db.tables import Conversation as ConversationRow
from app.db.tables import Image as ImageRow
from app.db.tables import Message as MessageRow
from app.graphql.context import GraphQLContext
from app.schemas.common import epoch_ms
from app.schemas.conversations import ReplyOptions
from app.services.images import image_url

ContextInfo = Info[GraphQLContext, None]


@strawberry.type
class Image:
    id: strawberry.ID
    filename: str
    file_size: int
    mime_type: str
    content_hash: str
    created_at: str
    url: str

    @classmethod
    def of(cls, row: ImageRow, base_url: str) -> Image:
        return cls(
            id=strawberry.ID(row.id),
            filename=row.filename,
            file_size=row.file_size,
            mime_type=row.mime_type,
            content_hash=row.content_hash,
            created_at=epoch_ms(row.created_at),
            url=image_url(base_url, row),
        )


@strawberry.type
class Message:
    id: strawberry.ID
    conversation_id: str
    text: str
    sender: str
    timestamp: str
    has_images: bool
    row_id: strawberry.Private[int]
    # additions the old client never selects: who answered a reply (null on user messages)
    provider: str | None = strawberry.field(default=None, description="The provider that produced this reply")
    model: str | None = strawberry.field(default=None, description="The model that produced this reply")
    fallback_from: str | None = strawberry.field(
        default=None, description="The model asked for, when it could not start and `model` answered instead"
    )

    @strawberry.field
    async def images(self, info: ContextInfo) -> list[Image]:
        if not self.has_images:
            return []
        rows = await info.context.images_of.load(self.row_id)
        base = info.context.base_url()
        return [Image.of(row, base) for row in rows]

    @classmethod
    def of(cls, row: MessageRow) -> Message:
        return cls(
            id=strawberry.ID(str(row.id)),
            conversation_id=row.conversation_id,
            text=row.text,
            sender=row.sender,
            timestamp=epoch_ms(row.timestamp),
            has_images=row.has_images,
            row_id=row.id,
            provider=row.provider,
            model=row.model,
            fallback_from=row.fallback_from,
        )


@strawberry.type
class Conversation:
    id: strawberry.ID
    tab_name: str
    llm_model: str
    is_private: bool
    created_at: str
    updated_at: str
    message_count: int

    @strawberry.field
    async def messages(self, info: ContextInfo) -> list[Message]:
        rows = await info.context.messages_of.load(str(self.id))
        return [Message.of(row) for row in rows]

    @strawberry.field(description="The provider of the latest reply (null before the first)")
    async def provider(self, info: ContextInfo) -> str | None:
        latest = await info.context.latest_reply_of.load(str(self.id))
        return latest.provider if latest else None

    @strawberry.field(description="The model of the latest reply (null before the first)")
    async def model(self, info: ContextInfo) -> str | None:
        latest = await info.context.latest_reply_of.load(str(self.id))
        return latest.model if latest else None

    @classmethod
    def of(cls, row: ConversationRow, message_count: int) -> Conversation:
        return cls(
            id=strawberry.ID(row.id),
            tab_name=row.tab_name,
            llm_model=row.llm_model,
            is_private=row.is_private,
            created_at=epoch_ms(row.created_at),
            updated_at=epoch_ms(row.updated_at),
            message_count=message_count,
        )


@strawberry.type
class ConversationList:
    conversations: list[Conversation]
    count: int


@strawberry.type
class CreateConversationResponse:
    message: str
    conversation: Conversation


@strawberry.type
class AddMessageResponse:
    message: str
    user_message: Message
    llm_message: Message | None = None
    llm_model: str | None = None
    error: str | None = None
    llm_response_time: float | None = None
    error_code: str | None = strawberry.field(
        default=None, description="The stable code of `error` (the old text stays in `error`)"
    )


@strawberry.type
class VerifyPasswordResponse:
    message: str
    conversation_id: str
    tab_name: str


@strawberry.type
class AvailableModelsResponse:
    models: list[str]
    count: int


@strawberry.type
class WarmupOllamaResponse:
    message: str
    models: list[str]
    count: int
    status: str


@strawberry.type
class DeleteConversationResponse:
    message: str
    conversation_id: str
    success: bool


@strawberry.type
class DeleteMessagesResponse:
    message: str
    deleted_count: int
    success: bool


@strawberry.type
class TerminateStreamResponse:
    success: bool
    session_id: str
    message: str
    partial_response: str
    token_count: int
    final_status: str
    termination_reason: str | None = None
    error: str | None = None


@strawberry.input
class CreateConversationInput:
    id: str
    tab_name: str
    llm_model: str | None = None
    password: str | None = None


@strawberry.input
class AddMessageInput:
    conversation_id: str
    text: str
    sender: str
    password: str | None = None
    llm_model: str | None = None
    images: list[str] | None = strawberry.field(
        default=None, description="Images as base64 or data: URLs, checked like uploads (user messages only)"
    )


@strawberry.input(description="Generation options for one reply, checked like the REST `options`")
class GenerationOptionsInput:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    repetition_penalty: float | None = None

    def as_wire(self) -> dict[str, object]:
        """The options given, in the REST `options` shape (camelCase), for its one rule set to check."""
        return {
            field.encode_name: getattr(self, field.name)
            for field in msgspec.structs.fields(ReplyOptions)
            if getattr(self, field.name) is not None
        }


@strawberry.input
class VerifyPasswordInput:
    conversation_id: str
    password: str


@strawberry.input
class TerminateStreamInput:
    session_id: str
    conversation_id: str
    password: str | None = None
    reason: str | None = None
