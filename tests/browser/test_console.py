"""The API docs, GraphiQL and the operator console work in a real browser with no access beyond loopback."""

from __future__ import annotations

import re
import threading

import httpx

from tests.api.test_graphql_web_client import create_conversation
from tests.browser.conftest import Page
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess
from tests.fixtures.web_client import GREEDY, ClientStream, stream_message

TINY = "hf/tiny"


def test_api_docs_list_the_rest_operations(page: Page) -> None:
    response = page.goto("/api/v1/schema/swagger")
    assert "cdn" not in response.text()
    page.page.locator(".opblock").first.wait_for()
    paths = page.page.locator(".opblock-summary-path").all_inner_texts()
    normalized = {p.replace("\u200b", "") for p in paths}
    assert {"/api/v1/usage", "/api/v1/config", "/api/stream-message", "/api/v1/models"} <= normalized, normalized


def test_graphiql_runs_a_query(page: Page) -> None:
    page.goto("/graphql")
    page.page.locator(".graphiql-query-editor .CodeMirror").first.wait_for()
    page.page.evaluate(
        "document.querySelector('.graphiql-query-editor .CodeMirror')"
        ".CodeMirror.setValue('{ availableModels { models } }')"
    )
    page.page.locator(".graphiql-execute-button").click()
    result = page.page.locator(".graphiql-response")
    result.get_by_text("availableModels").wait_for()
    assert "tiny" in result.inner_text()


def test_console_overview_and_models_show_the_default_model(page: Page) -> None:
    page.goto("/console")
    page.page.wait_for_selector("body[data-live='open']")
    assert page.page.locator("text=SQLite").count() >= 1
    page.screenshot("overview")
    page.goto("/console/models")
    assert page.page.get_by_test_id("default-model").inner_text() == "tiny"
    row = page.page.locator(f"tr[data-model='{TINY}']")
    assert "default" in row.inner_text()
    page.screenshot("models")
    page.goto("/console/providers")
    assert page.page.locator("[data-provider='hf']").count() == 1
    page.screenshot("providers")


def test_console_loads_and_unloads_a_model(page: Page, console_server: ServerProcess) -> None:
    page.goto("/console/models")
    row = page.page.locator(f"tr[data-model='{TINY}']")
    row.locator("button[data-verb='load']").click()
    page.page.locator("#notice.ok").wait_for()
    wait_until(lambda: httpx.get(f"{console_server.url}/api/v1/models/{TINY}").json()["loaded"], timeout=20)
    unload = row.locator("button[data-verb='unload']:not([disabled])")
    unload.wait_for()  # the page reloads itself after the action, showing the model loaded
    assert "loaded" in row.inner_text()
    page.goto("/console")
    page.page.locator("[data-live='memory.models']").get_by_text("tiny").wait_for()
    page.goto("/console/models")
    unload.click()
    page.page.locator("#notice.ok").wait_for()
    wait_until(lambda: not httpx.get(f"{console_server.url}/api/v1/models/{TINY}").json()["loaded"], timeout=20)


def test_console_overview_lists_a_failed_generation(page: Page, console_server: ServerProcess) -> None:
    with httpx.Client(base_url=console_server.url, timeout=60) as client:
        conversation = create_conversation(client, model="midfail:latest")
        assert stream_message(client, model="midfail:latest", message="boom", conversation_id=conversation).error
    page.goto("/console")
    errors = page.page.locator("#recent-errors tbody")
    errors.get_by_text("midfail:latest").first.wait_for()


def test_console_usage_charts_a_chat(page: Page, console_server: ServerProcess) -> None:
    with httpx.Client(base_url=console_server.url, timeout=60) as client:
        conversation = create_conversation(client, model=TINY)
        assert stream_message(client, model=TINY, message="hello", conversation_id=conversation, options=GREEDY).ended
        wait_until(
            lambda: client.get("/api/v1/usage", params={"period": "hour"}).json()["totals"]["requests"] >= 1, timeout=20
        )
    page.goto("/console/usage?period=hour")
    bars = page.page.locator("svg[data-metric='requests'] rect.bar")
    assert bars.count() >= 1
    assert float(bars.first.get_attribute("data-value") or 0) >= 1
    tokens = page.page.locator("svg[data-metric='completion_tokens'] rect.bar").first
    assert float(tokens.get_attribute("data-value") or 0) >= 1
    assert "tiny" in page.page.locator("#usage-table").inner_text()
    page.screenshot("usage")


def test_console_config_edit_is_applied_and_recorded(page: Page, console_server: ServerProcess) -> None:
    page.goto("/console/config")
    form = page.page.locator("#config-edit")
    form.locator("select[name='key']").select_option("stream_timeout_s")
    assert form.locator("input[name='value']").input_value() == "300.0"  # the current value, to edit
    form.locator("input[name='value']").fill("240")
    form.get_by_role("button", name="Validate and apply").click()
    form.locator("[data-result].ok").wait_for()
    page.page.wait_for_url(re.compile(r"/console/config$"))
    page.page.locator("#revisions tbody tr").first.get_by_text("stream_timeout_s").wait_for()
    newest = page.page.locator("#revisions tbody tr").first.inner_text()
    assert "applied" in newest
    assert "240" in newest
    setting = page.page.locator("#settings tr[data-key='stream_timeout_s']").inner_text()
    assert "240" in setting
    assert "api" in setting
    with httpx.Client(base_url=console_server.url) as client:
        assert client.get("/api/v1/config").json()["settings"]["stream_timeout_s"]["value"] == 240
    page.screenshot("config")


def test_console_refuses_an_invalid_value_before_applying(page: Page, console_server: ServerProcess) -> None:
    page.goto("/console/config")
    before = page.page.locator("#revisions tbody tr").count()
    form = page.page.locator("#config-edit")
    form.locator("select[name='key']").select_option("stream_timeout_s")
    form.locator("input[name='value']").fill("-5")
    form.get_by_role("button", name="Validate and apply").click()
    assert "Not valid" in form.locator("[data-result].bad").inner_text()
    page.goto("/console/config")
    assert page.page.locator("#revisions tbody tr").count() == before


def test_console_stops_a_live_stream(page: Page, console_server: ServerProcess) -> None:
    from playwright.sync_api import expect  # imported here: without Playwright the module's tests skip

    page.goto("/console/streams")
    page.page.wait_for_selector("body[data-live='open']")
    seen: list[ClientStream] = []
    with httpx.Client(base_url=console_server.url, timeout=60) as client:
        conversation = create_conversation(client, model="slow:latest")

        def chat() -> None:
            seen.append(stream_message(client, model="slow:latest", message="go", conversation_id=conversation))

        worker = threading.Thread(target=chat)
        worker.start()
        row = page.page.locator("tr[data-session]")
        row.first.wait_for()  # the live feed shows the stream; nobody reloaded the page
        assert "slow:latest" in row.first.inner_text()
        expect(row.first.locator("td").nth(3)).not_to_have_text("0")  # tokens so far, as they come
        page.screenshot("streams")
        row.first.get_by_role("button", name="Stop").click()
        assert "stopped" in page.page.locator("#notice.ok").inner_text()
        worker.join(timeout=30)
    assert seen
    assert seen[0].terminated is not None
    page.page.get_by_text("No active stream").wait_for()


def test_console_restores_a_backup_file(page: Page, console_server: ServerProcess) -> None:
    with httpx.Client(base_url=console_server.url) as client:
        backup = client.get("/api/v1/config/backup").text
        revisions = len(client.get("/api/v1/config/revisions").json()["revisions"])
    page.goto("/console/config")
    form = page.page.locator("#config-restore")
    form.locator("input[type='file']").set_input_files(
        {"name": "beth.toml", "mimeType": "application/toml", "buffer": backup.encode()}
    )
    form.get_by_role("button", name="Validate and restore").click()
    assert "Restored as revision" in form.locator("[data-result].ok").inner_text()
    with httpx.Client(base_url=console_server.url) as client:
        newest = client.get("/api/v1/config/revisions").json()["revisions"]
    assert len(newest) == revisions + 1
    assert newest[0]["applied"]


def test_console_pages_fit_a_phone_in_the_dark(page: Page) -> None:
    page.page.set_viewport_size({"width": 390, "height": 844})
    page.page.emulate_media(color_scheme="dark")
    for path in ("/console", "/console/models", "/console/usage", "/console/config", "/console/streams"):
        page.goto(path)
        overflow = page.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than a phone"
    background = page.page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 23, 27)"
    page.screenshot("streams-phone-dark")
