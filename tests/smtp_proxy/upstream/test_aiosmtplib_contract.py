"""What we borrow from aiosmtplib is still there, and only its compat module borrows it.

``smtp_proxy/upstream/aiosmtplib_compat.py`` lists each private name of aiosmtplib it
uses in ``BORROWED``. An aiosmtplib release that renames or drops one fails here, naming
it, instead of in the middle of a DATA phase. The fence test scans every product module
for those names (as attributes or strings) and for private aiosmtplib imports.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtplib.protocol import SMTPProtocol

from smtp_proxy.upstream import aiosmtplib_compat as compat
from smtp_proxy.upstream.transaction import stream_data
from tests.support.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parents[3]
COMPAT = ROOT / "smtp_proxy" / "upstream" / "aiosmtplib_compat.py"
SCANNED = ("clickrelay", "smtp_proxy", "redirector", "bench")
AIOSMTPLIB = version("aiosmtplib")


# --- the contract -------------------------------------------------------------------------


def test_every_borrowed_name_says_why() -> None:
    assert compat.BORROWED, "BORROWED is empty: nothing to check"
    for name, why in compat.BORROWED.items():
        assert name.startswith("_") and why.strip(), name
        assert f"``{name}" in (compat.__doc__ or ""), f"{name} is not in the module docstring"


@pytest.mark.parametrize("name", sorted(compat.BORROWED))
async def test_borrowed_name_exists(name: str) -> None:
    protocol = SMTPProtocol(loop=asyncio.get_running_loop())
    assert hasattr(protocol, name), (
        f"aiosmtplib {AIOSMTPLIB}: SMTPProtocol has no {name!r} any more "
        f"(borrowed to {compat.BORROWED[name]}); update smtp_proxy/upstream/aiosmtplib_compat.py"
    )


async def test_borrowed_names_have_the_expected_shape() -> None:
    protocol = SMTPProtocol(loop=asyncio.get_running_loop())
    assert inspect.iscoroutinefunction(protocol._drain_helper), (
        f"aiosmtplib {AIOSMTPLIB}: SMTPProtocol._drain_helper is no coroutine function"
    )
    assert protocol._response_pending is False, (
        f"aiosmtplib {AIOSMTPLIB}: SMTPProtocol._response_pending is not a flag starting False"
    )


@pytest.fixture
async def client() -> AsyncIterator[tuple[SmtpSink, aiosmtplib.SMTP]]:
    async with SmtpSink() as sink:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, timeout=5)
        await smtp.connect()
        try:
            yield sink, smtp
        finally:
            smtp.close()


async def test_drain_returns_while_connected_and_raises_once_lost(
    client: tuple[SmtpSink, aiosmtplib.SMTP],
) -> None:
    """The transaction counts on an OSError from drain() when the upstream went away."""
    sink, smtp = client
    protocol = compat.connected_protocol(smtp)
    await compat.drain(protocol, 5)
    sink.cut_connections()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await protocol.read_response(timeout=5)  # wakes up when the loss is seen
    with pytest.raises(OSError):
        await compat.drain(protocol, 5)


async def test_expected_reply_is_read(client: tuple[SmtpSink, aiosmtplib.SMTP]) -> None:
    sink, smtp = client
    await smtp.ehlo()
    assert (await smtp.mail("a@example.com")).code == 250
    assert (await smtp.rcpt("b@example.com")).code == 250
    protocol = compat.connected_protocol(smtp)
    assert (await smtp.execute_command(b"DATA")).code == 354
    protocol.write(b"Subject: x\r\n\r\nbody\r\n")
    compat.expect_reply(protocol)
    protocol.write(b".\r\n")
    assert (await protocol.read_response(timeout=5)).code == 250
    assert sink.messages[0].data == b"Subject: x\r\n\r\nbody\r\n"


async def test_unconnected_client_is_a_lost_connection() -> None:
    """No protocol at all (never connected, or closed): SMTPServerDisconnected, which the
    transaction turns into an UpstreamError with connection_lost set."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=1)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        compat.connected_protocol(smtp)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await stream_data(smtp, b"Subject: x\r\n\r\ny\r\n", 5)


# --- the fence ----------------------------------------------------------------------------


def private_uses(source: str) -> list[str]:
    """Where ``source`` touches aiosmtplib's private names: a borrowed name as an
    attribute or a string (``getattr(p, "_drain_helper")``), or a private aiosmtplib
    module or name imported."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr in compat.BORROWED:
            found.append(f"{where}: .{node.attr}")
        elif isinstance(node, ast.Constant) and node.value in compat.BORROWED:
            found.append(f"{where}: {node.value!r}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aiosmtplib"):
            names = [(node.module or "")] + [alias.name for alias in node.names]
            bad = [n for n in names if any(part.startswith("_") for part in n.split("."))]
            found.extend(f"{where}: from {node.module} import {n}" for n in bad)
        elif isinstance(node, ast.Import):
            found.extend(
                f"{where}: import {alias.name}"
                for alias in node.names
                if alias.name.startswith("aiosmtplib.")
                and any(part.startswith("_") for part in alias.name.split("."))
            )
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "aiosmtplib"
            and node.attr.startswith("_")
        ):
            found.append(f"{where}: aiosmtplib.{node.attr}")
    return found


def _product_modules() -> list[Path]:
    return sorted(p for top in SCANNED for p in (ROOT / top).rglob("*.py") if p != COMPAT)


def test_the_fence_scans_the_tree() -> None:
    modules = _product_modules()
    assert ROOT / "smtp_proxy" / "upstream" / "transaction.py" in modules
    assert COMPAT not in modules and COMPAT.exists()
    assert private_uses(COMPAT.read_text(encoding="utf-8")), "compat borrows nothing?"


@pytest.mark.parametrize("path", _product_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_other_module_touches_aiosmtplib_private_names(path: Path) -> None:
    uses = private_uses(path.read_text(encoding="utf-8"))
    assert not uses, (
        f"{path.relative_to(ROOT)} touches aiosmtplib private names {uses}; "
        "only smtp_proxy/upstream/aiosmtplib_compat.py may"
    )


@pytest.mark.parametrize(
    "planted",
    [
        "protocol._response_pending = True",
        "await protocol._drain_helper()",
        "drain = getattr(protocol, '_drain_helper', None)",
        "from aiosmtplib.protocol import _private",
        "from aiosmtplib._internal import thing",
        "import aiosmtplib._internal",
        "x = aiosmtplib._secret",
    ],
)
def test_the_fence_finds_a_planted_use(planted: str) -> None:
    """The scan above could fail: each kind of use is reported."""
    assert private_uses(f"async def f(protocol):\n    {planted}\n")
    assert not private_uses("async def f(smtp):\n    await smtp.execute_command(b'NOOP')\n")
