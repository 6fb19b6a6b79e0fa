"""Lab 8's grading pieces on their own: the guest the checks build, the budget a student's shadow
handlers run on, the tables a walk may only read, and the reference facts of graders/lab8.py.

tests/test_grading.py grades the whole lab through nbgrader (solution, release, fixtures); these
tests say which piece is wrong when that round trip fails.
"""
import os
import sys
import time

import pytest

import vmkit
from vmkit.grading import GuestTables, lab_guest, run_shadow, shadow_facts, tables_case, walk_results
from vmkit.vmm.shadow_paging import SHADOW_HANDLERS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P, RW, US, A, D, PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80
PD, PT0, PT1 = 0x380000, 0x381000, 0x382000

ACCESSES = lab_guest(
    setup="mov dword [PTE(0x401000)], DATA | PG_P | PG_RW | PG_US\n"
          "mov dword [PTE(0x402000)], (DATA + 0x1000) | PG_P | PG_US\n"
          "mov dword [PDE(0x800000)], 0 | PG_PS | PG_P | PG_RW",
    kernel="rd 0x401000\nwr 0x402000\nrd 0xb00000\nwr 0xb01000\n"
           "mov dword [PTE(0x401000)], (DATA + 0x2000) | PG_P | PG_RW | PG_US\nmov eax, cr3\nmov cr3, eax",
    user="rd 0x401000\nwr 0x401000\nwr 0x402000\nrd 0xb00000",
    after="show 0x401000\nshow 0x402000\nshowpde 0x800000", pse=True)


@pytest.fixture(scope="module")
def graders():
    sys.path.insert(0, REPO)
    import graders
    import graders.lab8
    yield graders
    sys.path.remove(REPO)


def test_the_lab_guest_prints_the_same_natively_and_on_shadow_tables():
    """Does a lab guest with true faults, hidden faults, a 4 MiB page and a trace print the same on the
    bare machine and under vmkit's own shadow MMU, with both kinds of fault and a trace taken?"""
    native = vmkit.run(ACCESSES)
    assert native.exit_code == 1 and native.serial.count("#PF") == 3, native.serial
    for technique in ("trap-and-emulate", "binary-translation"):
        machine, result = run_shadow(ACCESSES, SHADOW_HANDLERS, technique)
        assert (result.serial, result.exit_code) == (native.serial, native.exit_code), technique
        assert result.stats["hidden_faults"] and result.stats["true_faults"] == 3
        assert result.stats["trace_faults"] + result.stats.get("trace_callouts", 0) == 1


def test_the_cpu_walk_facts_are_the_cpus_answers(graders):
    """Does graders' cpu_walks give the #PF error code for a refusal, and the physical address with the
    entries used (PDE first) for an access the tables allow?"""
    case = tables_case([[PD, PT0 | P | RW | US], [PD + 4, PT1 | P | US], [PD + 8, 0x400000 | PS | P | RW],
                        [PT1 + 4, 0x300000 | P | RW | US | A]],
                       [[0x401234, False, True], [0x401234, True, True], [0x401234, True, False], [0x8abcde, True, False],
                        [0x8abcde, False, True], [0x403000, True, False], [0xc00000, False, True]], pse=True)
    assert graders.lab8.cpu_walks([case]) == [[
        ["hidden", 0x300234, [PD + 4, PT1 + 4]], ["true", 7], ["true", 3], ["hidden", 0x4abcde, [PD + 8]],
        ["true", 5], ["true", 2], ["true", 4]]]


def test_the_reference_runs_are_the_same_in_a_fresh_interpreter(graders):
    """Is a run under vmkit's shadow MMU, adaptive binary translation included, counted and recorded the
    same in this process and in the fresh one graders.reference computes it in?"""
    kernel = vmkit.guests.source("paging_kernel", HEAP_PAGES=3, ROUNDS=2)
    cases = [[kernel, "binary-translation", True], [ACCESSES, "trap-and-emulate", True]]
    for (source, technique, _), facts in zip(cases, graders.reference("lab8.shadow_runs", cases)):
        assert shadow_facts(*run_shadow(source, SHADOW_HANDLERS, technique)) == facts["vmm"]
        assert facts["native"]["serial"] == facts["vmm"]["serial"]


def test_a_walk_gets_tables_it_can_only_read():
    """Does GuestTables give a walk the guest's entries and registers and nothing else, and does
    walk_results report what a walk raised as its answer?"""
    mmu = GuestTables([[PD, PT0 | P]], cr3=PD, cr4=0x10)
    assert (mmu.read(PD), mmu.read(PD + 4), mmu.vmm.vcpu.cr3, mmu.large_pages, mmu.write_protect) == \
        (PT0 | P, 0, PD, True, True)
    with pytest.raises(AttributeError, match="changes nothing"):
        mmu.write_guest(PD, 0)

    def cheats(mmu, linear, write, user):
        return mmu.cpu.translate(linear, write, user)
    answer, = walk_results(cheats, tables_case([], [[0x1000, False, False]]))
    assert answer.startswith("AttributeError: the walk gets no mmu.cpu here")


def test_a_handler_that_never_returns_is_stopped_within_its_budget():
    """Is a trace handler stuck in a loop stopped after about a second, with a message that names it
    and the entry it was tracing?"""
    def propagate(mmu, entry, old, new):
        while True:
            pass
    start = time.perf_counter()
    with pytest.raises(AssertionError, match=r"your trace handler, after the guest changed its entry at 0x382004 "
                                             r"from 0x300027 to 0x302007 was still running after 1 s"):
        run_shadow(ACCESSES, dict(SHADOW_HANDLERS, trace=propagate))
    assert time.perf_counter() - start < 5


def test_a_fill_that_fills_nothing_or_raises_fails_with_a_message():
    """Does a fill that makes no shadow entry end in the shadow MMU's stop, a fill that raises in a message
    that names the access, and a table without both handlers in a failed check?"""
    def forgets(mmu, linear, write, user):
        return True
    with pytest.raises(AssertionError, match="stopped: the access at eip .* faulted 8 times in a row"):
        run_shadow(ACCESSES, dict(SHADOW_HANDLERS, **{"hidden-fault": forgets}))

    def raises(mmu, linear, write, user):
        raise KeyError(linear)
    with pytest.raises(AssertionError, match="your hidden-fault handler, filling linear 0x[0-9a-f]+ for a read by "
                                             "the kernel raised KeyError"):
        run_shadow(ACCESSES, dict(SHADOW_HANDLERS, **{"hidden-fault": raises}))
    with pytest.raises(AssertionError, match="the shadow MMU's handler table"):
        run_shadow(ACCESSES, {"hidden-fault": forgets})


def test_the_kernel_answers_with_plain_data_and_refuses_vmkits_own_handlers():
    """Do the grader's questions get a walk's answers as plain data (an error as raised), a run under a
    student's handler as shadow facts, and nothing from a handler that is, or calls, vmkit's own?"""
    import vmkit.grading.lab8 as lab8
    from vmkit.grading import NotYours, withheld, yours
    from vmkit.vmm import shadow_paging

    def walk(mmu, linear, write, user):
        if linear == 0x2000:
            raise KeyError(linear)
        return ("true", 0)
    assert lab8.walk_cases(walk, [tables_case([], [[0x1000, False, False], [0x2000, True, True]])]) == \
        [[["true", 0], {"raised": "KeyError: 8192"}]]
    cases = [[ACCESSES, "trap-and-emulate", True]]
    facts, = lab8.shadow_cases(cases, {"trace": lambda mmu, entry, old, new: "kept"}, ["shadow_propagate"])
    assert facts["serial"] and "error" not in facts

    def calls_vmkits(mmu, linear, write, user):
        return shadow_paging.shadow_fill(mmu, linear, write, user)
    with withheld(shadow_paging, "shadow_fill"):          # as the probe withholds it in the notebook's vmkit
        facts, = lab8.shadow_cases(cases, {"hidden-fault": calls_vmkits}, ["shadow_fill"])
    assert "NotYours" in facts["error"], facts
    assert shadow_paging.SHADOW_HANDLERS["hidden-fault"] is shadow_paging.shadow_fill      # put back after
    with pytest.raises(NotYours):
        yours(shadow_paging.shadow_fill, "fill")
    table = dict(SHADOW_HANDLERS)
    assert "vmkit's own" in lab8.table_cases(cases, table, *table.values())[0]["error"]
