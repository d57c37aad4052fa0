"""The admin listeners' token, end to end: real ``clickrelay`` processes, real sockets."""

from __future__ import annotations

import base64
import http.client
import json
from pathlib import Path

import pytest

from redirector.http.admin_auth import is_loopback
from tests.support.config import write_config
from tests.support.net import free_ports
from tests.support.processes import ClickrelayProcess, run_cli

TOKEN = "s3cret-admin-token-0123456789abcdef"
#: Not an address of this machine: nothing is ever exposed, even before the check existed.
PUBLIC_ADDRESS = "192.0.2.1:0"


def http_get(port: int, path: str, authorization: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": authorization} if authorization else {}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    conn.close()
    return response


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1")
    assert is_loopback("localhost") and is_loopback("[::1]")
    for host in ("0.0.0.0", "::", "", "192.0.2.1", "example.com", "fe80::1"):
        assert not is_loopback(host), host


@pytest.mark.parametrize(
    ("command", "section"),
    [("redirector", "redirector"), ("proxy", "proxy"), ("serve", "redirector")],
)
def test_non_loopback_admin_listen_without_token_is_a_startup_error(
    tmp_path: Path, command: str, section: str
) -> None:
    (http_port,) = free_ports(1)
    config = write_config(
        tmp_path, http_port=http_port, **{section: {"admin_listen": PUBLIC_ADDRESS}}
    )
    result = run_cli(command, "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"[{section}] admin_listen" in result.stderr
    assert "admin_token" in result.stderr
    assert "Traceback" not in result.stderr


def test_admin_routes_need_the_token_and_public_healthz_shows_no_queue(tmp_path: Path) -> None:
    http_port, admin_port = free_ports(2)
    config = write_config(
        tmp_path, http_port=http_port, admin_port=admin_port, redirector={"admin_token": TOKEN}
    )
    with ClickrelayProcess(["redirector", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        for path in ("/metrics", "/api/stats", "/api/health", "/no-such-page"):
            for authorization in (
                None,
                "Bearer wrong",
                f"Bearer {TOKEN}x",
                f"Bearer {TOKEN[:-1]}",
                basic("admin", "wrong"),
                basic(TOKEN, ""),
                f"Digest {TOKEN}",
                "Basic !!!notbase64",
            ):
                response = http_get(admin_port, path, authorization)
                assert response.status == 401, (path, authorization)
                assert "Bearer" in response.getheader("WWW-Authenticate", "")
                assert b"queued" not in response.body  # type: ignore[attr-defined]
        ok = http_get(admin_port, "/metrics", f"Bearer {TOKEN}")
        assert ok.status == 200
        assert b"clickrelay_redirects_total" in ok.body  # type: ignore[attr-defined]
        assert http_get(admin_port, "/api/stats", basic("prometheus", TOKEN)).status == 200
        health = http_get(admin_port, "/api/health", f"bearer {TOKEN}")
        assert health.status == 200
        assert set(json.loads(health.body)["store"]) == {"state", "queued", "dropped"}  # type: ignore[attr-defined]
        public = http_get(http_port, "/healthz")
        doc = json.loads(public.body)  # type: ignore[attr-defined]
        assert public.status == 200
        assert set(doc) == {"service", "version", "key_ids", "store"}
        assert set(doc["store"]) == {"state"}
        assert proc.stop() == 0
