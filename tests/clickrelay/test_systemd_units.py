"""The unit files in systemd/: valid for ``systemd-analyze verify``, hardened to an exposure
of at most 2.5 by ``systemd-analyze security --offline=true``, and consistent with what
clickrelay does (Type=notify, SIGHUP reload, stop timeout longer than the grace periods).

``verify`` insists that ExecStart's binary exists, so each unit is checked as a temporary
copy whose ``/usr/local/bin/clickrelay`` points at this venv's console script.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clickrelay.cli import build_parser
from clickrelay.config import default_config

ROOT = Path(__file__).resolve().parents[2]
UNIT_DIR = ROOT / "systemd"
UNITS = ("clickrelay.service", "clickrelay-proxy.service", "clickrelay-redirector.service")
COMMANDS = {
    "clickrelay.service": "serve",
    "clickrelay-proxy.service": "proxy",
    "clickrelay-redirector.service": "redirector",
}
INSTALLED = "/usr/local/bin/clickrelay"
CLICKRELAY = Path(sys.executable).parent / "clickrelay"
MAX_EXPOSURE = 2.5

#: The drop-in systemd/README.md documents for port 25/465/587; it must keep the score.
PRIVILEGED_PORT_DROPIN = """
[Service]
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
AmbientCapabilities=CAP_NET_BIND_SERVICE
PrivateUsers=no
"""


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CLICKRELAY_CI"):
            pytest.fail("systemd-analyze is missing in CI (.ci/run installs Debian's systemd)")
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    return found


def parse_unit(text: str) -> dict[str, list[str]]:
    """``Key=value`` assignments (all sections; keys are unique across ours)."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        values.setdefault(key.strip(), []).append(value.strip())
    return values


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def local_copy(tmp_path: Path, unit: str, extra: str = "") -> Path:
    text = (UNIT_DIR / unit).read_text(encoding="utf-8")
    assert INSTALLED in text
    path = tmp_path / unit
    path.write_text(text.replace(INSTALLED, str(CLICKRELAY)) + extra, encoding="utf-8")
    return path


def exposure(tool: str, unit_file: Path) -> float:
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=unit_file.parent,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_consistent_with_clickrelay(unit: str) -> None:
    values = parse_unit((UNIT_DIR / unit).read_text(encoding="utf-8"))
    assert values["Type"] == ["notify"]
    assert values["NotifyAccess"] == ["main"]
    assert values["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    (exec_start,) = values["ExecStart"]
    assert exec_start.split()[:2] == [INSTALLED, COMMANDS[unit]]
    assert values["DynamicUser"] == ["yes"]
    assert values["StateDirectory"] == ["clickrelay"]
    assert values["ConfigurationDirectory"] == ["clickrelay"]
    assert values["CapabilityBoundingSet"] == [""]
    assert values["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in values["SystemCallFilter"]
    assert seconds(values["WatchdogSec"][0]) >= 10
    # SIGTERM must be able to finish its work before systemd sends SIGKILL.
    defaults = default_config(Path("/nonexistent"))
    grace = 0.0
    if COMMANDS[unit] in ("serve", "proxy"):
        grace += defaults.proxy.shutdown_grace
    if COMMANDS[unit] in ("serve", "redirector"):
        grace += defaults.redirector.shutdown_flush_timeout
    assert seconds(values["TimeoutStopSec"][0]) > grace


@pytest.mark.parametrize("unit", UNITS)
def test_file_descriptor_limit_covers_the_connection_caps(unit: str) -> None:
    """systemd's default soft limit (1024) is below the redirector's default connection
    cap: without LimitNOFILE= the caps would never be reached and accept() would fail
    first. Each proxy connection holds a client and an upstream socket."""
    values = parse_unit((UNIT_DIR / unit).read_text(encoding="utf-8"))
    (limit,) = values["LimitNOFILE"]
    defaults = default_config(Path("/nonexistent"))
    needed = 256  # store, logs, listeners, DNS, key files: the process's own descriptors
    if COMMANDS[unit] in ("serve", "proxy"):
        needed += 2 * defaults.proxy.max_connections
    if COMMANDS[unit] in ("serve", "redirector"):
        needed += defaults.redirector.max_connections
    assert int(limit) >= needed


def test_all_units_share_one_dynamic_user() -> None:
    users = {
        unit: parse_unit((UNIT_DIR / unit).read_text(encoding="utf-8"))["User"] for unit in UNITS
    }
    # The same User= name makes systemd give the units one UID, so they share the state
    # directory (and its key file) when run side by side.
    assert set(map(tuple, users.values())) == {("clickrelay",)}


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = systemd_analyze()
    paths = [local_copy(tmp_path, unit) for unit in UNITS]
    result = subprocess.run(
        [tool, "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    # verify exits 0 even for unknown keys (it only warns), so any word about our files
    # is a failure too.
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for unit in UNITS:
        assert unit not in output, output


def test_verify_catches_a_misspelt_directive(tmp_path: Path) -> None:
    """The check above can fail: a typo in a hardening directive is reported."""
    tool = systemd_analyze()
    path = local_copy(tmp_path, "clickrelay.service")
    path.write_text(
        path.read_text().replace("LockPersonality=yes", "LockPersonalty=yes"), encoding="utf-8"
    )
    result = subprocess.run(
        [tool, "verify", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert "LockPersonalty" in result.stdout + result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_exposure_level_is_at_most_2_5(tmp_path: Path, unit: str) -> None:
    tool = systemd_analyze()
    assert exposure(tool, local_copy(tmp_path, unit)) <= MAX_EXPOSURE


@pytest.mark.parametrize("unit", ["clickrelay.service", "clickrelay-proxy.service"])
def test_privileged_port_dropin_keeps_exposure_low(tmp_path: Path, unit: str) -> None:
    tool = systemd_analyze()
    readme = (UNIT_DIR / "README.md").read_text(encoding="utf-8")
    assert PRIVILEGED_PORT_DROPIN.strip() in readme
    assert exposure(tool, local_copy(tmp_path, unit, PRIVILEGED_PORT_DROPIN)) <= MAX_EXPOSURE


def test_an_unhardened_unit_scores_worse(tmp_path: Path) -> None:
    """The score is really measured: a bare unit is far above the limit."""
    tool = systemd_analyze()
    bare = tmp_path / "bare.service"
    bare.write_text(f"[Service]\nType=notify\nExecStart={CLICKRELAY} serve\n", encoding="utf-8")
    assert exposure(tool, bare) > MAX_EXPOSURE


@pytest.mark.parametrize("unit", UNITS)
def test_exec_start_is_a_valid_command_line(unit: str) -> None:
    (exec_start,) = parse_unit((UNIT_DIR / unit).read_text(encoding="utf-8"))["ExecStart"]
    args = build_parser().parse_args(exec_start.split()[1:])
    assert args.command == COMMANDS[unit]
    assert args.config == "/etc/clickrelay/clickrelay.toml"
