"""The published configuration: one immutable `EffectiveConfig` at a time, read by whoever needs it.

The configuration service publishes a new snapshot after it validated and prepared a change; every consumer (the chat
turn, the catalog, the conversations, GraphQL, the admin guard) was given this source at construction and reads
`current` when it needs a value, so nobody holds a stale copy and nobody pushes values into anyone else.
"""

from __future__ import annotations

from app.config.effective import EffectiveConfig, build
from app.config.settings import Settings


class ConfigSource:
    def __init__(self, initial: EffectiveConfig) -> None:
        self._current = initial

    @classmethod
    def of(cls, settings: Settings) -> ConfigSource:
        """A source that starts with the start-up settings (no file tables, no API changes yet)."""
        return cls(build(settings, {}, {}))

    @property
    def current(self) -> EffectiveConfig:
        return self._current

    @property
    def settings(self) -> Settings:
        return self._current.settings

    def publish(self, config: EffectiveConfig) -> None:
        """Make `config` the one everybody reads next (only the configuration service calls this)."""
        self._current = config
