"""The per-request GraphQL context: the services resolvers call, and batch loaders against N+1 queries."""

from __future__ import annotations

from typing import Any

from strawberry.dataloader import DataLoader
from strawberry.litestar import BaseContext

from app.config.snapshot import ConfigSource
from app.db.tables import Image, Message
from app.providers.registry import ProviderRegistry
from app.services.catalog import ModelCatalog
from app.services.chat import ChatService
from app.services.conversations import ConversationService, ReplySource
from app.services.images import images_by_message
from app.services.streams import StreamSessions
from app.services.usage import UsageStats


class GraphQLContext(BaseContext, kw_only=True):
    """strawberry's Litestar context is a msgspec Struct; ours adds the services and loaders."""

    conversations: ConversationService
    chat: ChatService
    sessions: StreamSessions
    config: ConfigSource
    catalog: ModelCatalog
    registry: ProviderRegistry
    usage: UsageStats
    messages_of: DataLoader[str, list[Message]]
    images_of: DataLoader[int, list[Image]]
    latest_reply_of: DataLoader[str, ReplySource | None]

    def base_url(self) -> str:
        """Absolute base for links the web client loads from another origin (Image.url)."""
        public = self.config.settings.public_base_url  # the published value: a reload applies to the next link
        if public:
            return public
        request: Any = self.request
        return str(request.base_url).rstrip("/") if request is not None else ""


async def provide_graphql_context(
    conversations: ConversationService,
    chat: ChatService,
    sessions: StreamSessions,
    config: ConfigSource,
    catalog: ModelCatalog,
    registry: ProviderRegistry,
    usage: UsageStats,
) -> GraphQLContext:
    """Built per request from the app's dependencies: everything a resolver may need, nothing looked up later."""

    async def load_messages(conversation_ids: list[str]) -> list[list[Message]]:
        grouped = await conversations.messages_by_conversation(conversation_ids)
        return [grouped[cid] for cid in conversation_ids]

    async def load_images(message_ids: list[int]) -> list[list[Image]]:
        grouped = await images_by_message(message_ids)
        return [grouped.get(mid, []) for mid in message_ids]

    async def load_latest_replies(conversation_ids: list[str]) -> list[ReplySource | None]:
        latest = await conversations.latest_replies(conversation_ids)
        return [latest.get(cid) for cid in conversation_ids]

    return GraphQLContext(
        conversations=conversations,
        chat=chat,
        sessions=sessions,
        config=config,
        catalog=catalog,
        registry=registry,
        usage=usage,
        messages_of=DataLoader(load_messages),
        images_of=DataLoader(load_images),
        latest_reply_of=DataLoader(load_latest_replies),
    )
