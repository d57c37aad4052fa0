"""The one module that touches aiosmtplib's private names.

The DATA phase is streamed (see :mod:`smtp_proxy.upstream.transaction`): aiosmtplib's own
``SMTP.data()`` builds the whole dot-stuffed message in memory, three or four copies of a
big message at the peak. Streaming needs two things aiosmtplib does not offer publicly,
borrowed from its ``SMTPProtocol`` (both listed in :data:`BORROWED`, which the contract
test checks against the installed aiosmtplib):

``_drain_helper()``
    The flow-control wait of asyncio's stream protocols: returns once the transport's
    write buffer is below its high-water mark, raises if the connection was lost. It is
    what lets us write one piece, wait, write the next, so memory stays at about one
    piece however big the message is.
``_response_pending``
    Since 5.1.3 aiosmtplib drops any reply that arrives while this flag is false, so a stray
    line between commands cannot be paired with the next command. Its own commands set it
    just before writing; we write the end-of-data mark ourselves, and the final reply can
    arrive as soon as that is out, so the flag must be set before the write too.

pyproject.toml bounds aiosmtplib below its next minor release for these names.
"""

from __future__ import annotations

import asyncio

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

#: The private attributes of ``aiosmtplib.protocol.SMTPProtocol`` used here, and why.
BORROWED: dict[str, str] = {
    "_drain_helper": "wait for the transport to drain between streamed DATA pieces",
    "_response_pending": "mark the final DATA reply as expected before the last write",
}


def connected_protocol(smtp: aiosmtplib.SMTP) -> SMTPProtocol:
    """The protocol of a connected client; ``SMTPServerDisconnected`` if there is none."""
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    return protocol


async def drain(protocol: SMTPProtocol, wait: float) -> None:
    """Wait (at most ``wait`` seconds) until the transport can take more data."""
    await asyncio.wait_for(protocol._drain_helper(), wait)


def expect_reply(protocol: SMTPProtocol) -> None:
    """Make sure a reply arriving from now on is kept for the next ``read_response()``."""
    protocol._response_pending = True
