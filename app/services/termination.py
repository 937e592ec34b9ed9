"""Stopping a stream on a user's request: the checks of the old `terminateStream`, in its order.

GraphQL and REST present the outcome differently (a response object versus status codes), so this
raises `ServiceError`s whose `details["kind"]` names which check failed.
"""

from __future__ import annotations

from app.errors import ErrorCode, ServiceError
from app.services.conversations import ConversationService
from app.services.streams import StreamSessions, Termination


async def terminate_stream(
    conversations: ConversationService,
    sessions: StreamSessions,
    *,
    session_id: str | None,
    conversation_id: str | None,
    password: str | None,
    reason: str | None,
) -> Termination:
    if not session_id or not conversation_id:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, "Session ID and conversation ID are required", details={"kind": "missing"}
        )
    try:
        await conversations.authorize(conversation_id, password)
    except ServiceError as exc:
        reason_detail = exc.details.get("reason")
        exc.details["kind"] = reason_detail or "conversation_not_found"
        raise
    try:
        return await sessions.terminate(session_id, conversation_id, reason or "USER_REQUESTED")
    except ServiceError as exc:
        exc.details.setdefault("kind", "failed")  # the session checks name their own kind
        raise
