"""Pebble, Let's Encrypt's test ACME server, as a real subprocess on loopback.

Pebble needs a TLS certificate for its own listener (made here with a throwaway CA, whose
certificate is what ``[acme] ca_file`` trusts), the port where it validates HTTP-01
(``http_port``: the redirector's plain listener) and a DNS server to look tracking hosts
up in (the test DNS server). Nothing leaves 127.0.0.1.

Usage::

    with Pebble(tmp_path, http_port=port, dns=dns_server) as pebble:
        pebble.directory        # https://127.0.0.1:<port>/dir
        pebble.ca_file          # trusts Pebble's listener
        pebble.root_pem()       # the root that signs issued certificates

``validity`` (seconds) shortens issued certificates to force renewals. Tests skip when
Pebble is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.support.closing import Running
from tests.support.dns_server import DnsServer
from tests.support.net import free_ports
from tests.support.polling import poll
from tests.support.tls_certs import CertAuthority

PEBBLE = "/usr/bin/pebble"


def require_pebble() -> str:
    path = shutil.which("pebble") or (PEBBLE if os.path.exists(PEBBLE) else None)
    if path is None:
        if os.environ.get("CLICKRELAY_CI"):
            pytest.fail("pebble is not installed in CI (.ci/run installs it)")
        pytest.skip("pebble (Let's Encrypt's test CA) is not installed: apt-get install pebble")
    return path


class Pebble(Running):
    def __init__(
        self,
        directory: Path,
        *,
        http_port: int,
        dns: DnsServer,
        validity: int | None = None,
    ) -> None:
        self.binary = require_pebble()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.http_port = http_port
        self.dns = dns
        self.validity = validity
        self.port, self.management_port, self.tls_port = free_ports(3)
        self._ca = CertAuthority("pebble listener test CA")
        self.ca_file = self._ca.write_ca(self.dir / "pebble-listener-ca.pem")
        self.log_file = self.dir / "pebble.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def _write_config(self) -> Path:
        bundle = self._ca.bundle(["127.0.0.1", "localhost"])
        end_key = bundle.index(b"-----END PRIVATE KEY-----") + len(b"-----END PRIVATE KEY-----\n")
        (self.dir / "key.pem").write_bytes(bundle[:end_key])
        (self.dir / "cert.pem").write_bytes(bundle[end_key:])
        settings: dict[str, object] = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.dir / "cert.pem"),
            "privateKey": str(self.dir / "key.pem"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity is not None:
            settings["certificateValidityPeriod"] = self.validity
        path = self.dir / "pebble-config.json"
        path.write_text(json.dumps({"pebble": settings}))
        return path

    def start(self) -> None:
        config = self._write_config()
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
        }
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    "-config",
                    str(config),
                    "-dnsserver",
                    self.dns.nameserver,
                    "-strict=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        poll(
            self._ready,
            timeout=30,
            interval=0.1,
            failure=lambda: f"pebble did not come up:\n{self.log()}",
        )

    def _ready(self) -> bool | None:
        if self._proc is not None and self._proc.poll() is not None:
            raise AssertionError(f"pebble exited {self._proc.returncode}:\n{self.log()}")
        try:
            self._get(f"https://127.0.0.1:{self.port}/dir")
            return True
        except OSError:
            return None

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(url, context=context, timeout=5) as resp:
            body: bytes = resp.read()
            return body

    def root_pem(self) -> bytes:
        """The root certificate that signs what Pebble issues (new on every start)."""
        return self._get(f"https://127.0.0.1:{self.management_port}/roots/0")

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
