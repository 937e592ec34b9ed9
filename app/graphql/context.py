"""The per-request GraphQL context: the services resolvers call, and batch loaders against N+1 queries."""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State
from strawberry.dataloader import DataLoader
from strawberry.litestar import BaseContext

from app.db.tables import Image, Message
from app.services.chat import ChatService
from app.services.conversations import ConversationService
from app.services.images import images_by_message
from app.services.streams import StreamSessions


class GraphQLContext(BaseContext, kw_only=True):
    """strawberry's Litestar context is a msgspec Struct; ours adds the services and loaders."""

    conversations: ConversationService
    chat: ChatService
    sessions: StreamSessions
    public_base_url: str
    messages_of: DataLoader[str, list[Message]]
    images_of: DataLoader[int, list[Image]]

    def base_url(self) -> str:
        """Absolute base for links the web client loads from another origin (Image.url)."""
        if self.public_base_url:
            return self.public_base_url
        request: Any = self.request
        return str(request.base_url).rstrip("/") if request is not None else ""


async def provide_graphql_context(state: State) -> GraphQLContext:
    conversations: ConversationService = state.conversations

    async def load_messages(conversation_ids: list[str]) -> list[list[Message]]:
        grouped = await conversations.messages_by_conversation(conversation_ids)
        return [grouped[cid] for cid in conversation_ids]

    async def load_images(message_ids: list[int]) -> list[list[Image]]:
        grouped = await images_by_message(message_ids)
        return [grouped.get(mid, []) for mid in message_ids]

    return GraphQLContext(
        conversations=conversations,
        chat=state.chat,
        sessions=state.sessions,
        public_base_url=state.settings.public_base_url,
        messages_of=DataLoader(load_messages),
        images_of=DataLoader(load_images),
    )
