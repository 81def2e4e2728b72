"""Entity ids for temp ids: ULIDs (26 Crockford base32 characters, time-sortable).

Generated in batches for a whole transaction: the 48-bit millisecond prefix is encoded
once and the 80 random bits of each id in one base32 call, which makes a bulk load of
new entities several times faster than a general-purpose ULID library.
"""

from __future__ import annotations

import base64
import os

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_FROM_RFC4648 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", CROCKFORD)


def _time_prefix(ms: int) -> str:
    return "".join(CROCKFORD[(ms >> shift) & 31] for shift in range(45, -1, -5))


def new_ulids(count: int, now_us: int) -> list[str]:
    """`count` fresh ULIDs stamped with the millisecond of `now_us`."""
    prefix = _time_prefix((now_us // 1000) & (2**48 - 1))
    randomness = base64.b32encode(os.urandom(10 * count)).decode("ascii").translate(_FROM_RFC4648)
    return [prefix + randomness[16 * i : 16 * i + 16] for i in range(count)]
