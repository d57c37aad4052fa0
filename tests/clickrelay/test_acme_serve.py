"""``clickrelay serve`` with ``[acme]`` against Pebble, end to end on loopback.

The test DNS server points two tracking hosts (the default base URL and a sender domain's)
at 127.0.0.1; Pebble validates HTTP-01 on the redirector's plain port. Both certificates
are issued, preflight passes with Pebble's root as ``[preflight] ca_file``, the proxy's
links become ``https://``, a real HTTPS request gets the 302, and a handshake for a name
that is not a tracking host fails.
"""

from __future__ import annotations

import email
import email.policy
import http.client
import re
import signal
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from tests.support.acme_helpers import HOST_A, HOST_B, tracking_dns
from tests.support.dns_server import DnsServer
from tests.support.net import free_ports
from tests.support.pebble import Pebble, require_pebble
from tests.support.polling import poll
from tests.support.processes import CLICKRELAY, ClickrelayProcess
from tests.support.tls_certs import handshake

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with tracking_dns() as server:
        yield server


def serve_config(
    tmp_path: Path, ports: dict[str, int], dns: DnsServer, pebble: Pebble, root: Path
) -> Path:
    https = ports["https"]
    path = tmp_path / "clickrelay.toml"
    path.write_text(
        f"""
[proxy]
listen = "127.0.0.1:{ports["smtp"]}"
[upstream]
url = "maildir:{tmp_path / "outbox"}"
[tracking]
base_url = "https://{HOST_A}:{https}"
key_file = "{tmp_path / "data" / "keys"}"
[tracking.sender_domains]
"shop.test" = "https://{HOST_B}:{https}"
[preflight]
nameservers = ["{dns.nameserver}"]
timeout = 3.0
ca_file = "{root}"
[redirector]
listen = "127.0.0.1:{ports["http"]}"
https_listen = "127.0.0.1:{https}"
admin_listen = "127.0.0.1:{ports["admin"]}"
store = "sqlite:{tmp_path / "data" / "clicks.sqlite3"}"
[acme]
enabled = true
directory = "{pebble.directory}"
ca_file = "{pebble.ca_file}"
""",
        encoding="utf-8",
    )
    return path


def send(port: int, sender: str) -> None:
    body = (
        f"From: {sender}\r\nTo: r@example.org\r\nSubject: t\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Read https://shop.example.com/sale?id=42 now\r\n"
    )
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, ["r@example.org"], body.encode())


def tracked_links(outbox: Path) -> list[str]:
    links = []
    for path in sorted((outbox / "new").iterdir()):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        links += re.findall(r"https://\S+/c/\S+", text)
    return links


def two_links(outbox: Path) -> list[str] | None:
    found = tracked_links(outbox) if (outbox / "new").is_dir() else []
    return found if len(found) == 2 else None


def get_no_redirect(url: str, root: Path, port: int) -> tuple[int, str | None]:
    """GET ``url`` connecting to 127.0.0.1 (as ``curl --resolve`` does), SNI and
    certificate check for the URL's host, trusting only Pebble's root."""
    host = urlsplit(url).hostname
    assert host is not None
    context = ssl.create_default_context(cafile=str(root))
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=10)
    conn.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=host
    )
    try:
        conn.request("GET", urlsplit(url).path)
        response = conn.getresponse()
        return response.status, response.getheader("Location")
    finally:
        conn.close()


def test_serve_gets_certificates_and_mints_https_links(tmp_path: Path, dns: DnsServer) -> None:
    require_pebble()
    ports = dict(zip(("smtp", "http", "https", "admin"), free_ports(4), strict=True))
    with Pebble(tmp_path / "pebble", http_port=ports["http"], dns=dns) as pebble:
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(pebble.root_pem())
        config = serve_config(tmp_path, ports, dns, pebble, root)
        proc = ClickrelayProcess(["serve", "-c", str(config)], cwd=tmp_path)
        try:
            proc.wait_ready()
            for host in (HOST_A, HOST_B):
                proc.wait_for_log(f"event=acme-order-issued host={host}", timeout=60)
            proc.wait_for_status(
                f"https://{HOST_A}:{ports['https']} verified, "
                f"https://{HOST_B}:{ports['https']} verified",
                timeout=60,
            )
            send(ports["smtp"], "a@example.org")
            send(ports["smtp"], "b@shop.test")
            links = poll(
                lambda: two_links(tmp_path / "outbox"),
                timeout=30,
                interval=0.1,
                failure=lambda: f"no tracked links:\n{proc.stderr()}",
            )
            assert sorted(urlsplit(link).netloc for link in links) == [
                f"{HOST_A}:{ports['https']}",
                f"{HOST_B}:{ports['https']}",
            ]
            for link in links:
                status, location = get_no_redirect(link, root, ports["https"])
                assert (status, location) == (302, "https://shop.example.com/sale?id=42")
            # Each name gets its own certificate, issued by Pebble.
            for host in (HOST_A, HOST_B):
                context = ssl.create_default_context(cafile=str(root))
                leaf = x509.load_der_x509_certificate(handshake(ports["https"], host, context))
                ext = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                assert ext.value.get_values_for_type(x509.DNSName) == [host]
            with pytest.raises(ssl.SSLError):
                handshake(ports["https"], "unknown.example.test")
            # `clickrelay check` (another process) reads what the redirector stored.
            check = subprocess.run(
                [str(CLICKRELAY), "check", "-c", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert check.returncode == 0, check.stdout + check.stderr
            assert check.stdout.count("         managed by acme\n") == 2
            assert check.stdout.count(": ok\n") >= 2  # the last renewal attempt of each host
            assert "issuer Pebble Intermediate CA" in check.stdout
        finally:
            assert proc.stop() == 0, proc.stderr()
            proc.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", "[redirector] tls_certificates: no certificate file covers the tracking host"),
        ('tls_certificates = ["/nonexistent/links.pem"]', "cannot read certificate file"),
    ],
)
def test_an_https_host_without_a_certificate_stops_the_start_naming_the_key(
    tmp_path: Path, extra: str, message: str
) -> None:
    smtp, http, https, admin = free_ports(4)
    config = tmp_path / "clickrelay.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{smtp}"\n'
        f'[tracking]\nbase_url = "https://{HOST_A}"\nkey_file = "{tmp_path / "keys"}"\n'
        f"[preflight]\nenabled = false\n"
        f'[redirector]\nlisten = "127.0.0.1:{http}"\nhttps_listen = "127.0.0.1:{https}"\n'
        f'admin_listen = "127.0.0.1:{admin}"\n{extra}\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [str(CLICKRELAY), "serve", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr


def test_sigterm_during_an_order_does_not_wait_for_the_ca(tmp_path: Path, dns: DnsServer) -> None:
    """Pebble validates against a port that accepts and never answers: the order hangs
    (about 15 s until Pebble gives up). SIGTERM meanwhile stops the redirector at once."""
    require_pebble()
    http, https, admin = free_ports(3)
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        hole = black_hole.getsockname()[1]
        with Pebble(tmp_path / "pebble", http_port=hole, dns=dns) as pebble:
            config = tmp_path / "clickrelay.toml"
            config.write_text(
                f'[tracking]\nbase_url = "https://{HOST_A}:{https}"\n'
                f'key_file = "{tmp_path / "keys"}"\n'
                f'[preflight]\nnameservers = ["{dns.nameserver}"]\n'
                f'[redirector]\nlisten = "127.0.0.1:{http}"\nhttps_listen = "127.0.0.1:{https}"\n'
                f'admin_listen = "127.0.0.1:{admin}"\n'
                f'[acme]\nenabled = true\ndirectory = "{pebble.directory}"\n'
                f'ca_file = "{pebble.ca_file}"\n',
                encoding="utf-8",
            )
            with ClickrelayProcess(["redirector", "-c", str(config)], cwd=tmp_path) as proc:
                proc.wait_ready()
                proc.wait_for_log(f"event=acme-order-start host={HOST_A}")
                poll(
                    lambda: "/.well-known/acme-challenge/" in pebble.log() or None,
                    timeout=30,
                    interval=0.1,
                    failure=lambda: f"Pebble never tried the challenge:\n{pebble.log()}",
                )
                proc.send_signal(signal.SIGTERM)
                # Well under the ~15 s the hanging order still has to run.
                assert proc.wait_exit(timeout=8) == 0, proc.stderr()
            assert "event=acme-order-failed" not in proc.stderr()
            assert "event=stopped" in proc.stderr()
