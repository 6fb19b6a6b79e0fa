"""The census of sensitive and privileged instructions, measured by running each one natively in
rings 0, 1 and 3 and in a guest kernel under trap-and-emulate."""
import time

import pytest

from vmkit import census as census_module
from vmkit.census import INSTRUCTIONS, ROBIN_IRVINE, CensusRow, census

GP = 13


@pytest.fixture(scope="module")
def rows():
    return {r.mnemonic: r for r in census()}


def test_the_census_has_a_row_for_every_instruction_in_order(rows):
    """Does census() measure every listed instruction, once, in the list's order?"""
    assert [r.mnemonic for r in census()] == [p.mnemonic for p in INSTRUCTIONS]
    assert all(isinstance(r, CensusRow) and r.source for r in rows.values())


def test_robin_and_irvine_listed_eighteen_mnemonics_though_they_said_seventeen():
    """Which mnemonics does the census take from Robin & Irvine's list?"""
    assert ROBIN_IRVINE == ("sgdt", "sidt", "sldt", "smsw", "pushf", "popf", "lar", "lsl", "verr", "verw",
                            "pop", "push", "call", "jmp", "int", "ret", "str", "mov")


@pytest.mark.parametrize("name", ["cli", "sti", "hlt", "lgdt", "lidt", "ltr", "lldt", "lmsw", "clts",
                                  "mov to cr0", "mov from cr0", "mov to cr3", "mov from cr3", "mov to dr7",
                                  "invlpg", "wbinvd", "invd", "rdmsr", "wrmsr", "in", "out"])
def test_privileged_instructions_fault_outside_ring_0_and_the_vmm_emulates_them(rows, name):
    """Does each privileged instruction raise #GP in rings 1 and 3 only, trap under the VMM, and
    leave the guest exactly the state it would have on the bare machine?"""
    row = rows[name]
    assert row.faults == {0: None, 1: GP, 3: GP}
    assert row.privileged and row.sensitive and row.trapped_under_vmm and row.same_under_vmm
    assert not row.hole


@pytest.mark.parametrize("name, what_differs", [
    ("sgdt", "scratch"),        # the stored base is the VMM's shadow GDT
    ("sidt", "scratch"),        # the stored base is the shadow IDT
    ("sldt", "eax"),            # lldt was emulated on the virtual CPU: the real LDTR stays null
    ("smsw", "eax"),            # the real CR0 lacks the TS bit the guest set in its virtual CR0
    ("pushf", "eax"),           # the real IF is on, the guest's virtual IF is off
    ("popf", "eflags"),         # popf in ring 1 cannot set IF: the virtual IF stays off
    ("lar", "eax"),             # the access rights show DPL 1, the shadow GDT's compressed DPL
    ("push", "eax"),            # push cs: the RPL is 1
    ("call", "ebx"),            # a far call pushes CS with RPL 1
    ("str", "eax"),             # the real TR is the VMM's own TSS
    ("mov", "eax"),             # mov eax, cs: the RPL is 1
])
def test_the_holes_neither_fault_nor_trap_yet_show_the_guest_something_else(rows, name, what_differs):
    """Is this Robin & Irvine instruction a hole: no fault in any ring, no trap, a different result?"""
    row = rows[name]
    assert row.faults == {0: None, 1: None, 3: None}
    assert not row.privileged and not row.trapped_under_vmm and not row.same_under_vmm
    assert row.sensitive and row.hole
    assert row.differences == (what_differs,)


def test_eleven_of_robin_and_irvines_eighteen_come_out_as_holes_here(rows):
    """How many of the eighteen does this VMM let through unseen, and why not the other seven?

    - lsl, verr, verw: ring compression gives every DPL-0 segment DPL 1 and keeps its limit, so
      the checks that pass in ring 0 pass in ring 1 and the limit read is the same. On a VMM that
      compressed differently (or a guest with ring-1 segments of its own) they would tell.
    - jmp (far, to the kernel's own code segment): it loads CS with RPL 1, but leaves nothing the
      guest reads; only a later read of CS, a hole of its own (push, mov), would show it.
    - pop ss and retf to a selector with RPL 0: in ring 1 the CPU refuses them with #GP, so they do
      trap, but this VMM has no emulation for them and reflects the #GP to a guest that never
      expected one. Sensitive, not hidden: broken in the open.
    - int n: traps and is reflected, but the frame the guest's handler receives holds CS with RPL
      1 and the real IF: sensitive, and again not hidden.
    """
    holes = [name for name in ROBIN_IRVINE if rows[name].hole]
    assert holes == ["sgdt", "sidt", "sldt", "smsw", "pushf", "popf", "lar", "push", "call", "str", "mov"]
    for name in ("lsl", "verr", "verw", "jmp"):
        assert rows[name].same_under_vmm and not rows[name].sensitive
    for name in ("pop", "ret"):
        assert rows[name].trapped_under_vmm and rows[name].vmm_fault == GP and rows[name].faults[0] is None
        assert rows[name].sensitive and not rows[name].hole
    assert rows["int"].faults == {0: 0x80, 1: 0x80, 3: 0x80}
    assert rows["int"].trapped_under_vmm and rows["int"].differences == ("frame",)


def test_the_table_shows_what_the_guest_saw_under_the_vmm_beside_the_bare_rings(rows):
    """pop ss and retf run in every ring of the bare machine (each ring with its own selectors) but
    fault under the VMM (ring-0 selectors in ring 1): does the table show both, so they agree?"""
    lines = {line.split()[0]: line.split() for line in census_module.table([rows["pop"], rows["ret"],
                                                                            rows["cli"], rows["int"]]).splitlines()}
    assert lines["instruction"][:7] == ["instruction", "ring", "0", "ring", "1", "ring", "3"]
    assert "guest" in lines["instruction"] and "saw" in lines["instruction"]
    assert lines["pop"][1:6] == ["-", "-", "-", "yes", "13"]        # rings 0, 1, 3; trapped; guest saw #GP
    assert lines["ret"][1:6] == ["-", "-", "-", "yes", "13"]
    assert lines["cli"][1:6] == ["-", "13", "13", "yes", "-"]        # emulated: the guest sees no fault
    assert lines["int"][1:6] == ["128", "128", "128", "yes", "128"]
    hlt = census_module.table([rows["hlt"]]).splitlines()[1].split()
    assert hlt[1:6] == ["-", "13", "13", "yes", "-"]                # halted under the VMM, as in ring 0: no vector


def test_the_bare_rings_use_their_own_selectors_so_pop_ss_and_retf_pass_there():
    """The ring-1 column runs with ring 1's own selectors (RPL = DPL = 1); the VMM's guest runs the
    ring-0 probe with RPL-0 selectors in ring 1, which the CPU refuses (#GP with the selector)."""
    assert census_module.SELECTORS[1][:2] == (0x19, 0x21) and census_module.SELECTORS[0][:2] == (0x08, 0x10)
    image, _ = census_module.probe_kernel()
    index = [p.mnemonic for p in INSTRUCTIONS].index("pop")
    _, result = census_module._run_probe(image, index, 0, "trap-and-emulate")
    fault = [e for e in result.events if e.kind == "trap" and e.detail["instruction"] == "pop ss"]
    assert fault and fault[0].cpl == 1 and fault[0].detail["error_code"] == 0x10


@pytest.mark.parametrize("name", ["nop", "add", "cpuid", "rdtsc"])
def test_innocent_instructions_are_neither_privileged_nor_sensitive(rows, name):
    """Does an ordinary instruction run the same everywhere, without a trap?"""
    row = rows[name]
    assert row.faults == {0: None, 1: None, 3: None} and not row.trapped_under_vmm
    assert not row.sensitive and not row.hole


def test_the_census_is_cached_deterministic_and_fast():
    """Does a second census return the same rows at once, and does a fresh one measure the same?"""
    first = census()
    assert census() is not first and census() == first
    census_module._ROWS.clear()
    start = time.perf_counter()
    again = census()
    assert again == first
    assert time.perf_counter() - start < 10
    by_name = {r.mnemonic: r for r in first}
    assert census(["SGDT", "cli"]) == [by_name["sgdt"], by_name["cli"]]


def test_an_unknown_name_is_refused_with_the_known_ones():
    """Does census() say which instructions it knows when asked for one it doesn't?"""
    with pytest.raises(KeyError, match="sgdt"):
        census(["fsave"])
