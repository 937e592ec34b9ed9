"""What the operator console reads that is not (yet) a Litestar dependency of its own, gathered in one place.

The configuration service, the memory guard, the hf model pool and the database ping live on the
application's state; `console_sources` is the one function that looks them up, so the console's
handlers take a typed `ConsoleSources` instead of reaching into `app.state` themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar.datastructures import State

from app.services.config import ConfigurationService
from app.services.memory_guard import MemoryGuard
from app.settings import Settings
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
    return ConsoleSources(
        settings=state.settings,
        config=getattr(state, "config", None),
        memory_guard=getattr(state, "memory_guard", None),
        database_ping=getattr(state, "database_ping", None),
    )
