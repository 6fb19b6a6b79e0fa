"""Lab 8 (shadow page tables): a student's page walk on guest tables it may only read, the student's
hidden-fault and trace handlers in a trap-and-emulate or binary-translation VMM, each call on a budget,
and what a run did as plain data.

Long because: the runners, the facts of a run and the kernel's side of every probe (walks, fills,
traces, prefetch) belong to one lab, and a split would scatter what its checks compare.

The lab's guests are LAB_GUEST with the check's own lines in it (lab_guest): a kernel that builds
page tables, turns paging on, makes accesses in ring 0 and in ring 3, prints every #PF it gets (CR2
and error code) and the page-table entries it is asked to show, and exits.
"""
import json
import signal
import struct
import threading
from contextlib import contextmanager
from types import SimpleNamespace

import vmkit
from ..errors import GuestError
from ..machine.cpu import CR0_PG, CR0_WP, CR4_PSE
from ..vmm import BinaryTranslation, TrapAndEmulate
from .checks import check, check_facts, fail_cases, shown
from .runs import ending, explained
from . import answers
from .answers import plain, raised
from .answers import withheld
from .answers import yours

SHADOW_MAX_INSTRUCTIONS = 2_000_000
SHADOW_TIMEOUT = 5.0                                # seconds for a whole run; the lab's guests need well under 1
HANDLER_SECONDS = 1.0                               # one call of a student's handler; the reference's take µs
SHADOW_KINDS = ("hidden-fault", "trace")
TECHNIQUES = {"trap-and-emulate": TrapAndEmulate, "binary-translation": BinaryTranslation}
SHADOW_FIELDS = ("serial", "exit_code", "true", "hidden", "fills", "traces", "tables", "counts")
SHADOW_COUNTS = ("hidden_faults", "true_faults", "trace_faults", "trace_callouts", "shadow_fills", "shadow_roots",
                 "retranslations")
SHADOW_HINTS = {
    "serial": "what the guest printed: a `#PF` line is a true fault it saw (CR2, error code), a `pte` line an "
              "entry of its page tables with its accessed (0x20) and dirty (0x40) bits",
    "exit_code": "the guest ends with out 0xf4",
    "true": "the true faults, [linear, error code], in order: an access your VMM let through reaches the guest's "
            "#PF handler no more; one it refused does",
    "hidden": "the hidden faults, [linear, error code on the shadow]: a shadow entry that allows too little costs a "
              "fault more; one that allows too much (writable before the guest's dirty bit is set, a page the "
              "guest's tables refuse) takes away a fault the guest needed",
    "fills": "each shadow entry made, [linear, its frame with P, R/W and U/S, the guest entry it was made from]",
    "traces": "the guest's stores to its own page tables, [entry, old, new, how the VMM saw it]",
    "tables": "the guest's page-table entries at the end, by guest-physical address: the accessed bit in every "
              "entry a walk used, the dirty bit in the entry that maps a page written",
    "counts": "the run's statistics: every hidden fault, true fault and trace, and the shadow entries made",
}

# The lab's guest: setup (before paging, physical = linear), kernel (ring 0, paging on), user (ring 3),
# after (ring 0 again); PSE and WP as the check says. Accesses are `rd` and `wr` (5 bytes: the #PF
# handler prints CR2 and the error code and skips the access).
LAB_GUEST = r"""
bits 32
org 0x100000
KCODE   equ 0x08
KDATA   equ 0x10
UCODE   equ 0x18 | 3
UDATA   equ 0x20 | 3
TSS_SEL equ 0x28
COM1    equ 0x3f8
PG_P    equ 1
PG_RW   equ 2
PG_US   equ 4
PG_A    equ 0x20
PG_D    equ 0x40
PG_PS   equ 0x80
PD      equ 0x380000                    ; the page directory
PT      equ 0x381000                    ; four page tables, for linear 0 to 16 MiB, one after the other
SPARE   equ 0x385000                    ; a fifth, for a check to point a PDE at
KSTACK  equ 0x3f0000
USER    equ 0x400000                    ; the user program: one read-only user page
USTACK  equ 0x7ff000                    ; the user stack: one page
DATA    equ 0x300000                    ; 16 frames; frame n holds n + 1
%define PTE(l) (PT + ((l) >> 12) * 4)   ; where linear l's PTE is, for l below 16 MiB
%define PDE(l) (PD + ((l) >> 22) * 4)

%macro rd 1                             ; read the dword at %1 into EAX, add it to ESI
    mov eax, [%1]
    add esi, eax
%endmacro
%macro wr 1                             ; write EAX to %1
    mov [%1], eax
%endmacro
%macro say 1+                           ; print a text (ring 0)
    jmp %%over
%%text: db %1, 0
%%over:
    push esi
    mov esi, %%text
    call puts
    pop esi
%endmacro
%macro show 1                           ; print linear %1's PTE (ring 0)
    say "pte "
    mov eax, %1
    call hex32
    say " "
    mov eax, [PTE(%1)]
    call hex32
    say 10
%endmacro
%macro showpde 1                        ; print linear %1's PDE (ring 0)
    say "pde "
    mov eax, %1
    call hex32
    say " "
    mov eax, [PDE(%1)]
    call hex32
    say 10
%endmacro

start:
    cli
    lgdt [gdtr]
    jmp KCODE:.cs
.cs:
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, KSTACK
    mov eax, tss
    mov [gdt + TSS_SEL + 2], ax
    shr eax, 16
    mov [gdt + TSS_SEL + 4], al
    mov [gdt + TSS_SEL + 7], ah
    mov ax, TSS_SEL
    ltr ax
    mov eax, page_fault
    mov [idt + 14 * 8], ax
    shr eax, 16
    mov [idt + 14 * 8 + 6], ax
    mov eax, system_call
    mov [idt + 0x80 * 8], ax
    shr eax, 16
    mov [idt + 0x80 * 8 + 6], ax
    lidt [idtr]
    mov edi, PD                         ; nothing mapped ...
    xor eax, eax
    mov ecx, 1024 * 6
    rep stosd
    mov edi, PT                         ; ... but the first 4 MiB: identity, supervisor, writable
    mov eax, PG_P | PG_RW
    mov ecx, 1024
.identity:
    stosd
    add eax, 0x1000
    loop .identity
    mov edi, DATA
    mov eax, 1
.data:
    mov [edi], eax
    inc eax
    add edi, 0x1000
    cmp eax, 16
    jbe .data
    mov dword [PDE(0)], PT | PG_P | PG_RW | PG_US
    mov dword [PDE(USER)], (PT + 0x1000) | PG_P | PG_RW | PG_US
    mov dword [PTE(USER)], user_frame | PG_P | PG_US
    mov dword [PTE(USTACK)], 0x3a0000 | PG_P | PG_RW | PG_US
{setup}
    mov eax, PD
    mov cr3, eax
    mov eax, cr4
    or eax, {cr4}
    mov cr4, eax
    mov eax, cr0
    or eax, 0x80000000 | {wp}
    mov cr0, eax
    xor esi, esi
kernel:
{kernel}
    push UDATA                          ; to ring 3
    push USTACK + 0x1000
    push 0x2
    push UCODE
    push user
    iretd
after_user:
    mov ax, KDATA
    mov ds, ax
    mov es, ax
{after}
    say "sum "
    mov eax, esi
    call hex32
    say 10
    mov al, 0
    out 0xf4, al

page_fault:                             ; print CR2 and the error code; skip the 5-byte access
    push eax
    say "#PF "
    mov eax, cr2
    call hex32
    say " "
    mov eax, [esp + 4]
    call hex32
    say 10
    pop eax
    add esp, 4
    add dword [esp], 5
    iretd

system_call:                            ; int 0x80: the user program is done
    mov esp, KSTACK
    jmp after_user

puts:
    push eax
.next:
    lodsb
    test al, al
    jz .done
    call putc
    jmp .next
.done:
    pop eax
    ret

putc:
    push edx
    push eax
    mov dx, COM1 + 5
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    pop eax
    mov dx, COM1
    out dx, al
    pop edx
    ret

hex32:
    push ecx
    mov ecx, 8
.digit:
    rol eax, 4
    push eax
    and al, 0x0f
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'a' - '0' - 10
.out:
    call putc
    pop eax
    loop .digit
    pop ecx
    ret

align 8
gdt:
    dq 0
    dq 0x00cf9b000000ffff               ; 0x08 kernel code (accessed already: the CPU never
    dq 0x00cf93000000ffff               ; 0x10 kernel data  writes the GDT, so its page's PTE stays
    dq 0x00cffb000000ffff               ; 0x18 user code    clean on the bare machine too)
    dq 0x00cff3000000ffff               ; 0x20 user data
    dw tss_end - tss - 1, 0             ; 0x28 the TSS
    db 0, 0x89, 0, 0
gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dd gdt
align 8
idt:
    times 14 dq 0
    dw 0, KCODE, 0x8e00, 0              ; 14: #PF
    times 0x80 - 15 dq 0
    dw 0, KCODE, 0xee00, 0              ; 0x80: int 0x80, from ring 3
    times 256 - 0x81 dq 0
idtr:
    dw 256 * 8 - 1
    dd idt
align 8
tss:
    dd 0, KSTACK, KDATA
    times 22 dd 0
    dw 0, tss_end - tss
tss_end:

section user start=0x108000 vstart=USER
user_frame equ 0x108000
user:
{user}
    int 0x80
"""


def lab_guest(setup="", kernel="", user="", after="", pse=False, wp=True):
    """LAB_GUEST with a check's lines: `setup` runs before paging is on, `kernel` in ring 0 with paging
    on, `user` in ring 3, `after` in ring 0 again; `pse` sets CR4.PSE, `wp` CR0.WP."""
    return LAB_GUEST.format(setup=setup, kernel=kernel, user=user, after=after, cr4=CR4_PSE if pse else 0,
                            wp=CR0_WP if wp else 0)


# --- part 1: a walk on tables it may only read ------------------------------------------------------------
class GuestTables:
    """Guest page tables as a walk sees them, and nothing else: `read(physical)` (the dword there; 0 where
    nothing was written), `vmm.vcpu.cr0`, `.cr3`, `.cr4`, `large_pages` (CR4.PSE) and `write_protect`
    (CR0.WP). Built from `memory`, [[address, value], ...]."""

    def __init__(self, memory, cr0=CR0_PG | CR0_WP | 0x11, cr3=0, cr4=0):
        self.memory = {address: value for address, value in memory}
        self.vmm = SimpleNamespace(vcpu=SimpleNamespace(cr0=cr0, cr3=cr3, cr4=cr4))

    def read(self, physical):
        return self.memory.get(physical, 0)

    @property
    def large_pages(self):
        return bool(self.vmm.vcpu.cr4 & CR4_PSE)

    @property
    def write_protect(self):
        return bool(self.vmm.vcpu.cr0 & CR0_WP)

    def __getattr__(self, name):
        raise AttributeError(f"the walk gets no mmu.{name} here: it reads the guest's tables with mmu.read(address) "
                             f"and the guest's registers in mmu.vmm.vcpu (cr0, cr3, cr4), mmu.large_pages and "
                             f"mmu.write_protect, and changes nothing")


def tables_case(memory, accesses, cr3=0x380000, pse=False, wp=True):
    """A part 1 case as plain data: guest memory [[address, value], ...], the registers, and accesses
    [[linear, write, user], ...]."""
    return {"memory": [list(pair) for pair in memory], "cr0": CR0_PG | (CR0_WP if wp else 0) | 0x11, "cr3": cr3,
            "cr4": CR4_PSE if pse else 0, "accesses": [list(access) for access in accesses]}


def walk_results(walk, case):
    """walk(mmu, linear, write, user) for each access of `case` on a fresh GuestTables: each answer as
    plain data, or the exception it raised, in words."""
    results = []
    for linear, write, user in case["accesses"]:
        mmu = GuestTables(case["memory"], case["cr0"], case["cr3"], case["cr4"])
        try:
            with budget(f"guest_walk(mmu, {linear:#x}, write={write}, user={user})"):
                answer = walk(mmu, linear, write, user)
            results.append(json.loads(json.dumps(answer)))
        except Exception as error:                  # the student's code raised: report it as the answer
            results.append(f"{type(error).__name__}: {error}")
    return results


def check_walks(walk, case, expected, what, hint=None, show=3):
    """The student's walk on every access of `case` against `expected` (one answer per access), the
    first few misses listed."""
    got = walk_results(walk, case)
    wrong = [(f"guest_walk(mmu, {shown(linear)}, write={write}, user={user})", e, g)
             for (linear, write, user), e, g in zip(case["accesses"], expected, got) if g != e]
    fail_cases(what, wrong, len(expected), "accesses", hint, show)


# --- parts 2 to 4: the student's handlers in a VMM -----------------------------------------------------
class _OverBudget(BaseException):
    """A student's handler ran past HANDLER_SECONDS (a BaseException: `except Exception` lets it pass)."""


@contextmanager
def budget(what, seconds=HANDLER_SECONDS):
    """Stop the code inside after `seconds` with an AssertionError that names `what`: a SIGALRM timer,
    where the code runs on the main thread (a notebook's cells do); elsewhere no limit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _OverBudget()
    before = signal.signal(signal.SIGALRM, expire)
    left, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _OverBudget:
        raise AssertionError(f"{what} was still running after {seconds:g} s (the reference takes microseconds)\n"
                             f"  where to look: a loop in it that never ends: one that waits for something "
                             f"only the guest could change, or walks a list it keeps adding to") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, left)
        signal.signal(signal.SIGALRM, before)


def _budgeted(kind, handler):
    """`handler` with each call on a budget, and an exception it raises turned into a message that says
    which call it was."""
    def hidden_fault(mmu, linear, write, user):
        return call(f"your hidden-fault handler, filling linear {linear:#x} for a {_access(write, user)}",
                    mmu, linear, write, user)

    def trace(mmu, entry, old, new):
        return call(f"your trace handler, after the guest changed its entry at {entry:#x} from {old:#x} to {new:#x}",
                    mmu, entry, old, new)

    def call(what, *args):
        with budget(what):
            try:
                return handler(*args)
            except (AssertionError, GuestError):
                raise
            except Exception as error:              # the student's code: say which call it failed in
                raise AssertionError(f"{what} raised {type(error).__name__}: {error}") from error
    return hidden_fault if kind == "hidden-fault" else trace


def _access(write, user):
    return f"{'write' if write else 'read'} by {'ring 3' if user else 'the kernel'}"


def run_shadow(source, handlers, technique="trap-and-emulate", adaptive=True, what="the guest under your VMM",
               max_instructions=SHADOW_MAX_INSTRUCTIONS, timeout=SHADOW_TIMEOUT):
    """The guest under `technique` ("trap-and-emulate" or "binary-translation", with `adaptive`
    translation) on shadow page tables whose handlers are `handlers` ({"hidden-fault": ..., "trace":
    ...}), each call on a budget: (machine, result). A guest that does not assemble, runs out of budget
    or is stopped by the shadow MMU (a fill that fills nothing, a refusal the guest's tables do not make)
    fails with a message that names it."""
    check(isinstance(handlers, dict) and sorted(handlers) == sorted(SHADOW_KINDS)
          and all(callable(h) for h in handlers.values()), f"{what}: the shadow MMU's handler table",
          expected='{"hidden-fault": a function, "trace": a function}',
          got=sorted(handlers) if isinstance(handlers, dict) else type(handlers).__name__)
    budgeted = {kind: _budgeted(kind, handlers[kind]) for kind in SHADOW_KINDS}
    options = {"adaptive": adaptive} if technique == "binary-translation" else {}
    with explained(what, max_instructions, timeout,
                   look="a guest access that keeps faulting: every hidden fault must end with a shadow entry that "
                        "allows the access",
                   astray=lambda error: f"stopped: {error}"):
        machine = TECHNIQUES[technique](vmkit.assemble(source), shadow_handlers=budgeted,
                                        max_instructions=max_instructions, timeout=timeout, **options)
        return machine, machine.run()


def guest_tables(machine):
    """Every non-zero entry of the guest's page directories (the one in its CR3 and those the shadow MMU
    keeps roots for) and of the page tables they point to: {"0x<guest-physical address>": value}."""
    vcpu = machine.vcpu
    if not vcpu.cr0 & CR0_PG:
        return {}
    return tables_at(machine, sorted({vcpu.cr3 & ~0xFFF, *machine.shadow.roots}), bool(vcpu.cr4 & CR4_PSE))


def tables_at(machine, directories, pse):
    """Every non-zero entry of the page directories at `directories` in `machine`'s memory and of the page
    tables they point to (a PDE with PS set maps 4 MiB when `pse`): {"0x<physical address>": value}."""
    entries = {}
    for directory in directories:
        pdes = _page(machine, directory)
        for index, pde in enumerate(pdes):
            if not pde:
                continue
            entries[f"{directory + index * 4:#x}"] = pde
            if pde & 1 and not (pde & 0x80 and pse) and (pde & ~0xFFF) < machine.cpu.ram_size:
                table = pde & ~0xFFF
                entries.update({f"{table + i * 4:#x}": pte for i, pte in enumerate(_page(machine, table)) if pte})
    return entries


def _page(machine, physical):
    return struct.unpack("<1024I", bytes(machine.uc.mem_read(physical, 0x1000)))


def shadow_facts(machine, result):
    """What a run on shadow page tables did, as plain data: how it ended and what it printed, its true
    faults, hidden faults, shadow fills and traces in order, the guest's page tables at the end and the
    run's counts."""
    facts = {**ending(result),
             "true": [[e.detail["linear"], e.detail["error_code"]] for e in result.of_kind("true-fault")],
             "hidden": [[e.detail["linear"], e.detail["error_code"]] for e in result.of_kind("hidden-fault")],
             "fills": [[e.detail["linear"], e.detail["value"] & 0xFFFFF007, e.detail["guest_entry"]]
                       for e in result.of_kind("shadow-fill")],
             "traces": [[e.detail["entry"], e.detail["old"], e.detail["new"], e.detail["by"]]
                        for e in result.of_kind("trace")],
             "tables": guest_tables(machine),
             "counts": {name: result.stats.get(name, 0) for name in SHADOW_COUNTS},
             "where": {kind: [_where(machine.image, e.eip) for e in result.of_kind(event)]
                       for kind, event in (("true", "true-fault"), ("hidden", "hidden-fault"),
                                           ("fills", "shadow-fill"), ("traces", "trace"))}}
    return json.loads(json.dumps(facts))


def _where(image, eip):
    """", at eip 0x...: the guest's `source line`", as far as the guest's listing tells."""
    line = image.lines.get(eip)
    text = image.source_line(line).split(";")[0].strip() if line else ""
    return f", at eip {eip:#x}" + (f": the guest's `{text}`" if text else "")


def check_shadow_facts(got, expected, what, fields=SHADOW_FIELDS):
    """shadow_facts of a run with a student's handlers against the reference run's, the first
    difference explained, with where in the guest it happened."""
    check_facts(got, expected, what, hints=SHADOW_HINTS, fields=fields, unit="item", end="(no more)",
                notes=got.get("where"))


def check_shadow_native(got, native, what):
    """A run's serial output and exit code against the bare machine's."""
    check_facts(got, native, f"{what}, against the bare machine", fields=("serial", "exit_code"),
                hints={"serial": "the bare machine walks the guest's own tables: under your VMM the guest must see "
                                 "the same faults and the same accessed and dirty bits",
                       "exit_code": SHADOW_HINTS["exit_code"]})


# --- the kernel's side of the grader's questions (graders/lab8.py asks them) ------------------------------
# The runs use vmkit as it is on disk (on_disk), so a notebook that patched the shadow MMU, the CPU's walk
# or vmkit's own handler table in its own vmkit answers with its own handlers all the same.
def on_disk():
    """This module as imported afresh from disk, for the time of the with block (answers.on_disk)."""
    return answers.on_disk(__name__)


def walk_cases(walk, cases):
    """A student's walk on each part 1 case (tables_case): one answer per access, each on fresh
    GuestTables and on a budget, as plain data, or raised(error)."""
    answers = []
    for case in cases:
        found = []
        for linear, write, user in case["accesses"]:
            mmu = GuestTables(case["memory"], case["cr0"], case["cr3"], case["cr4"])
            try:
                with budget(f"guest_walk(mmu, {linear:#x}, write={write}, user={user})"):
                    found.append(plain(walk(mmu, linear, write, user)))
            except Exception as error:              # the student's code: its error is its answer
                found.append(raised(error))
        answers.append(found)
    return answers


def shadow_case(table, source, technique="trap-and-emulate", adaptive=True):
    """shadow_facts of one run of `source` under `technique` on shadow tables with `table`, or
    {"error": ...} when it could not end (the message names why)."""
    try:
        return shadow_facts(*run_shadow(source, table, technique, adaptive=adaptive, what="the guest under your VMM"))
    except Exception as error:                      # the student's handlers: their error is their answer
        return {"error": f"{type(error).__name__}: {error}"}


def handler_runs(cases, handlers, withhold=()):
    """shadow_case of each [source, technique, adaptive] with vmkit's handler table and `handlers` ({kind:
    handler}) in place of vmkit's own, whose versions named in `withhold` (shadow_fill, shadow_propagate)
    refuse to run meanwhile."""
    from ..vmm import shadow_paging  # here, not at the top: called under on_disk, this is vmkit as installed
    table = dict(shadow_paging.SHADOW_HANDLERS, **handlers)
    with withheld(shadow_paging, *withhold):
        return [shadow_case(table, *case) for case in cases]


def shadow_cases(cases, handlers, withhold=()):
    """handler_runs under vmkit as on disk: a student's handlers, each guest's shadow_facts as plain data."""
    with on_disk() as fresh:
        return fresh.handler_runs(cases, handlers, withhold)


def table_cases(cases, table, fill=None, propagate=None, fill_name="fill"):
    """shadow_case of each [source, technique, adaptive] under a student's whole table (vmkit as on disk);
    {"error": ...} for each unless `table` is a dict with the student's own `fill` (the function the lab
    names `fill_name`) under "hidden-fault" and `propagate` under "trace"."""
    try:
        if not isinstance(table, dict) or sorted(table) != sorted(SHADOW_KINDS):
            raise ValueError(f"SHADOW must be a dict with a handler for each of {SHADOW_KINDS}")
        yours(table, "SHADOW")
        if table["hidden-fault"] is not fill or table["trace"] is not propagate:
            raise ValueError(f"SHADOW must hold your {fill_name} under 'hidden-fault' and your propagate under 'trace'")
        table = {kind: table[kind] for kind in SHADOW_KINDS}
    except Exception as error:
        return [{"error": f"{type(error).__name__}: {error}"}] * len(cases)
    with on_disk() as fresh:
        return fresh.handler_runs(cases, table, ("shadow_fill", "shadow_propagate"))


# --- part 4: a fill that prefetches -----------------------------------------------------------------------
PREFETCH_HINT = ("a prefetched shadow entry is one the CPU uses without asking the VMM: it must allow nothing the "
                 "guest's tables refuse (present, the rights of the PDE and of the PTE), and no access through it "
                 "may skip an accessed or dirty bit the bare machine would set then (KVM's FNAME(prefetch_gpte) "
                 "and FNAME(prefetch_invalid_gpte) in arch/x86/kvm/mmu/paging_tmpl.h)")


def native_tables(source, directories, max_instructions=SHADOW_MAX_INSTRUCTIONS):
    """The guest run on the bare machine: its ending and its page tables at the end, read at the page
    directories `directories` (the guest-physical CR3 pages a shadow run kept roots for)."""
    machine = vmkit.machine(source, max_instructions=max_instructions, timeout=30)
    result = machine.run()
    pse = bool(machine.cpu["cr4"] & CR4_PSE)
    return {**ending(result), "tables": tables_at(machine, sorted(directories), pse)}


def prefetch_reference(source, technique="trap-and-emulate", adaptive=True):
    """What a run under a prefetching fill is judged against: {"native": the bare machine's ending and page
    tables (native_tables, read at the page directories vmkit's own VMM kept roots for), "vmkit_hidden":
    the hidden faults vmkit's own fill takes}."""
    from ..vmm.shadow_paging import SHADOW_HANDLERS  # here, not at the top: called under on_disk, this is vmkit as installed
    machine, result = run_shadow(source, SHADOW_HANDLERS, technique, adaptive=adaptive, what="vmkit's own VMM")
    directories = {machine.vcpu.cr3 & ~0xFFF, *machine.shadow.roots} if machine.vcpu.cr0 & CR0_PG else set()
    return {"native": native_tables(source, directories), "vmkit_hidden": result.stats.get("hidden_faults", 0)}


def prefetch_bound(vmkit_hidden, ratio):
    """The hidden faults a prefetching fill may take on a guest where vmkit's own fill takes `vmkit_hidden`."""
    return int(vmkit_hidden * ratio)


def check_prefetch(got, native, vmkit_hidden, ratio, what):
    """A run under a prefetching fill against the bare machine (output, exit code, the guest's page tables
    at the end, accessed and dirty bits included), and its hidden faults within the bound."""
    check(isinstance(got, dict) and "error" not in got, f"{what} runs to its end",
          got=got.get("error") if isinstance(got, dict) else shown(got)[:200])
    check_facts(got, native, f"{what}, against the bare machine", fields=("serial", "exit_code", "tables"),
                hints={"serial": PREFETCH_HINT, "exit_code": SHADOW_HINTS["exit_code"],
                       "tables": "the guest's page tables at the end, by guest-physical address; " + PREFETCH_HINT},
                unit="item", end="(no more)")
    hidden, bound = got["counts"]["hidden_faults"], prefetch_bound(vmkit_hidden, ratio)
    check(hidden <= bound, f"{what}: hidden faults within the bound", expected=f"at most {bound} ({ratio:g} of the "
          f"{vmkit_hidden} vmkit's own fill takes)", got=f"{hidden} hidden faults",
          hint="a prefetch that makes the entries this guest goes on to use: which of its neighbours are safe, and "
               "how many of them")


def prefetch_cases(cases, table, fill_ahead=None, propagate=None):
    """table_cases for part 4: each [source, technique, adaptive] under a student's table holding their
    `fill_ahead` and `propagate` (vmkit as on disk, vmkit's own handlers withheld)."""
    return table_cases(cases, table, fill_ahead, propagate, fill_name="fill_ahead")
