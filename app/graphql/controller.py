"""The `/graphql` route: Strawberry's Litestar controller, reading request bodies as strictly as REST does."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from cross_web import HTTPException
from litestar import Request, Response
from strawberry.http.async_base_view import AsyncHTTPRequestAdapter
from strawberry.http.parse_content_type import parse_content_type
from strawberry.litestar import make_graphql_controller

from app.controllers.dev_tools import CSP_HEADERS, graphiql_page
from app.errors import ErrorCode
from app.graphql.context import provide_graphql_context
from app.graphql.schema import schema

_StrawberryController = make_graphql_controller(
    schema, path="/graphql", context_getter=provide_graphql_context, graphql_ide="graphiql"
)


class GraphQLController(_StrawberryController):  # type: ignore[misc,valid-type]
    """Decodes bodies with msgspec, like the REST routes: `json.loads` accepts a lone surrogate (`"\\ud800"`),
    which no database can store, so it failed later inside a resolver as an unexpected error; here it is
    malformed JSON (400), as it is for REST. A request refused before it runs is answered as GraphQL
    errors with a code, not as Strawberry's plain text."""

    # GraphQL describes itself (introspection); the REST OpenAPI document leaves it out
    include_in_schema = False

    def decode_json(self, data: str | bytes) -> object:
        try:
            return msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            text = data if isinstance(data, str) else data.decode(errors="replace")
            raise json.JSONDecodeError(str(exc), text, 0) from exc

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> Any:
        """Strawberry reads fields of whatever JSON value it gets; a number, string, `null` or `true` as the
        whole body crashed it (a 500 and a logged traceback) instead of being a bad request."""
        content_type, _ = parse_content_type(request.content_type or "")
        if request.method != "GET" and "application/json" in content_type:
            body = self.parse_json(await request.get_body())  # the body is read once and cached
            if not isinstance(body, dict | list):
                raise HTTPException(400, "The GraphQL request body must be a JSON object with a `query`")
        return await super().parse_http_body(request)

    async def render_graphql_ide(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Our own GraphiQL page, from the package's files: Strawberry's loads it from a CDN."""
        return Response(graphiql_page("/graphql"), media_type="text/html", headers=CSP_HEADERS)

    async def execute_request(self, request: Request[Any, Any, Any], context: Any, root_value: Any) -> Response[Any]:
        try:
            return await self.run(request, context=context, root_value=root_value)
        except HTTPException as exc:
            code = ErrorCode.INVALID_REQUEST if exc.status_code < 500 else ErrorCode.INTERNAL_ERROR
            error = {"message": exc.reason, "extensions": {"code": str(code)}}
            return Response({"errors": [error]}, status_code=exc.status_code)
