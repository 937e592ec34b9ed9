"""How the REST API describes itself in `GET /api/v1/schema`, so that the document matches the wire.

Litestar documents errors as its own `{status_code, detail, extra}`, which this service never sends:
`errors(...)` documents the statuses a route can give with the one error body, `StrictStructSchemaPlugin`
marks bodies that refuse unknown fields, and the `*Operation` classes document the bodies of routes that
read the request themselves (the old web client's routes and the TOML-or-JSON config routes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Reference, RequestBody, Schema

from app.schemas.common import ErrorResponse
from app.schemas.openai_api import OpenAIErrorBody

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition

SSE = "text/event-stream"

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The request is not valid (INVALID_REQUEST, CONTEXT_LENGTH_EXCEEDED, CAPABILITY_UNSUPPORTED)",
    401: "A password or token is required, or is not valid (UNAUTHORIZED)",
    403: "The password or token is not valid, or the client may not use this route (UNAUTHORIZED)",
    404: "Not found (NOT_FOUND, MODEL_NOT_FOUND)",
    409: "Conflicts with what is stored or set elsewhere (CONFLICT)",
    410: "The image has expired (NOT_FOUND)",
    413: "The request body is too large (PAYLOAD_TOO_LARGE)",
    415: "The request body's content type is not one this route reads (INVALID_REQUEST)",
    429: "Too many attempts or requests; try again later (OVERLOADED)",
    500: "The model could not be loaded (MODEL_LOAD_FAILED)",
    502: "The model failed (GENERATION_FAILED)",
    503: "The model provider is not available (PROVIDER_UNAVAILABLE)",
    504: "The model provider did not answer in time (TIMEOUT)",
    507: "Not enough memory to load the model (MEMORY_EXCEEDED)",
}


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    """The error responses a route can give, each with the service's one error body."""
    return {
        status: ResponseSpec(
            data_container=ErrorResponse, description=ERROR_DESCRIPTIONS[status], generate_examples=False
        )
        for status in statuses
    }


class ServerSentEvent(msgspec.Struct):
    """One event of a `text/event-stream` answer, as an EventSource client reads it."""

    #: a JSON text on one line
    data: str
    #: the event's name; unnamed events are `message` events
    event: str = "message"


def event_stream(description: str) -> ResponseSpec:
    """A `text/event-stream` answer: the schema describes each event (OpenAPI 3.1's reading of a stream)."""
    return ResponseSpec(
        data_container=ServerSentEvent, description=description, media_type=SSE, generate_examples=False
    )


def body(data_container: Any, description: str, media_type: str = "application/json") -> ResponseSpec:
    """A success (or legacy error) answer whose shape the handler's return annotation does not say."""
    return ResponseSpec(
        data_container=data_container, description=description, media_type=media_type, generate_examples=False
    )


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Struct schemas as Litestar makes them, plus `additionalProperties: false` where unknown fields are refused.

    Litestar's Struct plugin has no public name; app plugins are asked before Litestar's own, so this one wins.
    """

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if field_definition.type_.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        return schema


def _string(description: str = "", *, min_length: int | None = None) -> Schema:
    return Schema(type=OpenAPIType.STRING, description=description or None, min_length=min_length)


def _object(properties: dict[str, Schema | Reference], required: list[str] | None = None) -> Schema:
    return Schema(type=OpenAPIType.OBJECT, properties=properties, required=required or None)


_TURN_FIELDS = {
    "model": _string("The model to answer with", min_length=1),
    "message": _string("The user's message", min_length=1),
    "conversationId": _string(min_length=1),
    "password": _string("A private conversation's password"),
}
_TURN_REQUIRED = ["conversationId", "message", "model"]
_IMAGE_FILE = Schema(type=OpenAPIType.STRING, content_media_type="application/octet-stream")


@dataclass
class StreamMessageOperation(Operation):
    """`POST /api/stream-message` reads JSON, or multipart form fields with `images` files."""

    def __post_init__(self) -> None:
        options_text = _string("Generation options for this reply: a ReplyOptions object as JSON text")
        multipart = _object(
            {**_TURN_FIELDS, "options": options_text, "images": Schema(type=OpenAPIType.ARRAY, items=_IMAGE_FILE)},
            _TURN_REQUIRED,
        )
        json_fields = {**_TURN_FIELDS, "options": Reference("#/components/schemas/ReplyOptions")}
        self.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(schema=_object(json_fields, _TURN_REQUIRED)),
                "multipart/form-data": OpenAPIMediaType(schema=multipart),
            },
        )


@dataclass
class TerminateStreamOperation(Operation):
    """`POST /api/terminate-stream` reads a JSON object; fields that are not strings count as missing."""

    def __post_init__(self) -> None:
        fields = {
            "sessionId": _string("The `session` event's id"),
            "conversationId": _string(),
            "password": _string("A private conversation's password"),
            "reason": _string("Why it was stopped (default USER_REQUESTED)"),
        }
        self.request_body = RequestBody(
            required=True,
            content={"application/json": OpenAPIMediaType(schema=_object(fields, ["conversationId", "sessionId"]))},
        )


_TOML = OpenAPIMediaType(schema=_string("A config file's TOML text"))


@dataclass
class ConfigDocumentOperation(Operation):
    """`POST /api/v1/config/validate` reads a config file as TOML text, or the same as a JSON object."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            content={
                "application/toml": _TOML,
                "application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT)),
            },
        )


@dataclass
class ConfigBackupOperation(Operation):
    """`POST /api/v1/config/restore` reads a backup as `GET /api/v1/config/backup` wrote it (TOML)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=True, content={"application/toml": _TOML})


OPENAI_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "invalid_request_error: the request is not valid or asks for what this API does not do",
    401: "invalid_api_key: no API key, or not one of OPENAI_API_KEYS",
    403: "permission_error: without API keys, a client that is not loopback or a request from another origin",
    404: "model_not_found: no such model",
    413: "The request body is too large",
    500: "server_error: the model could not be loaded, or the server failed",
    502: "server_error: the model failed before its first token",
    503: "server_error: the model's provider is unavailable, overloaded or out of memory",
    504: "server_error: no reply within the reply deadline (stream_timeout_s)",
}


def openai_api_errors(*statuses: int) -> dict[int, ResponseSpec]:
    """The error responses of an OpenAI-compatible route, each with OpenAI's error body."""
    return {
        status: ResponseSpec(
            data_container=OpenAIErrorBody, description=OPENAI_ERROR_DESCRIPTIONS[status], generate_examples=False
        )
        for status in statuses
    }


@dataclass
class ChatCompletionsOperation(Operation):
    """`POST /v1/chat/completions` answers 200 with JSON, or with `stream` as server-sent events."""

    def __post_init__(self) -> None:
        ok = self.responses.get("200") if self.responses else None
        if ok is not None and not isinstance(ok, Reference) and ok.content is not None:
            event = _object({"data": _string("A chat.completion.chunk (or error) as JSON, then `[DONE]`")}, ["data"])
            ok.content[SSE] = OpenAPIMediaType(schema=event)
