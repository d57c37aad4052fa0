"""Strict configuration loading: errors name the file, the key and what was expected."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from clickrelay.common.errors import ConfigError
from clickrelay.common.hostport import parse_hostport
from clickrelay.common.validators import parse_nameserver
from clickrelay.config import Config, config_from_cli, default_config, load_config, load_config_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "conf" / "clickrelay.toml"


def test_example_config_loads_and_matches_defaults() -> None:
    config = load_config(EXAMPLE)
    assert config.source == EXAMPLE.resolve()
    defaults = default_config(EXAMPLE.parent)
    # The documented example shows the defaults: loading it must change nothing.
    sections = ("proxy", "upstream", "tracking", "preflight", "redirector", "dkim", "acme", "log")
    for section in sections:
        assert getattr(config, section) == getattr(defaults, section), section


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    missing = []
    for section in ("proxy", "upstream", "tracking", "preflight", "redirector", "acme", "log"):
        cls = type(getattr(Config(), section))
        for f in dataclasses.fields(cls):
            if f"\n{f.name} =" not in text and f"[{section}.{f.name}]" not in text:
                missing.append(f"{section}.{f.name}")
    assert missing == []


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "etc" / "clickrelay.toml"
    cfg.parent.mkdir()
    cfg.write_text('[tracking]\nkey_file = "keys"\n[upstream]\nurl = "maildir:out"\n')
    config = load_config(cfg)
    assert config.tracking.key_file == cfg.parent.resolve() / "keys"
    assert config.upstream.url == f"maildir:{cfg.parent.resolve() / 'out'}"
    assert config.maildir == cfg.parent.resolve() / "out"


def test_quick_start_defaults_live_under_clickrelay_data(tmp_path: Path) -> None:
    config = default_config(tmp_path)
    assert config.proxy.listen == "127.0.0.1:2525"
    assert config.redirector.listen == "127.0.0.1:8080"
    assert config.tracking.base_url == "http://127.0.0.1:8080"
    assert config.data_dir == tmp_path.resolve() / "clickrelay-data"
    assert (
        config.redirector.store
        == f"sqlite:{tmp_path.resolve() / 'clickrelay-data' / 'clicks.sqlite3'}"
    )
    assert config.maildir == tmp_path.resolve() / "clickrelay-data" / "outbox"


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ("[proxy]\nlisten = 25\n", ["x.toml", "proxy.listen", "expected a string", "25"]),
        ('[proxy]\nlistn = "a"\n', ["x.toml", "proxy.listn", "unknown key", "listen"]),
        ("[proxi]\n", ["x.toml", "proxi", "unknown key"]),
        ('[proxy]\nmax_recipients = "10"\n', ["proxy.max_recipients", "an integer"]),
        ("[proxy]\nmax_recipients = true\n", ["proxy.max_recipients", "an integer"]),
        ("[proxy]\nmax_recipients = 0\n", ["proxy.max_recipients", "> 0"]),
        ('[proxy]\ntrusted_networks = ["10.0.0.0/33"]\n', ["proxy.trusted_networks", "CIDR"]),
        ('[proxy]\ntrusted_networks = "127.0.0.1"\n', ["proxy.trusted_networks", "an array"]),
        ('[proxy]\nlisten = "localhost"\n', ["proxy.listen", "host:port"]),
        ('[proxy]\nlisten = "localhost:99999"\n', ["proxy.listen", "port"]),
        ('[proxy]\nbare_newline = "ignore"\n', ["proxy.bare_newline", "'reject'"]),
        ('[tracking]\nbase_url = "ftp://x"\n', ["tracking.base_url", "http"]),
        ('[tracking]\nbase_url = "https://x/?q=1"\n', ["tracking.base_url", "query"]),
        ('[tracking.sender_domains]\n"a.com" = "nope"\n', ["tracking.sender_domains", "http"]),
        ('[upstream]\nurl = "http://mx"\n', ["upstream.url", "smtp://"]),
        ('[redirector]\nstore = "mysql://x"\n', ["redirector.store", "sqlite:"]),
        ('[redirector]\nlisten = "8080"\n', ["redirector.listen", "host:port"]),
        ('[redirector]\nadmin_listen = "::1"\n', ["redirector.admin_listen", "host:port"]),
        ("[preflight]\ninterval = -1\n", ["preflight.interval", "> 0"]),
        ('[preflight]\nnameservers = ["1.1.1.1:99999"]\n', ["preflight.nameservers", "'1.1.1.1:"]),
        ('[preflight]\nnameservers = ["[::1"]\n', ["preflight.nameservers", "[ipv6]:port"]),
        ('[preflight]\nnameservers = [":53"]\n', ["preflight.nameservers", "host:port"]),
        ('[dkim.domains."a.com"]\nkey_file = "k"\n', ['dkim.domains."a.com".selector', "missing"]),
        ('[log]\nlevel = "loud"\n', ["log.level", "'info'"]),
        ("source = 'x'\n", ["source", "unknown key"]),
        ("[proxy\n", ["x.toml", "not valid TOML"]),
    ],
)
def test_bad_values_name_file_key_and_expectation(toml: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(toml, "x.toml")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message


def test_valid_values_are_typed() -> None:
    config = load_config_text(
        """
[proxy]
listen = "[::1]:2526"
command_timeout = 30
[tracking]
skip_domains = ["example.org"]
[tracking.sender_domains]
"example.com" = "https://links.example.com"
[dkim.domains."example.com"]
selector = "s1"
key_file = "/etc/k.pem"
""",
        "x.toml",
    )
    assert config.proxy.command_timeout == 30.0
    assert isinstance(config.proxy.command_timeout, float)
    assert config.tracking.skip_domains == ("example.org",)
    assert config.tracking.base_urls() == ("http://127.0.0.1:8080", "https://links.example.com")
    assert config.dkim.domains["example.com"].key_file == Path("/etc/k.pem")
    assert parse_hostport(config.proxy.listen) == ("::1", 2526)


def test_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(bad)


def test_config_from_cli_prefers_flag_then_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = tmp_path / "a.toml"
    a.write_text('[proxy]\nlisten = "127.0.0.1:1"\n')
    b = tmp_path / "b.toml"
    b.write_text('[proxy]\nlisten = "127.0.0.1:2"\n')
    monkeypatch.setenv("CLICKRELAY_CONFIG", str(b))
    assert config_from_cli(str(a)).proxy.listen == "127.0.0.1:1"
    assert config_from_cli(None).proxy.listen == "127.0.0.1:2"
    monkeypatch.delenv("CLICKRELAY_CONFIG")
    monkeypatch.chdir(tmp_path)
    assert config_from_cli(None).source is None


def test_cli_reports_config_errors_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clickrelay.cli import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text("[proxy]\nnope = 1\n")
    code = main(["check", "-c", str(cfg)])
    assert code == 2
    assert "bad.toml" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a:1", ("a", 1)), ("[::1]:25", ("::1", 25)), ("127.0.0.1:0", ("127.0.0.1", 0))],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


def test_nameservers_are_checked_by_the_rule_preflight_parses_them_with() -> None:
    entries = ["192.0.2.1", "192.0.2.1:5353", "ns.example", "::1", "[::1]:5353"]
    listed = ", ".join(f'"{e}"' for e in entries)
    config = load_config_text(f"[preflight]\nnameservers = [{listed}]\n", "x.toml")
    assert [parse_nameserver(e) for e in config.preflight.nameservers] == [
        ("192.0.2.1", 53),
        ("192.0.2.1", 5353),
        ("ns.example", 53),
        ("::1", 53),
        ("::1", 5353),
    ]


def test_parse_hostport_default_port() -> None:
    assert parse_hostport("ns.example", 53) == ("ns.example", 53)
    assert parse_hostport("::1", 53) == ("::1", 53)


def test_classification_settle_below_the_rules_horizon_is_refused(tmp_path: Path) -> None:
    from redirector.clicks.rules import DEFAULT_RULES

    with pytest.raises(ConfigError, match="classification_settle"):
        load_config_text("[redirector]\nclassification_settle = 5.0\n", base_dir=tmp_path)
    config = load_config_text(
        f"[redirector]\nclassification_settle = {DEFAULT_RULES.horizon}\n", base_dir=tmp_path
    )
    assert config.redirector.classification_settle == DEFAULT_RULES.horizon


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:clicks.db",
        "sqlite:/var/lib/clickrelay/clicks.db",
        "sqlite:",
        "SQLITE:clicks.db",
        "postgresql://clickrelay@db.example:5432/clicks",
        "postgres://db.example/clicks",
        "postgresql:/clicks",
        "mysql://db.example/clicks",
        "",
    ],
)
def test_the_store_urls_accepted_are_those_the_store_opens(url: str) -> None:
    """``[redirector] store`` is checked without importing the store package: the check
    and :func:`redirector.store.store_kind` must agree on every URL."""
    from redirector.store import store_kind

    try:
        load_config_text(f'[redirector]\nstore = "{url}"\n', "x.toml")
    except ConfigError as exc:
        assert "redirector.store" in str(exc)
        accepted = False
    else:
        accepted = True
    assert accepted == (store_kind(url) is not None)
