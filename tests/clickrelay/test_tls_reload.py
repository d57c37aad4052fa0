"""``clickrelay redirector`` with an HTTPS listener and certificate files, as a real
process under uvloop: SIGHUP re-reads the files (the new certificate serves from the next
handshake, no restart), and a broken file on reload keeps the old certificate serving."""

from __future__ import annotations

import signal
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.net import free_ports
from tests.support.processes import ClickrelayProcess
from tests.support.tls_certs import CertAuthority, handshake

HOST = "links.example.test"


def serial(port: int, ca: CertAuthority) -> int:
    der = handshake(port, HOST, ca.client_context())
    return x509.load_der_x509_certificate(der).serial_number


def test_sighup_rereads_certificate_files_and_a_bad_one_keeps_the_old(tmp_path: Path) -> None:
    http, https, admin = free_ports(3)
    ca = CertAuthority()
    cert = tmp_path / "tls" / "links.pem"
    cert.parent.mkdir()
    cert.write_bytes(ca.bundle([HOST]))
    config = tmp_path / "clickrelay.toml"
    config.write_text(
        f'[tracking]\nbase_url = "https://{HOST}"\n'
        f'[redirector]\nlisten = "127.0.0.1:{http}"\nhttps_listen = "127.0.0.1:{https}"\n'
        f'admin_listen = "127.0.0.1:{admin}"\ntls_certificates = ["tls/*.pem"]\n',
        encoding="utf-8",
    )
    with ClickrelayProcess(["redirector", "-c", str(config)], cwd=tmp_path) as proc:
        ready = proc.wait_ready()
        assert f"https 127.0.0.1:{https}" in ready["STATUS"]
        first = serial(https, ca)
        cert.write_bytes(ca.bundle([HOST]))
        proc.send_signal(signal.SIGHUP)
        proc.wait_for("READY")
        second = serial(https, ca)
        assert second != first
        cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        proc.send_signal(signal.SIGHUP)
        proc.wait_for("READY")
        line = proc.wait_for_log("event=reload-failed")
        assert "tls_certificates" in line and "links.pem" in line
        assert serial(https, ca) == second
        with pytest.raises(ssl.SSLError):  # not a tracking host: no certificate
            handshake(https, "other.example.test")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait_exit() == 0
