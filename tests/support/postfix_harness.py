"""A throwaway instance of the real Postfix (Debian's package) for integration tests.

Everything lives in one temporary directory: its own ``config_directory`` (main.cf and
master.cf written here), ``queue_directory``, ``data_directory``, a log file
(``maillog_file``) and a maildir that the ``virtual`` delivery agent writes into. It
listens on loopback ports chosen by the test and never touches /etc/postfix or the
system's queue. Every recipient in ``example.test`` is delivered to ``<root>/mail/box/``.

Postfix drops privileges to the ``postfix`` user and delivers as ``nobody``, so the
directory is created world-traversable under /tmp (pytest's tmp_path is 0700).

Usage::

    with PostfixInstance.create(smtpd_port=...) as postfix:   # starts, stops at exit
        ... send to 127.0.0.1:smtpd_port ...
        postfix.wait_for_messages(1)
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.closing import Closing
from tests.support.net import wait_for_port
from tests.support.polling import poll

POSTFIX = "/usr/sbin/postfix"
DOMAIN = "example.test"
DELIVERY_USER = "nobody"


def require_postfix() -> None:
    """Skip (or, in CI, fail) when Postfix is not installed or we are not root."""
    in_ci = bool(os.environ.get("CLICKRELAY_CI"))
    if not os.path.exists(POSTFIX) or shutil.which("postconf") is None:
        reason = (
            "Postfix is not installed (DEBIAN_FRONTEND=noninteractive apt-get install -y "
            "postfix, debconf 'No configuration'); .ci/run installs it"
        )
        if in_ci:
            pytest.fail(reason)
        pytest.skip(reason)
    if os.geteuid() != 0:
        reason = "the Postfix integration tests start a Postfix master, which needs root"
        if in_ci:
            pytest.fail(reason)
        pytest.skip(reason)


#: Postfix's advice for an after-queue content filter (FILTER_README), on loopback.
FILTER_MASTER_CF = """\
127.0.0.1:{submit} inet n - n - - smtpd
  -o content_filter=clickrelay:[127.0.0.1]:{clickrelay}
clickrelay unix - - n - 10 smtp
  -o smtp_send_xforward_command=no
  -o disable_mime_output_conversion=yes
  -o smtp_generic_maps=
127.0.0.1:{reinject} inet n - n - 10 smtpd
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
"""


MASTER_CF_BASE = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def main_cf(root: Path, extra: Sequence[str] = ()) -> str:
    nobody = pwd.getpwnam(DELIVERY_USER)
    lines = [
        "compatibility_level = 3.6",
        f"queue_directory = {root / 'queue'}",
        f"data_directory = {root / 'data'}",
        "mail_owner = postfix",
        "setgid_group = postdrop",
        f"maillog_file = {root / 'maillog'}",
        f"maillog_file_prefixes = {root}",
        "myhostname = postfix.test",
        "mydomain = postfix.test",
        "myorigin = $myhostname",
        "mydestination =",
        "inet_interfaces = 127.0.0.1",
        "inet_protocols = ipv4",
        "mynetworks = 127.0.0.0/8",
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
        "alias_maps =",
        "alias_database =",
        "local_recipient_maps =",
        "relayhost =",
        "smtputf8_enable = yes",
        "smtpd_peername_lookup = no",
        "smtp_dns_support_level = disabled",
        "biff = no",
        f"virtual_mailbox_domains = {DOMAIN}",
        f"virtual_mailbox_base = {root / 'mail'}",
        "virtual_mailbox_maps = static:box/",
        f"virtual_uid_maps = static:{nobody.pw_uid}",
        f"virtual_gid_maps = static:{nobody.pw_gid}",
        "virtual_minimum_uid = 1",
        # Tests expect delivery at once, not after Postfix's back-off timers.
        "queue_run_delay = 1s",
        "minimal_backoff_time = 1s",
        "maximal_backoff_time = 2s",
        *extra,
    ]
    return "\n".join(lines) + "\n"


@dataclass
class PostfixInstance(Closing):
    """One running Postfix master with a private config, queue and mailbox."""

    root: Path
    master_cf_extra: str
    main_cf_extra: tuple[str, ...] = ()
    listen_ports: tuple[int, ...] = ()
    started: bool = field(default=False, init=False)

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def maildir(self) -> Path:
        return self.root / "mail" / "box"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    @classmethod
    def create(
        cls,
        master_cf_extra: str,
        *,
        main_cf_extra: Sequence[str] = (),
        listen_ports: Sequence[int] = (),
    ) -> PostfixInstance:
        root = Path(tempfile.mkdtemp(prefix="clickrelay-postfix-", dir="/tmp"))
        root.chmod(0o755)
        return cls(root, master_cf_extra, tuple(main_cf_extra), tuple(listen_ports))

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def write_config(self) -> None:
        self.config_dir.mkdir(mode=0o755)
        (self.root / "queue").mkdir(mode=0o755)
        (self.root / "data").mkdir(mode=0o700)
        shutil.chown(self.root / "data", "postfix")
        mail = self.root / "mail"
        mail.mkdir(mode=0o755)
        shutil.chown(mail, DELIVERY_USER)
        (self.config_dir / "main.cf").write_text(main_cf(self.root, self.main_cf_extra))
        (self.config_dir / "master.cf").write_text(MASTER_CF_BASE + self.master_cf_extra)

    def start(self) -> None:
        self.write_config()
        # ``check`` creates the queue tree with the owners Postfix insists on.
        self.postfix("check", check=False)
        result = self.postfix("start", check=False)
        if result.returncode != 0:
            output = result.stdout + result.stderr
            raise RuntimeError(f"postfix start failed:\n{output}\n{self.log()}")
        self.started = True
        for port in self.listen_ports:
            wait_for_port(port)

    def stop(self) -> None:
        if self.started:
            self.postfix("stop", check=False)
            self.started = False

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return "(no maillog)"

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        """Poll the mail log until it contains ``text``."""
        poll(
            lambda: True if text in self.log() else None,
            timeout=timeout,
            interval=0.1,
            failure=lambda: f"{text!r} not in maillog after {timeout:.0f}s:\n{self.log()}",
        )

    def delivered(self) -> list[Path]:
        new = self.maildir / "new"
        return sorted(new.iterdir()) if new.is_dir() else []

    def wait_for_messages(self, count: int, timeout: float = 60.0) -> list[Path]:
        """Poll the maildir until ``count`` messages arrived (fails with the mail log)."""

        def arrived() -> list[Path] | None:
            found = self.delivered()
            return found if len(found) >= count else None

        return poll(
            arrived,
            timeout=timeout,
            interval=0.1,
            failure=lambda: (
                f"{len(self.delivered())} of {count} messages delivered after {timeout:.0f}s; "
                f"maillog:\n{self.log()[-4000:]}"
            ),
        )

    def __enter__(self) -> PostfixInstance:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
