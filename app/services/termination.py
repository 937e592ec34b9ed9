"""Stopping a stream on a user's request: the checks of the old `terminateStream`, in its order.

GraphQL and REST present the outcome differently (a response object versus status codes), so this
raises `ServiceError`s whose `details["kind"]` names which check failed. A wrong password is answered
as an unknown session is, so a guess with a made-up session id never learns whether the password was right.
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
        if reason_detail == "invalid_password":
            # answered as an unknown session is: a guess never learns a right password by its answer
            raise ServiceError(
                ErrorCode.NOT_FOUND, "Stream session not found", details={"kind": "session_not_found"}
            ) from exc
        not_found = exc.code is ErrorCode.NOT_FOUND
        exc.details["kind"] = reason_detail or ("conversation_not_found" if not_found else "refused")
        raise
    try:
        return await sessions.terminate(session_id, conversation_id, reason or "USER_REQUESTED")
    except ServiceError as exc:
        exc.details.setdefault("kind", "failed")  # the session checks name their own kind
        raise
