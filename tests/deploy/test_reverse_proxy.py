"""docs/deploy/nginx.conf: streams unbuffered with timeouts above a reply's, checked by `nginx -t`, and run
in front of a real server (TLS at nginx, the service's event stream through it)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config.settings import Settings
from app.tls import ensure_dev_certificate
from tests.deploy.dockerfile import REPO
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, free_port

CONFIG = REPO / "docs" / "deploy" / "nginx.conf"
CERT_DIR = "/etc/letsencrypt/live/chat.example.com/"


def directive(name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", CONFIG.read_text(), flags=re.MULTILINE)


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(s|m)?", value.strip()).groups()  # type: ignore[union-attr]
    return float(number) * (60 if unit == "m" else 1)


def test_streams_are_unbuffered_and_outlast_a_reply() -> None:
    defaults = Settings()
    assert directive("proxy_buffering") == ["off"]
    assert directive("proxy_http_version") == ["1.1"]
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        assert seconds(directive(name)[0]) > defaults.stream_timeout_s, name
    largest_upload_mb = defaults.image_max_files * defaults.image_max_mb + defaults.max_body_mb
    assert int(directive("client_max_body_size")[0].removesuffix("m")) >= largest_upload_mb


def nginx_binary() -> str:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        pytest.skip("nginx is not installed")
    return binary


def nginx_setup(folder: Path, upstream_port: int) -> tuple[Path, int, int]:
    """The guide's config with a test certificate, free ports and one upstream; returns (main file, http, https)."""
    cert, key = ensure_dev_certificate(folder / "tls")
    http_port, https_port = free_port(), free_port()
    site = CONFIG.read_text()
    site = site.replace(f"{CERT_DIR}fullchain.pem", str(cert)).replace(f"{CERT_DIR}privkey.pem", str(key))
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};").replace("listen [::]:80;", "")
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    site = site.replace("listen [::]:443 ssl http2;", "")
    site = site.replace("server 127.0.0.1:4000", f"server 127.0.0.1:{upstream_port}")
    (folder / "site.conf").write_text(site)
    main = folder / "nginx.conf"
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    main.write_text(
        f"pid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'};\ndaemon off;\nevents {{}}\nhttp {{\n"
        f"  access_log off;\n  client_body_temp_path {temp['body']};\n  proxy_temp_path {temp['proxy']};\n"
        f"  fastcgi_temp_path {temp['fastcgi']};\n  uwsgi_temp_path {temp['uwsgi']};\n"
        f"  scgi_temp_path {temp['scgi']};\n  include {folder / 'site.conf'};\n}}\n"
    )
    return main, http_port, https_port


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    binary = nginx_binary()
    main, _, _ = nginx_setup(tmp_path, 4000)
    result = subprocess.run(
        [binary, "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[ServerProcess, int, int]]:
    binary = nginx_binary()
    server = ServerProcess(tmp_path / "server", f"sqlite:///{tmp_path / 'beth.sqlite3'}", {"OLLAMA_ENABLED": "false"})
    server.start()
    main, http_port, https_port = nginx_setup(tmp_path, server.port)
    nginx = subprocess.Popen([binary, "-c", str(main), "-p", str(tmp_path)], stderr=subprocess.PIPE)
    try:

        def answering() -> bool:
            assert nginx.poll() is None, (tmp_path / "error.log").read_text()
            try:
                httpx.get(f"https://127.0.0.1:{https_port}/health", verify=False, timeout=2)
            except httpx.HTTPError:
                return False
            return True

        wait_until(answering, timeout=15, interval=0.2, what="nginx to answer")
        yield server, http_port, https_port
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(timeout=15)
        server.stop()


def test_the_service_answers_through_nginx_over_tls(proxied: tuple[ServerProcess, int, int]) -> None:
    _, http_port, https_port = proxied
    plain = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=5)
    assert plain.status_code == 301
    assert plain.headers["location"].startswith("https://")
    ready = httpx.get(f"https://127.0.0.1:{https_port}/health/ready", verify=False, timeout=5)
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"]["ok"] is True
    assert ready.headers["x-request-id"]


def test_an_event_stream_flows_through_nginx(proxied: tuple[ServerProcess, int, int]) -> None:
    """The first frame arrives while the stream is still open, and a revision recorded later follows it."""
    _, _, https_port = proxied
    base = f"https://127.0.0.1:{https_port}"
    with (
        httpx.Client(base_url=base, verify=False, timeout=30) as client,
        client.stream("GET", "/api/v1/config/events") as events,
    ):
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.iter_lines()
        assert next(lines) == ": connected"
        changed = client.patch("/api/v1/config", json={"system_prompt": "Through the proxy."})
        assert changed.status_code == 200, changed.text
        received = next(line for line in lines if line.startswith("data: "))
        assert "Through the proxy." in received


CADDYFILE = REPO / "docs" / "deploy" / "Caddyfile"


def test_the_caddyfile_flushes_streams_and_outlasts_a_reply() -> None:
    text = CADDYFILE.read_text()
    assert re.search(r"^\s*flush_interval -1$", text, flags=re.MULTILINE)
    for name in ("read_timeout", "write_timeout"):
        value = re.search(rf"^\s*{name} (\S+)$", text, flags=re.MULTILINE)
        assert value is not None, name
        assert seconds(value.group(1)) > Settings().stream_timeout_s, name


def test_caddy_accepts_the_caddyfile(tmp_path: Path) -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed")
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    result = subprocess.run(
        [caddy, "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid configuration" in result.stdout + result.stderr
