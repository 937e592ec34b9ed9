"""`RoutedStream`: the chunks of one chat reply, with which provider and model produced them.

The registry has already pulled the first chunk (that is where fallback ends); this object hands it out
first, then relays the rest, counts provider failures in the middle of a reply against the provider's
circuit, and stops the upstream generation on `aclose()`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from app.errors import ErrorCode, ServiceError
from app.providers.circuit import CircuitBreaker, counts_as_failure
from app.providers.types import ChatChunk

log = logging.getLogger(__name__)


class RoutedStream:
    """An async iterator of ChatChunk; `model` is the full name (`hf/...`, `ollama/...`) that answered."""

    def __init__(
        self,
        *,
        provider: str,
        model: str,
        native_name: str,
        first: ChatChunk,
        rest: AsyncIterator[ChatChunk],
        breaker: CircuitBreaker,
        fallback_from: str | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.native_name = native_name
        self.fallback_from = fallback_from
        self._first: ChatChunk | None = first
        self._rest = rest
        self._breaker = breaker
        self._finished = first.done

    def __aiter__(self) -> RoutedStream:
        return self

    async def __anext__(self) -> ChatChunk:
        if self._first is not None:
            chunk, self._first = self._first, None
            return chunk
        if self._finished:
            raise StopAsyncIteration
        try:
            chunk = await anext(self._rest)
        except StopAsyncIteration:
            self._finished = True
            raise
        except ServiceError as exc:
            self._finished = True
            if counts_as_failure(exc):
                self._breaker.record_failure(exc)
            raise
        except Exception as exc:
            self._finished = True
            self._breaker.record_failure(exc)
            log.error("provider %s failed in the middle of a reply from %s", self.provider, self.model, exc_info=exc)
            raise ServiceError(
                ErrorCode.GENERATION_FAILED,
                f"{self.model} failed in the middle of the reply",
                details={"provider": self.provider, "model": self.model},
            ) from exc
        if chunk.done:
            self._finished = True
        return chunk

    async def aclose(self) -> None:
        """Stop the generation upstream (closes the provider's stream); safe to call more than once."""
        self._finished = True
        close = getattr(self._rest, "aclose", None)
        if close is not None:
            await close()
