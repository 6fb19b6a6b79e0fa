"""Pre-copy live migration (Clark et al., "Live Migration of Virtual Machines", NSDI 2005).

    round 1          send every page while the guest runs on; the dirty log records its writes
    round 2, 3, ...  send the pages dirtied during the round before, while it runs on; before each
                     batch, peek at the dirty log and skip a page that was dirtied again since the
                     round began (it would be stale on arrival: a later round sends it)
    stop?            a StopConditions preset decides after each round (Xen's, Clark's or QEMU's)
    stop-and-copy    pause the guest, send what is still dirty and the vCPU and device state, at
                     the link's full rate: the downtime
    activate         the destination runs on from exactly where the source stopped

Xen's loop, as tools/libxc/xc_domain_save.c runs it (Xen 3.x and 4.x before the migration-v2 rewrite):
after round `iter` it starts the last iteration when

    (sent_this_iter > sent_last_iter && RATE_IS_MAX()) || (iter >= max_iters) ||
    (sent_this_iter + skip_this_iter < 50) || (total_sent > p2m_size * max_factor)

with max_iters = DEF_MAX_ITERS = 29 ("limit us to 30 times round loop": 29 live rounds and the last
one), max_factor = DEF_MAX_FACTOR = 3, and sent_last_iter set to the memory size before round 1
("pretend we sent all the pages last iteration"). The 50 counts the pages sent or skipped in the
round just finished, not the pages left dirty, so a migration never stops after its full first round.
RATE_IS_MAX() is 0 unless libxc was built with ADAPTIVE_SAVE (Clark's dynamic rate limiting). Inside
a round Xen peeks at the log-dirty bitmap (XEN_DOMCTL_SHADOW_OP_PEEK) before each batch of up to
MAX_BATCH_SIZE = 1024 pages and skips pages dirtied since the round began (skip_this_iter); after the
round it reads and clears the bitmap (XEN_DOMCTL_SHADOW_OP_CLEAN), which then holds the skipped pages
too. vmkit's guests have 1,024 pages in all, so vmkit peeks every PEEK_EVERY = 64 pages (16 peeks a
round, the proportion of a guest of 256 MiB with Xen's batches).

The building blocks are Migration's methods (send, peek, dirty_pages, stop_and_copy), so a loop of
one's own can be written with them; migrate() is the loop. Time is the link's simulated time, during
which the source guest really runs, so the rounds, the dirty pages and the downtime come from the
guest's own writes.
"""
from dataclasses import dataclass, field
import re

from ..asm import assemble
from ..errors import VmkitError
from ..trace import Event
from .link import PAGE_SIZE, RATE_INCREMENT_MBIT, Link, LinkDown
from .vms import make_vm

XEN_MAX_BATCH = 1024        # MAX_BATCH_SIZE, tools/libxc/xg_save_restore.h: pages between two peeks in Xen
PEEK_EVERY = 64             # vmkit's batch: Xen's proportion for guests of 1,024 pages
MAX_GUEST_SECONDS = 30.0    # guest time a migration may take: the model runs the guest for all of it
DIES_AT = "a round number (1, 2, ...), or 'stop-and-copy'"


class MigrationAborted(VmkitError):
    """The migration failed part-way (link down, destination gone, cancelled). The source runs on,
    with nothing lost: `.migration.source` is the VM, dirty logging off."""

    def __init__(self, message, migration):
        super().__init__(message)
        self.migration = migration


@dataclass
class Round:
    number: int
    pages_sent: int
    pages_dirtied: int        # dirty at the end of the round (dirtied during it, or skipped): the next round's pages
    seconds: float            # how long the round took on the link
    mbit: float               # the rate it was sent at
    start: float = 0.0        # seconds since the migration began
    pages_skipped: int = 0    # pages of this round left out because they were dirtied again during it

    @property
    def dirty_mbit(self):
        """The rate at which the guest dirtied memory during this round."""
        return self.pages_dirtied * PAGE_SIZE * 8 / self.seconds / 1e6 if self.seconds else 0.0


@dataclass(frozen=True)
class StopConditions:
    """When the pre-copy stops iterating, and how a round sends. A field set to None is a rule not
    used. Presets: XEN, CLARK, QEMU; each says where its rules come from."""
    name: str = "Xen"
    source: str = "tools/libxc/xc_domain_save.c"
    rate_limit: bool = True       # Xen: the link at its maximum (adaptive) rate and this round sent more than the last
    max_rounds: int = 29          # Xen: max_iters, DEF_MAX_ITERS = 29 live rounds (the stop-and-copy is the 30th)
    min_pages: int = 50           # Xen: pages sent + skipped in the round just finished < 50
    max_factor: float = 3.0       # Xen: more than max_factor x the memory sent in all
    rate_above_max: bool = False  # Clark: the rate calculated for the next round exceeds the link's maximum
    min_remaining: int = None     # Clark: fewer than this many pages (64 = 256 KiB) still dirty
    downtime_limit: float = None  # QEMU: the dirty pages would cross within this many seconds at the last round's rate
    skip: bool = True             # peek at the dirty log before each batch and skip pages dirtied again
    give_up_after: int = None     # vmkit: cancel a migration that has not converged after this many rounds

    def reason(self, rounds, sent_total, memory_pages, link):
        """Which condition holds after `rounds` (the Round records so far), or None to go on."""
        last = rounds[-1]
        sent_before = rounds[-2].pages_sent if len(rounds) > 1 else memory_pages
        if self.rate_limit and link.adaptive and last.mbit >= link.mbit and last.pages_sent > sent_before:
            return "rate limit"
        if self.max_rounds is not None and len(rounds) >= self.max_rounds:
            return "max rounds"
        if self.min_pages is not None and last.pages_sent + last.pages_skipped < self.min_pages:
            return "few pages sent"
        if self.max_factor is not None and sent_total > self.max_factor * memory_pages:
            return f"sent {self.max_factor:g}x memory"
        if self.rate_above_max and last.dirty_mbit + RATE_INCREMENT_MBIT > link.mbit:
            return "rate above maximum"
        if self.min_remaining is not None and last.pages_dirtied < self.min_remaining:
            return "little left"
        if (self.downtime_limit is not None
                and last.pages_dirtied * PAGE_SIZE * 8 < last.mbit * 1e6 * self.downtime_limit):
            return "fits the downtime limit"
        return None


# Xen 3.x/4.x's xc_domain_save (see the module's docstring).
XEN = StopConditions()
# Clark et al., NSDI 2005, section 5.3 (dynamic rate limiting): pre-copy ends when the rate calculated
# for the next round (the last round's dirty rate + 50 Mbit/s) exceeds the administrator's maximum, or
# when less than 256 KiB remains to send. The paper's loop peeks and skips too (section 5.4, rapid
# page dirtying). It names no round limit: vmkit cancels after 30 rounds, as many as Xen goes round.
CLARK = StopConditions(name="Clark et al.", source="Clark et al., NSDI 2005, sections 5.3 and 5.4",
                       rate_limit=False, max_rounds=None, min_pages=None, max_factor=None,
                       rate_above_max=True, min_remaining=64, give_up_after=30)
# QEMU's migration_iteration_run (migration/migration.c): complete once the pending data is below
# threshold_size = measured bandwidth x downtime-limit (DEFAULT_MIGRATE_SET_DOWNTIME, 300 ms). QEMU
# reads the dirty bitmap once per pass and does not peek; it has no round limit (a guest that never
# converges migrates forever unless auto-converge throttles it or post-copy takes over): vmkit
# cancels after 30 rounds.
QEMU = StopConditions(name="QEMU", source="qemu migration/migration.c, migration_iteration_run",
                      rate_limit=False, max_rounds=None, min_pages=None, max_factor=None,
                      downtime_limit=0.300, skip=False, give_up_after=30)
PRESETS = {"xen": XEN, "clark": CLARK, "qemu": QEMU}


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

    def __init__(self, guest, where="model", link=None, warmup=0.0, destination_dies_at=None, on_round=None,
                 peek_every=PEEK_EVERY, max_guest_seconds=MAX_GUEST_SECONDS):
        if destination_dies_at is not None and destination_dies_at != "stop-and-copy" and (
                isinstance(destination_dies_at, bool) or not isinstance(destination_dies_at, int)
                or destination_dies_at < 1):
            raise VmkitError(f"destination_dies_at is {DIES_AT}, or None; got {destination_dies_at!r}")
        if not (isinstance(max_guest_seconds, (int, float)) and max_guest_seconds > 0):
            raise VmkitError(f"max_guest_seconds is a number of seconds above 0; got {max_guest_seconds!r}")
        self.max_guest_seconds = max_guest_seconds
        self.image = assemble(guest)
        self.where = where
        self.link = link if link is not None else Link()
        if not (isinstance(peek_every, int) and peek_every >= 1):
            raise VmkitError(f"peek_every is a number of pages, at least 1 (Xen's own is {XEN_MAX_BATCH}); got {peek_every!r}")
        self.peek_every = peek_every
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

    def send(self, pages, skip=True):
        """One pre-copy round: send `pages` while the source runs on for as long as the link needs,
        in batches of `peek_every` pages. With `skip` (Xen's and Clark's loop), each batch begins with
        a peek at the dirty log, and a page dirtied again since the round began is left out: it would
        be stale on arrival, and it is dirty, so dirty_pages() hands it to a later round. Returns the
        Round; the pages dirtied meanwhile (and those skipped) wait in dirty_pages()."""
        self._expect("pre-copy", "send")
        pages = self._pages(pages)
        number = len(self.rounds) + 1
        if self.destination_dies_at == number:
            self._abort(f"the destination host died during round {number}")
        mbit = self.link.rate_mbit = self.link.rate_for(self.rounds[-1] if self.rounds else None)
        seconds, sent, skipped = 0.0, 0, []
        todo = iter(pages)
        while True:
            stale = self.peek() if skip else ()
            batch = []
            for page in todo:
                if page in stale:
                    skipped.append(page)             # Xen's skip_this_iter counts these
                else:
                    batch.append(page)
                    if len(batch) == self.peek_every:
                        break
            if not batch:
                break
            took = self.link.transfer_seconds(len(batch), mbit)
            if self.clock + seconds + took > self.max_guest_seconds:
                self._abort(f"round {number} would run past {self.max_guest_seconds:g} s of guest time "
                            f"(max_guest_seconds): at {mbit:g} Mbit/s a batch of {len(batch)} pages takes {took:.3g} s, "
                            f"and the guest runs all that time")
            self._deliver(batch, f"round {number}")
            self.source.run_for(took)                # the guest keeps running while the pages travel
            seconds += took
            sent += len(batch)
        latency = self.link.latency_ms / 1000
        self.source.run_for(latency)                 # the last page arrives a latency after it left
        seconds += latency
        self._dirty.update(self.source.collect_dirty())
        record = Round(number, sent, len(self._dirty), seconds, mbit, start=self.clock, pages_skipped=len(skipped))
        self.clock += seconds
        self.rounds.append(record)
        self._event("round", round=number, pages_sent=sent, pages_skipped=len(skipped), skipped=skipped,
                    pages_dirtied=len(self._dirty), seconds=seconds, mbit=mbit)
        if self.on_round is not None:
            self.on_round(record)
        return record

    def peek(self):
        """The pages dirtied since the last dirty_pages(), without clearing them (Xen's
        XEN_DOMCTL_SHADOW_OP_PEEK). On KVM, whose KVM_GET_DIRTY_LOG always clears, the VM keeps what
        it read until dirty_pages() hands it over."""
        self._expect("pre-copy", "peek")
        return self.source.peek_dirty() | self._dirty

    def cancel(self, why):
        """Give the migration up (an administrator's decision, or a loop's): the source runs on."""
        self._expect("pre-copy", "cancel")
        self._abort(f"cancelled: {why}")

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
        # the vCPU's and the devices' state cross the same link, after the last pages
        state_pages = -(-(len(cpu) + len(devices)) // PAGE_SIZE)
        if self.link.carry(state_pages) < state_pages:
            self._abort(f"the link went down during the stop-and-copy, before the vCPU and device state crossed")
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
            on_round=None, destination_dies_at=None, peek_every=PEEK_EVERY):
    """Migrate a running guest: a full copy, rounds of dirty pages until a stop condition of `stop`
    (XEN, CLARK, QEMU or one's own StopConditions) holds, then stop-and-copy. Returns the
    MigrationResult (check .verified). A `stop` that cancels (give_up_after) raises MigrationAborted."""
    if progress:
        on_round = _progress(on_round)
    m = Migration(guest, where, link, warmup, destination_dies_at=destination_dies_at, on_round=on_round,
                  peek_every=peek_every)
    m.send(m.all_pages(), skip=stop.skip)
    while True:
        reason = stop.reason(m.rounds, m.sent_total, m.memory_pages, m.link)
        pages = m.dirty_pages()
        if reason is not None:
            return m.stop_and_copy(pages, stop_reason=reason, after=after)
        if stop.give_up_after is not None and len(m.rounds) >= stop.give_up_after:
            m.cancel(f"{stop.name}'s conditions did not end the pre-copy in {len(m.rounds)} rounds "
                     f"({len(pages)} pages still dirty): the guest dirties memory as fast as the link sends it")
        m.send(pages, skip=stop.skip)


def _progress(then):
    """A line per round as it happens (a notebook can pass its own on_round to draw a widget)."""
    def show(record):
        bar = "#" * min(40, max(1, record.pages_sent * 40 // 1024))
        print(f"round {record.number:2d} {bar:<40} {record.pages_sent:5d} pages sent, {record.pages_skipped:4d} skipped, "
              f"{record.pages_dirtied:5d} dirtied, {record.seconds * 1000:7.2f} ms at {record.mbit:g} Mbit/s", flush=True)
        if then is not None:
            then(record)
    return show
