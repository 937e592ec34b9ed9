"""Wire shapes of the provider configurations (`/api/v1/providers/<name>/config`), camelCase like every REST answer."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from app.schemas.config import ProviderTableOut, RevisionOut


class ProviderConfigIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A provider table, as a `[providers.<name>]` table of the config file holds it.

    The values are checked by the config file's own rules, not by their JSON types alone, so that a bad one is
    refused as it would be in the file: INVALID_REQUEST naming `providers.<name>.<key>`, its value and why.
    Which keys a type takes is the file's rule too (`host` for `ollama`, `baseUrl` for `openai`)."""

    type: Annotated[Any, msgspec.Meta(description="The provider type: `ollama` or `openai`")] = msgspec.UNSET
    host: Annotated[Any, msgspec.Meta(description="An Ollama provider's URL (`http://10.0.0.5:11434`)")] = msgspec.UNSET
    base_url: Annotated[Any, msgspec.Meta(description="An OpenAI-compatible provider's base URL")] = msgspec.UNSET
    api_key: Annotated[
        Any,
        msgspec.Meta(
            description="An OpenAI-compatible provider's key, or `env:NAME`; a key is never shown again (`***`)"
        ),
    ] = msgspec.UNSET
    models: Annotated[Any, msgspec.Meta(description="The models an OpenAI-compatible provider offers")] = msgspec.UNSET
    enabled: Annotated[Any, msgspec.Meta(description="false: configured, but not built nor listed (default true)")] = (
        msgspec.UNSET
    )
    timeout_s: Annotated[Any, msgspec.Meta(description="Longest wait for the next chunk, in seconds")] = msgspec.UNSET
    num_ctx: Annotated[Any, msgspec.Meta(description="An Ollama provider's context length limit")] = msgspec.UNSET
    keep_alive_s: Annotated[
        Any, msgspec.Meta(description="How long an Ollama provider keeps a model loaded after a turn, in seconds")
    ] = msgspec.UNSET

    def table(self) -> dict[str, Any]:
        """The keys that were given (a JSON null counts as not given), under their TOML names."""
        values = {field: getattr(self, field) for field in self.__struct_fields__}
        return {key: value for key, value in values.items() if value is not msgspec.UNSET and value is not None}


class ProviderConfigsOut(msgspec.Struct, rename="camel"):
    """Every provider table in effect, by provider name, as `GET /api/v1/config` shows them."""

    providers: dict[str, ProviderTableOut]
    count: int


class ProviderConfigChangeOut(msgspec.Struct, rename="camel"):
    """The answer to PUT and DELETE: the stored revision, and the provider's table now in effect (after a DELETE,
    the config file's table of that name, or none)."""

    revision: RevisionOut
    provider: ProviderTableOut | None
