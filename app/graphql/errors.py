"""What GraphQL errors look like to a client and in the log.

Every error carries `extensions.code`: a `ServiceError`'s own code, INVALID_REQUEST for a document or
variable the client got wrong (syntax, validation, a value of the wrong type), INTERNAL_ERROR for a
failure of ours, which is masked. The log never gets an error's text for client mistakes: graphql-core
quotes the document and the variables in it (a mistyped password, a message body).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import MaskErrors

from app.errors import ErrorCode, ServiceError

log = logging.getLogger(__name__)


def is_unexpected(error: GraphQLError) -> bool:
    """A failure of ours, not of the request: anything but a `ServiceError` or graphql-core's own refusals
    (a variable's value coerced to its type raises a GraphQLError inside execution)."""
    original = error.original_error
    return original is not None and not isinstance(original, ServiceError | GraphQLError)


def _code(error: GraphQLError) -> str:
    code = (error.extensions or {}).get("code")
    if code:
        return str(code)
    return str(ErrorCode.INTERNAL_ERROR if is_unexpected(error) else ErrorCode.INVALID_REQUEST)


class CodedErrors(MaskErrors):
    """Masks unexpected errors (no internals reach a client) and gives every error a stable code."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": str(ErrorCode.INTERNAL_ERROR)}
        return masked

    def on_operation(self) -> Iterator[None]:
        yield from super().on_operation()
        result = self.execution_context.result
        for error in getattr(result, "errors", None) or []:
            if not (error.extensions or {}).get("code"):
                error.extensions = {**(error.extensions or {}), "code": _code(error)}


def _kind(error: GraphQLError) -> str:
    if isinstance(error, GraphQLSyntaxError):
        return "syntax error"
    if isinstance(error.original_error, GraphQLError):
        return "invalid value"
    if error.original_error is None and error.path is None:
        return "invalid document"
    return "refused"


def log_errors(errors: list[GraphQLError]) -> None:
    """Client mistakes at INFO, with their code, kind and place only; failures of ours at ERROR, with the
    cause (the traceback names our code, not the request)."""
    for error in errors:
        if is_unexpected(error):
            log.error("graphql resolver failed", exc_info=error.original_error)
            continue
        where = ", ".join(f"{loc.line}:{loc.column}" for loc in error.locations or [])
        log.info("graphql request refused: %s (%s) at %s", _code(error), _kind(error), where or "-")
