"""Pure helpers of the lock-step handler. The handler itself is tested end to end, over
real sockets, in tests/smtp_proxy/test_proxy_e2e.py and test_proxy_security.py."""

from __future__ import annotations

from smtp_proxy.smtp.handler import upstream_mail_options


def test_upstream_mail_options_are_rebuilt() -> None:
    assert upstream_mail_options(["SIZE=00123", "BODY=8BITMIME", "SMTPUTF8"]) == [
        "SIZE=123",
        "BODY=8BITMIME",
        "SMTPUTF8",
    ]
    assert upstream_mail_options(["BODY=7BIT"]) == []
    assert upstream_mail_options(["SIZE=12x", "SIZE=", "RET=HDRS", "ENVID=<x>", "X=Y"]) == []
    assert upstream_mail_options(["SIZE=" + "9" * 21, "SMTPUTF8=1"]) == []
