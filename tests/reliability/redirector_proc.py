"""``RedirectorService`` as its own process, under a chosen file-descriptor limit and
event loop, so a test can exhaust its descriptors without touching the test's own.

Run as a module::

    python -m tests.reliability.redirector_proc CONFIG NOFILE asyncio|uvloop

Sets ``RLIMIT_NOFILE`` to NOFILE (soft and hard), logs like the real services
(``setup_logging``) on stderr, writes the public and admin ports to stdout once listening, and
stops cleanly on SIGTERM. ``clickrelay redirector`` always picks uvloop when installed;
this runner also offers asyncio's own loop, whose ``accept()`` failures are reported to
the loop's exception handler (uvloop drops the excess connection silently).
"""

from __future__ import annotations

import asyncio
import resource
import signal
import sys

from clickrelay.config import load_config
from clickrelay.logsetup import setup_logging
from redirector.service import RedirectorService
from redirector.tokens import load_keyring


async def main(config_path: str) -> None:
    config = load_config(config_path)
    service = RedirectorService(config.redirector, load_keyring(config.tracking.key_file))
    await service.start()
    print(service.public_port, service.admin_port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await service.stop()


if __name__ == "__main__":
    config_path, nofile, loop_kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    setup_logging("info")
    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(main(config_path))
    else:
        asyncio.run(main(config_path))
