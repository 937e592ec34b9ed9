"""The configuration service in-process on a real SQLite database: a file caught half-written is not applied, a
restore keeps what a backup never holds, and replicas sharing the database keep each other's provider tables."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from app.config.effective import EffectiveConfig
from app.config.load import load_settings
from app.config.provider_store import stored_provider_tables
from app.config.service import ConfigReaction, ConfigurationService
from app.config.snapshot import ConfigSource
from app.db.engine import close_database, open_database
from app.db.migrate import migrate
from tests.fixtures.config_files import write_config

T = TypeVar("T")


def write_in_place(path: Path, text: str) -> None:
    """Write as an editor that truncates the file and then writes it does (not beside it, then swapped in)."""
    path.write_text(text)


def read_toml(path: Path) -> dict:
    return tomllib.loads(path.read_text())


class SlowReaction:
    """A reaction that takes its time to prepare, as opening a provider over the network does."""

    async def prepare(self, old: EffectiveConfig, new: EffectiveConfig) -> Callable[[], None]:
        await asyncio.sleep(0.05)
        return lambda: None

    async def applied(self, old: EffectiveConfig, new: EffectiveConfig) -> None:
        return None


def with_service(
    folder: Path,
    text: str,
    scenario: Callable[[ConfigurationService, Path], Awaitable[T]],
    reactions: Sequence[ConfigReaction] = (),
) -> T:
    """Run `scenario` against a started configuration service whose file holds `text`."""
    path = folder / "beth.toml"
    write_config(path, text)

    async def run() -> T:
        engine = await open_database(f"sqlite:///{folder / 'beth.sqlite3'}")
        try:
            await migrate()
            settings = load_settings({"BETH_CONFIG": str(path), "BETH_DATA_DIR": str(folder / "data")})
            service = ConfigurationService(settings, path, ConfigSource.of(settings), reactions)
            await service.start()
            return await scenario(service, path)
        finally:
            await close_database(engine)

    return asyncio.run(run())


def test_a_file_caught_while_an_editor_writes_it_is_applied_only_once_it_holds_still(tmp_path: Path) -> None:
    async def scenario(service: ConfigurationService, path: Path) -> None:
        assert service.current.settings.system_prompt == "Before."
        # an editor that truncates, then writes: caught in between, the file is empty, which is valid TOML
        write_in_place(path, "")
        assert await service.check_file() is None
        write_in_place(path, 'system_prompt = "After, and some more."\n')
        assert await service.check_file() is None  # it changed again since the last check: not yet
        revision = await service.check_file()
        assert revision is not None
        assert (revision.source, revision.applied) == ("file", True)
        assert revision.diff["system_prompt"] == {"from": "Before.", "to": "After, and some more."}
        assert service.current.settings.system_prompt == "After, and some more."
        assert [r.source for r in await service.revisions()] == ["file", "startup"]
        assert await service.check_file() is None  # nothing new

    with_service(tmp_path, 'system_prompt = "Before."\n', scenario)


def test_a_restore_keeps_the_secrets_and_database_url_a_backup_never_holds(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    text = f'database_url = "{database}"\nbeth_admin_token = "kept-token"\nsystem_prompt = "Before."\n'

    async def scenario(service: ConfigurationService, path: Path) -> None:
        backup = service.backup()
        assert "kept-token" not in backup
        assert "database_url" not in backup
        await service.restore(backup.replace("Before.", "Restored."))
        written = read_toml(path)
        assert written == {"database_url": database, "beth_admin_token": "kept-token", "system_prompt": "Restored."}
        assert service.current.settings.system_prompt == "Restored."
        # a backup that names them wins, and a [service] table is read as such
        await service.restore('[service]\nbeth_admin_token = "new-token"\nsystem_prompt = "Served."\n')
        written = read_toml(path)
        assert written.get("service", written)["beth_admin_token"] == "new-token"
        assert written.get("service", written)["database_url"] == database
        assert service.current.settings.system_prompt == "Served."

    with_service(tmp_path, text, scenario)


def test_a_replica_changes_only_the_provider_tables_it_changed(tmp_path: Path) -> None:
    """Replicas share the database: one's change must not remove a table another stored after it started."""

    async def scenario(first: ConfigurationService, path: Path) -> None:
        settings = first.start_settings
        second = ConfigurationService(settings, path, ConfigSource.of(settings))
        await second.start()
        await first.replace_provider("box", {"type": "ollama", "host": "http://10.0.0.5:11434"})
        await second.replace_provider("other", {"type": "ollama", "host": "http://10.0.0.6:11434"})
        await second.patch({"system_prompt": "Changed on the second."})
        assert set(await stored_provider_tables()) == {"box", "other"}
        await second.remove_provider("other")
        assert set(await stored_provider_tables()) == {"box"}
        # a third start reads both layers back
        third = ConfigurationService(settings, path, ConfigSource.of(settings))
        await third.start()
        assert set(third.current.providers) == {"box"}
        assert third.current.settings.system_prompt == "Changed on the second."

    with_service(tmp_path, 'system_prompt = "Before."\n', scenario)


def test_changes_made_at_the_same_time_build_on_each_other(tmp_path: Path) -> None:
    async def scenario(service: ConfigurationService, path: Path) -> None:
        await asyncio.gather(
            service.replace_provider("a", {"type": "ollama", "host": "http://10.0.0.5:11434"}),
            service.replace_provider("b", {"type": "ollama", "host": "http://10.0.0.6:11434"}),
            service.patch({"system_prompt": "Both kept."}),
        )
        assert set(service.current.providers) == {"a", "b"}
        assert service.current.settings.system_prompt == "Both kept."
        assert set(await stored_provider_tables()) == {"a", "b"}

    with_service(tmp_path, 'system_prompt = "Before."\n', scenario, reactions=(SlowReaction(),))
