"""SpamAssassin as a real peer: one ``spamd`` per test session on a loopback port,
``spamc`` per message.

Offline and reproducible: ``--local`` (no DNS/network rules), Bayes, auto-learning and
the auto-whitelist off, the Debian base rules (no ``sa-update`` state is read), its own
site-config and home directories under a temporary directory (the site config copies
only the plugin ``.pre`` files of ``/etc/spamassassin``, so a local.cf of the machine
cannot change the verdicts).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.polling import wait_until

SPAMD = shutil.which("spamd") or "/usr/sbin/spamd"
SPAMC = shutil.which("spamc") or "/usr/bin/spamc"
#: Hidden sub-rules (``__NAME``) that published rules build on, exposed as probe rules
#: so that the check sees a signal change even where a published rule's other
#: conditions (Received headers, DKIM, message length) keep it quiet in this message.
PROBES = {
    "CR_PROBE_SPOOFED_URL": "__SPOOFED_URL",  # visible URL's host differs from the href's
    "CR_PROBE_BODY_URI_ONLY": "__BODY_URI_ONLY",  # body is little more than URIs
    "CR_PROBE_BODY_SINGLE_URI": "__BODY_SINGLE_URI",
    "CR_PROBE_BITCOIN_ID": "__BITCOIN_ID",  # a word shaped like a Bitcoin address
    "CR_PROBE_PDS_BTC_ID": "__PDS_BTC_ID",
}
_LOCAL_CF = (
    "use_bayes 0\n"
    "bayes_auto_learn 0\n"
    "use_auto_whitelist 0\n"
    "skip_rbl_checks 1\n"
    "dns_available no\n"
    "report_safe 0\n"
    # Every rule with its score, to three decimals (X-Spam-Status rounds the sum to one).
    "add_header all Clickrelay-Tests _TESTSSCORES(,)_\n"
    + "".join(f"meta {name} {sub}\nscore {name} 0.001\n" for name, sub in PROBES.items())
)
_HEADER_RE = re.compile(
    rb"^X-Spam-Clickrelay-Tests:(.*(?:\r?\n[ \t].*)*)", re.MULTILINE | re.IGNORECASE
)


@dataclass(frozen=True)
class Verdict:
    """SpamAssassin's score of one message and the names of the rules that fired."""

    score: float
    rules: frozenset[str]
    #: The :data:`PROBES` that fired (not counted in ``score`` or ``rules``).
    probes: frozenset[str] = frozenset()


class Spamd:
    """A running ``spamd``; :meth:`check` scores one message with ``spamc``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        site, home = self.workdir / "site", self.workdir / "home"
        site.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        for pre in Path("/etc/spamassassin").glob("*.pre"):
            shutil.copy(pre, site / pre.name)
        (site / "local.cf").write_text(_LOCAL_CF)
        self.port = free_port()
        args = [
            SPAMD,
            "--local",
            "--nouser-config",
            "--max-children",
            "2",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--siteconfigpath",
            str(site),
            "--helper-home-dir",
            str(home),
            "--syslog",
            "stderr",
            "--pidfile",
            str(self.workdir / "spamd.pid"),
        ]
        if os.geteuid() == 0:
            # spamd would drop to "nobody" anyway; say so, and let it read the dirs.
            args += ["--username", "nobody"]
            for path in (self.workdir, site, home):
                path.chmod(0o755)
        log = (self.workdir / "spamd.log").open("wb")
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(self._ready, within=120, what="spamd answering PING", interval=0.2)

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            log = (self.workdir / "spamd.log").read_text(errors="replace")
            raise RuntimeError(f"spamd exited ({self._proc.returncode}): {log[-2000:]}")
        ping = [SPAMC, "-d", "127.0.0.1", "-p", str(self.port), "-K"]
        return subprocess.run(ping, capture_output=True, check=False).returncode == 0

    def check(self, message: bytes) -> Verdict:
        """Score ``message``; ``spamc -x``: an error is an error, not a pass."""
        cmd = [SPAMC, "-x", "-d", "127.0.0.1", "-p", str(self.port), "-s", str(64 << 20)]
        out = subprocess.run(cmd, input=message, capture_output=True, check=True).stdout
        head = out.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        found = _HEADER_RE.search(head)
        if found is None:
            raise RuntimeError("spamc gave back no X-Spam-Clickrelay-Tests header")
        # Folded at the commas: join the names again.
        text = re.sub(r"\s+", "", found.group(1).decode("ascii", "replace"))
        scores: dict[str, float] = {}
        for item in text.split(","):
            name, eq, value = item.partition("=")
            if name and name != "none":
                scores[name] = float(value) if eq else 0.0
        real = {n: v for n, v in scores.items() if n not in PROBES}
        return Verdict(
            round(sum(real.values()), 3),
            frozenset(real),
            frozenset(n for n in scores if n in PROBES),
        )

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def spamassassin_missing() -> str | None:
    """Why SpamAssassin cannot run here, or None."""
    for tool in (SPAMD, SPAMC):
        if not os.access(tool, os.X_OK):
            return f"{tool} not installed (Debian packages spamd, spamc)"
    return None


@pytest.fixture(scope="session")
def spamd() -> Iterator[Spamd]:
    missing = spamassassin_missing()
    if missing:
        if os.environ.get("CLICKRELAY_CI"):
            pytest.fail(f"SpamAssassin is needed in CI: {missing}")
        pytest.skip(missing)
    with tempfile.TemporaryDirectory(prefix="clickrelay-spamd-") as tmp:
        daemon = Spamd(Path(tmp))
        try:
            daemon.start()
            yield daemon
        finally:
            daemon.stop()
