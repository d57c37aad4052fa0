"""One upstream SMTP connection: opening it (TCP, greeting, EHLO, STARTTLS, AUTH)."""

from __future__ import annotations

import asyncio
import ssl
import time

import aiosmtplib
from aiosmtplib import SMTPResponseException

from smtp_proxy.upstream.target import Target


class Connection:
    """One aiosmtplib connection plus the pool's bookkeeping."""

    __slots__ = ("idle_since", "number", "smtp")

    def __init__(self, smtp: aiosmtplib.SMTP, number: int) -> None:
        self.smtp = smtp
        #: Which pool connection this is (1-based, per pool; for logs and tests).
        self.number = number
        self.idle_since = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.smtp.is_connected

    def abort(self) -> None:
        self.smtp.close()


async def connect(
    target: Target, *, tls: ssl.SSLContext | None, helo: str, connect_timeout: float
) -> aiosmtplib.SMTP:
    """A connected, greeted client, all within ``connect_timeout`` seconds.

    Raises what aiosmtplib, the socket or TLS raise (or TimeoutError); the half-open
    client is closed first.
    """
    smtp = aiosmtplib.SMTP(
        hostname=target.host,
        port=target.port,
        use_tls=target.scheme == "smtps",
        start_tls=target.scheme == "smtp+starttls",
        tls_context=tls,
        local_hostname=helo,
        username=target.username or None,
        password=target.password or None,
        timeout=connect_timeout,
    )
    try:
        async with asyncio.timeout(connect_timeout):
            await smtp.connect()
            # connect() only greets when it needs to (STARTTLS, AUTH); we send raw
            # commands afterwards, so make sure EHLO (or HELO) has been done.
            if smtp.is_ehlo_or_helo_needed:
                try:
                    await smtp.ehlo()
                except aiosmtplib.SMTPHeloError:
                    if not smtp.is_connected:
                        raise
                    await smtp.helo()
    except BaseException:
        smtp.close()
        raise
    return smtp


def describe_exc(exc: BaseException) -> str:
    """A one-line reason for logs and the UpstreamError text."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, SMTPResponseException):
        return f"{exc.code} {exc.message}".replace("\n", " ")
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
