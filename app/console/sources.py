"""What the operator console reads besides the chat services, gathered in one typed value.

The configuration service, the memory guard (and through it the hf model pool) and the database ping come
from the composed services; `console_sources` is the console's one dependency provider for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar.datastructures import State

from app.config.service import ConfigurationService
from app.config.settings import Settings
from app.services.memory_guard import MemoryGuard
from inference.pool import ModelPool


@dataclass(frozen=True)
class ConsoleSources:
    settings: Settings
    config: ConfigurationService | None
    memory_guard: MemoryGuard | None
    database_ping: Callable[[], Awaitable[Any]] | None

    @property
    def hf_pool(self) -> ModelPool | None:
        return self.memory_guard.pool if self.memory_guard is not None else None


def console_sources(state: State) -> ConsoleSources:
    services = state.services
    return ConsoleSources(
        settings=services.config.settings,
        config=services.config_service,
        memory_guard=services.memory_guard,
        database_ping=services.ping_database,
    )
