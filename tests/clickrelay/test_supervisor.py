"""Process lifecycle with real signals to a real ``clickrelay`` process.

Readiness, reload and shutdown are observed through ``$NOTIFY_SOCKET`` (a real unix
datagram socket, as systemd provides it), so the tests also cover sd_notify end to end.
The promises checked here: SIGTERM never loses a message (an in-flight transaction is
either finished with the upstream's 250 or never answered 250) and never loses a queued
click (it is in the store after exit); SIGHUP with a broken config keeps the old one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import signal
import smtplib
import socket
import ssl
import time
from pathlib import Path

import dkim
import pytest

from clickrelay.config import load_config_text
from clickrelay.stack import restart_only_changes
from redirector.tokens import load_keyring, new_key_line
from smtp_proxy.engine.speedups import speedups
from tests.support.config import write_config
from tests.support.dkim_keys import new_dkim_key, txt_record
from tests.support.dns_server import DnsServer
from tests.support.net import free_ports, refusing_port
from tests.support.preflight_fixtures import TestCA
from tests.support.processes import ClickrelayProcess, run_cli

MESSAGE_HEAD = (
    b"From: app@sender.test\r\nTo: someone@example.test\r\nSubject: lifecycle\r\n"
    b"Content-Type: text/plain\r\n\r\n"
)


def http_get(port: int, path: str) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"User-Agent": "Mozilla/5.0 (lifecycle test)"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Location")
    finally:
        conn.close()


def token_path(config_dir: Path, url: str, queue_id: str = "Q1") -> str:
    """A tracked link's path, minted for the host http_get sends (127.0.0.1)."""
    keyring = load_keyring(config_dir / "clickrelay-data" / "keys")
    token = keyring.seal(url, host="127.0.0.1", queue_id=queue_id, link_index=0, sent_at=1)
    return "/c/" + token


def outbox(config_dir: Path) -> list[Path]:
    new = config_dir / "clickrelay-data" / "outbox" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def stats_json(config: Path) -> dict[str, object]:
    result = run_cli("stats", "--json", "-c", str(config), cwd=config.parent)
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


def total_clicks(config: Path) -> int:
    totals = stats_json(config)["totals"]
    assert isinstance(totals, dict)
    return int(totals["human_clicks"]) + int(totals["bot_clicks"])


# --- pure: which reload changes need a restart ------------------------------------------


def reload(proc: ClickrelayProcess) -> dict[str, str]:
    """SIGHUP, then the READY notification that ends the reload (RELOADING came first)."""
    proc.send_signal(signal.SIGHUP)
    proc.wait_for("RELOADING")
    return proc.wait_for("READY")


def test_restart_only_changes_names_what_reload_cannot_apply(tmp_path: Path) -> None:
    old = load_config_text("", base_dir=tmp_path)
    new = load_config_text(
        '[tracking]\nbase_url = "https://links.example.com"\n'
        '[redirector]\nlisten = "127.0.0.1:9999"\nbatch_size = 7\n'
        '[proxy]\ntrusted_networks = ["10.0.0.0/8"]\nadmin_listen = "127.0.0.1:1"\n',
        base_dir=tmp_path,
    )
    assert restart_only_changes(old, new, "serve") == [
        "tracking.base_url/sender_domains",
        "redirector.listen",
        "redirector.batch_size",
    ]
    assert restart_only_changes(old, new, "proxy") == [
        "proxy.admin_listen",
        "tracking.base_url/sender_domains",
    ]
    assert restart_only_changes(old, new, "redirector") == [
        "redirector.listen",
        "redirector.batch_size",
    ]
    # trusted_networks is applied live: it is in no list.
    assert restart_only_changes(old, old, "serve") == []
    live = load_config_text(
        '[redirector]\nblocklist_file = "bl"\nhost_aliases = {"a.example" = "b.example"}\n',
        base_dir=tmp_path,
    )
    assert restart_only_changes(old, live, "serve") == []
    assert restart_only_changes(old, live, "redirector") == []


# --- the redirector command ------------------------------------------------------------------


def test_redirector_ready_reload_rotates_keys_and_stops_cleanly(tmp_path: Path) -> None:
    (http_port,) = free_ports(1)
    config = write_config(tmp_path, http_port=http_port)
    with ClickrelayProcess(["redirector", "-c", str(config)], cwd=tmp_path) as proc:
        ready = proc.wait_ready()
        assert f"127.0.0.1:{http_port}" in ready["STATUS"]
        key_file = tmp_path / "clickrelay-data" / "keys"
        assert key_file.stat().st_mode & 0o777 == 0o600  # created by the service
        assert http_get(http_port, token_path(tmp_path, "https://example.com/a")) == (
            302,
            "https://example.com/a",
        )
        # A new minting key that the running redirector does not know yet.
        old_text = key_file.read_text()
        key_file.write_text(new_key_line() + "\n" + old_text)
        new_link = token_path(tmp_path, "https://example.com/new-key")
        assert http_get(http_port, new_link) == (404, None)

        proc.send_signal(signal.SIGHUP)
        reloading = proc.wait_for("RELOADING")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        proc.wait_for("READY")
        assert http_get(http_port, new_link) == (302, "https://example.com/new-key")
        proc.wait_for_log("event=reloaded")
        # uvloop is installed with the test extras, and then it runs the services.
        assert "loop=uvloop" in proc.wait_for_log("event=ready")

        proc.send_signal(signal.SIGTERM)
        proc.wait_for("STOPPING")
        assert proc.wait_exit() == 0
    assert "event=stopped" in proc.stderr()


def test_reload_with_broken_config_keeps_the_old_one_and_says_why(tmp_path: Path) -> None:
    (http_port,) = free_ports(1)
    config = write_config(tmp_path, http_port=http_port)
    good = config.read_text()
    with ClickrelayProcess(["redirector", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        link = token_path(tmp_path, "https://example.com/kept")
        config.write_text(good + "\n[redirector.bogus]\nlisten_typo = 1\n")
        after = reload(proc)
        assert "reload failed" in after["STATUS"]
        line = proc.wait_for_log("event=reload-failed")
        assert "redirector.bogus" in line and str(config) in line
        # Still serving with the old configuration and keys.
        assert http_get(http_port, link) == (302, "https://example.com/kept")

        # A key file that went missing is refused too, not replaced by a new key.
        (tmp_path / "clickrelay-data" / "keys").rename(tmp_path / "keys.bak")
        config.write_text(good)
        assert "reload failed" in reload(proc)["STATUS"]
        assert "key file not found" in proc.stderr()
        assert not (tmp_path / "clickrelay-data" / "keys").exists()
        assert http_get(http_port, link) == (302, "https://example.com/kept")

        (tmp_path / "keys.bak").rename(tmp_path / "clickrelay-data" / "keys")
        assert "reload failed" not in reload(proc)["STATUS"]
        proc.wait_for_log("event=reloaded")
        assert proc.stop() == 0


def test_sighup_rereads_the_blocklist_and_a_broken_one_keeps_the_old(tmp_path: Path) -> None:
    (http_port,) = free_ports(1)
    blocklist = tmp_path / "blocklist"
    blocklist.write_text("# nothing blocked yet\n")
    config = write_config(
        tmp_path, http_port=http_port, redirector={"blocklist_file": str(blocklist)}
    )
    with ClickrelayProcess(["redirector", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        phish = token_path(tmp_path, "https://login.phish.example/x", queue_id="QPHISH")
        other = token_path(tmp_path, "https://shop.example/y", queue_id="QSHOP")
        same_message = token_path(tmp_path, "https://ok.example/z", queue_id="QPHISH")
        assert http_get(http_port, phish) == (302, "https://login.phish.example/x")

        blocklist.write_text("host phish.example\n")
        reload(proc)
        assert "hosts=1" in proc.wait_for_log("event=blocklist-loaded")
        assert http_get(http_port, phish) == (404, None)
        assert http_get(http_port, same_message) == (302, "https://ok.example/z")
        assert http_get(http_port, other) == (302, "https://shop.example/y")

        blocklist.write_text("host phish.example\nqueue QPHISH\n")
        reload(proc)
        assert "queues=1" in proc.wait_for_log("queues=1 hosts=1")
        assert http_get(http_port, same_message) == (404, None)

        # A broken line: the reload is refused and the old list stays in force.
        blocklist.write_text("hots phish.example\n")
        assert "reload failed" in reload(proc)["STATUS"]
        assert f"{blocklist}:1" in proc.wait_for_log("event=reload-failed")
        assert http_get(http_port, phish) == (404, None)
        assert http_get(http_port, other) == (302, "https://shop.example/y")
        # No restart needed: the blocklist and host aliases are applied live.
        assert "reload-needs-restart" not in proc.stderr()
        assert proc.stop() == 0


def test_reload_of_a_listen_address_is_reported_as_needing_restart(tmp_path: Path) -> None:
    http_port, other = free_ports(2)
    config = write_config(tmp_path, http_port=http_port)
    with ClickrelayProcess(["redirector", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        config.write_text(config.read_text().replace(f":{http_port}", f":{other}"))
        reload(proc)
        line = proc.wait_for_log("event=reload-needs-restart")
        assert "redirector.listen" in line
        # Still on the old port.
        assert http_get(http_port, "/healthz")[0] == 200
        assert proc.stop() == 0


@pytest.mark.parametrize("command", ["redirector", "serve"])
def test_click_queued_at_sigterm_is_in_the_store_after_exit(tmp_path: Path, command: str) -> None:
    (http_port,) = free_ports(1)
    # Batches that never fill and a flush interval far away: the click stays queued
    # until the shutdown flushes it.
    config = write_config(
        tmp_path, http_port=http_port, redirector={"batch_size": 100000, "flush_interval": 3600}
    )
    with ClickrelayProcess([command, "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        link = token_path(tmp_path, "https://example.com/queued")
        assert http_get(http_port, link) == (302, "https://example.com/queued")
        assert total_clicks(config) == 0  # queued in memory, not yet written
        proc.send_signal(signal.SIGTERM)
        assert proc.wait_exit() == 0
    document = stats_json(config)
    assert total_clicks(config) == 1
    messages = document["messages"]
    assert isinstance(messages, list)
    assert messages[0]["links"][0]["url"] == "https://example.com/queued"


def test_sigint_is_a_graceful_stop_too(tmp_path: Path) -> None:
    (http_port,) = free_ports(1)
    config = write_config(tmp_path, http_port=http_port)
    with ClickrelayProcess(["redirector", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        proc.send_signal(signal.SIGINT)
        proc.wait_for("STOPPING")
        assert proc.wait_exit() == 0


def test_watchdog_pings_when_systemd_asks_for_them(tmp_path: Path) -> None:
    (http_port,) = free_ports(1)
    config = write_config(tmp_path, http_port=http_port)
    env = {"WATCHDOG_USEC": "200000"}  # no WATCHDOG_PID: meant for whoever reads it
    with ClickrelayProcess(["redirector", "-c", str(config)], cwd=tmp_path, env=env) as proc:
        proc.wait_ready()
        proc.wait_for("WATCHDOG")
        proc.wait_for("WATCHDOG")
        assert proc.stop() == 0


def test_port_in_use_is_a_clean_startup_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, http_port=port)
        result = run_cli("redirector", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot start" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_fails_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[proxy]\nlisten = "127.0.0.1:notaport"\n')
    for command in ("serve", "proxy", "redirector"):
        result = run_cli(command, "-c", str(config), cwd=tmp_path)
        assert result.returncode == 2, command
        assert "proxy.listen" in result.stderr
        assert not (tmp_path / "clickrelay-data").exists()


# --- SMTP transactions across SIGTERM ------------------------------------------------------


def start_transaction(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    client.ehlo("lifecycle.test")
    assert client.mail("app@sender.test")[0] == 250
    assert client.rcpt("someone@example.test")[0] == 250
    assert client.docmd("DATA")[0] == 354
    client.send(MESSAGE_HEAD + b"first half of the body\r\n")
    return client


def wait_until_refused(port: int, timeout: float = 30.0) -> None:
    """Poll until nothing accepts connections on ``port`` any more (the SIGTERM handler
    closes the listener right after it sent STOPPING=1)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, f"port {port} still accepts after SIGTERM"
        time.sleep(0.02)  # polling a condition with a deadline


@pytest.mark.parametrize("command", ["serve", "proxy"])
def test_sigterm_lets_an_in_flight_message_finish(tmp_path: Path, command: str) -> None:
    smtp_port, http_port = free_ports(2)
    config = write_config(
        tmp_path, smtp_port=smtp_port, http_port=http_port, proxy={"shutdown_grace": 60}
    )
    with ClickrelayProcess([command, "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        # The log says whether the rewriter runs with its C extension.
        expected = "speedups=on" if speedups else "speedups=off"
        assert expected in proc.wait_for_log("event=proxy-started")
        client = start_transaction(smtp_port)
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait_for("STOPPING")
            # No new connections while draining ...
            wait_until_refused(smtp_port)
            # ... but the transaction in flight completes with the upstream's 250.
            client.send(b"second half\r\n.\r\n")
            code, reply = client.getreply()
            assert code == 250, reply
            # Once idle, the draining proxy may hang up before answering QUIT.
            with contextlib.suppress(smtplib.SMTPServerDisconnected):
                client.quit()
        finally:
            client.close()
        assert proc.wait_exit() == 0
    (delivered,) = outbox(tmp_path)
    body = delivered.read_bytes()
    assert b"first half of the body" in body and b"second half" in body


def test_sigterm_past_the_grace_period_never_says_250(tmp_path: Path) -> None:
    smtp_port, http_port = free_ports(2)
    config = write_config(
        tmp_path, smtp_port=smtp_port, http_port=http_port, proxy={"shutdown_grace": 0.5}
    )
    with ClickrelayProcess(["proxy", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        client = start_transaction(smtp_port)
        try:
            proc.send_signal(signal.SIGTERM)
            # The client never finishes; the proxy gives up after the grace period.
            assert proc.wait_exit() == 0
            try:
                client.send(b"too late\r\n.\r\n")
                code, _ = client.getreply()
            except (smtplib.SMTPServerDisconnected, OSError):
                code = None
            # Hung up, or a temporary refusal: either way the client keeps the message.
            assert code is None or 400 <= code < 500
        finally:
            client.close()
    assert outbox(tmp_path) == []
    assert "proxy-stop-grace-expired" in proc.stderr()


def test_unusable_key_file_location_is_a_clean_startup_error(tmp_path: Path) -> None:
    (http_port,) = free_ports(1)
    (tmp_path / "not-a-dir").write_text("a file where a directory should be")
    config = write_config(tmp_path, http_port=http_port, tracking={"key_file": "not-a-dir/keys"})
    result = run_cli("redirector", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot create the key file" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_relays_unrewritten_while_preflight_fails(tmp_path: Path) -> None:
    """Promise 1 at startup: the tracking base URL is not our redirector (nothing listens
    there), so the banner says so and mail goes out exactly as sent."""
    smtp_port, http_port = free_ports(2)
    config = write_config(tmp_path, smtp_port=smtp_port, http_port=http_port)
    # Held refusing for the whole test: a port that was merely free may answer later.
    with refusing_port() as elsewhere:
        config.write_text(
            config.read_text().replace(
                f'base_url = "http://127.0.0.1:{http_port}"',
                f'base_url = "http://127.0.0.1:{elsewhere}"',
            )
        )
        with ClickrelayProcess(["serve", "-c", str(config)], cwd=tmp_path) as proc:
            proc.wait_ready()
            banner = proc.stdout()
            assert f"preflight: http://127.0.0.1:{elsewhere} probe-refused" in banner, banner
            assert "relayed unrewritten until preflight passes" in banner
            body = (
                MESSAGE_HEAD.replace(b"text/plain", b"text/html")
                + b'<a href="https://example.com/untouched">x</a>\r\n'
            )
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as client:
                assert client.sendmail("app@sender.test", ["someone@example.test"], body) == {}
            assert proc.stop() == 0
    (delivered,) = outbox(tmp_path)
    assert delivered.read_bytes().endswith(body)
    assert "preflight=probe-refused" in proc.stderr()


def starttls_client(port: int, ca_file: Path) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    try:
        client.ehlo("lifecycle.test")
        client.starttls(context=ssl.create_default_context(cafile=str(ca_file)))
        client.ehlo("lifecycle.test")
    except BaseException:
        client.close()
        raise
    return client


def test_proxy_sighup_reloads_certificate_and_policy_without_dropping_connections(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = TestCA(tmp_path / "a", ["127.0.0.1"])
    second = TestCA(tmp_path / "b", ["127.0.0.1"])
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(first.cert_file, live / "cert.pem")
    shutil.copy(first.key_file, live / "key.pem")
    smtp_port, http_port = free_ports(2)
    config = write_config(
        tmp_path,
        smtp_port=smtp_port,
        http_port=http_port,
        proxy={"tls_cert": "live/cert.pem", "tls_key": "live/key.pem"},
    )
    with ClickrelayProcess(["proxy", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        idle = smtplib.SMTP("127.0.0.1", smtp_port, timeout=60)
        try:
            idle.ehlo("idle.test")
            with starttls_client(smtp_port, first.ca_file) as client:
                assert client.mail("app@sender.test")[0] == 250

            # Renewed certificate + loopback no longer trusted, then reload.
            shutil.copy(second.cert_file, live / "cert.pem")
            shutil.copy(second.key_file, live / "key.pem")
            config.write_text(
                config.read_text().replace(
                    "[proxy]\n", '[proxy]\ntrusted_networks = ["10.0.0.0/8"]\n', 1
                )
            )
            assert "reload failed" not in reload(proc)["STATUS"]

            assert idle.noop()[0] == 250  # the open connection survived the reload
            with pytest.raises(ssl.SSLCertVerificationError):
                starttls_client(smtp_port, first.ca_file)
            with starttls_client(smtp_port, second.ca_file) as client:
                code, _ = client.mail("app@sender.test")
                assert code in (530, 554)  # not trusted any more, not authenticated

            # A reload whose key file is gone is refused; the second certificate stays.
            (live / "key.pem").unlink()
            assert "reload failed" in reload(proc)["STATUS"]
            proc.wait_for_log("event=reload-failed")
            with starttls_client(smtp_port, second.ca_file) as client:
                assert client.noop()[0] == 250
            assert idle.noop()[0] == 250
        finally:
            idle.close()
        assert proc.stop() == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"tls_listen": "127.0.0.1:0"}, "proxy.tls_listen needs proxy.tls_cert"),
        ({"users_file": "missing-users"}, "cannot read users file"),
        ({"tls_cert": "missing.pem", "tls_key": "missing.key"}, "missing.pem"),
    ],
)
def test_proxy_settings_that_fail_at_start_are_clean_errors(
    tmp_path: Path, extra: dict[str, str], message: str
) -> None:
    (http_port,) = free_ports(1)
    config = write_config(tmp_path, http_port=http_port, proxy=extra)
    result = run_cli("proxy", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_runs_in_a_plain_terminal_without_notify_socket(tmp_path: Path) -> None:
    """Not under systemd: no $NOTIFY_SOCKET, no watchdog; same banner, same clean stop."""
    smtp_port, http_port = free_ports(2)
    config = write_config(tmp_path, smtp_port=smtp_port, http_port=http_port)
    env = {"NOTIFY_SOCKET": ""}
    with ClickrelayProcess(["serve", "-c", str(config)], cwd=tmp_path, env=env) as proc:
        proc.wait_for_log("event=ready")
        assert f"smtp://127.0.0.1:{smtp_port}" in proc.stdout()
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as client:
            assert client.noop()[0] == 250
        assert proc.stop() == 0
        assert proc.notify.drain() == []  # nothing was sent to the (unadvertised) socket
    assert "sd-notify-failed" not in proc.stderr()


def test_second_sigint_quits_at_once_and_second_sigterm_is_ignored(tmp_path: Path) -> None:
    smtp_port, http_port = free_ports(2)
    config = write_config(
        tmp_path, smtp_port=smtp_port, http_port=http_port, proxy={"shutdown_grace": 120}
    )
    with ClickrelayProcess(["proxy", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        client = start_transaction(smtp_port)  # keeps the drain waiting
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait_for("STOPPING")
            proc.send_signal(signal.SIGTERM)
            proc.wait_for_log("event=signal-while-stopping")
            assert proc.proc.poll() is None  # still draining
            proc.send_signal(signal.SIGINT)
            assert proc.wait_exit(30) == 130
        finally:
            client.close()
    assert "event=forced-exit" in proc.stderr()
    assert outbox(tmp_path) == []  # never answered 250, so never accepted


def test_links_are_rewritten_once_a_failing_tracking_domain_recovers(tmp_path: Path) -> None:
    """serve starts while its tracking base URL points at a redirector that is not up
    yet (mail goes out unrewritten); a separate ``clickrelay redirector`` sharing the key
    file comes up there; SIGHUP re-checks at once, STATUS turns to verified, and from
    then on links are tracked and redirect through that redirector."""
    smtp_port, http_port, other_http, other_admin = free_ports(4)
    config = write_config(
        tmp_path,
        smtp_port=smtp_port,
        http_port=http_port,
        tracking={"base_url": f"http://127.0.0.1:{other_http}"},
    )
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    key_file = tmp_path / "clickrelay-data" / "keys"
    other_config = write_config(
        other_dir,
        http_port=other_http,
        admin_port=other_admin,
        tracking={"key_file": key_file},
    )
    html = MESSAGE_HEAD.replace(b"text/plain", b"text/html")
    with ClickrelayProcess(["serve", "-c", str(config)], cwd=tmp_path) as serve:
        assert "probe-refused" in serve.wait_ready()["STATUS"]
        with ClickrelayProcess(["redirector", "-c", str(other_config)], cwd=other_dir) as other:
            other.wait_ready()
            serve.send_signal(signal.SIGHUP)
            serve.wait_for("RELOADING")
            serve.wait_for_status(f"http://127.0.0.1:{other_http} verified", timeout=60)

            body = html + b'<a href="https://example.com/recovered">x</a>\r\n'
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as client:
                assert client.sendmail("app@sender.test", ["someone@example.test"], body) == {}
            (delivered,) = outbox(tmp_path)
            text = delivered.read_text()
            assert "https://example.com/recovered" not in text
            (path,) = re.findall(rf"http://127\.0\.0\.1:{other_http}(/c/[A-Za-z0-9_-]+)", text)
            assert http_get(other_http, path) == (302, "https://example.com/recovered")
            assert other.stop() == 0
        assert serve.stop() == 0


def _dkim_pem() -> bytes:
    return new_dkim_key()[0]


def _with_dkim(config: Path, key_file: str) -> None:
    section = f'[dkim.domains."sender.test"]\nselector = "s2"\nkey_file = "{key_file}"\n'
    config.write_text(config.read_text() + section)


def test_proxy_dkim_key_file_that_is_bad_at_start_is_a_clean_error(tmp_path: Path) -> None:
    (http_port,) = free_ports(1)
    config = write_config(tmp_path, http_port=http_port)
    (tmp_path / "dkim.pem").write_bytes(b"not a key\n")
    (tmp_path / "dkim.pem").chmod(0o600)  # DKIM keys must be private
    _with_dkim(config, "dkim.pem")
    result = run_cli("proxy", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "dkim.pem" in result.stderr and "not a usable DKIM private key" in result.stderr
    assert "Traceback" not in result.stderr


def test_proxy_dkim_keys_stay_in_memory_when_a_reload_cannot_read_them(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    smtp_port, http_port = free_ports(2)
    pem, txt = new_dkim_key()
    # The sender's own signature (s1) must verify for the proxy to re-sign it.
    dns_server.add("s1._domainkey.sender.test", "TXT", txt_record(txt))
    config = write_config(
        tmp_path,
        smtp_port=smtp_port,
        http_port=http_port,
        preflight={"enabled": False, "nameservers": [dns_server.nameserver]},
    )
    (tmp_path / "dkim.pem").write_bytes(pem)
    (tmp_path / "dkim.pem").chmod(0o600)  # DKIM keys must be private
    _with_dkim(config, "dkim.pem")
    body = MESSAGE_HEAD.replace(b"text/plain", b"text/html") + (
        b'<a href="https://example.com/signed">x</a>\r\n'
    )
    signed = dkim.sign(body, b"s1", b"sender.test", pem, include_headers=[b"from"]) + body
    with ClickrelayProcess(["proxy", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        (tmp_path / "dkim.pem").unlink()
        assert "reload failed" in reload(proc)["STATUS"]
        line = proc.wait_for_log("event=reload-failed")
        assert "dkim.pem" in line and "cannot read DKIM key" in line
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as client:
            assert client.sendmail("app@sender.test", ["someone@example.test"], signed) == {}
        (delivered,) = outbox(tmp_path)
        text = delivered.read_bytes()
        # Rewritten and re-signed with the key read at start (s2 replaces s1).
        assert b"https://example.com/signed" not in text
        assert b"s=s2" in text and b"s=s1" not in text
        assert proc.stop() == 0
