"""REST: conversations and their messages under `/api/v1/conversations`.

The password of a private conversation travels in the `X-Conversation-Password` header (never in a
URL, where it would end up in logs and browser history).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, delete, get, post
from litestar.params import Parameter
from litestar.response import Stream

from app.controllers.sse import SSE_HEADERS, typed_events, with_keepalive
from app.errors import ErrorCode, ServiceError
from app.openapi import body, errors, event_stream
from app.schemas.common import ErrorDetail
from app.schemas.conversations import (
    AddMessageRequest,
    ChatReply,
    ConversationOut,
    ConversationPage,
    CreateConversationRequest,
    DeletedMessages,
    MessageList,
    MessageOut,
    VerifiedPassword,
    VerifyPasswordRequest,
)
from app.services.chat import ChatService, TurnRequest, run_to_completion, saved_messages
from app.services.conversations import ConversationService
from app.services.images import encoded_upload

Password = Annotated[str | None, Parameter(header="X-Conversation-Password", required=False)]


class ConversationController(Controller):
    path = "/api/v1/conversations"
    tags = ("conversations",)

    @post("/", summary="Create a conversation (private when a password is given)", responses=errors(400, 409, 413))
    async def create(self, data: CreateConversationRequest, conversations: ConversationService) -> ConversationOut:
        row = await conversations.create(
            conversation_id=data.id, tab_name=data.tab_name, llm_model=data.llm_model, password=data.password
        )
        return ConversationOut.of(row, 0)

    @get("/", summary="List public conversations, most recently active first", responses=errors(400))
    async def list_public(
        self,
        conversations: ConversationService,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        offset: Annotated[int, Parameter(ge=0, le=2**62)] = 0,  # a 64-bit integer in every database
    ) -> ConversationPage:
        page = await conversations.list_public(limit=limit, offset=offset, with_latest_replies=True)
        items = [
            ConversationOut.of(row, page.message_counts[row.id], page.latest_replies.get(row.id))
            for row in page.conversations
        ]
        return ConversationPage(conversations=items, count=len(items), total=page.total, limit=limit, offset=offset)

    @get("/{conversation_id:str}", summary="Get one conversation", responses=errors(400, 401, 403, 404, 429))
    async def get_one(
        self, conversation_id: str, conversations: ConversationService, password: Password
    ) -> ConversationOut:
        row = await conversations.authorize(conversation_id, password)
        counts = await conversations.message_counts([row.id])
        latest = await conversations.latest_replies([row.id])
        return ConversationOut.of(row, counts[row.id], latest.get(row.id))

    @delete(
        "/{conversation_id:str}",
        summary="Delete a conversation with its messages and images",
        responses=errors(400, 401, 403, 404, 429),
    )
    async def delete_one(self, conversation_id: str, conversations: ConversationService, password: Password) -> None:
        await conversations.delete(conversation_id, password)

    @get(
        "/{conversation_id:str}/messages",
        summary="List a conversation's messages in order",
        responses=errors(400, 401, 403, 404, 429),
    )
    async def list_messages(
        self, conversation_id: str, conversations: ConversationService, password: Password
    ) -> MessageList:
        row = await conversations.authorize(conversation_id, password)
        messages = [MessageOut.of(message) for message in await conversations.list_messages(row.id)]
        return MessageList(conversation_id=row.id, messages=messages, count=len(messages))

    @post(
        "/{conversation_id:str}/messages",
        summary="Store a message; with `reply` or `stream`, run the chat turn",
        description="`stream: true` answers 200 with server-sent events: user_message, images, session, "
        "token, then terminated, end or error. `reply: true` answers 201 with the stored reply as JSON.",
        responses={
            201: body(MessageOut | ChatReply, "The stored message; with `reply`, the stored turn (ChatReply)"),
            200: event_stream("With `stream`: user_message, images, session, token, then terminated, end or error"),
            **errors(400, 401, 403, 404, 413, 429, 503),
        },
    )
    async def add_message(
        self,
        conversation_id: str,
        data: AddMessageRequest,
        conversations: ConversationService,
        chat: ChatService,
        password: Password,
    ) -> Response[Any]:
        is_turn = data.sender == "user" and (data.reply or data.stream)
        if data.images and not is_turn:
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                "images are sent with a user message that runs the turn (`reply` or `stream`)",
                details={"field": "images"},
            )
        if not is_turn:
            row = await conversations.authorize(conversation_id, password)
            saved = await conversations.add_message(row, text=data.text, sender=data.sender)
            return Response(MessageOut.of(saved), status_code=201)
        uploads = tuple(encoded_upload(value, index) for index, value in enumerate(data.images or ()))
        turn = TurnRequest(
            conversation_id=conversation_id,
            text=data.text,
            model=data.model,
            password=password,
            options=data.options.as_generation_options() if data.options else None,
            uploads=uploads,
        )
        if data.stream:
            return Stream(
                with_keepalive(typed_events(chat.turn(turn))),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
                status_code=200,
            )
        outcome = await run_to_completion(chat, turn)
        user_message, reply = await saved_messages(outcome)
        error = outcome.error
        return Response(
            ChatReply(
                user_message=MessageOut.of(user_message),
                reply=MessageOut.of(reply) if reply else None,
                model=outcome.model,
                response_time_ms=round(outcome.response_time_ms, 1),
                error=ErrorDetail(code=error.code, message=error.message, details=error.details) if error else None,
            ),
            status_code=201,
        )

    @delete(
        "/{conversation_id:str}/messages",
        status_code=200,
        summary="Delete the message `fromId` and every message after it",
        responses=errors(400, 401, 403, 404, 429),
    )
    async def delete_messages_from(
        self,
        conversation_id: str,
        conversations: ConversationService,
        password: Password,
        from_id: Annotated[int, Parameter(query="fromId", ge=1)],
    ) -> DeletedMessages:
        row = await conversations.authorize(conversation_id, password)
        deleted = await conversations.delete_messages_from(row, from_id)
        return DeletedMessages(conversation_id=row.id, deleted_count=deleted)

    @post(
        "/{conversation_id:str}/verify-password",
        status_code=200,
        summary="Check a private conversation's password",
        responses=errors(400, 401, 403, 404, 413, 429),
    )
    async def verify_password(
        self, conversation_id: str, data: VerifyPasswordRequest, conversations: ConversationService
    ) -> VerifiedPassword:
        row = await conversations.verify_password(conversation_id, data.password)
        return VerifiedPassword(conversation_id=row.id, tab_name=row.tab_name)
