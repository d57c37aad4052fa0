"""8BITMIME and SMTPUTF8 are offered only while the upstream offers them, and a MAIL that
needs one the upstream lacks is refused at MAIL, before anything is accepted.

Against a real aiosmtpd sink that does not offer SMTPUTF8.
"""

from __future__ import annotations

from tests.support.proxy_helpers import LineClient, ProxyLab

MESSAGE = b"From: a@example.com\r\nSubject: t\r\n\r\nbody\r\n.\r\n"


async def test_smtputf8_is_neither_offered_nor_accepted_when_the_upstream_lacks_it(
    lab: ProxyLab,
) -> None:
    sink = await lab.sink(smtputf8=False)
    async with lab.proxy(lab.config(sink.url)) as proxy:
        # Before the first upstream connection nothing is known: the MAIL decides.
        first = await LineClient.start(proxy.port)
        code, text = await first.cmd("MAIL FROM:<a@example.com> SMTPUTF8")
        assert (code, text) == (550, "5.6.7 SMTPUTF8 not supported by the next hop")
        # The refusal ended the transaction, nothing else: plain mail still goes through.
        assert (await first.transaction(MESSAGE))[0] == 250
        await first.close()

        # Now the upstream's EHLO is known: SMTPUTF8 is not offered, 8BITMIME still is.
        second = await LineClient.start(proxy.port)
        offered = second.ehlo.upper().split("\n")
        assert "SMTPUTF8" not in offered
        assert "8BITMIME" in offered
        code, _ = await second.cmd("MAIL FROM:<a@example.com> SMTPUTF8")
        assert code == 550
        assert (await second.cmd("MAIL FROM:<a@example.com> BODY=8BITMIME"))[0] == 250
        await second.close()
    assert len(sink.messages) == 1
    assert all("SMTPUTF8" not in " ".join(m.mail_options) for m in sink.messages)


async def test_both_are_offered_when_the_upstream_offers_them(lab: ProxyLab) -> None:
    sink = await lab.sink()
    async with lab.proxy(lab.config(sink.url)) as proxy:
        first = await LineClient.start(proxy.port)
        assert (await first.transaction(MESSAGE))[0] == 250
        await first.close()
        second = await LineClient.start(proxy.port)
        offered = second.ehlo.upper().split("\n")
        assert "SMTPUTF8" in offered and "8BITMIME" in offered
        wire = "From: ü@example.com\r\n\r\nbody\r\n.\r\n".encode()
        code, _ = await second.transaction(wire, "ü@example.com", params="SMTPUTF8")
        assert code == 250
        await second.close()
    assert sink.messages[-1].mail_from == "ü@example.com"
