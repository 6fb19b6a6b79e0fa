"""Shadow page tables under trap-and-emulate and binary translation: each access of a small paging
guest is a hidden fault, a true fault or a trace exactly when the guest's own tables say so, the
shadow holds what the guest's tables allow and no more, and adaptive translation turns a store that
keeps tracing into a call-out. Differential runs against QEMU are in test_qemu_differential.py."""
import re
from pathlib import Path

import pytest

import vmkit
from vmkit.machine.cpu import PTE_A, PTE_D, PTE_P, PTE_RW, PTE_US
from vmkit.vmm.binary_translation import ADAPT_AFTER
from vmkit.vmm.shadow_paging import SHADOW_HANDLERS, VMM_PDE

SHADOWING = ["trap-and-emulate", "binary-translation"]
PLATFORM = (Path(__file__).parent / "guests" / "platform.inc").read_text()

# Identity-maps 4 MiB with supervisor pages, turns paging on, warms its stack, then between `begin`
# and `end` makes accesses whose shadow outcome is known one by one (see EXPECTED).
GUEST = """
%include "platform.inc"
PD equ 0x380000
PT equ 0x381000

main:
    gate 14, pf_handler, IGATE
    mov edi, PT
    mov eax, 3
    mov ecx, 1024
.map:
    stosd
    add eax, 0x1000
    loop .map
    mov edi, PD
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov dword [PD], PT | 3
    mov eax, PD
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80010000
    mov cr0, eax
    push eax                        ; the stack's page is filled before `begin`
    pop eax
begin:
    mov eax, [0x200000]             ; read: hidden fault, filled read-only (D clear)
    mov eax, [0x201000]             ; read: hidden fault
    mov dword [0x200000], 1         ; write to a page filled for a read: hidden fault (the dirty bit)
    mov dword [0x202000], 2         ; write to a new page: hidden fault, filled writable
    mov eax, [0x202000]             ; nothing: the shadow has it
    mov dword [PT + 0x201 * 4], 0   ; a store to the page table: its page is not in the shadow yet
                                    ; (hidden fault, filled read-only: it is traced), then a trace
                                    ; that drops the shadow PTE of 0x201000
    mov eax, [0x201000]             ; a true fault; the handler maps it back (a trace); the retry
                                    ; is a hidden fault
    invlpg [0x202000]               ; the shadow PTE goes
    mov eax, [0x202000]             ; hidden fault
end:
    mov eax, [0x200000]
    show "a", eax
    exit 0x31

pf_handler:
    mov dword [PT + 0x201 * 4], 0x201000 | 3
    add esp, 4
    iretd
"""
EXPECTED = {"hidden_faults": 7, "true_faults": 1, "trace_faults": 2}


def source():
    return re.sub(r'^%include "platform.inc"$', lambda _: PLATFORM, GUEST, count=1, flags=re.M)


def counts_between_begin_and_end(technique, **options):
    image = vmkit.assemble(source())
    m = vmkit.machine(image, technique=technique, **options)
    m.run_until(eip=image.symbols["begin"])
    before = dict(m.stats)
    first = len(m.events)
    m.run_until(eip=image.symbols["end"])
    delta = {k: m.stats.get(k, 0) - before.get(k, 0) for k in EXPECTED}
    return m, delta, m.events[first:]


@pytest.mark.parametrize("technique", SHADOWING)
def test_each_access_is_the_fault_the_guest_tables_say(technique):
    m, delta, events = counts_between_begin_and_end(technique)
    assert delta == EXPECTED
    kinds = [e.kind for e in events if e.kind in ("hidden-fault", "true-fault", "trace")]
    assert kinds == ["hidden-fault"] * 5 + ["trace", "true-fault", "trace", "hidden-fault", "hidden-fault"]
    true = next(e for e in events if e.kind == "true-fault")
    assert (true.detail["linear"], true.detail["error_code"]) == (0x201000, 0)   # not present, read
    assert m.vcpu.cr2 == 0x201000                  # the guest's CR2, as its handler reads it
    result = m.run()
    assert (result.exit_code, result.serial) == (0x63, "a=00000001 ")


@pytest.mark.parametrize("technique", SHADOWING)
def test_the_guest_ptes_get_their_accessed_and_dirty_bits(technique):
    m, _, _ = counts_between_begin_and_end(technique)
    pte = lambda page: m.shadow.read(0x381000 + page * 4)
    assert pte(0x200) & (PTE_A | PTE_D) == PTE_A | PTE_D           # read, then written
    assert pte(0x201) & (PTE_A | PTE_D) == PTE_A                   # read only (after the remap)
    assert pte(0x202) & (PTE_A | PTE_D) == PTE_A | PTE_D
    assert pte(0x203) & (PTE_A | PTE_D) == 0                       # never touched


@pytest.mark.parametrize("technique", SHADOWING)
def test_the_shadow_maps_what_the_guest_allows_and_write_protects_its_page_tables(technique):
    m, _, _ = counts_between_begin_and_end(technique)
    shadow = m.shadow
    address, value = shadow.shadow_entry(0x200000)
    assert value & ~0xFFF == 0x200000 and value & PTE_P and value & PTE_RW and not value & PTE_US
    _, read_only = shadow.shadow_entry(0x201000)
    assert read_only & PTE_P and not read_only & PTE_RW           # the guest's D bit is still clear
    assert shadow.traced[0x381] and shadow.traced[0x380]           # the guest's page table and directory
    page_table_mapping = shadow.shadow_entry(0x381000)
    if page_table_mapping is not None and page_table_mapping[1] & PTE_P:
        assert not page_table_mapping[1] & PTE_RW                  # a store to it must trace
    assert shadow.read(shadow.active.directory + VMM_PDE * 4) & PTE_P   # the VMM's 4 MiB are there


def test_adaptive_translation_turns_a_store_that_keeps_tracing_into_a_call_out():
    """The paging kernel's two PTE stores (its #PF handler's, its unmap loop's) run 48 times in all:
    without adaptation each is a trace fault; with it, each store instruction takes a few faults
    (ADAPT_AFTER, once per unit it was copied into) and then calls out. The guest's page tables
    change the same way either way."""
    src = vmkit.guests.source("paging_kernel", ROUNDS=6, HEAP_PAGES=24)
    on = vmkit.run(src, "binary-translation")
    off = vmkit.run(src, "binary-translation", adaptive=False)
    assert on.serial == off.serial == vmkit.run(src).serial
    traces = lambda result: [(e.detail["entry"], e.detail["old"], e.detail["new"]) for e in result.of_kind("trace")]
    assert traces(on) == traces(off) and off.stats["trace_faults"] == len(traces(off)) == 97
    assert on.stats["retranslations"] >= 2
    assert on.stats["trace_faults"] <= (ADAPT_AFTER + 1) * on.stats["retranslations"] + 1
    by_callout = [e for e in on.of_kind("trace") if e.detail["by"] == "call-out"]
    assert len(by_callout) == on.stats["trace_callouts"] >= len(traces(on)) - on.stats["trace_faults"]


def test_the_course_paging_kernel_counts():
    """Two processes of 8 heap pages: 16 demand-zero faults and a killed process are the true
    faults; the 16 PTE stores that map the heap, the 16 that unmap it and the one that drops the
    identity mapping are the traces; three page directories, three shadow roots."""
    for technique in SHADOWING:
        stats = vmkit.run(vmkit.guests.source("paging_kernel"), technique, adaptive=False).stats \
            if technique == "binary-translation" else vmkit.run(vmkit.guests.source("paging_kernel"), technique).stats
        assert (stats["true_faults"], stats["trace_faults"], stats["shadow_roots"]) == (17, 33, 3), technique
        assert stats["hidden_faults"] == stats["shadow_fills"]


def test_cr3_switches_reuse_cached_shadow_roots():
    m = vmkit.machine(vmkit.guests.source("paging_kernel", ROUNDS=5), technique="trap-and-emulate")
    m.run()
    switches = [e for e in m.events if e.kind == "emulate" and "CR3" in e.detail["instruction"].upper()
                and "shadow" in e.detail["effect"]]
    reused = [e for e in switches if "cached shadow root" in e.detail["effect"]]
    assert len(switches) > 10 and len(reused) == len(switches) - 2   # new: A's and B's (the boot one came with PG)


def test_a_guest_that_maps_the_vmm_s_4_mib_is_told_why_it_cannot():
    bad = GUEST.replace("    mov dword [PD], PT | 3\n", "    mov dword [PD], PT | 3\n    mov dword [PD + 1023 * 4], PT | 3\n")
    bad = bad.replace("begin:\n", "begin:\n    mov eax, [0xFFC00000]\n")
    src = re.sub(r'^%include "platform.inc"$', lambda _: PLATFORM, bad, count=1, flags=re.M)
    assert vmkit.run(src).exit_code == 0x63                      # natively it is just memory
    with pytest.raises(vmkit.GuestError, match="top 4 MiB of the linear space"):
        vmkit.run(src, "trap-and-emulate")


def test_a_fill_that_fills_nothing_is_stopped_with_a_teaching_error():
    handlers = dict(SHADOW_HANDLERS, **{"hidden-fault": lambda mmu, linear, write, user: True})
    with pytest.raises(vmkit.GuestError, match="still refuses the access"):
        vmkit.run(source(), "trap-and-emulate", shadow_handlers=handlers)


def test_a_trace_handler_that_ignores_traces_leaves_a_stale_shadow():
    """The shadow keeps the old mapping when nothing drops it: the guest reads through its old PTE,
    which is why the trace handler exists."""
    handlers = dict(SHADOW_HANDLERS, trace=lambda mmu, entry, old, new: "ignored")
    m, delta, _ = counts_between_begin_and_end("trap-and-emulate", shadow_handlers=handlers)
    assert delta["true_faults"] == 0                               # the unmapped page was still mapped


def test_paging_off_again_drops_the_shadows():
    src = source().replace("begin:\n", "begin:\n    mov eax, cr0\n    and eax, 0x7fffffff\n    mov cr0, eax\n"
                                        "    mov eax, cr0\n    or eax, 0x80000000\n    mov cr0, eax\n")
    result = vmkit.run(src, "trap-and-emulate")
    assert result.exit_code == 0x63 and result.stats["shadow_flushes"] == 1


def test_a_loop_that_refaults_the_same_access_each_time_round_is_not_mistaken_for_a_stuck_one():
    """Each round remaps a page (a trace drops its shadow PTE) and reads it: the read is a hidden
    fault at the same address every round, but the guest makes progress in between."""
    loop = ("    mov ecx, 20\n.again:\n    mov eax, ecx\n    and eax, 1\n    shl eax, 14\n    or eax, 0x201003\n"
            "    mov [PT + 0x201 * 4], eax\n    mov eax, [0x201000]\n    loop .again\n")
    result = vmkit.run(source().replace("begin:\n", "begin:\n" + loop), "trap-and-emulate")
    assert result.exit_code == 0x63 and result.stats["hidden_faults"] >= 20


@pytest.mark.parametrize("technique", SHADOWING)
@pytest.mark.parametrize("flush", ["", "invlpg [0x200000]"])
def test_a_pte_whose_accessed_bit_is_cleared_gets_it_back_as_on_the_bare_machine(technique, flush):
    """A PTE rewritten from A set, D clear to D set, A clear. Without invlpg the CPU may go on using
    its TLB entry, and the bare machine does: the next read leaves A clear, and so does the shadow,
    which stays like that TLB entry. After invlpg the next read walks the tables and sets A again."""
    body = f"""begin:
    mov eax, [0x200000]                         ; A set: a hidden fault, filled read-only
    mov dword [PT + 0x200 * 4], 0x200000 | 0x43 ; D set and A clear: a trace
    {flush}
    mov eax, [0x200000]
    mov eax, [PT + 0x200 * 4]
    show "pte", eax
    exit 0x31

pf_handler:
    hlt
"""
    guest = source()
    guest = guest[:guest.index("begin:")] + body
    native = vmkit.run(guest)
    assert native.serial == ("pte=00200063 " if flush else "pte=00200043 ")
    assert vmkit.run(guest, technique).serial == native.serial
