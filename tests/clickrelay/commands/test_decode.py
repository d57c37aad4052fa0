"""``clickrelay decode`` reads its few config keys as the whole loader reads them.

:func:`clickrelay.commands.decode.read_settings` skips the services' section schema (for
start-up time); these tests hold it to :mod:`clickrelay.config`: the same key file and
tracking hosts for the same file, the same message for a bad value of a key it reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clickrelay.commands.decode import read_settings
from clickrelay.common.errors import ConfigError
from clickrelay.config import Config, config_from_cli
from redirector.hosts import base_url_host


def _hosts(config: Config) -> list[str]:
    """The tracking hosts as the full configuration gives them."""
    hosts = [base_url_host(url) for url in config.tracking.base_urls()]
    return [*hosts, *config.redirector.host_aliases.values()]


SAME_AS_LOADER = [
    "",
    '[tracking]\nkey_file = "keys/link.keys"\n',
    '[tracking]\nkey_file = "/etc/clickrelay/keys"\nbase_url = "https://Links.Example.com/"\n',
    '[tracking]\nkey_file = "~/keys"\n',
    (
        '[tracking]\nbase_url = "https://t.example.net"\n'
        '[tracking.sender_domains]\n"a.example" = "https://links.a.example"\n'
        '"b.example" = "https://t.example.net"\n'
        '[redirector.host_aliases]\n"old.example" = "t.example.net"\n'
    ),
    '[proxy]\nlisten = "127.0.0.1:2526"\n[redirector]\nstore = "sqlite:c.db"\n',
]


@pytest.mark.parametrize("toml", SAME_AS_LOADER)
def test_settings_are_those_of_the_whole_config(tmp_path: Path, toml: str) -> None:
    file = tmp_path / "clickrelay.toml"
    file.write_text(toml, encoding="utf-8")
    config = config_from_cli(str(file))
    assert read_settings(str(file)) == (config.tracking.key_file, _hosts(config))


def test_defaults_and_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLICKRELAY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    config = config_from_cli(None)
    assert read_settings(None) == (config.tracking.key_file, _hosts(config))
    assert read_settings(None)[0] == tmp_path.resolve() / "clickrelay-data" / "keys"
    file = tmp_path / "env.toml"
    file.write_text('[tracking]\nbase_url = "https://env.example"\n', encoding="utf-8")
    monkeypatch.setenv("CLICKRELAY_CONFIG", str(file))
    assert read_settings(None) == (tmp_path / "clickrelay-data" / "keys", ["env.example"])


BAD = [
    "tracking = 5\n",
    "[tracking]\nkey_file = 5\n",
    '[tracking]\nkey_file = ""\n',
    '[tracking]\nbase_url = "ftp://x"\n',
    '[tracking]\nbase_url = "https://x/?q=1"\n',
    "[tracking]\nsender_domains = []\n",
    '[tracking.sender_domains]\n"a.com" = "nope"\n',
    '[tracking.sender_domains]\n"me@a.com" = "https://t.a.com"\n',
    '[redirector]\nhost_aliases = "x"\n',
    '[redirector.host_aliases]\n"old.example" = "https://t.example"\n',
    '[redirector.host_aliases]\n"old.example" = 1\n',
    "[tracking\n",
]


@pytest.mark.parametrize("toml", BAD)
def test_a_bad_key_it_reads_gets_the_loaders_message(tmp_path: Path, toml: str) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as whole:
        config_from_cli(str(file))
    with pytest.raises(ConfigError) as decode:
        read_settings(str(file))
    assert str(decode.value) == str(whole.value)
    assert str(file) in str(decode.value)


def test_unreadable_files_get_the_loaders_message(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b"# caf\xe9\n")
    for file in (tmp_path / "missing.toml", latin1):
        with pytest.raises(ConfigError) as whole:
            config_from_cli(str(file))
        with pytest.raises(ConfigError) as decode:
            read_settings(str(file))
        assert str(decode.value) == str(whole.value)
