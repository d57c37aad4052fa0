"""What each command imports: ``decode`` and ``--help`` load none of the services'
heavy libraries, and ``clickrelay redirector`` loads none of the SMTP side.

Each case runs in a fresh interpreter (``sys.modules`` of the test process already holds
everything), which reports the modules it loaded after the command finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clickrelay.cli import COMMANDS
from redirector.tokens import ensure_key_file
from tests.support.config import write_config
from tests.support.processes import NotifySocket

#: Libraries only the long-running services (or ``check``, ``rewrite``, ``stats``) need.
HEAVY = (
    "aiohttp",
    "dns",
    "lxml",
    "asyncpg",
    "aiosmtpd",
    "aiosmtplib",
    "argon2",
    "dkim",
    "prometheus_client",
)

#: What the services' start-up needs and ``decode`` (one config file, one key file,
#: tokens) and ``--help`` do not: the settings schema of every section (dataclasses, with
#: :mod:`inspect` behind them), the click store, logging, the IDNA tables. A module (or
#: package) named here is refused with everything below it.
NOT_FOR_DECODE = (
    "clickrelay.config",
    "smtp_proxy",
    "redirector.config",
    "redirector.store",
    "redirector.clicks",
    "redirector.webhooks",
    "dataclasses",
    "inspect",
    "logging",
    "secrets",
    "idna",
)


def _loaded_of(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The modules of ``names`` (a name or anything under it) among ``modules``."""
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


#: Runs clickrelay.cli.main(argv) and prints the top-level names and the full names of
#: our own modules it loaded, as one JSON object on the last line of stdout.
PROBE = textwrap.dedent(
    """
    import json, sys
    from clickrelay.cli import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    loaded = sorted(sys.modules)
    print(json.dumps({"code": code, "modules": loaded}), flush=True)
    """
)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "CLICKRELAY_CONFIG")}


def _probe(*argv: str, cwd: Path) -> tuple[object, set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    last = done.stdout.strip().splitlines()[-1]
    report = json.loads(last)
    return report["code"], set(report["modules"]), done.stdout


def _heavy_in(modules: set[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


@pytest.fixture
def tracked_link(tmp_path: Path) -> tuple[Path, str]:
    """A config whose key file minted a real tracked link."""
    keyring = ensure_key_file(tmp_path / "keys")
    config = tmp_path / "clickrelay.toml"
    config.write_text(f'[tracking]\nkey_file = "{tmp_path / "keys"}"\n', encoding="utf-8")
    token = keyring.seal(
        "https://example.com/a?b=1",
        host="links.example.com",
        queue_id="Q1",
        link_index=0,
        recipient="to@example.org",
    )
    return config, f"https://links.example.com/c/{token}"


def test_decode_loads_no_service_library(tmp_path: Path, tracked_link: tuple[Path, str]) -> None:
    config, link = tracked_link
    code, modules, stdout = _probe("decode", "-c", str(config), link, cwd=tmp_path)
    assert code == 0, stdout
    assert '"url": "https://example.com/a?b=1"' in stdout
    assert _heavy_in(modules) == []
    assert _loaded_of(modules, NOT_FOR_DECODE) == []
    # Only the chosen command's module is imported.
    assert {m for m in modules if m.startswith("clickrelay.commands.")} == {
        "clickrelay.commands.decode"
    }


def test_help_imports_no_command_module(tmp_path: Path) -> None:
    code, modules, stdout = _probe("--help", cwd=tmp_path)
    assert code == 0
    for name in COMMANDS:
        assert name in stdout
    assert _heavy_in(modules) == []
    assert _loaded_of(modules, (*NOT_FOR_DECODE, "tomllib", "redirector")) == []
    assert not {m for m in modules if m.startswith("clickrelay.commands.")}
    assert not {m for m in modules if m.split(".")[0] in ("smtp_proxy", "redirector")}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_loads_no_service_library(tmp_path: Path, command: str) -> None:
    """``clickrelay <command> --help`` builds that command's parser only."""
    code, modules, stdout = _probe(command, "--help", cwd=tmp_path)
    assert code == 0
    assert f"usage: clickrelay {command}" in stdout
    assert _heavy_in(modules) == []
    assert {m for m in modules if m.startswith("clickrelay.commands.")} == {
        f"clickrelay.commands.{command}"
    }


def test_redirector_command_loads_no_smtp_code(tmp_path: Path) -> None:
    """A real ``clickrelay redirector`` (port 0), stopped by SIGTERM once READY.

    The settings sections of the SMTP side (:mod:`smtp_proxy.config`, plain dataclasses
    with field checks) are the one exception: the strict loader checks the whole file,
    ``[proxy]`` included, whichever command reads it.
    """
    config = write_config(tmp_path, http_port=0)
    notify = NotifySocket()
    env = _env() | {"NOTIFY_SOCKET": notify.path}
    out = tmp_path / "stdout"
    try:
        with out.open("wb") as stdout:
            proc = subprocess.Popen(
                [sys.executable, "-c", PROBE, "redirector", "-c", str(config)],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.DEVNULL,
            )
        try:
            notify.wait_for("READY", proc, 60)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    finally:
        notify.close()
    text = out.read_text(encoding="utf-8")
    assert "redirector      http://127.0.0.1:" in text
    report = json.loads(text.strip().splitlines()[-1])
    modules = set(report["modules"])
    assert report["code"] == 0
    assert "redirector.service" in modules  # the probe saw the service run
    smtp_side = {m for m in modules if m.split(".")[0] == "smtp_proxy"}
    assert smtp_side <= {"smtp_proxy", "smtp_proxy.config"}, sorted(smtp_side)
    assert not {m.split(".")[0] for m in modules} & {"dns", "aiosmtpd", "aiosmtplib", "lxml"}
