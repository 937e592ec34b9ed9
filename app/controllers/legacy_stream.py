"""The old web client's streaming routes: `POST /api/stream-message` (SSE) and `POST /api/terminate-stream`.

The SSE response is always 200 with `text/event-stream`, errors included, as the client expects;
every error event also carries a stable `code`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException
from litestar.response import Stream

from app.controllers.sse import SSE_HEADERS, sse_event, with_keepalive
from app.errors import ErrorCode, ServiceError
from app.http_errors import retry_after, unexpected_failure
from app.legacy_errors import REST_TERMINATE_FAILURES, SSE_ERROR_TEXTS
from app.openapi import StreamMessageOperation, TerminateStreamOperation, body, errors, event_stream
from app.schemas.boundary import MessageText, Name, check
from app.schemas.conversations import reply_options
from app.schemas.streaming import TERMINATE_REFUSALS, TerminateRefusal, TerminateResult
from app.services.chat import ChatService, TurnRequest
from app.services.chat_events import Completed, Failed, ImagesProcessed, SessionStarted, Terminated, Token, TurnEvent
from app.services.conversations import ConversationService
from app.services.images import Upload
from app.services.streams import StreamSessions
from app.services.termination import terminate_stream

log = logging.getLogger(__name__)


def render_legacy(event: TurnEvent) -> bytes | None:
    """The old framing: unnamed token events, named session/images/terminated/end/error events (`end` names
    the provider and model that answered, and `fallbackFrom`)."""
    match event:
        case Token(text):
            return sse_event(None, {"token": text})
        case SessionStarted(session_id=session_id):
            return sse_event("session", {"sessionId": session_id})
        case ImagesProcessed(processed, warnings, images):
            return sse_event("images", {"processed": processed, "warnings": warnings, "images": images})
        case Terminated(session_id, partial, count, reason, _):
            payload = {"sessionId": session_id, "partialResponse": partial, "tokenCount": count, "reason": reason}
            return sse_event("terminated", payload)
        case Completed(model=model, provider=provider, fallback_from=fallback_from):
            # additions the old client ignores: it only looks at the event's name
            return sse_event("end", {"provider": provider, "model": model, "fallbackFrom": fallback_from})
        case Failed(code, message, details):
            payload: dict[str, Any] = {"error": message, "code": code}
            if details.get("problems"):
                payload["details"] = details["problems"]
            return sse_event("error", payload)
    return None


def failure_of(error: ServiceError) -> Failed:
    reason = error.details.get("reason")
    legacy = SSE_ERROR_TEXTS.get(str(reason)) if reason else None
    return Failed(str(error.code), legacy or error.message, error.details)


async def read_turn_request(request: Request[Any, Any, Any]) -> TurnRequest:
    """JSON `{model, message, conversationId, password?, options?}` or the same as multipart with `images`
    files (`options`, which the old client never sends, is then a JSON text)."""
    content_type = request.headers.get("content-type", "")
    if "multipart/form-data" in content_type:
        try:
            form = await request.form()
        except UnicodeDecodeError as exc:  # a text field in another encoding than the UTF-8 it claims
            raise _multipart_error("A form field is not UTF-8 text") from exc
        except ClientException as exc:
            if exc.status_code != 400:  # a body over the size limit keeps its own status
                raise
            # a bad or missing boundary, or a truncated body: an error event like every other refusal
            raise _multipart_error(str(exc.detail)) from exc
        fields = {key: form.get(key) for key in ("model", "message", "conversationId", "password", "options")}
        uploads = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "images":
                    raise _multipart_error("Unexpected field")
                uploads.append(Upload(value.filename or "", value.content_type or "", await value.read()))
    else:
        try:
            body = await request.json()
        except Exception as exc:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "The request body is not valid JSON") from exc
        fields = body if isinstance(body, dict) else {}
        uploads = []
    values = {key: fields.get(key) for key in ("model", "message", "conversationId", "password")}
    if not all(isinstance(values[key], str) and values[key] for key in ("model", "message", "conversationId")):
        raise ServiceError(ErrorCode.INVALID_REQUEST, "Missing model, message, or conversationId")
    if values["password"] is not None and not isinstance(values["password"], str):
        raise ServiceError(ErrorCode.INVALID_REQUEST, "password must be a string")
    check("text", values["message"], MessageText)
    check("model", values["model"], Name)
    options = fields.get("options")
    return TurnRequest(
        conversation_id=values["conversationId"],
        text=values["message"],
        model=values["model"],
        password=values["password"],
        options=None if options is None else reply_options(_json_text(options)),
        uploads=tuple(uploads),
    )


def _json_text(value: object) -> object:
    """A form field's JSON text decoded (a JSON body's value is already decoded)."""
    if not isinstance(value, str):
        return value
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, "Invalid options: not a JSON object", details={"field": "options"}
        ) from None


def _multipart_error(problem: str) -> ServiceError:
    """The old route's refusal of a form it cannot use, with what was wrong."""
    return ServiceError(
        ErrorCode.INVALID_REQUEST, "Error processing multipart request", details={"problems": [problem]}
    )


class StreamController(Controller):
    tags = ("chat (web client compatible)",)

    @post(
        "/api/stream-message",
        status_code=200,
        summary="Stream a reply as server-sent events (old web client protocol)",
        description="Always 200 with server-sent events, refusals included: unnamed token events, then "
        "session, images, terminated, end or error (with a stable `code`).",
        operation_class=StreamMessageOperation,
        responses={200: event_stream("The reply as server-sent events, or an error event"), **errors(400, 413)},
    )
    async def stream_message(self, request: Request[Any, Any, Any], chat: ChatService) -> Stream:
        # The body is read here, not inside the stream: once the response has started it can no longer be.
        try:
            turn: TurnRequest | ServiceError = await read_turn_request(request)
        except ServiceError as exc:
            turn = exc

        async def frames() -> AsyncIterator[bytes]:
            try:
                if isinstance(turn, ServiceError):
                    raise turn
                async for event in chat.turn(turn):
                    frame = render_legacy(event)
                    if frame is not None:
                        yield frame
            except ServiceError as exc:
                yield render_legacy(failure_of(exc)) or b""
            except Exception as exc:  # the stream has started: the client must hear how it ended
                log.error("the stream of %s failed", request.url.path, exc_info=exc)
                yield render_legacy(failure_of(unexpected_failure())) or b""

        return Stream(with_keepalive(frames()), media_type="text/event-stream", headers=SSE_HEADERS)

    @post(
        "/api/terminate-stream",
        status_code=200,
        summary="Stop a stream (old REST contract: status codes and bodies)",
        operation_class=TerminateStreamOperation,
        responses={
            200: body(TerminateResult, "The stream stopped; its partial reply is saved"),
            **{status: body(TerminateRefusal, description) for status, description in TERMINATE_REFUSALS.items()},
            **errors(413),
        },
    )
    async def terminate(
        self,
        request: Request[Any, Any, Any],
        conversations: ConversationService,
        sessions: StreamSessions,
    ) -> Response[dict[str, Any]]:
        try:
            body = await request.json()
        except Exception:
            body = None
        body = body if isinstance(body, dict) else {}
        strings = {
            k: body.get(k) if isinstance(body.get(k), str) else None
            for k in ("sessionId", "conversationId", "password", "reason")
        }
        try:
            result = await terminate_stream(
                conversations,
                sessions,
                session_id=strings["sessionId"],
                conversation_id=strings["conversationId"],
                password=strings["password"],
                reason=strings["reason"],
            )
        except ServiceError as exc:
            status, payload = REST_TERMINATE_FAILURES.get(
                str(exc.details.get("kind")), (exc.status, {"error": exc.message, "message": exc.message})
            )
            if exc.details.get("kind") == "not_terminable":
                payload = {**payload, "message": exc.message, "sessionStatus": exc.details.get("sessionStatus")}
            return Response(
                {"success": False, **payload, "code": str(exc.code)}, status_code=status, headers=retry_after(exc)
            )
        return Response(
            {
                "success": True,
                "sessionId": result.session_id,
                "message": "Stream terminated successfully",
                "partialResponse": result.partial_response,
                "tokenCount": result.token_count,
                "finalStatus": result.final_status,
                "terminationReason": result.reason,
                "savedMessageId": result.saved_message_id,
                "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            },
            status_code=200,
        )
