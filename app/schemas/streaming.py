"""Wire shapes of `POST /api/terminate-stream`, the old web client's REST route (its own body shapes)."""

from __future__ import annotations

import msgspec


class TerminateResult(msgspec.Struct, rename="camel"):
    success: bool
    session_id: str
    message: str
    partial_response: str
    token_count: int
    final_status: str
    termination_reason: str
    saved_message_id: int | None
    timestamp: str


class TerminateRefusal(msgspec.Struct, rename="camel"):
    """The old contract's error body, with the service's stable `code` added."""

    success: bool
    error: str
    message: str
    code: str
    #: only when the session has already ended (`Session not terminable`)
    session_status: str | None = None


TERMINATE_REFUSALS: dict[int, str] = {
    400: "sessionId or conversationId is missing, or the session has already ended",
    401: "The conversation is private: its password is missing or not valid",
    403: "The session belongs to another conversation",
    404: "No such conversation or session",
    429: "Too many password attempts; try again later",
}
