"""The engine's settings from the config: tracking base URLs, and DKIM keys read once.

The key files are read when the proxy starts and on reload (never per message): a key
file removed after start still signs, a bad one is a ConfigError at start naming the
file, and a reload with a bad one keeps the old keys.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import dkim
import pytest

from clickrelay.common.errors import ConfigError
from clickrelay.config import Config, default_config, load_config_text
from redirector.tokens import Keyring
from smtp_proxy.config import DkimConfig, DkimDomainConfig
from smtp_proxy.engine.dkim_sign import DkimVerdict
from smtp_proxy.engine.rewriter import rewrite_message
from smtp_proxy.service import ProxyService
from smtp_proxy.smtp.tracking import load_dkim_keys, sender_base_url, tracking_settings
from tests.support.dkim_keys import new_dkim_key, signed_sale_message, txt_record
from tests.support.dns_server import DnsServer
from tests.support.proxy_helpers import ProxyLab, smtp_client


def msg(headers: str, body: bytes) -> bytes:
    head = "".join(line + "\r\n" for line in headers.strip().splitlines()).encode()
    return head + b"\r\n" + body


# --- sender_base_url ---------------------------------------------------------------------
def test_sender_base_url(tmp_path: Path) -> None:
    config = load_config_text(
        '[tracking]\nbase_url = "https://t.default.example"\n'
        '[tracking.sender_domains]\n"shop.example" = "https://links.shop.example"\n'
        '"news.example" = "https://links.news.example"\n',
        base_dir=tmp_path,
    )
    data = b"From: News <a@news.example>\r\n\r\nbody"
    assert sender_base_url(config, "bounce@shop.example", data) == "https://links.shop.example"
    assert sender_base_url(config, "x@mail.shop.example", data) == "https://links.shop.example"
    assert sender_base_url(config, "x@other.example", data) == "https://links.news.example"
    assert sender_base_url(config, "", data) == "https://links.news.example"
    assert sender_base_url(config, "", b"From: <x@nowhere.example>\r\n\r\n") == (
        "https://t.default.example"
    )
    assert sender_base_url(config, "", b"\x00garbage") == "https://t.default.example"
    assert sender_base_url(default_config(tmp_path), "a@shop.example", data) == (
        "http://127.0.0.1:8080"
    )


def test_sender_base_url_matches_idn_domains_in_either_spelling(tmp_path: Path) -> None:
    config = load_config_text(
        '[tracking]\nbase_url = "https://t.default.example"\n'
        '[tracking.sender_domains]\n"Bücher.example." = "https://links.buecher.example"\n'
        '"xn--strae-oqa.example" = "https://links.strasse.example"\n',
        base_dir=tmp_path,
    )
    data = b"From: <x@nowhere.example>\r\n\r\n"
    buecher, strasse = "https://links.buecher.example", "https://links.strasse.example"
    assert sender_base_url(config, "a@xn--bcher-kva.example", data) == buecher
    assert sender_base_url(config, "a@news.BÜCHER.example", data) == buecher  # SMTPUTF8
    assert sender_base_url(config, "a@straße.example", data) == strasse
    # IDNA 2003 would fold ß to ss: strasse.example is another domain.
    assert sender_base_url(config, "a@strasse.example", data) == "https://t.default.example"
    from_header = b"From: =?utf-8?q?B=C3=BCcher?= <shop@xn--bcher-kva.example>\r\n\r\n"
    assert sender_base_url(config, "a@other.example", from_header) == buecher
    # SMTPUTF8: the From header in raw UTF-8 (RFC 6532).
    utf8_from = "From: Straße <news@straße.example>\r\n\r\n".encode()
    assert sender_base_url(config, "a@other.example", utf8_from) == strasse
    latin1_from = "From: <news@straße.example>\r\n\r\n".encode("latin-1")  # not UTF-8
    assert sender_base_url(config, "", latin1_from) == "https://t.default.example"


def test_settings_from_config_knows_every_tracking_host(keyring: Keyring, tmp_path: Path) -> None:
    config = load_config_text(
        '[tracking]\nbase_url = "https://t.default.example"\n'
        '[tracking.sender_domains]\n"shop.example" = "https://Links.Shop.example"\n',
        base_dir=tmp_path,
    )
    settings = tracking_settings(config, keyring, {}, "https://links.shop.example")
    assert settings.base_url == "https://links.shop.example"
    assert {"t.default.example", "links.shop.example"} <= settings.policy.tracking_hosts
    data = msg("Content-Type: text/html", b'<a href="https://t.default.example/c/abc">x</a>')
    result = rewrite_message(data, settings, queue_id="Q1")
    assert [d.reason for d in result.links] == ["already-tracked"]


# --- DKIM keys -----------------------------------------------------------------------------


_new_key = new_dkim_key


@pytest.fixture(scope="module")
def first_key() -> tuple[bytes, bytes]:
    return _new_key()


@pytest.fixture(scope="module")
def second_key() -> tuple[bytes, bytes]:
    return _new_key()


def _verifies(data: bytes, selector: bytes, txt: bytes) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return txt if name == selector + b"._domainkey.shop.example." else b""

    return bool(dkim.verify(data, dnsfunc=dnsfunc))


def _with_dkim(config: Config, selector: str, key_file: Path) -> Config:
    domains = {"Shop.Example": DkimDomainConfig(selector, key_file)}
    return dataclasses.replace(config, dkim=DkimConfig(domains=domains))


def test_load_dkim_keys_reads_each_file_once_into_memory(
    tmp_path: Path, first_key: tuple[bytes, bytes]
) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(first_key[0])
    key_file.chmod(0o600)  # DKIM keys must be private
    keys = load_dkim_keys(DkimConfig(domains={"Shop.Example.": DkimDomainConfig("s2", key_file)}))
    assert list(keys) == ["shop.example"]
    key = keys["shop.example"]
    assert (key.domain, key.selector, key.private_key) == ("shop.example", "s2", first_key[0])
    assert key.canonicalization == "relaxed/relaxed" and "from" in key.headers
    assert load_dkim_keys(DkimConfig()) == {}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read DKIM key"),
        (b"", "not a usable DKIM private key"),
        (
            b"-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n",
            "not a usable DKIM private key",
        ),
        (b"\xff\xfe garbage", "not a usable DKIM private key"),
    ],
)
def test_load_dkim_keys_names_the_bad_key_file(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    key_file = tmp_path / "dkim.pem"
    if content is not None:
        key_file.write_bytes(content)
        key_file.chmod(0o600)  # DKIM keys must be private
    config = DkimConfig(domains={"shop.example": DkimDomainConfig("s2", key_file)})
    with pytest.raises(ConfigError) as info:
        load_dkim_keys(config)
    assert str(key_file) in str(info.value)
    assert "shop.example" in str(info.value) and problem in str(info.value)


async def test_bad_dkim_key_file_at_start_is_a_config_error(lab: ProxyLab) -> None:
    sink = await lab.sink()
    key_file = lab.tmp_path / "broken.pem"
    key_file.write_bytes(b"not a key\n")
    key_file.chmod(0o600)  # DKIM keys must be private
    service = ProxyService(_with_dkim(lab.config(sink.url), "s2", key_file), lab.keys)
    with pytest.raises(ConfigError, match=re.escape(str(key_file))):
        await service.start()
    missing = lab.tmp_path / "missing.pem"
    service = ProxyService(_with_dkim(lab.config(sink.url), "s2", missing), lab.keys)
    with pytest.raises(ConfigError, match="cannot read DKIM key"):
        await service.start()


async def test_dkim_keys_are_read_at_start_and_reload(
    lab: ProxyLab,
    first_key: tuple[bytes, bytes],
    second_key: tuple[bytes, bytes],
    dns_server: DnsServer,
) -> None:
    sink = await lab.sink()
    key_file = lab.tmp_path / "dkim-s2.pem"
    key_file.write_bytes(first_key[0])
    key_file.chmod(0o600)  # DKIM keys must be private
    # The sender's own signature (s1) must verify for the proxy to re-sign.
    dns_server.add("s1._domainkey.shop.example", "TXT", txt_record(first_key[1]))
    preflight = {"enabled": False, "nameservers": [dns_server.nameserver]}
    config = _with_dkim(lab.config(sink.url, preflight=preflight), "s2", key_file)
    message = signed_sale_message(first_key[0])

    async def send() -> bytes:
        async with smtp_client(proxy.port) as client:
            errors, _ = await client.sendmail("news@shop.example", ["b@example.org"], message)
        assert errors == {}
        return sink.messages[-1].data

    async with lab.proxy(config) as proxy:
        # The key is in memory: the file going away does not stop the re-signing.
        key_file.unlink()
        got = await send()
        assert b"/c/" in got and b"s=s2" in got and b"s=s1" not in got
        assert _verifies(got, b"s2", first_key[1])

        # A reload whose key file is unreadable is refused: the old key keeps signing.
        with pytest.raises(ConfigError, match=re.escape(str(key_file))):
            proxy.reload(config, lab.keys)
        assert _verifies(await send(), b"s2", first_key[1])

        # A reload picks up a new key (and selector).
        new_file = lab.tmp_path / "dkim-s3.pem"
        new_file.write_bytes(second_key[0])
        new_file.chmod(0o600)
        proxy.reload(_with_dkim(config, "s3", new_file), lab.keys)
        got = await send()
        assert b"s=s3" in got and _verifies(got, b"s3", second_key[1])
        assert not _verifies(got, b"s3", first_key[1])
    assert len(sink.messages) == 3


def test_rewrite_command_settings_sign_from_loaded_keys(
    tmp_path: Path, keyring: Keyring, first_key: tuple[bytes, bytes]
) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(first_key[0])
    key_file.chmod(0o600)  # DKIM keys must be private
    config = _with_dkim(default_config(tmp_path), "s2", key_file)
    settings = tracking_settings(config, keyring, load_dkim_keys(config.dkim))
    key_file.unlink()
    verdict = DkimVerdict(verified=frozenset({"shop.example"}))
    result = rewrite_message(
        signed_sale_message(first_key[0]), settings, queue_id="Q1", dkim_verdict=verdict
    )
    assert result.reason == "rewritten"
    assert _verifies(result.data, b"s2", first_key[1])
