"""Browser tests: the real service over HTTP, driven by Playwright in the system's Chromium (Debian's package).

No browser is ever downloaded: Playwright is pointed at the installed `chromium`. Outside CI the tests skip
when there is no browser (or no Playwright); under CI (`CI` set, as `.ci/run` does) they fail instead.
Every request the pages make to an address that is not loopback is blocked and recorded, so a page that
still needs the internet fails its test. Screenshots of the console's pages go to `test-artifacts/console/`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.chat.conftest import chat_env
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    explicit = os.environ.get("BETH_CHROMIUM")  # another Chromium build, by path
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    if executable is None:
        _unavailable("no Chromium found (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def console_server(
    tmp_path_factory: pytest.TempPathFactory, module_ollama: FakeOllama, tiny_export: Path
) -> Iterator[ServerProcess]:
    """One server for the module: the tiny model as the hf default, the fake Ollama beside it, SQLite."""
    models = tmp_path_factory.mktemp("console-models")
    (models / tiny_export.name).symlink_to(tiny_export, target_is_directory=True)
    workdir = tmp_path_factory.mktemp("console")
    # the default system prompt alone is longer than the tiny model's context
    env = chat_env(module_ollama, models, HF_DEFAULT_MODEL=tiny_export.name, SYSTEM_PROMPT="Be brief.")
    process = ServerProcess(workdir, f"sqlite:///{workdir / 'beth.sqlite3'}", env)
    process.start()
    yield process
    process.stop()


class Page:
    """A Playwright page on the console server that blocks and records every non-loopback request."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.blocked: list[str] = []
        self.csp_violations: list[str] = []
        page.route("**/*", self._route)
        page.on("console", self._console)

    def _route(self, route: Any) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if urlsplit(route.request.url).scheme in ("data", "blob") or host in LOOPBACK:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def goto(self, path: str) -> Any:
        response = self.page.goto(self.base_url + path)
        assert response is not None, path
        assert response.ok, f"{path}: {response.status}"
        return response

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(browser: Any, console_server: ServerProcess) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    wrapped = Page(context.new_page(), console_server.url)
    wrapped.page.set_default_timeout(20_000)
    yield wrapped
    context.close()
    assert wrapped.blocked == [], f"the page asked for outside addresses: {wrapped.blocked}"
    assert wrapped.csp_violations == [], f"the page broke its own Content-Security-Policy: {wrapped.csp_violations}"
