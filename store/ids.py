"""Time-ordered UUIDs (version 7), so that newest-first listing is an index scan on the id."""

from __future__ import annotations

import os
import threading
import time
import uuid

_RAND_BITS = 74  # rand_a (12) + rand_b (62)
_lock = threading.Lock()
_last_millis = 0
_last_rand = 0


def new_id() -> uuid.UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, then random bits (RFC 9562).

    Monotonic within the process (RFC 9562 §6.2): an id made in the same millisecond as the
    one before it (or after the clock stepped back) is the one before it plus one, so ids
    sort in the order they were made and "newest first" holds below a millisecond too.
    """
    global _last_millis, _last_rand
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big") >> (80 - _RAND_BITS)
    with _lock:
        if millis <= _last_millis:
            millis, rand = _last_millis, _last_rand + 1
            if rand >> _RAND_BITS:  # 2**74 ids in one millisecond: borrow the next one
                millis, rand = millis + 1, 0
        _last_millis, _last_rand = millis, rand
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 62) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    return uuid.UUID(int=value)
