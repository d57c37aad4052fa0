"""A real DNS server on loopback for tests: UDP on 127.0.0.1, port 0, built with dnspython.

It answers like a small recursive resolver for the names you give it, so the code under
test talks to it exactly as it would to a real nameserver (``[preflight] nameservers =
["127.0.0.1:<port>"]``). It runs in a thread, so it answers both async tests and a
``clickrelay`` subprocess that a synchronous test waits for.

Usage::

    from tests.support.dns_server import DnsServer

    with DnsServer() as dns:
        dns.add("links.example.com", "CNAME", "track.example.net", ttl=300)
        dns.add("track.example.net", "A", "127.0.0.1")
        dns.set_mode("broken.example.com", "servfail")   # or "nxdomain", "drop"
        nameserver = dns.nameserver                      # "127.0.0.1:54321"
        dns.replace("links.example.com", "CNAME", "old.example.org")  # change at runtime

or the pytest fixture ``dns_server`` (every test can ask for ``dns_server: DnsServer``;
``tests/conftest.py`` lists this module in ``pytest_plugins``).

Behaviour:

* A name with no records and no mode is NXDOMAIN. A name that has records, but none of
  the asked type, is NOERROR with an empty answer (what dnspython calls ``NoAnswer``).
* A query for another type at a name holding a CNAME follows the chain inside the server
  (at most 16 links) and answers with every CNAME plus the final records, as recursive
  resolvers do. A CNAME query answers just that CNAME.
* Modes per name: ``"servfail"`` (rcode SERVFAIL), ``"nxdomain"`` (even if records
  exist) and ``"drop"`` (never answers: the client must time out). ``set_mode(None, …)``
  sets the mode for every name.
* Names are case-insensitive and may be given with or without the trailing dot; unicode
  (IDN) names are stored in their punycode form, as they appear on the wire.
* ``queries`` counts the queries answered or dropped, per ``(name, type)``, for tests
  that want to see that a refresh really went to the network.
"""

from __future__ import annotations

import collections
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from tests.support.closing import Closing

MODES = ("servfail", "nxdomain", "drop")
_MAX_CHAIN = 16


@dataclass(frozen=True)
class Record:
    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    ttl: int
    rdata: dns.rdata.Rdata


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


class DnsServer(Closing):
    """A threaded UDP DNS server on ``127.0.0.1:<port 0>`` whose zone tests edit live."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._records: dict[dns.name.Name, list[Record]] = {}
        self._modes: dict[dns.name.Name | None, str] = {}
        self.queries: collections.Counter[tuple[str, str]] = collections.Counter()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.05)
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._thread.start()

    # --- the zone ------------------------------------------------------------------------

    @property
    def nameserver(self) -> str:
        """``host:port``, as ``[preflight] nameservers`` wants it."""
        return f"{self.host}:{self.port}"

    def add(self, name: str, rdtype: str, value: str, ttl: int = 300) -> None:
        """Add one record, e.g. ``add("links.example.com", "CNAME", "track.example.net")``."""
        owner = _name(name)
        rtype = dns.rdatatype.from_text(rdtype)
        target = value
        if rtype in (dns.rdatatype.CNAME, dns.rdatatype.NS) and not value.endswith("."):
            target = _name(value).to_text()  # absolute, punycode
        rdata = dns.rdata.from_text(dns.rdataclass.IN, rtype, target)
        with self._lock:
            self._records.setdefault(owner, []).append(Record(owner, rtype, ttl, rdata))

    def replace(self, name: str, rdtype: str, value: str, ttl: int = 300) -> None:
        """Replace every record of this type at this name with one new record."""
        self.remove(name, rdtype)
        self.add(name, rdtype, value, ttl)

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Remove the records of one type (or all) at a name; it becomes NXDOMAIN if empty."""
        owner = _name(name)
        rtype = dns.rdatatype.from_text(rdtype) if rdtype else None
        with self._lock:
            kept = [
                r for r in self._records.get(owner, []) if rtype is not None and r.rdtype != rtype
            ]
            if kept:
                self._records[owner] = kept
            else:
                self._records.pop(owner, None)

    def set_mode(self, name: str | None, mode: str | None) -> None:
        """Make a name (None: every name) answer SERVFAIL, NXDOMAIN or nothing at all."""
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        key = _name(name) if name is not None else None
        with self._lock:
            if mode is None:
                self._modes.pop(key, None)
            else:
                self._modes[key] = mode

    def query_count(self, name: str, rdtype: str) -> int:
        return self.queries[(_name(name).to_text().lower(), rdtype.upper())]

    # --- answering -----------------------------------------------------------------------

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        with self._lock:
            self.queries[(qname.to_text().lower(), dns.rdatatype.to_text(qtype))] += 1
            mode = self._modes.get(qname) or self._modes.get(None)
            if mode == "drop":
                return None
            if mode == "servfail":
                response.set_rcode(dns.rcode.SERVFAIL)
                return response
            if mode == "nxdomain":
                response.set_rcode(dns.rcode.NXDOMAIN)
                return response
            name = qname
            for _ in range(_MAX_CHAIN):
                records = self._records.get(name)
                if records is None:
                    # The query's own name missing is NXDOMAIN; a dangling CNAME target too.
                    response.set_rcode(dns.rcode.NXDOMAIN)
                    return response
                matching = [r for r in records if r.rdtype == qtype]
                cnames = [r for r in records if r.rdtype == dns.rdatatype.CNAME]
                if matching or not cnames or qtype == dns.rdatatype.CNAME:
                    self._add_rrset(response, name, matching)
                    return response
                self._add_rrset(response, name, cnames[:1])
                target = cnames[0].rdata.target  # type: ignore[attr-defined]
                assert isinstance(target, dns.name.Name)
                name = target
            response.set_rcode(dns.rcode.SERVFAIL)  # a CNAME loop, as resolvers report it
            return response

    @staticmethod
    def _add_rrset(
        response: dns.message.Message, name: dns.name.Name, records: list[Record]
    ) -> None:
        if not records:
            return
        rrset = dns.rrset.RRset(name, dns.rdataclass.IN, records[0].rdtype)
        for record in records:
            rrset.add(record.rdata, record.ttl)
        rrset.ttl = min(r.ttl for r in records)
        response.answer.append(rrset)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue
            response = self._answer(query)
            if response is not None:
                self._sock.sendto(response.to_wire(), peer)

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture(name="dns_server")
def dns_server_fixture() -> Iterator[DnsServer]:
    """A fresh, empty :class:`DnsServer` for one test."""
    with DnsServer() as server:
        yield server
