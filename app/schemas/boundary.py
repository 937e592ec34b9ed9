"""The input rules every entry point shares: lengths and no NUL (no database column can hold one).

REST Structs and parameters use the Annotated types, so msgspec refuses bad input before a handler runs;
GraphQL resolvers and the legacy form route, which msgspec does not decode, pass their fields through `check`.
These rules are for what gets stored: a text that is only looked up (an id, a filter) is never refused, it finds
nothing (`app.db.text.equals_text`), so an unknown id is "not found" however it is spelled.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from app.errors import ErrorCode, ServiceError

MAX_ID_CHARS = 255
MAX_NAME_CHARS = 255
MAX_MESSAGE_CHARS = 1_000_000
#: bcrypt reads 72 bytes; a longer password would be cut silently (the service counts bytes, not characters)
MAX_PASSWORD_CHARS = 72

#: any text without a NUL character
NO_NUL = "^[^\x00]*$"

Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=NO_NUL)]
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS, pattern=NO_NUL)]
RequiredName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS, pattern=NO_NUL)]
MessageText = Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_CHARS, pattern=NO_NUL)]
PasswordText = Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD_CHARS, pattern=NO_NUL)]


def check(field: str, value: str | None, rule: Any) -> str | None:
    """`value` if it follows `rule` (one of the types above), else INVALID_REQUEST naming the field."""
    if value is None or value == "":
        return value  # presence is each entry point's own rule (the old client's messages differ)
    try:
        return msgspec.convert(value, rule)
    except msgspec.ValidationError as exc:
        limit = rule.__metadata__[0].max_length
        if "\x00" in value:
            problem = "contains a NUL character"
        elif limit is not None and len(value) > limit:
            problem = f"is longer than {limit} characters"
        else:
            problem = str(exc)
        raise ServiceError(ErrorCode.INVALID_REQUEST, f"{field} {problem}", details={"field": field}) from None
