"""Pre-copy live migration (Clark et al., "Live Migration of Virtual Machines", NSDI 2005).

    round 1          send every page while the guest runs on; the dirty log records its writes
    round 2, 3, ...  send the pages dirtied during the round before, while it runs on
    stop?            Xen's conditions: 30 rounds done, fewer than 50 pages dirtied in a round,
                     more than 3x memory sent, or the link at its maximum rate and the round sent
                     more than the one before (the guest dirties faster than the link can send)
    stop-and-copy    pause the guest, send what is still dirty and the vCPU and device state, at
                     the link's full rate: the downtime
    activate         the destination runs on from exactly where the source stopped

The building blocks are Migration's methods (send, dirty_pages, stop_and_copy), so a loop of one's
own can be written with them; migrate() is the loop as Xen runs it. Time is the link's simulated
time, during which the source guest really runs, so the rounds, the dirty pages and the downtime
come from the guest's own writes.
"""
from dataclasses import dataclass, field
import re

from ..asm import assemble
from ..errors import VmkitError
from ..trace import Event
from .link import PAGE_SIZE, Link, LinkDown
from .vms import make_vm


class MigrationAborted(VmkitError):
    """The migration failed part-way (link down, destination gone). The source runs on, with
    nothing lost: `.migration.source` is the VM, dirty logging off."""

    def __init__(self, message, migration):
        super().__init__(message)
        self.migration = migration


@dataclass
class Round:
    number: int
    pages_sent: int
    pages_dirtied: int        # pages written during the round: they must be sent again
    seconds: float            # how long the round took on the link
    mbit: float               # the rate it was sent at
    start: float = 0.0        # seconds since the migration began

    @property
    def dirty_mbit(self):
        """The rate at which the guest dirtied memory during this round."""
        return self.pages_dirtied * PAGE_SIZE * 8 / self.seconds / 1e6 if self.seconds else 0.0


@dataclass(frozen=True)
class StopConditions:
    max_rounds: int = 30          # Xen: max_iters
    min_dirty: int = 50           # Xen: stop when a round leaves fewer than 50 pages to send
    max_factor: float = 3.0       # Xen: stop when more than 3x the memory has been sent
    rate_limit: bool = True       # Xen: stop when the link is at its maximum rate and a round dirtied
                                  # more than the one before

    def reason(self, rounds, sent_total, memory_pages, link):
        """Which condition holds after `rounds` (the Round records so far), or None to go on."""
        last = rounds[-1]
        if last.pages_dirtied < self.min_dirty:
            return "few dirty pages"
        if len(rounds) >= self.max_rounds:
            return "max rounds"
        if sent_total > self.max_factor * memory_pages:
            return "sent 3x memory" if self.max_factor == 3 else f"sent {self.max_factor:g}x memory"
        if (self.rate_limit and len(rounds) > 1 and last.mbit >= link.mbit
                and last.pages_dirtied > rounds[-2].pages_dirtied):
            return "rate limit"
        return None


XEN = StopConditions()


@dataclass
class MigrationResult:
    where: str
    rounds: list
    stop_reason: str
    downtime: float               # seconds the guest was paused
    total_time: float             # seconds from the first page to the switch-over
    pages_sent: int               # all rounds and the stop-and-copy
    final_pages: int              # pages sent while paused
    state_bytes: int              # vCPU and device state sent while paused
    source_digest: str
    destination_digest: str
    transcript: list              # the seq numbers the peer received, in order
    switch_seq: int               # the last seq the source had sent at the switch-over
    events: list = field(default_factory=list)
    destination: object = None    # the destination VM, running on
    source: object = None         # the source VM, paused for good

    @property
    def memory_verified(self):
        return self.source_digest == self.destination_digest

    @property
    def output_continuous(self):
        """The peer saw 1, 2, 3, ... with no gap and no repetition, across the switch-over."""
        return self.transcript == list(range(1, len(self.transcript) + 1))

    @property
    def verified(self):
        return self.memory_verified and self.output_continuous

    def summary(self):
        ok = "verified" if self.verified else (
            "NOT verified: " + ", ".join(what for what, bad in (("memory differs", not self.memory_verified),
                                                                ("output has a gap or a repeat", not self.output_continuous))
                                         if bad))
        return (f"{len(self.rounds)} round{'s' if len(self.rounds) != 1 else ''}, stopped by {self.stop_reason}; {self.pages_sent} pages sent; "
                f"downtime {self.downtime * 1000:.2f} ms ({self.final_pages} pages + {self.state_bytes} bytes of state); "
                f"total {self.total_time * 1000:.1f} ms; {ok}")


def sequence(output):
    """The numbers of the 'seq n' lines in a guest's output (a line cut at the end counts once whole)."""
    return [int(n) for n in re.findall(rb"seq (\d+)\n", output)]


class Migration:
    """One migration of a running guest from a source VM to a fresh destination VM, step by step."""

    def __init__(self, guest, where="model", link=None, warmup=0.0, destination_dies_at=None, on_round=None):
        self.image = assemble(guest)
        self.where = where
        self.link = link if link is not None else Link()
        self.source = make_vm(self.image, where, tracked=True)
        self.source.run_for(warmup)                  # the guest has been running a while
        self.destination = make_vm(self.image, where)
        self.memory_pages = self.source.pages
        self.rounds, self.events = [], []
        self.sent_total = 0
        self.clock = 0.0                             # seconds since the migration began
        self.destination_dies_at = destination_dies_at
        self.on_round = on_round
        self.state = "pre-copy"
        self._dirty = set()
        self.source.start_dirty_log()

    def all_pages(self):
        return range(self.memory_pages)

    def send(self, pages):
        """One pre-copy round: snapshot `pages`, send them while the source runs on for as long as
        the link needs. Returns the Round; the pages dirtied meanwhile wait in dirty_pages()."""
        self._expect("pre-copy", "send")
        pages = self._pages(pages)
        number = len(self.rounds) + 1
        if self.destination_dies_at == number:
            self._abort(f"the destination host died during round {number}")
        mbit = self.link.rate_mbit = self.link.rate_for(self.rounds[-1] if self.rounds else None)
        self._deliver(pages, f"round {number}")
        seconds = self.link.seconds(len(pages), mbit)
        self.source.run_for(seconds)                 # the guest keeps running while the pages travel
        self._dirty.update(self.source.collect_dirty())
        record = Round(number, len(pages), len(self._dirty), seconds, mbit, start=self.clock)
        self.clock += seconds
        self.rounds.append(record)
        self._event("round", round=number, pages_sent=len(pages), pages_dirtied=len(self._dirty),
                    seconds=seconds, mbit=mbit)
        if self.on_round is not None:
            self.on_round(record)
        return record

    def dirty_pages(self):
        """The pages dirtied since the last call, in order (get-and-clear, as KVM_GET_DIRTY_LOG)."""
        self._expect("pre-copy", "dirty_pages")
        self._dirty.update(self.source.collect_dirty())
        pages, self._dirty = sorted(self._dirty), set()
        return pages

    def stop_and_copy(self, pages, stop_reason="chosen", after=0.0):
        """Pause the source, send `pages` and the vCPU and device state, and start the destination
        (which then runs `after` guest seconds). Returns the MigrationResult, verified or not."""
        self._expect("pre-copy", "stop_and_copy")
        pages = self._pages(pages)
        if self.destination_dies_at == "stop-and-copy":
            self._abort("the destination host died during the stop-and-copy")
        # paused: the source runs no more. What it dirtied and was not sent stays in the log.
        switch_eip, switch_output = self.source.eip, self.source.output
        self._deliver(pages, "the stop-and-copy")
        cpu, devices = self.source.cpu_state(), self.source.device_state()
        # The guest is paused: nothing is gained by holding back, so the rest goes at the link's
        # full rate (QEMU, too, lifts its bandwidth limit for the switch-over).
        mbit = self.link.rate_mbit = self.link.mbit
        downtime = self.link.seconds(len(pages), mbit, extra_bytes=len(cpu) + len(devices))
        self.source.stop_dirty_log()
        self.destination.load_cpu_state(cpu)
        self.destination.load_device_state(devices)
        source_digest, destination_digest = self.source.digest(), self.destination.digest()
        self._event("stop-and-copy", pages_sent=len(pages), state_bytes=len(cpu) + len(devices),
                    downtime=downtime, eip=switch_eip)
        self.clock += downtime
        self.state = "done"
        self._event("activate", eip=switch_eip, verified=source_digest == destination_digest)
        self.destination.run_for(after)
        before = sequence(switch_output)
        return MigrationResult(
            where=self.where, rounds=list(self.rounds), stop_reason=stop_reason, downtime=downtime,
            total_time=self.clock, pages_sent=self.sent_total, final_pages=len(pages),
            state_bytes=len(cpu) + len(devices), source_digest=source_digest,
            destination_digest=destination_digest,
            transcript=sequence(switch_output + self.destination.output),
            switch_seq=before[-1] if before else 0, events=list(self.events),
            destination=self.destination, source=self.source)

    # --- the plumbing ---------------------------------------------------------------------------------
    def _pages(self, pages):
        pages = sorted(set(pages))
        if pages and not (0 <= pages[0] and pages[-1] < self.memory_pages):
            raise VmkitError(f"page numbers run from 0 to {self.memory_pages - 1}; got {pages[0]} .. {pages[-1]}")
        return pages

    def _deliver(self, pages, when):
        arrived = self.link.carry(len(pages))
        self.destination.write_pages(self.source.read_pages(pages[:arrived]))
        self.sent_total += arrived
        if arrived < len(pages):
            self._abort(f"the link went down during {when}, after {self.link.pages_carried} pages")

    def _abort(self, why):
        self.source.stop_dirty_log()
        self.state = "aborted"
        self._event("abort", why=why)
        raise MigrationAborted(f"migration aborted: {why}. The source VM runs on, nothing lost "
                               f"(migration.source); the destination's copy is discarded.", self)

    def _expect(self, state, what):
        if self.state != state:
            raise VmkitError(f"{what}() after the migration has {'ended' if self.state == 'done' else 'been aborted'}")

    def _event(self, phase, eip=None, **detail):
        self.events.append(Event("migration", self.source.eip if eip is None else eip, 0,
                                 {"phase": phase, "time": self.clock, **detail}))


def migrate(guest, where="model", link=None, warmup=0.0, after=0.0, stop=XEN, progress=False,
            on_round=None, destination_dies_at=None):
    """Migrate a running guest the way Xen does: a full copy, rounds of dirty pages until a stop
    condition holds, then stop-and-copy. Returns the MigrationResult (check .verified)."""
    if progress:
        on_round = _progress(on_round)
    m = Migration(guest, where, link, warmup, destination_dies_at=destination_dies_at, on_round=on_round)
    m.send(m.all_pages())
    while True:
        reason = stop.reason(m.rounds, m.sent_total, m.memory_pages, m.link)
        pages = m.dirty_pages()
        if reason is not None:
            return m.stop_and_copy(pages, stop_reason=reason, after=after)
        m.send(pages)


def _progress(then):
    """A line per round as it happens (a notebook can pass its own on_round to draw a widget)."""
    def show(record):
        bar = "#" * min(40, max(1, record.pages_sent * 40 // 1024))
        print(f"round {record.number:2d} {bar:<40} {record.pages_sent:5d} pages sent, "
              f"{record.pages_dirtied:5d} dirtied, {record.seconds * 1000:7.2f} ms at {record.mbit:g} Mbit/s", flush=True)
        if then is not None:
            then(record)
    return show
