"""Memory safeguards: watch the process's resident memory and the system's available memory.

The model pool already refuses a load that cannot fit its budget (MEMORY_EXCEEDED, nothing loaded).
This guard adds the other half: when the machine runs short of memory (`MEMORY_MIN_AVAILABLE_MB`), it
unloads the hf models nobody is using, least recently used first, until there is room again. Each
unload is logged and counted; the readings are exported as metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inference.pool import ModelPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryReading:
    process_rss_bytes: int | None
    system_available_bytes: int | None


def _kib_field(path: Path, name: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_memory() -> MemoryReading:
    """From /proc on Linux; None where the platform does not tell."""
    return MemoryReading(
        process_rss_bytes=_kib_field(Path("/proc/self/status"), "VmRSS"),
        system_available_bytes=_kib_field(Path("/proc/meminfo"), "MemAvailable"),
    )


class MemoryGuard:
    def __init__(self, pool_of: Callable[[], ModelPool | None], *, min_available_bytes: int, interval_s: float) -> None:
        #: the hf pool in service now (a config change that re-points the models directory replaces it)
        self.pool_of = pool_of
        self.min_available_bytes = min_available_bytes
        self.interval_s = interval_s
        self.last = MemoryReading(None, None)
        self.pressure_unloads = 0

    @property
    def pool(self) -> ModelPool | None:
        return self.pool_of()

    async def check(self) -> list[str]:
        """One look; under pressure, unload idle models until enough is available. Returns what was unloaded."""
        self.last = await asyncio.to_thread(read_memory)
        available = self.last.system_available_bytes
        if self.pool is None or available is None or available >= self.min_available_bytes:
            return []
        unloaded: list[str] = []
        for model in sorted((m for m in self.pool.loaded() if m.leases == 0), key=lambda m: -m.idle_s):
            if await self.pool.unload(model.alias, reason="memory_pressure"):
                unloaded.append(model.alias)
                self.pressure_unloads += 1
                log.warning(
                    "memory pressure (%d MB available, minimum %d MB): unloaded idle model %s (%d MB)",
                    available // 2**20,
                    self.min_available_bytes // 2**20,
                    model.alias,
                    model.size_bytes // 2**20,
                )
            self.last = await asyncio.to_thread(read_memory)
            if (self.last.system_available_bytes or 0) >= self.min_available_bytes:
                break
        return unloaded

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("memory check failed; retrying")
            await asyncio.sleep(self.interval_s)
