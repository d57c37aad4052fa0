"""Never an open relay, AUTH only over TLS, password guessing slowed down, no smuggling.

Real sockets only: raw line clients (bound to 127.0.0.2 when they must be "untrusted")
and aiosmtplib for STARTTLS/implicit TLS, through ProxyService to the recording sink.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ssl
from pathlib import Path

import aiosmtplib
import pytest

from smtp_proxy.engine.newlines import has_bare_newline
from smtp_proxy.smtp.users import add_user
from tests.support.proxy_helpers import LineClient, ProxyLab, smtp_client
from tests.support.smtp_sink import make_test_ca

pytestmark = pytest.mark.usefixtures("close_line_clients")

UNTRUSTED = "127.0.0.2"  # loopback, but outside trusted_networks = ["127.0.0.1/32"]
USER, PASSWORD = "mailer", "correct horse battery staple"


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def tls_client(
    port: int, ca_file: Path, *, implicit: bool = False, source: str | None = UNTRUSTED
) -> aiosmtplib.SMTP:
    """An aiosmtplib client that trusts ``ca_file``: TLS from the first byte
    (``implicit``) or STARTTLS, from ``source`` (default: an untrusted address)."""
    return smtp_client(
        port,
        use_tls=implicit,
        start_tls=not implicit,
        tls_context=client_context(ca_file),
        source_address=(source, 0) if source else None,
    )


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    add_user(path, USER, PASSWORD)
    return path


async def test_untrusted_unauthenticated_client_cannot_relay(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port, source=UNTRUSTED, helo="attacker.test")
        assert "AUTH" not in client.ehlo  # no users file: no AUTH at all
        assert await client.cmd("MAIL FROM:<spam@example.net>") == (
            530,
            "5.7.0 Authentication required",
        )
        assert (await client.cmd("RCPT TO:<victim@example.org>"))[0] == 503
        assert (await client.cmd("DATA"))[0] == 503
        assert (await client.cmd("AUTH PLAIN " + plain(USER, PASSWORD)))[0] in (504, 538)
        assert (await client.cmd("MAIL FROM:<spam@example.net>"))[0] == 530
        await client.close()
        # The same proxy relays for a trusted client.
        trusted = await LineClient.start(proxy.port, helo="ok.test")
        assert (await trusted.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        await trusted.close()
    assert sink.messages == []
    assert "RCPT" not in [verb for _n, verb in sink.commands]


async def test_rcpt_after_trust_is_withdrawn_is_denied(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        proxy.reload(
            dataclasses.replace(
                config, proxy=dataclasses.replace(config.proxy, trusted_networks=())
            ),
            lab.keys,
        )
        assert await client.cmd("RCPT TO:<b@example.org>") == (554, "5.7.1 relay access denied")
        await client.close()
    assert "RCPT" not in [verb for _n, verb in sink.commands]


async def test_auth_is_offered_only_after_starttls(lab: ProxyLab, users_file: Path) -> None:
    sink = await lab.sink()
    ca = make_test_ca(lab.tmp_path / "ca")
    config = lab.tls_config(
        sink.url,
        ca,
        users_file=str(users_file),
    )
    async with lab.proxy(config) as proxy:
        raw = await LineClient.start(proxy.port, source=UNTRUSTED)
        lines = raw.ehlo.split("\n")
        assert "STARTTLS" in lines
        assert not any(line.startswith("AUTH") for line in lines)
        assert (await raw.cmd("AUTH PLAIN " + plain(USER, PASSWORD)))[0] == 538
        assert (await raw.cmd("MAIL FROM:<a@example.com>"))[0] == 530
        await raw.close()

        async with tls_client(proxy.port, ca.ca_file) as client:
            await client.ehlo()
            assert client.supports_extension("auth")
            assert {"plain", "login"} <= {m.lower() for m in client.server_auth_methods}
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await client.sendmail(
                    "a@example.com", ["b@example.org"], b"Subject: x\r\n\r\nx\r\n"
                )
            assert refused.value.code == 530
            await client.auth_login(USER, PASSWORD)
            errors, text = await client.sendmail(
                "a@example.com", ["b@example.org"], b"Subject: authed\r\n\r\nx\r\n"
            )
            assert errors == {} and "clickrelay id" in text
        async with tls_client(proxy.port, ca.ca_file) as client:
            await client.ehlo()  # aiosmtplib does not repeat EHLO after STARTTLS by itself
            await client.auth_plain(USER, PASSWORD)
            await client.sendmail("a@example.com", ["c@example.org"], b"Subject: 2\r\n\r\nx\r\n")
    assert [m.rcpt_tos for m in sink.messages] == [["b@example.org"], ["c@example.org"]]


async def test_plain_auth_on_loopback_only_when_allowed(lab: ProxyLab, users_file: Path) -> None:
    sink = await lab.sink()
    for allowed in (False, True):
        config = lab.config(
            sink.url,
            users_file=str(users_file),
            allow_plain_auth_on_loopback=allowed,
        )
        async with lab.proxy(config) as proxy:
            client = await LineClient.start(proxy.port, source=UNTRUSTED)
            offered = any(line.startswith("AUTH") for line in client.ehlo.split("\n"))
            assert offered is allowed
            code, _ = await client.cmd("AUTH PLAIN " + plain(USER, PASSWORD))
            assert code == (235 if allowed else 538)
            code, _ = await client.cmd("MAIL FROM:<a@example.com>")
            assert code == (250 if allowed else 530)
            await client.close()


async def test_wrong_passwords_are_rate_limited_per_client(lab: ProxyLab, users_file: Path) -> None:
    sink = await lab.sink()
    config = lab.config(
        sink.url,
        users_file=str(users_file),
        allow_plain_auth_on_loopback=True,
        auth_fail_limit=3,
        auth_fail_window=3600,
    )
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port, source=UNTRUSTED, helo="guesser")
        assert (await client.cmd("AUTH PLAIN " + plain(USER, "guess1")))[0] == 535
        assert (await client.cmd("AUTH PLAIN " + plain("root", "guess2")))[0] == 535
        code, text = await client.cmd("AUTH PLAIN " + plain(USER, "guess3"))
        assert code == 421 and text.startswith("4.7.0")
        assert await client.closed_by_server()
        await client.close()

        # Reconnecting does not help: even the right password is refused while blocked.
        again = await LineClient.start(proxy.port, source=UNTRUSTED, helo="guesser")
        assert (await again.cmd("AUTH PLAIN " + plain(USER, PASSWORD)))[0] == 421
        assert await again.closed_by_server()
        await again.close()

        # AUTH LOGIN is limited the same way.
        login = await LineClient.start(proxy.port, source=UNTRUSTED, helo="guesser")
        assert (await login.cmd("AUTH LOGIN"))[0] == 421
        await login.close()

        # Another client address is not affected.
        other = await LineClient.start(proxy.port, source="127.0.0.3", helo="other")
        assert (await other.cmd("AUTH PLAIN " + plain(USER, PASSWORD)))[0] == 235
        assert (await other.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        await other.close()


async def test_auth_login_challenge_flow_and_bad_base64(lab: ProxyLab, users_file: Path) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, users_file=str(users_file), allow_plain_auth_on_loopback=True)

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port, source=UNTRUSTED)
        assert (await client.cmd("AUTH PLAIN not-base64!"))[0] == 501
        assert (await client.cmd("AUTH PLAIN " + b64("no-nul-separators")))[0] == 501
        assert (await client.cmd("AUTH LOGIN"))[0] == 334
        assert (await client.cmd(b64(USER)))[0] == 334
        assert (await client.cmd(b64(PASSWORD)))[0] == 235
        assert (await client.cmd("AUTH PLAIN " + plain(USER, PASSWORD)))[0] == 503
        assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        await client.close()


async def test_auth_first_response_inline_or_after_a_challenge_and_cancel(
    lab: ProxyLab, users_file: Path
) -> None:
    """Both mechanisms take their first answer on the AUTH line or after a 334, and a
    client may cancel with "*" (RFC 4954): no session, and the next attempt still works."""
    sink = await lab.sink()
    config = lab.config(sink.url, users_file=str(users_file), allow_plain_auth_on_loopback=True)
    user = base64.b64encode(USER.encode()).decode()
    password = base64.b64encode(PASSWORD.encode()).decode()
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port, source=UNTRUSTED)
        assert (await client.cmd("AUTH PLAIN"))[0] == 334
        assert (await client.cmd("*"))[0] == 501
        assert (await client.cmd("AUTH LOGIN"))[0] == 334
        assert (await client.cmd("*"))[0] == 501
        assert (await client.cmd("AUTH LOGIN not-base64!"))[0] == 501
        assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 530
        assert (await client.cmd("AUTH LOGIN " + user))[0] == 334
        assert (await client.cmd(password))[0] == 235
        await client.close()
        again = await LineClient.start(proxy.port, source=UNTRUSTED)
        assert (await again.cmd("AUTH PLAIN"))[0] == 334
        assert (await again.cmd(plain(USER, PASSWORD)))[0] == 235
        assert (await again.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        await again.close()


async def test_implicit_tls_listener_and_certificate_reload(
    lab: ProxyLab, users_file: Path
) -> None:
    sink = await lab.sink()
    old_ca = make_test_ca(lab.tmp_path / "old")
    new_ca = make_test_ca(lab.tmp_path / "new")
    config = lab.tls_config(
        sink.url,
        old_ca,
        tls_listen="127.0.0.1:0",
        users_file=str(users_file),
    )

    async def fingerprint(port: int, ca: Path, *, use_tls: bool) -> str:
        async with tls_client(port, ca, implicit=use_tls) as client:
            await client.ehlo()
            assert client.supports_extension("auth")  # TLS from the first byte counts
            await client.auth_plain(USER, PASSWORD)
            await client.sendmail("a@example.com", ["b@example.org"], b"Subject: t\r\n\r\nx\r\n")
            transport = client.transport
            assert transport is not None
            cert = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
            return hashlib.sha256(cert).hexdigest()

    def der_sha(ca_dir: Path) -> str:
        pem = (ca_dir / "cert.pem").read_text()
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()

    async with lab.proxy(config) as proxy:
        assert proxy.tls_port
        assert await fingerprint(proxy.tls_port, old_ca.ca_file, use_tls=True) == der_sha(
            lab.tmp_path / "old"
        )
        proxy.reload(
            dataclasses.replace(
                config,
                proxy=dataclasses.replace(
                    config.proxy, tls_cert=new_ca.cert_file, tls_key=new_ca.key_file
                ),
            ),
            lab.keys,
        )
        new_sha = der_sha(lab.tmp_path / "new")
        assert await fingerprint(proxy.tls_port, new_ca.ca_file, use_tls=True) == new_sha
        assert await fingerprint(proxy.port, new_ca.ca_file, use_tls=False) == new_sha
    assert len(sink.messages) == 3


async def test_reload_with_a_broken_certificate_keeps_the_old_one(lab: ProxyLab) -> None:
    from clickrelay.common.errors import ConfigError

    sink = await lab.sink()
    ca = make_test_ca(lab.tmp_path / "ca")
    config = lab.tls_config(sink.url, ca)
    broken = lab.tmp_path / "broken.pem"
    broken.write_text("not a certificate\n")
    async with lab.proxy(config) as proxy:
        with pytest.raises(ConfigError):
            proxy.reload(
                dataclasses.replace(
                    config, proxy=dataclasses.replace(config.proxy, tls_cert=broken)
                ),
                lab.keys,
            )
        async with tls_client(proxy.port, ca.ca_file, source=None) as client:
            await client.sendmail("a@example.com", ["b@example.org"], b"Subject: t\r\n\r\nx\r\n")
    assert len(sink.messages) == 1


SMUGGLING_VECTORS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n"]


@pytest.mark.parametrize("mode", ["reject", "normalize"])
@pytest.mark.parametrize("vector", SMUGGLING_VECTORS, ids=repr)
async def test_smuggling_never_yields_a_second_message(
    lab: ProxyLab, vector: bytes, mode: str
) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, bare_newline=mode)
    payload = (
        b"From: news@example.com\r\nSubject: legit\r\n\r\nhello"
        + vector
        + b"MAIL FROM:<evil@example.net>\r\n"
        + b"RCPT TO:<victim@example.org>\r\n"
        + b"DATA\r\n"
        + b"From: ceo@example.com\r\nSubject: smuggled\r\n\r\nevil"
        + vector
        + b"\r\n.\r\n"
    )
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        await client.open_data("news@example.com", recipients=["reader@example.org"])
        await client.send(payload)
        code, text = await client.reply()
        # The very next reply answers our QUIT: nothing in the payload ran as a command.
        quit_reply = await client.cmd("QUIT")
        await client.close()
    assert quit_reply[0] == 221
    mails = [verb for _n, verb in sink.commands if verb in ("MAIL", "RCPT", "DATA")]
    if mode == "reject":
        assert (code, text.split(" (")[0]) == (550, "5.6.0 bare CR or LF not allowed")
        assert sink.messages == [] and sink.refused == []
        assert "DATA" not in mails
    else:
        assert code == 250
        assert mails == ["MAIL", "RCPT", "DATA"]
        assert len(sink.messages) == 1
        got = sink.messages[0]
        assert (got.mail_from, got.rcpt_tos) == ("news@example.com", ["reader@example.org"])
        assert not has_bare_newline(got.data)
        assert b"MAIL FROM:<evil@example.net>\r\n" in got.data  # harmless body text


async def test_bare_newline_in_headers_is_rejected_before_parsing(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        smuggled = b"Subject: a\nBcc: victim@example.org\r\n\r\nbody\r\n.\r\n"
        assert (await client.transaction(smuggled))[0] == 550
        # The session continues normally after the refusal.
        assert (await client.transaction(b"Subject: fine\r\n\r\nbody\r\n.\r\n"))[0] == 250
        await client.close()
    assert [m.data for m in sink.messages] == [b"Subject: fine\r\n\r\nbody\r\n"]
