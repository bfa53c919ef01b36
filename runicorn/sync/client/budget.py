"""How much more than it planned a sync may write: files grown since the manifest was made."""

from __future__ import annotations

import threading

# A file that changed after the manifest was made is downloaded as it is now, but the
# server decides that size: it may exceed the manifest's size by at most this much
# (a quarter of the listed size, at least MIN_GROWTH, at most MAX_GROWTH) ...
MIN_GROWTH = 16 << 20
MAX_GROWTH = 1 << 30


def growth_allowance(listed_size: int) -> int:
    """How many bytes beyond its manifest size a changed file may have grown."""
    return min(MAX_GROWTH, max(MIN_GROWTH, listed_size // 4))


class ByteBudget:
    """... and all such growth together must fit in the free space the sync did not plan
    for (thread-safe; shared by every transfer of one sync)."""

    def __init__(self, total: int) -> None:
        self.left = max(0, total)
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (nothing reserved) if they do not fit."""
        with self._lock:
            if n > self.left:
                return False
            self.left -= n
            return True


def unplanned_budget(free: int, need: int) -> ByteBudget:
    """What files grown since the manifest may use: the free space the plan leaves,
    minus a margin (a tenth of it, at most 64 MiB) so a sync never fills the disk."""
    spare = max(0, free - need)
    return ByteBudget(spare - min(64 << 20, spare // 10))
