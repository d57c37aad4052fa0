"""Replay of scanner and human click traffic through a real redirector; labels vs truth.

    python bench/classify.py [--size small|large] [--seed 1] [--trap] [--json]

Each scenario below is built from public descriptions of how mail security scanners and
people follow links. Every click is a real HTTP request (``GET``/``HEAD /c/<token>`` with
a token sealed by the redirector's own key) to a real ``RedirectorService`` on
127.0.0.1; the simulated client address travels in ``X-Forwarded-For`` from a trusted
proxy (127.0.0.1), exactly as behind a load balancer. Nothing leaves loopback.

Time is compressed only where the rules cannot see it:

* the send time in each token is set so that "seconds since send" is the simulated one
  (a scanner at delivery, a person two days later);
* within one message, gaps between clicks longer than ``--compress-gap`` seconds (the
  longest gap any rule compares is shorter) are replayed as a random gap between that
  and 1.3x it: no rule can tell such a gap from hours;
* the settle delay is set just above the rules' evidence horizon.

After the last click the replay waits until every click is in the store (and settled,
when the redirector settles labels), then compares each stored label with the truth and
prints, per scenario: clicks, bot recall (scanner clicks labelled bot), human recall
(human clicks labelled human), precision of both labels, and every miss.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from redirector.config import RedirectorConfig  # noqa: E402
from redirector.service import RedirectorService  # noqa: E402
from redirector.tokens import Keyring, new_key_line, parse_keys  # noqa: E402

EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
)
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Safari/605.1.15"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)
ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36"
)
OUTLOOK_WEBVIEW = CHROME + " Edg/131.0.0.0 OutlookWebView"
HUMAN_AGENTS = (CHROME, FIREFOX, SAFARI, EDGE)
MOBILE_AGENTS = (IPHONE, ANDROID)

# Simulated networks. Scanner addresses come from ranges the bundled scanner-network file
# lists (see redirector/clicks/data/scanner_networks.txt for their sources); people from
# documentation-style residential, office and mobile ranges that no list names.
MICROSOFT = ("40.107.0.0/16", "52.100.0.0/14", "104.47.0.0/17")
PROOFPOINT = ("148.163.128.0/19", "67.231.144.0/20")
MIMECAST = ("205.139.110.0/24", "216.205.24.0/24", "207.211.30.0/24")
BARRACUDA = ("209.222.80.0/21", "64.235.144.0/20")
CLOUD = ("3.80.0.0/12", "34.64.0.0/10", "20.40.0.0/13")  # link checkers on public clouds
# Scanners seen from addresses no list names (Safe Links has been reported detonating
# from general Azure ranges): only their behaviour can give them away.
UNLISTED = ("13.64.0.0/11", "51.104.0.0/15", "35.192.0.0/12")
HOMES = ("81.2.69.0/24", "86.150.0.0/16", "24.5.0.0/16", "73.0.0.0/10", "90.0.0.0/9")
OFFICES = ("193.0.14.0/24", "195.66.224.0/22", "62.40.96.0/19")
MOBILES = ("100.64.0.0/10", "172.56.0.0/14", "37.40.0.0/15")  # carrier-grade NAT pools

DAY = 86_400.0
HOUR = 3_600.0


def address(rng: random.Random, nets: tuple[str, ...]) -> str:
    net = ipaddress.ip_network(rng.choice(nets))
    return str(net[rng.randrange(1, net.num_addresses - 1)])


def neighbour(rng: random.Random, ip: str) -> str:
    """Another address of the same /24."""
    base = int(ipaddress.ip_address(ip)) & ~0xFF
    return str(ipaddress.ip_address(base + rng.randrange(1, 255)))


@dataclass
class Event:
    """One request: ``at`` seconds after the message was sent (simulated)."""

    at: float
    link: int
    ip: str
    agent: str | None
    truth: str  # "bot" | "human"
    scenario: str
    actor: str
    method: str = "GET"
    trap: bool = False


@dataclass
class Message:
    queue_id: str
    links: int
    recipients: list[str]
    events: list[Event] = field(default_factory=list)


# --- the actors ------------------------------------------------------------------------


def safelinks_walk(
    rng: random.Random, msg: Message, at: float, scenario: str, nets: tuple[str, ...] = MICROSOFT
) -> None:
    """Safe Links detonation: every link within seconds, Edge/Chrome agent, Microsoft
    addresses, several detonation hosts of one /24 sharing the work."""
    ip = address(rng, nets)
    hosts = [ip] + [neighbour(rng, ip) for _ in range(rng.choice((0, 0, 1, 2)))]
    agent = rng.choice((EDGE, CHROME))
    order = list(range(msg.links))
    rng.shuffle(order)
    t = at
    for link in order:
        msg.events.append(Event(t, link, rng.choice(hosts), agent, "bot", scenario, "safelinks"))
        t += rng.uniform(0.05, 1.2)
    if msg.links and rng.random() < 0.5:  # the invisible trap link, when present
        msg.events.append(Event(t, -1, rng.choice(hosts), agent, "bot", scenario, "safelinks"))


def proofpoint_walk(
    rng: random.Random, msg: Message, at: float, scenario: str, nets: tuple[str, ...] = PROOFPOINT
) -> None:
    """URL Defense: a HEAD then a GET of each link, links a few seconds apart."""
    ip = address(rng, nets)
    t = at
    for link in range(msg.links):
        msg.events.append(Event(t, link, ip, CHROME, "bot", scenario, "proofpoint", "HEAD"))
        t += rng.uniform(0.05, 0.6)
        msg.events.append(Event(t, link, ip, CHROME, "bot", scenario, "proofpoint"))
        t += rng.uniform(1.0, 4.0)


def gateway_walk(
    rng: random.Random, msg: Message, at: float, scenario: str, nets: tuple[str, ...], name: str
) -> None:
    """Mimecast / Barracuda: every link, at a machine-regular pace; half the time with the
    vendor's name in the agent, half with a browser's."""
    ip = address(rng, nets)
    agent = rng.choice((f"Mozilla/5.0 (compatible; {name} URL Protect)", CHROME))
    step = rng.uniform(2.0, 6.0)
    t = at
    for link in range(msg.links):
        msg.events.append(Event(t, link, ip, agent, "bot", scenario, name.lower()))
        t += step * rng.uniform(0.99, 1.01)  # a scheduler's pace, a little jitter


def link_checker(rng: random.Random, msg: Message, at: float, scenario: str) -> None:
    """A link checker / previewer fetching one link of the message, browser agent, from
    a public cloud."""
    msg.events.append(
        Event(at, rng.randrange(msg.links), address(rng, CLOUD), CHROME, "bot", scenario, "checker")
    )


def person(
    rng: random.Random,
    msg: Message,
    at: float,
    scenario: str,
    ip: str,
    agents: tuple[str, ...],
    *,
    clicks: int | None = None,
    actor: str = "person",
) -> None:
    """A person: one or two links (sometimes several in a row), seconds to minutes apart;
    sometimes the same link twice (a reload, a second tap)."""
    n = clicks or rng.choice((1, 1, 1, 2, 2, 3))
    agent = rng.choice(agents)
    links = rng.sample(range(msg.links), min(n, msg.links))
    t = at
    for link in links:
        msg.events.append(Event(t, link, ip, agent, "human", scenario, actor))
        if rng.random() < 0.1:
            msg.events.append(
                Event(t + rng.uniform(2, 30), link, ip, agent, "human", scenario, actor)
            )
        t += rng.uniform(8.0, 600.0)


def later(rng: random.Random) -> float:
    """When a person reads mail: minutes to days after it was sent."""
    return rng.choice(
        (rng.uniform(60, 900), rng.uniform(900, 4 * HOUR), rng.uniform(4 * HOUR, 3 * DAY))
    )


def delivered(rng: random.Random) -> float:
    """Seconds from our relay to the recipient's gateway scanning it."""
    return rng.choice((rng.uniform(1, 9), rng.uniform(9, 60), rng.uniform(60, 300)))


# --- the scenarios -----------------------------------------------------------------------


def maybe_person(
    rng: random.Random, msg: Message, scenario: str, networks: tuple[str, ...]
) -> None:
    """Half the time, the recipient clicks too, later, from ``networks``."""
    if rng.random() < 0.5:
        person(rng, msg, later(rng), scenario, address(rng, networks), HUMAN_AGENTS)


def s_safelinks(rng: random.Random, msg: Message) -> None:
    safelinks_walk(rng, msg, delivered(rng), "safelinks")
    if rng.random() < 0.3:  # detonated again hours later
        safelinks_walk(rng, msg, rng.uniform(HOUR, 8 * HOUR), "safelinks")
    maybe_person(rng, msg, "safelinks", HOMES)


def s_proofpoint(rng: random.Random, msg: Message) -> None:
    proofpoint_walk(rng, msg, delivered(rng), "proofpoint")
    maybe_person(rng, msg, "proofpoint", OFFICES)


def s_mimecast(rng: random.Random, msg: Message) -> None:
    gateway_walk(rng, msg, delivered(rng), "mimecast", MIMECAST, "Mimecast")
    maybe_person(rng, msg, "mimecast", OFFICES)


def s_barracuda(rng: random.Random, msg: Message) -> None:
    gateway_walk(rng, msg, delivered(rng), "barracuda", BARRACUDA, "Barracuda")
    maybe_person(rng, msg, "barracuda", HOMES)


def s_link_checker(rng: random.Random, msg: Message) -> None:
    link_checker(rng, msg, delivered(rng), "link-checker")
    maybe_person(rng, msg, "link-checker", HOMES)


def s_unlisted(rng: random.Random, msg: Message) -> None:
    """The same scanners from addresses no list names: behaviour alone must tell."""
    kind = rng.randrange(3)
    if kind == 0:
        safelinks_walk(rng, msg, delivered(rng), "unlisted-scanner", UNLISTED)
    elif kind == 1:
        proofpoint_walk(rng, msg, delivered(rng), "unlisted-scanner", UNLISTED)
    else:
        gateway_walk(rng, msg, delivered(rng), "unlisted-scanner", UNLISTED, "Gateway")
    maybe_person(rng, msg, "unlisted-scanner", HOMES)


def s_home(rng: random.Random, msg: Message) -> None:
    person(rng, msg, later(rng), "home", address(rng, HOMES), HUMAN_AGENTS)


def s_office_nat(rng: random.Random, msg: Message) -> None:
    """Many colleagues, one NAT address, one newsletter; some click within seconds of
    each other (the mail landed in every inbox at once)."""
    nat = address(rng, OFFICES)
    start = later(rng)
    for n, _recipient in enumerate(msg.recipients):
        at = start + rng.uniform(0, 5) if n % 3 == 0 else later(rng)
        person(rng, msg, at, "office-nat", nat, HUMAN_AGENTS, actor=f"colleague{n}")


def s_mobile(rng: random.Random, msg: Message) -> None:
    person(rng, msg, later(rng), "mobile", address(rng, MOBILES), MOBILE_AGENTS)


def s_several(rng: random.Random, msg: Message) -> None:
    """A reader going through a digest: several links in a row."""
    person(rng, msg, later(rng), "several-in-a-row", address(rng, HOMES), HUMAN_AGENTS, clicks=4)


def s_forwarded(rng: random.Random, msg: Message) -> None:
    """The recipient forwards the message; a colleague elsewhere clicks the same tokens."""
    person(rng, msg, later(rng), "forwarded", address(rng, HOMES), HUMAN_AGENTS)
    person(
        rng,
        msg,
        later(rng) + HOUR,
        "forwarded",
        address(rng, OFFICES),
        HUMAN_AGENTS,
        actor="forwardee",
    )


def s_same_second(rng: random.Random, msg: Message) -> None:
    """A person clicks in the very second a scanner walks the message from elsewhere."""
    at = rng.uniform(HOUR, 4 * HOUR)
    safelinks_walk(rng, msg, at, "same-second")
    person(rng, msg, at + rng.uniform(0, 1), "same-second", address(rng, HOMES), HUMAN_AGENTS)


SCENARIOS: dict[str, tuple[Callable[[random.Random, Message], None], int]] = {
    # name: (builder, messages per unit of size)
    "safelinks": (s_safelinks, 4),
    "proofpoint": (s_proofpoint, 2),
    "mimecast": (s_mimecast, 2),
    "barracuda": (s_barracuda, 1),
    "link-checker": (s_link_checker, 2),
    "unlisted-scanner": (s_unlisted, 4),
    "home": (s_home, 4),
    "office-nat": (s_office_nat, 2),
    "mobile": (s_mobile, 3),
    "several-in-a-row": (s_several, 2),
    "forwarded": (s_forwarded, 1),
    "same-second": (s_same_second, 2),
}
SIZES = {"small": 1, "large": 8}


def build(seed: int, size: int, trap: bool) -> list[Message]:
    rng = random.Random(seed)
    messages: list[Message] = []
    for name, (builder, per_unit) in SCENARIOS.items():
        for n in range(per_unit * size):
            links = rng.randint(2, 9)
            recipients = [f"r{k}@{name}.example" for k in range(rng.randint(1, 6))]
            msg = Message(f"{name}-{n}", links, recipients)
            builder(rng, msg)
            if not trap:
                msg.events = [e for e in msg.events if e.link >= 0]
            else:
                for e in msg.events:
                    e.trap = e.link < 0
            messages.append(msg)
    return messages


# --- the replay --------------------------------------------------------------------------


@dataclass
class Planned:
    real_at: float  # seconds after the replay's start
    event: Event
    msg: Message
    recipient: str
    number: int


def plan(messages: list[Message], rng: random.Random, compress_gap: float) -> list[Planned]:
    planned: list[Planned] = []
    number = 0
    for msg in messages:
        events = sorted(msg.events, key=lambda e: e.at)
        real = rng.uniform(0.5, 3.0)
        previous_at: float | None = None
        for event in events:
            if previous_at is not None:
                gap = event.at - previous_at
                real += (
                    gap if gap <= compress_gap else rng.uniform(compress_gap, 1.3 * compress_gap)
                )
            previous_at = event.at
            # Each actor clicks its own copy (its recipient's tokens); colleagues behind a
            # NAT are different recipients of one message.
            if event.actor.startswith("colleague"):
                recipient = msg.recipients[int(event.actor[9:]) % len(msg.recipients)]
            else:
                recipient = msg.recipients[0]
            planned.append(Planned(real, event, msg, recipient, number))
            number += 1
    planned.sort(key=lambda p: p.real_at)
    return planned


async def replay(planned: list[Planned], keyring: Keyring, base: str, trap_supported: bool) -> int:
    start = time.time()
    errors = 0
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(p: Planned) -> None:
            nonlocal errors
            delay = start + p.real_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)  # a schedule, not a synchronisation
            e = p.event
            now = time.time()
            link = max(e.link, 0)
            url = f"https://example.com/{p.msg.queue_id}/{link}?event={p.number}"
            kwargs: dict[str, Any] = {}
            if e.trap and trap_supported:
                kwargs["trap"] = True
            token = keyring.seal(
                url,
                host="127.0.0.1",
                queue_id=p.msg.queue_id,
                link_index=link if not e.trap else p.msg.links,
                recipient=p.recipient,
                sent_at=int(now - e.at),
                **kwargs,
            )
            headers = {"X-Forwarded-For": e.ip}
            if e.agent is not None:
                headers["User-Agent"] = e.agent
            else:
                headers["User-Agent"] = ""
            async with session.request(
                e.method, f"{base}/c/{token}", headers=headers, allow_redirects=False
            ) as resp:
                await resp.read()
                if resp.status != 302:
                    errors += 1

        await asyncio.gather(*(one(p) for p in planned))
    return errors


def stored_labels(db: Path) -> tuple[dict[int, tuple[str, str | None]], int]:
    """Label and reason by event number, and how many clicks are still unsettled."""
    conn = sqlite3.connect(db)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(clicks)")}
        rows = conn.execute("SELECT url, classification, reason FROM clicks").fetchall()
        unsettled = 0
        if "settled" in columns:
            unsettled = conn.execute("SELECT COUNT(*) FROM clicks WHERE settled = 0").fetchone()[0]
    finally:
        conn.close()
    labels = {int(url.rsplit("=", 1)[1]): (c, r) for url, c, r in rows}
    return labels, unsettled


@dataclass
class Score:
    clicks: int = 0
    bot_true: int = 0  # scanner clicks labelled bot
    bot_total: int = 0  # scanner clicks
    bot_labelled: int = 0  # clicks labelled bot
    human_true: int = 0
    human_total: int = 0
    human_labelled: int = 0

    def add(self, truth: str, label: str) -> None:
        self.clicks += 1
        if truth == "bot":
            self.bot_total += 1
            self.bot_true += label == "bot"
        else:
            self.human_total += 1
            self.human_true += label == "human"
        self.bot_labelled += label == "bot"
        self.human_labelled += label == "human"

    def merge(self, other: Score) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:6.2f}%" if whole else "      -"


def report(scores: dict[str, Score], misses: dict[str, Counter[str]]) -> str:
    head = (
        f"{'scenario':<18} {'clicks':>6} {'bots':>5} {'humans':>6}  {'bot recall':>10} "
        f"{'bot prec.':>9}  {'human recall':>12} {'human prec.':>11}"
    )
    lines = [head, "-" * len(head)]
    total = Score()
    for name in list(SCENARIOS):
        s = scores.get(name)
        if s is None:
            continue
        total.merge(s)
        lines.append(_row(name, s))
    lines.append("-" * len(head))
    lines.append(_row("all", total))
    lines.append("")
    lines.append("misses (scenario: truth→label reason ×count):")
    if not any(misses.values()):
        lines.append("  none")
    for name, counter in misses.items():
        for what, n in sorted(counter.items()):
            lines.append(f"  {name}: {what} ×{n}")
    return "\n".join(lines)


def _row(name: str, s: Score) -> str:
    return (
        f"{name:<18} {s.clicks:>6} {s.bot_total:>5} {s.human_total:>6}  "
        f"{pct(s.bot_true, s.bot_total):>10} {pct(s.bot_true, s.bot_labelled):>9}  "
        f"{pct(s.human_true, s.human_total):>12} {pct(s.human_true, s.human_labelled):>11}"
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed + 1)
    messages = build(args.seed, SIZES[args.size], args.trap)
    planned = plan(messages, rng, args.compress_gap)
    keyring = parse_keys(new_key_line())
    with tempfile.TemporaryDirectory(prefix="clickrelay-classify-") as tmp:
        db = Path(tmp) / "clicks.sqlite3"
        overrides: dict[str, Any] = {}
        known = {f.name for f in fields(RedirectorConfig)}
        if "classification_settle" in known:
            overrides["classification_settle"] = args.settle
        config = RedirectorConfig(
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            store=f"sqlite:{db}",
            trusted_proxies=("127.0.0.1/32",),
            flush_interval=0.05,
            **overrides,
        )
        service = RedirectorService(config, keyring)
        await service.start()
        try:
            trap_supported = "trap" in Keyring.seal.__code__.co_varnames
            started = time.monotonic()
            errors = await replay(
                planned, keyring, f"http://127.0.0.1:{service.public_port}", trap_supported
            )
            recorder = service.recorder
            assert recorder is not None
            deadline = time.monotonic() + args.settle + 60
            while True:
                labels, unsettled = stored_labels(db) if db.exists() else ({}, 1)
                if recorder.queued == 0 and len(labels) >= len(planned) and unsettled == 0:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"timed out: {len(labels)}/{len(planned)} stored, {unsettled} unsettled"
                    )
                await asyncio.sleep(0.2)
            elapsed = time.monotonic() - started
        finally:
            await service.stop()
    scores: dict[str, Score] = defaultdict(Score)
    misses: dict[str, Counter[str]] = defaultdict(Counter)
    for p in planned:
        label, reason = labels[p.number]
        e = p.event
        scores[e.scenario].add(e.truth, label)
        if label != e.truth:
            misses[e.scenario][f"{e.actor} {e.truth}→{label} {reason or ''}".rstrip()] += 1
    return {
        "scores": dict(scores),
        "misses": dict(misses),
        "errors": errors,
        "clicks": len(planned),
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trap", action="store_true", help="messages carry the trap link")
    parser.add_argument(
        "--compress-gap",
        type=float,
        default=15.0,
        help="within a message, longer gaps are replayed as this (to 1.3x) seconds",
    )
    parser.add_argument("--settle", type=float, default=22.0, help="settle delay (seconds)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        out = {
            "scores": {k: vars(v) for k, v in result["scores"].items()},
            "misses": {k: dict(v) for k, v in result["misses"].items()},
            "errors": result["errors"],
            "clicks": result["clicks"],
        }
        print(json.dumps(out, indent=2))
    else:
        print(report(result["scores"], result["misses"]))
        print(
            f"\n{result['clicks']} clicks replayed in {result['seconds']:.0f} s, "
            f"{result['errors']} answers other than 302"
        )
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
