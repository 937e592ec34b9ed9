"""`ModelProvider`: the one interface the chat turn, the catalog and the APIs use for every backend.

A provider raises `app.errors.ServiceError` with a code from the one error set. Streaming is an
async iterator: the consumer stops a generation by closing it (`aclose()`), and the provider must
then stop its upstream work (close the HTTP stream, cancel the decode loop) promptly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable

from app.errors import ErrorCode, ServiceError
from app.providers.types import ChatChunk, ChatRequest, ModelInfo, ProviderHealth


class ModelProvider(ABC):
    #: the provider's name (`hf`, `ollama`, `openai`), shown in model info and usage
    name: str
    #: the routing prefix clients write before a model name, e.g. `hf/`
    prefix: str

    async def initialize(self) -> None:
        """Open clients, start background work. Must not fail because a backend is down."""
        return None

    async def shutdown(self) -> None:
        """Release everything `initialize` opened."""
        return None

    @abstractmethod
    async def health_check(self) -> ProviderHealth: ...

    @abstractmethod
    async def list_models(self) -> list[ModelInfo]: ...

    async def model_info(self, native_name: str) -> ModelInfo:
        for model in await self.list_models():
            if model.native_name == native_name:
                return model
        raise ServiceError(
            ErrorCode.MODEL_NOT_FOUND,
            f"Model {self.prefix}{native_name} is not available from {self.name}",
            details={"model": f"{self.prefix}{native_name}", "provider": self.name},
        )

    @abstractmethod
    def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Text deltas, then one chunk with `done=True`, usage and finish reason."""

    async def token_counter(self, native_name: str) -> Callable[[str], int] | None:
        """A function that counts a text's tokens exactly, when this provider holds the model's tokenizer;
        None lets the chat turn estimate instead."""
        return None

    async def load(self, native_name: str) -> None:
        raise ServiceError(ErrorCode.CAPABILITY_UNSUPPORTED, f"{self.name} models cannot be loaded explicitly")

    async def unload(self, native_name: str) -> None:
        raise ServiceError(ErrorCode.CAPABILITY_UNSUPPORTED, f"{self.name} models cannot be unloaded explicitly")
