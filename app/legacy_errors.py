"""The old web client's error texts, in one place: it shows or matches these words, so they stay as they were.

Every failure also carries a stable `code` (app.errors.ErrorCode); these tables only choose the legacy
words for it, keyed by the `kind`/`reason` detail the services attach. docs/compatibility.md lists them.
"""

from __future__ import annotations

# The stream's `error` event text for a refusal whose reason the client recognises by its words.
SSE_ERROR_TEXTS: dict[str, str] = {
    "password_required": "Password required for private conversation",
    "invalid_password": "Invalid password for private conversation",
}

# POST /api/terminate-stream: check kind -> (HTTP status, the body's `error` and `message`).
REST_TERMINATE_FAILURES: dict[str, tuple[int, dict[str, str]]] = {
    "missing": (
        400,
        {
            "error": "Missing required parameters: sessionId and conversationId",
            "message": "Session ID and conversation ID are required",
        },
    ),
    "conversation_not_found": (
        404,
        {"error": "Conversation not found", "message": "The specified conversation does not exist"},
    ),
    "password_required": (
        401,
        {"error": "Password required", "message": "This conversation is private and requires a password"},
    ),
    "session_not_found": (
        404,
        {"error": "Session not found", "message": "The specified stream session does not exist"},
    ),
    "mismatch": (
        403,
        {
            "error": "Session conversation mismatch",
            "message": "The session does not belong to the specified conversation",
        },
    ),
    "not_terminable": (400, {"error": "Session not terminable"}),
}

# terminateStream's failures in the old service's words: check kind -> (message, error). A wrong password
# is answered as an unknown session (see `terminate_stream`).
GRAPHQL_TERMINATE_FAILURES: dict[str, tuple[str, str]] = {
    "missing": ("Session ID and conversation ID are required", "Missing required parameters"),
    "conversation_not_found": ("Conversation not found", "Conversation not found"),
    "password_required": ("Password required for private conversation", "Password required for private conversation"),
    "session_not_found": ("Stream session not found", "Session not found"),
    "mismatch": ("Session does not belong to the specified conversation", "Session conversation mismatch"),
}

#: terminateStream's `error` when the session has already ended
GRAPHQL_NOT_TERMINABLE = "Session not terminable state"
#: terminateStream's `message` for a failure the old service did not name
GRAPHQL_TERMINATE_UNKNOWN = "An error occurred while terminating the stream"
