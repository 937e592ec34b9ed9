"""How much one GraphQL operation may ask for: aliases, depth, fields, and fields that run bcrypt.

One HTTP request must not become hundreds of list queries or password checks (aliases make a field run
once per alias). The document is measured before anything runs; an operation over a limit is refused as
a whole with `extensions.code` INVALID_REQUEST and the limit it broke in `extensions.details`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension

from app.errors import ErrorCode

#: generous for any real client (the web client's largest operation has no alias and depth 3; the standard
#: introspection query GraphiQL sends is 15 deep, through `ofType`)
MAX_ALIASES = 15
MAX_DEPTH = 20
#: fields selected, counted through fragments (the introspection query selects about 220)
MAX_FIELDS = 500
#: the document's length in tokens, checked while parsing
MAX_TOKENS = 2_000
#: root fields that run bcrypt (a password check or hash) or a whole chat turn
PASSWORD_FIELDS = frozenset(
    {
        "conversation",
        "messages",
        "createConversation",
        "addMessage",
        "deleteConversation",
        "deleteMessagesAfter",
        "verifyPassword",
        "terminateStream",
    }
)
MAX_PASSWORD_FIELDS = 2


class _OverLimit(Exception):
    def __init__(self, limit: str, allowed: int, message: str) -> None:
        super().__init__(message)
        self.limit, self.allowed, self.message = limit, allowed, message


@dataclass
class _Tally:
    """What an operation asks for so far; raises `_OverLimit` at the first limit passed (so a fragment that
    spreads itself many times over is never walked to its full size)."""

    fields: int = 0
    aliases: int = 0
    password_fields: int = 0

    def add_field(self, node: FieldNode, depth: int, *, at_root: bool) -> None:
        self.fields += 1
        self.aliases += node.alias is not None
        self.password_fields += at_root and node.name.value in PASSWORD_FIELDS
        if self.fields > MAX_FIELDS:
            raise _OverLimit("fields", MAX_FIELDS, f"The query selects more than {MAX_FIELDS} fields")
        if self.aliases > MAX_ALIASES:
            raise _OverLimit("aliases", MAX_ALIASES, f"The query uses more than {MAX_ALIASES} aliases")
        if depth > MAX_DEPTH:
            raise _OverLimit("depth", MAX_DEPTH, f"The query is nested deeper than {MAX_DEPTH} levels")
        if self.password_fields > MAX_PASSWORD_FIELDS:
            raise _OverLimit(
                "passwordFields",
                MAX_PASSWORD_FIELDS,
                f"One request may check at most {MAX_PASSWORD_FIELDS} conversation passwords "
                "(conversation, messages and the mutations that take a password)",
            )


def _fields(
    selections: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode], visiting: frozenset[str]
) -> Iterator[tuple[FieldNode, frozenset[str]]]:
    """The fields of a selection set, fragments inlined, each with the fragments it sits in (a fragment
    inside itself is not followed: graphql-core refuses such a cycle, and it must not recurse here)."""
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            yield selection, visiting
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields(selection.selection_set, fragments, visiting)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in visiting:
                yield from _fields(fragment.selection_set, fragments, visiting | {name})


def _walk(
    selections: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    tally: _Tally,
    depth: int,
    visiting: frozenset[str] = frozenset(),
) -> None:
    for node, inside in _fields(selections, fragments, visiting):
        tally.add_field(node, depth, at_root=depth == 1)
        if node.selection_set is not None:
            _walk(node.selection_set, fragments, tally, depth + 1, inside)


class OperationLimits(ValidationRule):
    """Measures each operation of the document once, when validation starts."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        definitions = context.document.definitions
        fragments = {d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)}
        for operation in definitions:
            if not isinstance(operation, OperationDefinitionNode):
                continue
            try:
                _walk(operation.selection_set, fragments, _Tally(), depth=1)
            except _OverLimit as over:
                context.report_error(
                    GraphQLError(
                        over.message,
                        operation,
                        extensions={
                            "code": str(ErrorCode.INVALID_REQUEST),
                            "details": {"limit": over.limit, "allowed": over.allowed},
                        },
                    )
                )


def limit_extensions() -> list[SchemaExtension]:
    """The schema extensions that enforce the limits: the token count while parsing, the rest after."""
    return [MaxTokensLimiter(max_token_count=MAX_TOKENS), AddValidationRules([OperationLimits])]
