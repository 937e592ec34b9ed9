"""The `/graphql` route: Strawberry's Litestar controller, reading request bodies as strictly as REST does."""

from __future__ import annotations

import json

import msgspec
from strawberry.litestar import make_graphql_controller

from app.graphql.context import provide_graphql_context
from app.graphql.schema import schema

_StrawberryController = make_graphql_controller(
    schema, path="/graphql", context_getter=provide_graphql_context, graphql_ide="graphiql"
)


class GraphQLController(_StrawberryController):  # type: ignore[misc,valid-type]
    """Decodes bodies with msgspec, like the REST routes: `json.loads` accepts a lone surrogate (`"\\ud800"`),
    which no database can store, so it failed later inside a resolver as an unexpected error; here it is
    malformed JSON (400), as it is for REST."""

    # GraphQL describes itself (introspection); the REST OpenAPI document leaves it out
    include_in_schema = False

    def decode_json(self, data: str | bytes) -> object:
        try:
            return msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            text = data if isinstance(data, str) else data.decode(errors="replace")
            raise json.JSONDecodeError(str(exc), text, 0) from exc
