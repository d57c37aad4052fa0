"""Queue ids: the short id each message gets in its reply and in every log line about it.

Sortable by time (handy when reading logs) and never repeated by one process.
"""

from __future__ import annotations

import os
import threading
import time

_B32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32: no i/l/o/u confusion
_QID_LOW_BITS = 25
_QID_MILLIS_MASK = (1 << 45) - 1


class QueueIdClock:
    """Monotonic (millisecond, low bits) state, in the manner of ULID's monotonic mode.

    A fresh random low part per millisecond keeps ids of different processes apart;
    within one process, an id minted in the same millisecond as the previous one (or
    after the wall clock stepped back) is the previous value plus one, so this process
    never mints the same id twice and ids sort in minting order.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next_value(self) -> int:
        millis = int(time.time() * 1000) & _QID_MILLIS_MASK
        # 24 random bits in the 25-bit low part: its top bit starts clear, leaving
        # 2**24 increments before the millisecond field has to be borrowed.
        fresh = (millis << _QID_LOW_BITS) | int.from_bytes(os.urandom(3), "big")
        with self._lock:
            value = fresh if fresh > self._last else self._last + 1
            self._last = value
        return value


_QID_CLOCK = QueueIdClock()


def new_queue_id() -> str:
    """A 14-character queue id: 45 bits of milliseconds, 25 bits that make it unique.

    Ids minted in the same millisecond count up from a random start (`QueueIdClock`).
    Two processes collide only when they start the same millisecond within a few ids
    of the same 24 random bits.
    """
    value = _QID_CLOCK.next_value() & ((1 << 70) - 1)
    return "".join(_B32[(value >> shift) & 31] for shift in range(65, -1, -5))
