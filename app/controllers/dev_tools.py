"""The developer tools (Swagger UI for the REST API, GraphiQL for GraphQL) served from the package's own files.

The browser assets are vendored under `app/static/vendor/` (see `scripts/vendor.sh`), so the pages work on a
machine without internet access, and every page here sends a Content-Security-Policy that names no origin
but this service's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Router
from litestar.datastructures import ResponseHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, YamlRenderPlugin
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PATH = "/static"
#: own origin only; inline styles because React (Swagger UI, GraphiQL) sets `style` attributes
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; "
    "base-uri 'none'; form-action 'self'; object-src 'none'"
)
CSP_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}


def static_files() -> Router:
    """`/static/...`: the vendored assets, our own page scripts and the console's styles."""
    return create_static_files_router(
        path=STATIC_PATH, directories=[STATIC_DIR], name="static", include_in_schema=False
    )


def _page(title: str, head: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{title}</title>{head}</head><body>{body}</body></html>"
    ).encode()


class SelfHostedSwagger(OpenAPIRenderPlugin):
    """Swagger UI from `/static/vendor/swagger-ui-dist/`; its start-up script is a file too (no inline script)."""

    def __init__(self, path: str | list[str] = "/swagger") -> None:
        super().__init__(path=path, favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        vendor = f"{STATIC_PATH}/vendor/swagger-ui-dist"
        spec_url = self.get_openapi_json_route(request)
        return _page(
            "beth-chat-service API",
            f"<link rel='stylesheet' href='{vendor}/swagger-ui.css'>",
            "<div id='swagger-ui'></div>"
            f"<script src='{vendor}/swagger-ui-bundle.js'></script>"
            f"<script src='{STATIC_PATH}/devtools/swagger-init.js' data-spec-url='{spec_url}'></script>",
        )


def api_docs_config(*, title: str, version: str, path: str) -> OpenAPIConfig:
    """The OpenAPI document (`<path>/openapi.json`, `.yaml`) and Swagger UI (`<path>/swagger`, and `<path>` itself)."""
    router = Router(
        path,
        route_handlers=[],
        include_in_schema=False,
        response_headers=[ResponseHeader(name=k, value=v) for k, v in CSP_HEADERS.items()],
    )
    return OpenAPIConfig(
        title=title,
        version=version,
        path=path,
        openapi_router=router,
        render_plugins=[SelfHostedSwagger(path=["/swagger", "/"]), JsonRenderPlugin(), YamlRenderPlugin()],
    )


def graphiql_page(graphql_path: str) -> bytes:
    """GraphiQL (and the React it runs on) from `/static/vendor/`."""
    vendor = f"{STATIC_PATH}/vendor"
    return _page(
        "beth-chat-service GraphiQL",
        f"<link rel='stylesheet' href='{vendor}/graphiql/graphiql.min.css'>"
        f"<link rel='stylesheet' href='{STATIC_PATH}/devtools/graphiql.css'>",
        "<div id='graphiql'>Loading…</div>"
        f"<script src='{vendor}/react/react.production.min.js'></script>"
        f"<script src='{vendor}/react-dom/react-dom.production.min.js'></script>"
        f"<script src='{vendor}/graphiql/graphiql.min.js'></script>"
        f"<script src='{STATIC_PATH}/devtools/graphiql-init.js' data-endpoint='{graphql_path}'></script>",
    )
