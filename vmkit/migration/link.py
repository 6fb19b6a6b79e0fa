"""The network between the two hosts, simulated so that time and downtime mean something.

Sending n pages at r Mbit/s takes latency + n * 4096 * 8 / (r * 10^6) seconds. With `adaptive`,
the rate follows Clark et al.'s dynamic rate limiting: the first round goes at `start_mbit`, each
later round at the dirty rate of the round before plus 50 Mbit/s, never above `mbit`. The link can
be told to fail after a number of pages, to test what a dropped connection does to a migration.
"""
import math
from dataclasses import dataclass

from ..errors import VmkitError

PAGE_SIZE = 4096
RATE_INCREMENT_MBIT = 50          # Clark et al.: "a constant increment of 50 Mbit/s"


class LinkDown(VmkitError):
    """The link between source and destination went down in the middle of a transfer."""


@dataclass
class Link:
    mbit: float = 1000.0              # the link's bandwidth, the most any round may use
    latency_ms: float = 0.1           # one way: every transfer waits this long before its first page
    adaptive: bool = False            # Clark's dynamic rate limiting
    start_mbit: float = 100.0         # the first round's rate when adaptive
    fail_after_pages: int = None      # fault injection: the link drops after this many pages

    def __post_init__(self):
        numbers = (self.mbit, self.start_mbit, self.latency_ms)
        if not all(isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) for n in numbers) \
                or self.mbit <= 0 or self.start_mbit <= 0 or self.latency_ms < 0:
            raise VmkitError(f"a link needs a positive, finite bandwidth and a finite latency >= 0 (got "
                             f"mbit={self.mbit!r}, start_mbit={self.start_mbit!r}, latency_ms={self.latency_ms!r})")
        if self.fail_after_pages is not None and (isinstance(self.fail_after_pages, bool) or
                                                  not isinstance(self.fail_after_pages, int) or self.fail_after_pages < 0):
            raise VmkitError(f"fail_after_pages is a number of pages, 0 or more, or None; got {self.fail_after_pages!r}")
        self.pages_carried = 0
        self.rate_mbit = None             # the rate of the latest round, once one has been sent

    def rate_for(self, last_round):
        """Mbit/s for the next round, given the last Round (None before the first)."""
        if not self.adaptive:
            return self.mbit
        if last_round is None:
            return min(self.start_mbit, self.mbit)
        return min(self.mbit, last_round.dirty_mbit + RATE_INCREMENT_MBIT)

    def seconds(self, pages, mbit, extra_bytes=0):
        """How long `pages` pages (and `extra_bytes` more) take at `mbit`, the latency included."""
        return self.latency_ms / 1000 + self.transfer_seconds(pages, mbit, extra_bytes)

    def transfer_seconds(self, pages, mbit, extra_bytes=0):
        """How long the sender takes to put `pages` pages (and `extra_bytes` more) on the wire at `mbit`."""
        return (pages * PAGE_SIZE + extra_bytes) * 8 / (mbit * 1e6)

    def carry(self, pages):
        """Carry `pages` pages; returns how many arrived before the link went down (LinkDown is
        raised by the caller once it has delivered those)."""
        if self.fail_after_pages is None:
            self.pages_carried += pages
            return pages
        arrived = max(0, min(pages, self.fail_after_pages - self.pages_carried))
        self.pages_carried += arrived
        return arrived
