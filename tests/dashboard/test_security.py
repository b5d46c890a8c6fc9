"""HTTP hardening: the Host check (DNS rebinding), ``--allow-host``, the security headers."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import dash
import pytest
from typer.testing import CliRunner

from dashboard.app import create_app
from dashboard.security import host_name
from profiler.cli import app as cli
from tests.dashboard.malformed import router
from tests.dashboard.runs import SAMPLE


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample", ignore=shutil.ignore_patterns("cache"))
    return root


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A test client of an app that also answers to ``box.lan`` (one app: they are slow)."""
    root = tmp_path_factory.mktemp("security") / "traces"
    shutil.copytree(SAMPLE, root / "sample", ignore=shutil.ignore_patterns("cache"))
    return create_app(root, allowed_hosts=["box.lan"]).server.test_client()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost:8050", "localhost"),
        ("LOCALHOST.", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:8050", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("box.lan:80", "box.lan"),
        ("evil.example:", "evil.example"),
    ],
)
def test_host_name_drops_port_brackets_case_and_dot(host: str, expected: str) -> None:
    assert host_name(host) == expected


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:8050", 200),
        ("127.0.0.1:1", 200),
        ("[::1]:8050", 200),
        ("box.lan:8050", 200),  # allowed by allowed_hosts
        ("BOX.LAN", 200),
        ("evil.example", 400),
        ("127.0.0.1.nip.io:8050", 400),
        ("localhost.evil.example", 400),
        ("0.0.0.0:8050", 400),
        ("", 400),
    ],
)
def test_requests_naming_another_host_get_a_400(client: Any, host: str, status: int) -> None:
    page = client.get("/?run=sample", headers={"Host": host})
    callback = router(client, "/", "?run=sample") if status == 200 else None

    assert page.status_code == status
    if status == 400:
        message = page.get_data(as_text=True)
        assert "DNS rebinding" in message and "--allow-host" in message and "0.0.0.0" in message
        assert page.mimetype == "text/plain"
        rebound = client.post("/_dash-update-component", json={}, headers={"Host": host})
        assert rebound.status_code == 400  # the callbacks, where the data is, too
    else:
        assert callback is not None and callback.status_code == 200


@pytest.mark.parametrize("path", ["/", "/_dash-layout", "/_dash-dependencies", "/nope", "/refused"])
def test_every_response_carries_the_security_headers(client: Any, path: str) -> None:
    host = "evil.example" if path == "/refused" else "localhost"

    response = client.get(path, headers={"Host": host})

    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    policy = _policy(response.headers["Content-Security-Policy"])
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]


def test_the_policy_allows_exactly_the_pages_inline_scripts(client: Any) -> None:
    page = client.get("/")

    allowed = set(_policy(page.headers["Content-Security-Policy"])["script-src"])
    html = re.sub(r"<!--.*?-->", "", page.text, flags=re.S)  # an IE-only script: no browser runs it
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>(.*?)</script>", html, re.S)
    executable = [body for attrs, body in inline if "application/json" not in attrs]
    assert executable  # Dash's renderer starts from an inline script
    for body in executable:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in allowed


def _policy(header: str) -> dict[str, list[str]]:
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


class _Served:
    """Stands in for ``Dash.run``: keeps the app the CLI built instead of serving it."""

    apps: list[dash.Dash]

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.apps = []
        monkeypatch.setattr(dash.Dash, "run", lambda app, **_: self.apps.append(app))


@pytest.mark.parametrize(
    ("args", "answers", "refuses"),
    [
        ([], ["localhost", "127.0.0.1:8050"], ["box.lan", "0.0.0.0"]),
        (["--host", "192.168.1.5"], ["192.168.1.5:8050", "localhost"], ["box.lan"]),
        (["--host", "0.0.0.0"], ["localhost:8050"], ["0.0.0.0:8050", "192.168.1.5:8050"]),
        (
            ["--host", "0.0.0.0", "--allow-host", "box.lan", "--allow-host", "192.168.1.5"],
            ["box.lan:8050", "192.168.1.5", "localhost"],
            ["0.0.0.0:8050", "evil.example"],
        ),
    ],
)
def test_dashboard_allow_host(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    answers: list[str],
    refuses: list[str],
) -> None:
    served = _Served(monkeypatch)

    result = CliRunner().invoke(cli, ["dashboard", str(root), *args])

    assert result.exit_code == 0, result.output
    client = served.apps[0].server.test_client()
    for host in answers:
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    for host in refuses:
        assert client.get("/", headers={"Host": host}).status_code == 400, host
    if args == ["--host", "0.0.0.0"]:
        assert "--allow-host" in result.output  # bound everywhere, answering only locally
