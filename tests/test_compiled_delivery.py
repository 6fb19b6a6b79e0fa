"""The compiled delivery (vmkit/machine/delivery.c) and the compiled hooks (hooks.c) against their
reference, the Python of vmkit.machine.delivery and Machine._on_interrupt / _on_watched.

Two ways: random descriptor tables, gates, TSS stacks, rings and page tables, where both deliver the
same event from the same state and must leave the same registers, the same memory (the frame, the
accessed and dirty bits) and raise the same fault; and every guest of the course and of the tests,
whose runs must give the same events (icount included), stats, registers and endings with
VMKIT_DELIVERY=reference as without it (tests/test_counting.py, which compares each default run with
this reference and the count's).
"""
import hashlib
import os
import random

import pytest
from unicorn import x86_const as X

import vmkit
from vmkit.errors import GuestError
from vmkit.machine import delivery, native, quirks
from vmkit.machine.cpu import Fault
from vmkit.machine.delivery import EXCEPTION, EXTERNAL, SOFTWARE
from vmkit.machine.x86 import HAS_ERROR_CODE, encode_descriptor
from vmkit.vmm import TrapAndEmulate
from vmkit.vmm.emulate import EMULATORS

import test_counting
from test_machine import timer_guest
from guestkit import kernel

pytestmark = pytest.mark.skipif(native.library() is None, reason=f"no C helpers: {native.why_not()}")

SEED = 24
GDT, IDT, TSS, PAGE_DIRECTORY, PAGE_TABLE = 0x1000, 0x2000, 0x3000, 0x5000, 0x6000


@pytest.fixture
def reference():
    """Within the `with`, new machines deliver with the Python reference."""
    yield test_counting.Reference("VMKIT_DELIVERY")
    os.environ.pop("VMKIT_DELIVERY", None)


# --- one delivery from a random state, both ways --------------------------------------------------------
def random_state(rng):
    """A machine description: its GDT, IDT gate, TSS, CPU state and paging, drawn from `rng`, mostly
    valid and now and then wrong in one place (as the SDM's checks expect)."""
    access = [0, 0x9A, 0x92, 0xFA, 0xF2, 0x89, 0x9E, rng.choice([0x9A, 0x92, 0x1A, 0x82, 0xFE, 0xBA, 0xDA]), 0xBA, 0xB2]
    if rng.random() < 0.3:
        access[rng.randrange(1, len(access))] ^= rng.choice([0x80, 0x60, 0x08, 0x02, 0x10])
    bases = [0] * len(access)
    bases[5] = TSS
    if rng.random() < 0.2:
        bases[rng.choice([2, 4, 9])] = rng.choice([0x100000, 0x3FF000, 0xFFF00000])
    limits = [0xFFFFF] * len(access)
    limits[5] = rng.choice([103, 103, 103, 7, 15, 23])
    vector = rng.choice([0x80, 0x21, 13, 14, 0x20, 3, 0xFF, 8])
    cpl = rng.choice([0, 0, 3, 3, 1])
    return {
        "gdt": [(bases[i], limits[i], access[i]) for i in range(len(access))],
        "gdt_limit": rng.choice([len(access) * 8 - 1] * 4 + [0x2F, 0x17]),
        "idt_limit": rng.choice([0x7FF] * 5 + [0xFF, 0x407]),
        "vector": vector,
        "gate": (rng.choice([0x100000, 0x123456, 0xFFFFFFF0]),
                 rng.choice([0x08, 0x08, 0x08, 0x1B, 0x30, 0x38, 0x40, 0x00, 0x04, 0x0B, 0x60]),
                 rng.choice([0xE, 0xE, 0xF, 0xF, 0x5, 0x6, 0xC]), rng.choice([0, 3, 3, 1]), rng.random() < 0.9),
        "tss": [(rng.choice([0x3F0000, 0x200FFC, 0x200006, 0x10, 0x3FFFFC, 0x400004]),
                 rng.choice([0x10, 0x10, 0x10, 0x13, 0x20, 0x23, 0x48, 0x49, 0x4A, 0x00, 0x38, 0x60])) for _ in range(3)],
        "cpl": cpl,
        "esp": rng.choice([0x3E0000, 0x201004, 0x20100A, 0x8, 0x3FFFFE, 0x3D0000]),
        "eflags": 0x2 | rng.choice([0, 0x200]) | rng.choice([0, 0x100]) | rng.choice([0, 0x4000, 0x10000]),
        "source": rng.choice([SOFTWARE, EXCEPTION, EXTERNAL]),
        "paging": rng.random() < 0.6,
        "pse": rng.random() < 0.5,
        "wp": rng.random() < 0.5,
        "big_page": rng.random() < 0.2,
        "pages": {page: rng.choice([7, 7, 7, 5, 3, 1, 0, 0x27, 0x67, 6]) for page in
                  (0x1, 0x2, 0x3, 0x200, 0x201, 0x3D0 - 1, 0x3DF, 0x3EF, 0x3FF, 0x100)},
        "stack_words": [rng.randrange(1 << 32) for _ in range(5)] + [rng.choice([0x08, 0x1B, 0x23, 0x2B])],
        "skip": rng.choice([0, 0, 4, 8]),
    }


HLT = vmkit.assemble("hlt")


def build(state):
    """A vmkit PC in `state`, stopped before anything runs."""
    m = vmkit.Machine(HLT, max_instructions=None, counted=False)
    uc, cpu = m.uc, m.cpu
    uc.mem_write(GDT, b"".join(encode_descriptor(b, l, a) for b, l, a in state["gdt"]))
    offset, selector, kind, dpl, present = state["gate"]
    gate = (offset & 0xFFFF) | (selector << 16) | ((kind | dpl << 5 | present << 7) << 40) | ((offset >> 16) << 48)
    uc.mem_write(IDT + 8 * state["vector"], gate.to_bytes(8, "little"))
    for ring, (esp, ss) in enumerate(state["tss"]):
        uc.mem_write(TSS + 4 + 8 * ring, esp.to_bytes(4, "little") + ss.to_bytes(4, "little"))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, GDT, state["gdt_limit"], 0))
    uc.reg_write(X.UC_X86_REG_IDTR, (0, IDT, state["idt_limit"], 0))
    uc.reg_write(X.UC_X86_REG_TR, (0x28, TSS, state["gdt"][5][1], 0x89))
    cs, ss = {0: (0x08, 0x10), 1: (0x41, 0x49), 3: (0x1B, 0x23)}[state["cpl"]]
    esp, words = state["esp"], state["stack_words"]
    if esp + 20 <= 0x400000:           # what an iret there would pop: EIP, CS (of a random ring), EFLAGS, ESP, SS
        uc.mem_write(esp, b"".join(w.to_bytes(4, "little") for w in (words[0], words[5], *words[2:5])))
    cpu.far_transfer(state["cpl"], cs, ss, esp, 0x100020, state["eflags"])
    if state["paging"]:
        pde = (PAGE_TABLE | 7) if not state["big_page"] else 0x87
        uc.mem_write(PAGE_DIRECTORY, pde.to_bytes(4, "little"))
        uc.mem_write(PAGE_TABLE, b"".join(((page << 12) | state["pages"].get(page, 7)).to_bytes(4, "little")
                                          for page in range(1024)))
        uc.reg_write(X.UC_X86_REG_CR3, PAGE_DIRECTORY)
        uc.reg_write(X.UC_X86_REG_CR4, 0x10 if state["pse"] else 0)
        uc.reg_write(X.UC_X86_REG_CR0, 0x80000011 | (0x10000 if state["wp"] else 0))
    return m


# where a delivery from random_state's states may write: the tables (accessed and dirty bits), the stacks
WRITTEN = ((0, 0x7000), (0x1FF000, 0x203000), (0x3CF000, 0x400000))


def after(m):
    """The CPU and memory as a delivery left them."""
    regs = m.cpu.get(("eip", "cs", "ss", "esp", "eflags", "cr2"))
    memory = hashlib.sha256(b"".join(bytes(m.uc.mem_read(a, b - a)) for a, b in WRITTEN)).hexdigest()
    return regs, quirks.exception_state(m.uc), memory


def deliver_both(state):
    vector, source = state["vector"], state["source"]
    error_code = 0x1234 if source == EXCEPTION and vector in HAS_ERROR_CODE else None
    results = []
    for way in ("reference", "compiled"):
        m = build(state)
        try:
            if way == "reference":
                outcome = ("delivered", delivery.deliver_reference(m.cpu, vector, source, error_code))
            else:
                record = delivery.compiled(m.cpu).deliver(vector, source, error_code)
                outcome = ("delivered", record) if record is not None else ("left to the reference",)
        except Fault as f:
            outcome = ("fault", f.vector, f.error_code, f.cr2)
        except GuestError:
            outcome = ("guest error",)
        results.append((outcome, after(m)))
    return results


def test_the_compiled_delivery_does_what_the_reference_does_from_random_states():
    """800 deliveries from random states: the same record or the same fault (vector, error code,
    CR2), the same registers, the same memory to the byte; where the reference ends in a GuestError
    (the CPU's access outside RAM), the compiled one leaves the delivery to it, having written nothing."""
    rng = random.Random(SEED)
    kinds = {}
    for case in range(800):
        state = random_state(rng)
        (want, want_after), (got, got_after) = deliver_both(state)
        if want[0] == "guest error":
            assert got == ("left to the reference",), (case, state)
        else:
            assert got == want, (case, state)
        assert got_after == want_after, (case, state)
        kinds[want[0] if want[0] != "fault" else f"fault {want[1]}"] = kinds.get(want[0], 0) + 1
    # the states reach deliveries, each kind of fault the checks raise, and the reference's own errors
    assert {"delivered", "fault 13", "fault 11", "fault 10", "fault 14", "guest error"} <= set(kinds), kinds


def test_the_compiled_return_frame_reads_what_the_reference_reads_from_random_states():
    rng = random.Random(SEED + 1)
    for case in range(400):
        state = random_state(rng)
        frames = []
        for compiled in (False, True):
            m = build(state)
            cpu = m.cpu
            got = delivery.compiled(cpu).return_frame(state["skip"]) if compiled else \
                delivery.return_frame_reference(cpu, state["skip"])
            frames.append((got, after(m)))
        assert frames[0] == frames[1], (case, state)


# --- whole runs, both ways: tests/test_counting.py runs every guest, comparison workload and fuzz family
# under every technique once the default way and checks it against VMKIT_DELIVERY=reference (and the
# count's reference); below, the guests that exercise the compiled hooks most.


# ring 3 calls its kernel 500 times through a DPL 3 interrupt gate; the handler only returns
SYSCALLS = kernel(body="mov eax, user\nmov ebx, 0x3002\njmp to_ring3\nuser:\nmov ecx, 500\ncall_kernel:\n"
                       "int 0x80\nloop call_kernel\nmov al, 0\nout 0xf4, al",
                  gates={0x80: ("handler", 0xEE)}, handlers={"handler": "iretd"})


def test_the_compiled_hooks_handle_the_system_calls_of_a_native_run(reference):
    """500 `int 0x80` round trips from ring 3 under the vmkit PC: the compiled hooks handle nearly all
    of them (the Python hooks take one in EVENTS, when the events waiting fill up), with the same trace."""
    image = vmkit.assemble(SYSCALLS)
    m = vmkit.Machine(image)
    handled = []
    original = m._handle_in_hook
    m._handle_in_hook = lambda stop: (handled.append(stop), original(stop))[1]
    result = m.run()
    assert result.exit_code == 1 and result.stats["interrupts"] == 500      # isa-debug-exit: (0 << 1) | 1
    assert len(result.of_kind("ring-transition")) == 1001
    assert len(handled) < 20
    with reference:
        m = vmkit.Machine(image)
        assert m._pc is None
        assert [repr(e) for e in m.run().events] == [repr(e) for e in result.events]


def test_a_vmm_that_overrides_what_the_hooks_stand_for_keeps_them_off():
    class Counting(vmkit.Machine):
        def exception(self, vector, source, error_code=None):
            self.stats["traps"] += 1
            super().exception(vector, source, error_code)
    result = Counting(vmkit.assemble(SYSCALLS)).run()
    assert result.stats["traps"] == 500 and result.stats["interrupts"] == 500


# --- trap-and-emulate's cli and sti traps (hooks.c, vmkit_vmm_trap; TrapAndEmulate.compiled_trap) -------
# A kernel whose timer interrupts land between its sti and its cli, WORK instructions apart, at a rate of
# a tick every few dozen instructions (the PIT's divisor, scaled by vmkit's clock), so that ticks,
# budgets and sti shadows fall at every place in the loop.
CLI_STI = """
    mov ecx, {rounds}
again:
    cli
    times {work} inc esi
    sti
    times {work} inc edi
    dec ecx
    jnz again
    cli
    mov al, 0
    out 0xf4, al"""


@pytest.mark.parametrize("work, divisor", [(0, 1), (1, 1), (2, 2), (3, 1), (5, 3)])
def test_trap_and_emulates_compiled_traps_run_the_same_as_the_python_ones(reference, work, divisor):
    """The same events, stats and registers with the cli and sti traps handled in C as in Python, and
    nearly all of them handled in C."""
    image = vmkit.assemble(timer_guest(divisor, CLI_STI.format(rounds=1000, work=work)))
    test_counting.assert_same(reference, image, "trap-and-emulate", f"cli/sti, WORK={work}, divisor {divisor}")
    vmm = TrapAndEmulate(image)
    in_python = []
    handle_trap = vmm.handle_trap
    vmm.handle_trap = lambda *a: (in_python.append(a), handle_trap(*a))[1]
    result = vmm.run()
    emulated = [e for e in result.of_kind("emulate") if e.detail["instruction"] in ("cli", "sti")]
    assert len(emulated) == 2001 and result.stats["irqs"] > 20
    assert len(in_python) < len(emulated) // 2, (len(in_python), len(emulated))


def test_a_lab_s_own_cli_handler_gets_every_cli_trap():
    """A table of emulators with a student's cli in it keeps the compiled traps off: every cli reaches it."""
    seen = []

    def cli(vmm, insn):
        seen.append(insn.address)
        return EMULATORS["cli"](vmm, insn)
    image = vmkit.guests.image("trap_density", EVERY=4, ROUNDS=200)
    result = TrapAndEmulate(image, emulators={**EMULATORS, "cli": cli}).run()
    assert len(seen) == 200 == len([e for e in result.of_kind("emulate") if e.detail["instruction"] == "cli"])


def test_a_vmm_that_handles_traps_its_own_way_gets_them_all():
    class Counting(TrapAndEmulate):
        def handle_trap(self, vector, source, error_code=None, cause=None):
            self.stats["mine"] = self.stats.get("mine", 0) + 1
            super().handle_trap(vector, source, error_code, cause)
    result = Counting(vmkit.guests.image("trap_density", EVERY=4, ROUNDS=200)).run()
    assert result.stats["mine"] == result.stats["traps"] >= 200


def test_without_the_library_delivery_runs_the_reference_and_the_doctor_says_so(reference):
    with reference:
        compiled, why = delivery.available()
        assert not compiled and "VMKIT_DELIVERY=reference" in why
        line = [c for c in vmkit.doctor() if c.name == "compiled delivery"][0]
        assert not line.ok and "reference" in line.detail
        m = vmkit.Machine(vmkit.assemble(SYSCALLS))
        assert delivery.compiled(m.cpu) is None and m._pc is None
    assert [c for c in vmkit.doctor() if c.name == "compiled delivery"][0].ok
