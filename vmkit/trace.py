"""What a run leaves behind: the events it recorded and its result.

The simulation produces these; notebooks and widgets only render them.
"""
from dataclasses import dataclass, field

# The fixed vocabulary of Event.kind.
EVENT_KINDS = (
    "ring-transition",  # the CPU changed (or re-entered) a privilege level: int n, exception, IRQ, iret
    "interrupt",        # the PIC handed an external interrupt (IRQ) to the CPU
    "trap",             # a VMM took control from the guest
    "emulate",          # a VMM carried out an instruction on the guest's behalf
    "translate",        # a binary translator produced code for a guest block
    "hypercall",        # a paravirtual guest called the hypervisor
    "vmexit",           # hardware assist left the guest (IO, MMIO, HLT, SHUTDOWN, ...)
    "io",               # an in/out instruction reached a device (or an unknown port)
    "halt",             # hlt: the CPU stopped, or slept until the next interrupt
    "shutdown",         # a triple fault: the CPU gave up
    "exit",             # the guest wrote to isa-debug-exit
    "migration",        # live migration moved memory or state toward another host (a round, the switch-over)
    "hidden-fault",     # a #PF on the shadow page tables that the guest's own tables allow: the VMM fills it
    "true-fault",       # a #PF the guest's own page tables raise: the VMM reflects it into the guest
    "trace",            # the guest changed one of its page-table entries; the shadow followed
    "shadow-fill",      # the VMM wrote a shadow PTE, made from a guest entry
)


@dataclass(slots=True)                # tens of thousands are kept: no __dict__ each
class Event:
    kind: str
    eip: int            # where the guest was when it happened
    cpl: int            # the privilege level it happened at
    detail: dict = field(default_factory=dict)
    icount: int = None  # instructions counted before it; one that trapped or faulted counts (None: uncounted run)

    def __str__(self):
        bits = ", ".join(f"{k}={_fmt(v)}" for k, v in self.detail.items() if k != "frame")
        return f"{self.kind:<15} ring {self.cpl} eip={self.eip:#010x}  {bits}"


def _fmt(v):
    return f"{v:#x}" if isinstance(v, int) and not isinstance(v, bool) and v > 9 else str(v)


@dataclass
class RunResult:
    technique: str
    serial_bytes: bytes = b""
    exit_code: int = None
    halted: bool = False
    shutdown: bool = False
    events: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    regs: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def serial(self):
        return self.serial_bytes.decode("utf-8", errors="replace")

    def of_kind(self, kind):
        return [e for e in self.events if e.kind == kind]

    def summary(self):
        end = ("exit code %d" % self.exit_code if self.exit_code is not None else
               "triple fault (shutdown)" if self.shutdown else "halted" if self.halted else "still running")
        counts = ", ".join(f"{k} {v}" for k, v in self.stats.items())
        return f"{self.technique}: {end}; {counts}"

    def __repr__(self):
        return f"<RunResult {self.summary()}; serial={self.serial[:60]!r}>"
