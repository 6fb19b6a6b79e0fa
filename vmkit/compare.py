"""Comparing the techniques: the same course guests under every technique that can run them,
measured side by side in one run.

Adams & Agesen (ASPLOS 2006) ran nanobenchmarks (syscall, in, cr8wr, call/ret, pgfault, divzero,
ptemod) natively, under VMware's software VMM and under first-generation VT-x, and found the
hardware VMM often slower (their Figure 4). This module runs the course's version of that
experiment:

    from vmkit import compare
    compare.WORKLOADS["syscall"].source(100)         # the guest, as NASM source
    m = compare.measure("syscall", "trap-and-emulate", rounds=100)
    suite = compare.run_suite(rounds=50, repeat=3)   # every workload x every technique
    suite.cell("in", "hardware-assist").exits
    longer = compare.run_suite(rounds=compare.LONG_ROUNDS, repeat=3)
    compare.round_time(suite, longer, "cli-sti", "binary-translation")   # per round, and once per run
    model = compare.fit_cost_model(suite)            # seconds ~ instructions, traps, exits, ...

Every workload is one kernel (vmkit/guests/cmp_kernel.asm, a pv_ops kernel that picks native or
Xen operations from CPUID 0x40000000) with one workload appended (vmkit/guests/cmp_<name>.asm), so
"paravirt" runs the same workload through Xen's operations. The kernel arms no timer, so every
count a run reports is the workload's, exact and the same run after run; the times are the median
of `repeat` runs.

Two workloads turn paging on (pgfault, ptemod). Under trap-and-emulate and binary translation they
run on the VMM's shadow page tables (vmkit.vmm.shadow_paging), and the counts say what the shadow
MMU did: hidden faults (filled unseen), true faults (reflected into the guest), trace faults (a
store to a traced page table) and, under binary translation, trace call-outs (the same store, once
adaptive translation has turned it into a call-out). Each of these is also one of the run's traps.
`measure` passes options on to the machine, so adaptive translation can be turned off:

    compare.measure("ptemod", "binary-translation", rounds=100, adaptive=False).trace_faults

Under "paravirt" the same two workloads page as a Xen PV kernel does (direct paging): on the page
tables the domain builder made, read-only to the kernel, which asks Xen to change them. ptemod's
store becomes one mmu_update hypercall, which Xen validates (Linux's xen_set_pte); pgfault's fault
is bounced by Xen to the kernel's handler, the address in vcpu_info.arch.cr2. The counts say so
(PV_COUNTS): `bounces` (the traps Xen bounced to the kernel), `mmu_updates` (mmu_update hypercalls)
and `pt_updates` (the page-table entries Xen changed for them). The column "paravirt/lazy-mmu",
asked for by name, runs ptemod in lazy MMU mode, 32 stores an mmu_update:

    compare.measure("ptemod", "paravirt/lazy-mmu", rounds=320).mmu_updates    # 10, 32 stores each

The VT-x model runs every workload in its three memory modes (vmkit.vtx.VmcsControls), each a
column of its own (VARIANTS): "hardware-assist" (the model's default: EPT, with the model's memory
mapped from the start, so paging costs no exit and no walk is counted), "hardware-assist/no-ept"
(first-generation VT-x, Adams & Agesen's hardware VMM: shadow page tables kept through CR_ACCESS,
INVLPG and #PF exits, the shadow MMU's faults counted as above, each one of the #PF exits) and
"hardware-assist/ept-on-demand" (EPT filled as KVM fills it: EPT violations, and the TLB misses and
their two-dimensional walks' references counted):

    compare.measure("ptemod", "hardware-assist/no-ept", rounds=100).pf_exits      # 100 + the boot's

A whole run's time is a fixed part (building the machine, the boot, the report, and under binary
translation the translating of the kernel's code before it first runs) plus the rounds. Two suites
of different lengths separate them: round_time() divides the difference by the extra rounds.
round_by_round() goes further for a paging workload: one run, stopped at every round.

Long because: the workloads, their measurement, the suite's tables, a round's time and the cost
model all read the same Measurement and the same lists of counts; split, each part would import
the others' names and a lesson would have to know which holds what.
"""
import csv
import io
import statistics
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from . import guests
from .asm import assemble
from .errors import GuestError, KvmUnavailable, VmkitError
from .kvm import probe
from .run import TECHNIQUES, run
from .run import machine as run_machine
from .vtx import VmcsControls

# The counts the cost model prices, one cost each, in the order of COST_TERMS.
COSTED = ("instructions", "traps", "exits", "hypercalls", "blocks")
COST_TERMS = ("instruction", "trap", "exit", "hypercall", "block")
# The shadow MMU's events: a part of the traps under trap-and-emulate and binary translation, a part
# of the #PF exits under the VT-x model without EPT. They get no term of their own: CostModel says why.
MMU_COUNTS = ("hidden_faults", "true_faults", "trace_faults", "trace_callouts")
# The VT-x model's memory work, a part of its exits where it is an exit: CR_ACCESS, INVLPG and #PF
# (EXCEPTION) exits without EPT (the comparison's exception bitmap asks for no other vector, so every
# EXCEPTION exit is a #PF); EPT violations, TLB misses and the references of their two-dimensional
# walks with EPT filled on demand. 0 wherever they do not apply.
VTX_COUNTS = ("cr_exits", "invlpg_exits", "pf_exits", "ept_violations", "tlb_misses", "walk_references")
# Xen's work for a paravirtual kernel, 0 under every other technique: the traps it bounced to the guest's
# handlers (among the traps), its mmu_update hypercalls (among the hypercalls), and the page-table entries
# they changed, each validated (vmkit.xen.mm).
PV_COUNTS = ("bounces", "mmu_updates", "pt_updates")
COUNTS = COSTED + MMU_COUNTS + VTX_COUNTS + PV_COUNTS
EXACT = COUNTS + ("executed",)
LESSON_ROUNDS = 50           # what a lesson runs: the whole suite in a few seconds
# the same suite again with more rounds, so that the rounds and not the run's fixed part are most of
# its time: a cheap round gets many (cli-sti, call-ret), a round that costs every technique a trip
# through Python fewer (syscall, divzero), so that the longer suite too takes only seconds
LONG_ROUNDS = {"syscall": 250, "cli-sti": 1050, "in": 550, "divzero": 250, "call-ret": 1050, "compute": 250,
               "pgfault": 250, "ptemod": 250}
REPEAT = 3

# The VT-x model's other memory modes, each a column of the comparison beside "hardware-assist" (the
# model's default controls: EPT, the model's memory mapped from the start): {column: (the technique,
# the options measure() passes on to its machine)}. See vmkit/vtx/hardware_assist.py.
VARIANTS = {
    "hardware-assist/no-ept": ("hardware-assist", {"controls": VmcsControls(enable_ept=False)}),
    "hardware-assist/ept-on-demand": ("hardware-assist", {"controls": VmcsControls(ept_on_demand=True)}),
    "paravirt/lazy-mmu": ("paravirt", {}),
}
# The guest's constants a column sets, in the workloads that have them (vmkit.guests.tunables): in
# lazy MMU mode the paravirtual kernel queues ptemod's PTE writes and sends 32 in one mmu_update, as
# Linux does in arch_enter_lazy_mmu_mode (vmkit/guests/cmp_kernel.asm). Not one of COLUMNS: it changes
# no other workload, so it is measured where it is asked for (tests/benchmarks/memory.py).
TUNABLES = {"paravirt/lazy-mmu": {"LAZY_MMU": 1}}
# Every column run_suite() measures, in the order the tables show them: the VT-x model's three memory
# modes in the order they came, first-generation VT-x (2005) before EPT.
COLUMNS = tuple(c for t in TECHNIQUES for c in (
    ("hardware-assist/no-ept", t, "hardware-assist/ept-on-demand") if t == "hardware-assist" else (t,)))

NOT_RUN = {
    ("in", "paravirt"):
        "a paravirtual domU has no I/O ports: its devices are split drivers (a ring in shared memory "
        "and an event channel to dom0's backend), and vmkit's Xen grants no I/O privilege (no "
        "physdev_op), so a ring-1 `in` would only be bounced back to the guest as a #GP",
}


@dataclass(frozen=True)
class Workload:
    """One guest workload: `name` (its key), `title` (a short heading), `what` (what it does and
    why it matters), `adams_agesen` (the paper's nanobenchmark it mirrors, or None), `rounds` (the
    benchmark's default), `result` (what the guest prints for n rounds), `kvm_needs` (the
    vmkit.kvm.probe features it uses), `paging` (it turns paging on), `marker` (the event kind a VMM
    with shadow page tables records exactly once a round, by which round_by_round() tells the rounds
    apart, or None)."""
    name: str
    title: str
    what: str
    adams_agesen: str
    file: str
    rounds: int
    result: object
    kvm_needs: tuple = ()
    paging: bool = False
    marker: str = None

    def source(self, rounds=None, **tunables):
        """The NASM source of the guest with `rounds` loop rounds (default: self.rounds), and the
        workload's tunable constants set as `tunables` says (vmkit.guests.tunables(self.file) lists
        them: ptemod's LAZY_MMU=1, say)."""
        rounds = self.rounds if rounds is None else rounds
        if not isinstance(rounds, int) or not 1 <= rounds <= 10_000_000:
            raise VmkitError(f"rounds must be a whole number from 1 to 10,000,000, not {rounds!r}")
        return (f"; the {self.name} workload of vmkit.compare, {rounds} rounds\n"
                f"ROUNDS equ {rounds}\n" + guests.source("cmp_kernel") + guests.source(self.file, **tunables))

    def expected(self, rounds):
        """The line the guest prints when it ran correctly."""
        return self.result(rounds)

    def __repr__(self):
        return f"<Workload {self.name}: {self.title}>"


def _line(label):
    return lambda n: f"{label}: {n}\n"


WORKLOADS = {w.name: w for w in (
    Workload("syscall", "system calls",
             "system-call heavy: a ring-3 loop of int 0x80 round trips (getpid), each entering the kernel "
             "through its gate and leaving with iretd", "syscall", "cmp_syscall", 2000,
             _line("system calls"), ("int-n", "iret")),
    Workload("cli-sti", "cli/sti",
             "cli/sti heavy: a kernel loop of short critical sections, each between pv_ops.irq_disable and "
             "irq_enable (cli and sti natively, the mask byte under Xen)", None, "cmp_cli_sti", 2000,
             _line("critical sections")),
    Workload("in", "port reads",
             "port-I/O heavy: a kernel loop reading COM1's line status register with `in`. Not under "
             "paravirt: a domU has no ports (its devices are split drivers), and none stands in for them",
             "in", "cmp_in", 2000, _line("status reads")),
    Workload("divzero", "divide errors",
             "exception heavy: a kernel loop of divisions by zero; each #DE goes to the kernel's handler, "
             "which resumes at the fixup its table names for the faulting instruction",
             "divzero", "cmp_divzero", 2000, _line("divide errors fixed up"), ("exceptions", "iret")),
    Workload("call-ret", "call/ret",
             "a kernel loop calling a two-instruction subroutine: what a call and its return cost",
             "call/ret", "cmp_call_ret", 2000, _line("calls")),
    Workload("compute", "sieve",
             "CPU bound: passes of the sieve of Eratosthenes below 256, nothing privileged or sensitive in it",
             None, "cmp_compute", 200, lambda n: "primes below 256: 54\n"),
    Workload("pgfault", "true page faults",
             "a kernel loop reading a page its page tables mark not present: each read is a true page "
             "fault, which the #PF handler (after checking CR2 and the error code) resumes past at a fixup",
             "pgfault", "cmp_pgfault", 2000, _line("true page faults fixed up"),
             ("paging", "exceptions", "iret"), paging=True, marker="true-fault"),
    Workload("ptemod", "PTE writes",
             "a kernel loop storing to a page-table entry, nothing else a round: natively one store; "
             "under shadow page tables a trace (or, with adaptive translation, a call-out)",
             "ptemod", "cmp_ptemod", 2000, _line("page-table entry writes"),
             ("paging",), paging=True, marker="trace"),
)}


class Claim(NamedTuple):
    """An ordering of time the comparison shows: under `faster` the workload takes less time than
    under `slower`, for the reason `why`. `per_round`: compared per loop round, without the run's
    fixed part (round_time), which needs two suites; otherwise whole runs are compared. `factor`:
    how many times less, at least."""
    workload: str
    faster: str
    slower: str
    why: str
    per_round: bool = False
    factor: float = 1.0


# What lesson 10 claims and the benchmark checks (vmkit.viz.compare.check_orderings renders them).
CLAIMS = [
    Claim("cli-sti", "paravirt", "trap-and-emulate",
          "the mask byte is a store; under trap-and-emulate each cli and sti is a trap into the VMM"),
    Claim("cli-sti", "hardware-assist", "trap-and-emulate", "VT-x runs cli and sti in the guest, without an exit"),
    Claim("cli-sti", "binary-translation", "trap-and-emulate",
          "per round, cli and sti are stores to the virtual flags in the translation cache; under "
          "trap-and-emulate each is a trap. Per round only: translating the kernel first is a fixed cost",
          per_round=True, factor=4),
    Claim("syscall", "hardware-assist", "trap-and-emulate",
          "VT-x takes int 0x80 and iretd in the guest; under trap-and-emulate each int 0x80 is a trap"),
    Claim("in", "native", "hardware-assist", "every `in` is a VM exit to the device model"),
    Claim("in", "hardware-assist", "trap-and-emulate", "an exit is cheaper here than a trap decoded and emulated"),
    Claim("divzero", "hardware-assist", "binary-translation",
          "VT-x delivers #DE through the guest's IDT with no exit; the translator's kernel runs through callouts "
          "(Adams & Agesen, Figure 4: divzero 1,014 cycles under VT-x, 3,223 under BT)"),
    Claim("call-ret", "native", "binary-translation",
          "a whole run: the translator first translates the kernel's blocks (its fixed cost); then the call "
          "and its ret run in line in the loop's unit (a push and a pop of the guest's return address, no "
          "check: nothing between them can change it), and each round adds its count of guest instructions "
          "to the VMM's data page (Adams & Agesen, Figure 4: call/ret 11 cycles native, 51 under BT, whose "
          "translator looked every ret up)"),
    Claim("pgfault", "hardware-assist", "binary-translation",
          "with EPT the guest's #PF goes through its own IDT with no exit; the translator's VMM takes each as a "
          "true fault on its shadow page tables, and calls out for the handler's read of CR2 and its iretd"),
    Claim("ptemod", "hardware-assist", "trap-and-emulate",
          "with EPT a PTE store is a store; on shadow page tables each is a trace fault"),
    Claim("ptemod", "hardware-assist/ept-on-demand", "hardware-assist/no-ept",
          "what EPT was built for: with it the guest's PTE store is a store, without it each is a #PF exit, a "
          "trace of the VMM's shadow page tables (Adams & Agesen's hardware VMM: ptemod 12,733 cycles)"),
    Claim("pgfault", "paravirt", "binary-translation",
          "Xen bounces the #PF to the kernel's handler, which reads the address from vcpu_info and returns with "
          "its own iretd: one trap a round against the translator's three"),
    # ptemod under paravirt (one mmu_update a round) against the shadow-paging columns (one trace fault,
    # call-out or #PF exit a round) is not claimed either way: each is one entry into Python a round, and
    # measured, the hypercall took from about a quarter to about as long as a trace fault, with the machine's load.
    # Adams & Agesen's order for pgfault (their software VMM 3,927 cycles, their hardware VMM without EPT
    # 11,242) does not hold here, and this is the claim that does, with the reason: measured, the VT-x
    # model without EPT took about half binary translation's time a round. Their order for ptemod (391
    # against 12,733 cycles) is not claimed either way: one call-out against one exit a round, and the
    # two times were within the repeats' disagreement (tests/benchmarks/memory.py measures both).
    Claim("pgfault", "hardware-assist/no-ept", "binary-translation",
          "Adams & Agesen's order reversed: one #PF exit a round against three traps (the true fault, the read of "
          "CR2, the iretd). Their exit cost thousands of cycles more than their translator's entry into its VMM "
          "(pgfault 11,242 cycles against 3,927); here an exit and a trap are both a Python call, so the counts "
          "decide"),
]


def check(suite, claims=None, shorter=None):
    """[(claim, holds)] for each Claim of `claims` (default CLAIMS; plain (workload, faster, slower,
    why) tuples too): holds is True or False by the measured median times, None if either could not
    run or is not in the suite. A whole-run claim compares `suite`'s times; a per-round claim compares
    round_time(shorter, suite), and is None without `shorter` (the same suite with fewer rounds)."""
    out = []
    for claim in CLAIMS if claims is None else claims:
        claim = Claim(*claim)
        try:
            if claim.per_round:
                a, b = (None, None) if shorter is None else (
                    round_time(shorter, suite, claim.workload, t) for t in (claim.faster, claim.slower))
                holds = None if a is None or b is None else a.per_round * claim.factor < b.per_round
            else:
                a, b = suite.cell(claim.workload, claim.faster), suite.cell(claim.workload, claim.slower)
                holds = a.seconds * claim.factor < b.seconds if a.ran and b.ran else None
        except KeyError:                        # the suite did not measure one of the two
            holds = None
        out.append((claim, holds))
    return out


@dataclass
class Measurement:
    """One workload under one technique. `ran` is False when the technique cannot run it, and
    `reason` says why. Counts are exact: `instructions` the guest's own, as the bare machine counts
    them running it natively (the same in every row of a workload), `traps` into a VMM, `exits`
    (VM exits), `hypercalls`, `blocks` translated, and `executed`: the instructions the technique's
    machine ran for it (under binary translation the translated code, under paravirt the Xen
    operations; None under KVM, which counts none). The shadow MMU's events, `hidden_faults`,
    `true_faults`, `trace_faults` and `trace_callouts`: among the traps under trap-and-emulate and
    binary translation, among the #PF exits under the VT-x model without EPT (0 elsewhere, where no
    VMM sees the guest's paging). The VT-x model's memory work (VTX_COUNTS): `cr_exits`,
    `invlpg_exits` and `pf_exits` among its exits without EPT; `ept_violations` among its exits, and
    `tlb_misses` and their `walk_references`, with EPT filled on demand. Xen's work under paravirt
    (PV_COUNTS): `bounces`, the traps it bounced to the kernel's handlers; `mmu_updates`, its
    mmu_update hypercalls; `pt_updates`, the page-table entries those (and update_va_mapping) changed,
    each validated (0 elsewhere). `seconds`: the median run
    time, `spread`: the median distance of the repeated runs' times from it (how much they typically
    disagreed). `options`: what measure() passed on to the machine (adaptive=False, say)."""
    workload: str
    technique: str
    ran: bool
    reason: str = None
    rounds: int = 0
    instructions: int = 0
    traps: int = 0
    exits: int = 0
    hypercalls: int = 0
    blocks: int = 0
    executed: int = None
    seconds: float = 0.0
    serial: str = ""
    spread: float = 0.0
    hidden_faults: int = 0
    true_faults: int = 0
    trace_faults: int = 0
    trace_callouts: int = 0
    cr_exits: int = 0
    invlpg_exits: int = 0
    pf_exits: int = 0
    ept_violations: int = 0
    tlb_misses: int = 0
    walk_references: int = 0
    bounces: int = 0
    mmu_updates: int = 0
    pt_updates: int = 0
    options: dict = field(default_factory=dict)

    @property
    def us_per_round(self):
        return self.seconds / self.rounds * 1e6 if self.ran and self.rounds else None

    def counts(self):
        """The exact counts: COUNTS and `executed`."""
        return {k: getattr(self, k) for k in EXACT}

    def __str__(self):
        under = self.technique + "".join(f", {k}={v!r}" for k, v in self.options.items())
        if not self.ran:
            return f"{self.workload} under {under}: not run ({self.reason})"
        return (f"{self.workload} under {under}: {self.us_per_round:.2f} µs/round; "
                + ", ".join(f"{k} {v}" for k, v in self.counts().items()))


def workload(name):
    if isinstance(name, Workload):
        return name
    if name not in WORKLOADS:
        raise VmkitError(f"unknown workload {name!r}; the suite has {', '.join(WORKLOADS)}")
    return WORKLOADS[name]


def technique_of(column):
    """(the vmkit technique, the options its machine gets) of a column of the comparison: a technique
    is itself with no options, a VARIANTS name the VT-x model with its controls (or paravirt with its
    guest's TUNABLES, which guest_tunables gives)."""
    if column in VARIANTS:
        technique, options = VARIANTS[column]
        return technique, dict(options)
    if column not in TECHNIQUES:
        raise VmkitError(f"unknown technique {column!r}; vmkit.compare knows {', '.join((*COLUMNS, *VARIANTS))}")
    return column, {}


def guest_tunables(name, column):
    """The tunable constants column `column` sets in workload `name`'s guest: those of TUNABLES that
    the workload has ({} for any other)."""
    have = guests.tunables(workload(name).file)
    return {k: v for k, v in TUNABLES.get(column, {}).items() if k in have}


def why_not(name, technique):
    """Why `technique` (a column of COLUMNS) cannot run the workload here, or None if it can (KVM:
    what the probe found)."""
    w = workload(name)
    base, _ = technique_of(technique)
    for key in ((w.name, technique), (w.name, base)):
        if key in NOT_RUN:
            return NOT_RUN[key]
    if base == "kvm":
        return probe().why_not("protected-mode", *w.kvm_needs)
    return None


def _one_run(image, w, technique, options):
    # A paging guest (pgfault, ptemod) runs natively, under trap-and-emulate and binary translation
    # on the VMM's shadow page tables, and under the VT-x model in its three memory modes:
    # - with EPT (the default, and filled on demand) no VMM sees a PTE store, an invlpg or the guest's
    #   own #PF: the exception bitmap leaves #PF alone, as KVM's does with EPT (update_exception_bitmap
    #   in Linux's arch/x86/kvm/vmx/vmx.c). Filled on demand, each guest frame's first touch is an EPT
    #   violation and each TLB miss a two-dimensional walk, counted;
    # - without EPT the model keeps shadow page tables, as KVM does with EPT off (vmx_need_pf_intercept
    #   in arch/x86/kvm/vmx/vmx.h is true whenever EPT is off): CR_ACCESS, INVLPG and #PF exits;
    # - KVM runs them where the probe finds that this machine's KVM can page (PVM cannot): why_not();
    # - under paravirt the kernel pages as a Xen PV kernel does (vmkit/guests/cmp_kernel.asm): on the
    #   domain builder's tables, read-only to it, each PTE write an mmu_update that Xen validates
    #   (vmkit.xen.mm), each #PF bounced by Xen with the address in vcpu_info.arch.cr2.
    return run(image, technique, **options)


def counts_of(stats, events=None):
    """The counts of EXACT (but the guest's own instructions) from a machine's stats, and from its
    `events` the mmu_update hypercalls (0 without them)."""
    s = stats
    if events is not None and s.get("events_dropped"):
        raise VmkitError(f"the run recorded too many events to count its mmu_update hypercalls "
                         f"({s['events_dropped']} dropped): run fewer rounds")
    return dict(executed=s.get("cpu_instructions", s.get("instructions")), traps=s.get("traps", 0), exits=s.get("vmexits", 0),
                hypercalls=s.get("hypercalls", 0), blocks=s.get("blocks_translated", 0),
                **{k: s.get(k, 0) for k in MMU_COUNTS},
                cr_exits=s.get("vmexit_CR_ACCESS", 0), invlpg_exits=s.get("vmexit_INVLPG", 0),
                pf_exits=s.get("vmexit_EXCEPTION", 0), ept_violations=s.get("vmexit_EPT_VIOLATION", 0),
                tlb_misses=s.get("tlb_misses", 0), walk_references=s.get("walk_references", 0),
                bounces=s.get("bounces", 0), pt_updates=s.get("pt_updates", 0),
                mmu_updates=sum(1 for e in events or () if e.kind == "hypercall" and e.detail.get("name") == "mmu_update"))


def measure(name, technique, rounds=None, repeat=1, **options):
    """Run one workload under one technique (a column of COLUMNS, or of VARIANTS) `repeat` times; a
    Measurement with the exact counts (checked to be the same in every repeat) and the median time.
    `options` go to the machine: measure("ptemod", "binary-translation", adaptive=False) runs it
    without adaptive translation; measure("ptemod", "hardware-assist/no-ept") runs the VT-x model
    without EPT, measure("ptemod", "paravirt/lazy-mmu") the paravirtual kernel in lazy MMU mode."""
    w = workload(name)
    rounds = w.rounds if rounds is None else rounds
    base, preset = technique_of(technique)
    image = assemble(w.source(rounds, **guest_tunables(w, technique)))
    reason = why_not(w, technique)
    if reason is not None:
        return Measurement(w.name, technique, False, reason, rounds, options=options)
    times, counts, serial = [], None, ""
    for _ in range(max(1, repeat)):
        try:
            result = _one_run(image, w, base, {**preset, **options})
        except (GuestError, KvmUnavailable) as e:    # the technique refused the guest: that is the finding
            return Measurement(w.name, technique, False, str(e).split("\n")[0], rounds, options=options)
        serial = result.serial
        if serial != w.expected(rounds):
            return Measurement(w.name, technique, False, f"it went wrong: the guest printed {serial!r}, "
                               f"not {w.expected(rounds)!r}", rounds, serial=serial, options=options)
        these = counts_of(result.stats, result.events)
        if counts is not None and these != counts:
            raise VmkitError(f"{w.name} under {technique} counted {these} in one run and {counts} in another: "
                             f"the counts should be exact")
        counts = these
        times.append(result.seconds)
    counts["instructions"] = counts["executed"] if technique == "native" else _native_instructions(w.name, rounds)
    return Measurement(w.name, technique, True, None, rounds, seconds=statistics.median(times),
                       serial=serial, spread=_spread(times), options=options, **counts)


_native_counts = {}


def _native_instructions(name, rounds):
    if (name, rounds) not in _native_counts:
        _native_counts[name, rounds] = measure(name, "native", rounds).instructions
    return _native_counts[name, rounds]


@dataclass
class Suite:
    """Measurements of workloads x techniques, taken in one run."""
    measurements: list = field(default_factory=list)

    def cell(self, name, technique):
        for m in self.measurements:
            if m.workload == name and m.technique == technique:
                return m
        raise KeyError(f"no measurement of {name!r} under {technique!r} in this suite")

    @property
    def workloads(self):
        return list(dict.fromkeys(m.workload for m in self.measurements))

    @property
    def techniques(self):
        return list(dict.fromkeys(m.technique for m in self.measurements))

    def counts(self):
        """{(workload, technique): {count: value}}: the exact part, the same run after run."""
        return {(m.workload, m.technique): (m.counts() if m.ran else None) for m in self.measurements}

    def rows(self):
        """One row per workload x technique: a header, then the rows (for CSV and Markdown)."""
        header = ["workload", "technique", "ran", "rounds", *EXACT, "seconds", "us_per_round", "slowdown", "reason"]
        rows = []
        for m in self.measurements:
            base = next((b for b in self.measurements if b.workload == m.workload and b.technique == "native"), None)
            slow = m.seconds / base.seconds if m.ran and base is not None and base.ran and base.seconds else None
            rows.append([m.workload, m.technique, m.ran, m.rounds,
                         *(m.counts().values() if m.ran else [""] * len(EXACT)),
                         f"{m.seconds:.6f}" if m.ran else "", f"{m.us_per_round:.3f}" if m.ran else "",
                         f"{slow:.2f}" if slow is not None else "", m.reason or ""])
        return header, rows

    def to_csv(self, path=None):
        """Write the table as CSV to `path` (or return it as text when path is None)."""
        header, rows = self.rows()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        if path is None:
            return out.getvalue()
        with open(path, "w", newline="") as f:
            f.write(out.getvalue())
        return path

    def to_markdown(self):
        """The table in Markdown: µs per round, slowdown against native, the counts (the shadow MMU's
        four among the traps or the #PF exits, the VT-x model's CR, INVLPG, #PF exits and EPT violations
        among the exits, then its TLB misses and walk references, then Xen's bounces among the traps,
        its mmu_update hypercalls among the hypercalls and the page-table entries they changed); cells
        that could not run say so, with the reasons listed below the table."""
        lines = ["| workload | technique | µs/round | × native | instructions | executed | traps | exits | hypercalls "
                 "| blocks | hidden faults | true faults | trace faults | trace call-outs | CR exits | INVLPG exits "
                 "| #PF exits | EPT violations | TLB misses | walk references | bounces | mmu_update calls "
                 "| PTEs updated |",
                 "|---|---|" + "--:|" * 21]
        notes = []
        _, rows = self.rows()
        for m, row in zip(self.measurements, rows):
            if m.ran:
                lines.append(f"| {m.workload} | {m.technique} | {m.us_per_round:.2f} | {row[-2] or '—'} | "
                             f"{m.instructions} | {'—' if m.executed is None else m.executed} | {m.traps} | {m.exits} | "
                             f"{m.hypercalls} | {m.blocks} | "
                             + " | ".join(str(getattr(m, k)) for k in MMU_COUNTS + VTX_COUNTS + PV_COUNTS) + " |")
            else:
                notes.append(m)
                lines.append(f"| {m.workload} | {m.technique} | not run [{len(notes)}] |" + " |" * 20)
        if notes:
            lines.append("")
            lines += [f"[{i}] {m.workload} under {m.technique}: {m.reason}" for i, m in enumerate(notes, 1)]
        return "\n".join(lines) + "\n"

    def __str__(self):
        return self.to_markdown()


def run_suite(workloads=None, techniques=None, rounds=None, repeat=REPEAT):
    """Every workload under every technique, in one run. `rounds`: one number for all, a
    {workload: rounds} dict, or None for each workload's default (Workload.rounds); the lessons use
    LESSON_ROUNDS. `techniques`: columns of COLUMNS (default: all of them, the VT-x model's three
    memory modes among them). Techniques side by side per workload, so drift on the machine hits them
    alike."""
    names = list(WORKLOADS) if workloads is None else [workload(n).name for n in workloads]
    techniques = list(COLUMNS) if techniques is None else list(techniques)
    for technique in techniques:          # warm up: the first run in a process pays for loading and probing
        measure(names[0], technique, 1)
    suite = Suite()
    for name in names:
        n = rounds.get(name) if isinstance(rounds, dict) else rounds
        runs = {t: [] for t in techniques}
        for _ in range(max(1, repeat)):    # interleaved: a slow moment of the machine hits every technique
            for technique in techniques:
                runs[technique].append(measure(name, technique, n))
        suite.measurements += [_median(name, technique, runs[technique]) for technique in techniques]
    return suite


def _median(name, technique, runs):
    """One Measurement from repeated ones: their exact counts (which must agree), the median time."""
    first = runs[0]
    if not first.ran or any(not m.ran for m in runs):
        return next(m for m in runs if not m.ran)
    if any(m.counts() != first.counts() for m in runs):
        raise VmkitError(f"{name} under {technique} counted differently from run to run: "
                         f"{[m.counts() for m in runs]}; the counts should be exact")
    times = [m.seconds for m in runs]
    return Measurement(**{**first.__dict__, "seconds": statistics.median(times), "spread": _spread(times)})


def _spread(times):
    """The median absolute deviation of `times`: how far a typical repeat was from their median (one
    repeat thrown off by the machine moves it less than it moves their range)."""
    middle = statistics.median(times)
    return statistics.median(abs(t - middle) for t in times)


# --- per round, and once per run --------------------------------------------------------------------------
@dataclass(frozen=True)
class RoundTime:
    """A workload's time under a technique split in two, from two runs of different lengths:
    `per_round` seconds each loop round costs (the difference of the two times over the difference
    of their rounds) and `fixed` seconds every run pays once (building the machine, the boot, the
    report, translating code before it first runs). `resolution`: the per-round seconds the repeats'
    own disagreement (the two Measurements' spread) could account for; a per_round below it cannot be
    told from noise."""
    workload: str
    technique: str
    per_round: float
    fixed: float
    resolution: float

    @property
    def resolved(self):
        return self.per_round > self.resolution


def round_time(shorter, longer, name, technique):
    """The RoundTime of one cell from two suites (or Measurements) with different rounds; None if
    either did not run."""
    a = shorter.cell(name, technique) if isinstance(shorter, Suite) else shorter
    b = longer.cell(name, technique) if isinstance(longer, Suite) else longer
    if not (a.ran and b.ran) or a.rounds == b.rounds:
        return None
    if a.rounds > b.rounds:
        a, b = b, a
    extra = b.rounds - a.rounds
    per = (b.seconds - a.seconds) / extra
    return RoundTime(a.workload, technique, per, a.seconds - a.rounds * per, (a.spread + b.spread) / extra)


def round_times(shorter, longer):
    """{(workload, technique): RoundTime or None} for every cell of `longer`."""
    return {(m.workload, m.technique): round_time(shorter, longer, m.workload, m.technique)
            for m in longer.measurements}


# --- round by round: a warm-up seen --------------------------------------------------------------------------
# the columns with shadow page tables: the software VMMs', and the VT-x model's without EPT
SHADOW_TECHNIQUES = ("trap-and-emulate", "binary-translation", "hardware-assist/no-ept")
ROUND_COUNTS = ("traps", "exits", "pf_exits") + MMU_COUNTS


@dataclass(frozen=True)
class Round:
    """One loop round of a run: its `number` (from 1), the wall-clock `seconds` it took, and its exact
    `counts` (traps, exits, #PF exits and the shadow MMU's four, as ROUND_COUNTS). Round 1 also holds
    the boot."""
    number: int
    seconds: float
    counts: dict


def round_by_round(name, technique="binary-translation", rounds=None, **options):
    """Run a paging workload (one with a `marker`) under a technique with shadow page tables (one of
    SHADOW_TECHNIQUES) and return a Round per loop round: what each round took, and which faults and call-outs were in it.
    The machine is stopped at each round's marker event (a trace for ptemod, a true fault for
    pgfault), so round k is the time and the counts between markers k-1 and k. `options` go to the
    machine: round_by_round("ptemod", adaptive=False) shows every round taking its trace fault,
    round_by_round("ptemod") the first few, until adaptive translation turns the store into a call-out.
    The counts are exact; the times are this machine's, one round at a time (noisy: take medians)."""
    w = workload(name)
    if w.marker is None:
        raise VmkitError(f"{w.name} has no event that marks its rounds; round_by_round steps through "
                         f"{', '.join(n for n, x in WORKLOADS.items() if x.marker)}")
    if technique not in SHADOW_TECHNIQUES:
        raise VmkitError(f"round_by_round needs a technique with shadow page tables ({' or '.join(SHADOW_TECHNIQUES)}): "
                         f"under {technique!r} no VMM records {w.marker!r} events")
    rounds = w.rounds if rounds is None else rounds
    base, preset = technique_of(technique)
    m = run_machine(w.source(rounds), base, **{**preset, **options})
    out, before = [], dict.fromkeys(ROUND_COUNTS, 0)
    started = time.perf_counter()
    for number in range(1, rounds + 1):
        m.run_until(event=w.marker)
        now = time.perf_counter()
        if m.finished:
            raise VmkitError(f"{w.name} under {technique} finished after {number - 1} of {rounds} rounds' "
                             f"{w.marker!r} events: {m.result().serial!r}")
        counts = counts_of(m.stats)
        after = {k: counts[k] for k in ROUND_COUNTS}
        out.append(Round(number, now - started, {k: after[k] - before[k] for k in ROUND_COUNTS}))
        before, started = after, now
    result = m.run()
    if result.serial != w.expected(rounds):
        raise VmkitError(f"{w.name} under {technique} printed {result.serial!r}, not {w.expected(rounds)!r}")
    return out


# --- the cost model ---------------------------------------------------------------------------------------
@dataclass
class CostModel:
    """Per technique: seconds ≈ a·instructions + b·traps + c·exits + d·hypercalls + e·blocks.

    `costs[technique]` maps each term to its fitted cost in seconds; `residuals[technique]` lists
    (workload, measured s, predicted s) for the workloads it was fitted to; `unfitted[technique]`
    says why a technique has no model (too few workloads ran).

    It is only a model: the terms are not independent (a trap also runs the instructions of its
    handler), a cost hides everything the counts do not see (Unicorn translating code, Python's
    own overheads, caches), a term that no workload exercises gets no evidence and is fitted to
    zero, and with eight workloads and five costs the fit can be exact without being right. Two
    costs are visible in no count at all. A run's fixed part (building the machine, the boot, the
    report; see round_time) has no term, so a short run of a workload with few counted events is
    predicted far too fast. And vmkit delivers every interrupt and exception in Python (the CPU's
    microcode on real hardware), so natively, and under the hardware-assist model, a system call or
    a #DE costs far more than its instructions. Natively the only term is the instruction, priced
    by the one workload that runs many (compute): every other native run is predicted close to
    zero. The model explains runs whose time is mostly counted events (compute everywhere, the
    trap-heavy runs under trap-and-emulate, binary translation and paravirt) and misses the rest.
    Read the costs as 'what one more of these tends to add here', and check them on a workload the
    fit has not seen.

    Page faults get no term of their own, by choice. Every hidden, true and trace fault the shadow
    MMU takes, and every trace call-out, is already one of the run's traps (under the VT-x model
    without EPT one of its exits, as are its CR access and INVLPG exits, and with EPT filled on
    demand its EPT violations), so the model sees it.
    A term of its own could be priced only by the workloads that have such events: traces by ptemod
    alone, true faults by pgfault alone (the boot's few hidden faults are the same in every paging
    run). A price fitted to one workload matches that workload exactly whatever it means, since it
    takes the run's fixed part along, so its residual would say nothing; tried on the lesson's suite,
    a term for traces took ptemod's error to 0 % and left every other run's as it was. One term for
    all four kinds fits neither workload (pgfault over, ptemod under), because they cost this VMM
    very different amounts. What the five terms get wrong on ptemod is worth seeing instead: one
    trace costs this VMM a few times what a `cli` trap does (the #PF, the guest's own walk that tells
    a trace from a true fault, the store run alone with the page writable, then the traced page
    compared a chunk at a time and the shadow brought in step: ShadowPageTables.end_store), so ptemod
    under trap-and-emulate is predicted too fast. The VT-x model's TLB misses get no term either: with
    EPT filled on demand the model keeps the TLB itself, so a miss costs it a Python call where the
    CPU's page walker costs cycles, and only the boot has any (none a round in any workload here).
    """
    costs: dict = field(default_factory=dict)
    residuals: dict = field(default_factory=dict)
    unfitted: dict = field(default_factory=dict)

    def predict(self, technique, instructions=0, traps=0, exits=0, hypercalls=0, blocks=0):
        """Predicted seconds for a workload with these counts under `technique`."""
        if technique not in self.costs:
            raise VmkitError(f"no cost model for {technique!r}: "
                             + self.unfitted.get(technique, "it was not in the suite"))
        c = self.costs[technique]
        return (c["instruction"] * instructions + c["trap"] * traps + c["exit"] * exits
                + c["hypercall"] * hypercalls + c["block"] * blocks)

    def predict_counts(self, technique, counts):
        return self.predict(technique, **{k: counts.get(k, 0) for k in COSTED})


def nnls(A, b, max_iterations=None):
    """min ||A x - b|| subject to x >= 0 (Lawson and Hanson's active-set method, 1974)."""
    import numpy as np  # heavy, and only the cost model needs it: loaded when a model is fitted
    A, b = np.asarray(A, float), np.asarray(b, float)
    n = A.shape[1]
    x, passive = np.zeros(n), np.zeros(n, bool)
    for _ in range(max_iterations or 3 * n + 10):
        gradient = A.T @ (b - A @ x)
        if passive.all() or (gradient[~passive] <= 1e-12 * max(1.0, abs(gradient).max())).all():
            break
        passive[np.argmax(np.where(passive, -np.inf, gradient))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(A[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            bad = passive & (z <= 0)                  # step back toward x until a coefficient reaches 0
            alpha = np.min(x[bad] / (x[bad] - z[bad]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
    return x


def fit(rows, seconds):
    """Non-negative least squares of `seconds` on the count `rows` ([instructions, traps, exits,
    hypercalls, blocks] each). Each row is weighted by 1/seconds, so the fit minimises relative
    errors: a workload of a millisecond counts as much as one of a second. Columns are scaled to
    unit length, so a cost of nanoseconds and one of microseconds are fitted alike."""
    import numpy as np  # heavy, and only the cost model needs it: loaded when a model is fitted
    A, y = np.asarray(rows, float), np.asarray(seconds, float)
    weight = 1.0 / np.where(y > 0, y, 1.0)
    A, y = A * weight[:, None], y * weight
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0
    x = nnls(A / scale, y) / scale
    return dict(zip(COST_TERMS, (float(v) for v in x)))


def fit_cost_model(suite, techniques=None):
    """Fit one cost model per technique to the suite's measurements (see CostModel)."""
    model = CostModel()
    for t in techniques or suite.techniques:
        cells = [m for m in suite.measurements if m.technique == t and m.ran]
        if len(cells) < 2:
            model.unfitted[t] = f"only {len(cells)} workload(s) ran under it; a fit needs at least 2"
            continue
        model.costs[t] = fit([[getattr(m, k) for k in COSTED] for m in cells], [m.seconds for m in cells])
        model.residuals[t] = [(m.workload, m.seconds, model.predict_counts(t, m.counts())) for m in cells]
    return model


__all__ = ["TECHNIQUES", "COLUMNS", "VARIANTS", "technique_of", "WORKLOADS", "CLAIMS", "Claim", "check", "Workload",
           "Measurement", "Suite", "CostModel", "measure", "run_suite", "why_not", "fit_cost_model", "fit", "nnls",
           "RoundTime", "round_time", "round_times", "LESSON_ROUNDS", "LONG_ROUNDS", "COUNTS", "EXACT", "COSTED",
           "COST_TERMS", "MMU_COUNTS", "VTX_COUNTS", "PV_COUNTS", "TUNABLES", "guest_tunables", "Round",
           "round_by_round", "SHADOW_TECHNIQUES"]
