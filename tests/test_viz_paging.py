"""The paging pictures of lesson 06 draw what is in the machine: the walk names the entries the
guest's tables really hold and ends where the CPU's own walk ends, the shadow drawn beside the
guest's tables is the shadow the VMM keeps, and the counts and sentences are those of the run."""
import re

import pytest

import vmkit
import vmkit.guests
from vmkit import compare
from vmkit.viz import compare as viz_compare
from vmkit.viz.paging import (
    EPT_ENTRIES,
    ShadowStepper,
    WalkStepper,
    bits,
    cost_table,
    event_line,
    guest_registers,
    is_shadow_event,
    page_story,
    paging_counts,
    paging_exits,
    paper_table,
    shadow_beside_guest,
    store_table,
    two_d_walk,
    walk,
)
from vmkit.vtx import VmcsControls

TE, BT, HA = "trap-and-emulate", "binary-translation", "hardware-assist"
NO_EPT, EPT = VmcsControls(enable_ept=False), VmcsControls(ept_on_demand=True)
HEAP, USER_CODE, USER_STACK, KERNEL = 0x08100000, 0x08048000, 0x083ff000, 0xC0100000
PD_A, PT_A, PD_B, PT_B = 0x382000, 0x383000, 0x384000, 0x385000       # paging_kernel.asm's tables
ACCESSES = [(False, False), (True, False), (False, True), (True, True)]


@pytest.fixture(scope="module")
def kernel():
    return vmkit.guests.image("paging_kernel")


def first_syscall(m):
    """Run to process A's first int 0x80: its heap pages are all mapped by then."""
    m.run_until(event=lambda e: e.kind == "ring-transition" and e.detail.get("vector") == 0x80)
    return m


def u32(m, physical):
    return int.from_bytes(bytes(m.uc.mem_read(physical, 4)), "little")


def pages_to_try(m):
    """Linear pages of every kind in paging_kernel: user code, stack, heap (mapped or not), the kernel,
    a page table through the kernel's mapping, the dropped identity map, the VMM's top 4 MiB."""
    return [USER_CODE, USER_STACK, HEAP, HEAP + 0x7000, HEAP + 0x8000, KERNEL, 0xC0101000, 0xC0383400,
            0x00100000, 0xFFC00000, 0x12345678]


# --- the walk ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("technique", ["native", TE])
def test_the_walk_ends_where_the_cpus_own_walk_ends(kernel, technique):
    """For every kind of page and access, is the walk's physical address (or its #PF) the CPU's?"""
    m = first_syscall(vmkit.machine(kernel, technique))
    for linear in pages_to_try(m):
        if technique != "native" and linear >= 0xFFC00000:
            continue            # the VMM's own memory: Cpu.translate lets vmkit reach it, the guest maps nothing
        for write, user in ACCESSES:
            wk = walk(m, linear + 0x123, write, user)
            assert wk.physical == m.cpu.translate(linear + 0x123, write, user, peek=True), (hex(linear), write, user)
            assert (wk.error_code is None) == wk.allowed


def test_the_walk_names_the_entries_the_guests_tables_hold(kernel):
    """Are the CR3, PDE and PTE the walk shows (address and value) those in the guest's memory, and
    does its picture name them?"""
    m = first_syscall(vmkit.machine(kernel, TE))
    assert guest_registers(m)["cr3"] == PD_A and m.cpu["cr3"] != PD_A       # the real CR3 is a shadow root
    wk = walk(m, HEAP + 0x10, write=True, user=True)
    pde, pte = wk.entry("PDE"), wk.entry("PTE")
    assert (pde.index, pde.address) == (HEAP >> 22, PD_A + (HEAP >> 22) * 4)
    assert pde.value == u32(m, pde.address) and pde.value & 0xFFFFF000 == PT_A
    assert (pte.index, pte.address) == (0x100, PT_A + 0x100 * 4)
    assert pte.value == u32(m, pte.address) and pte.value & 0x67 == 0x67        # P RW US A D: A wrote it
    assert wk.physical == (pte.value & 0xFFFFF000) + 0x10
    source = wk.diagram().source
    for value in (f"{pde.value:#010x}", f"{pte.value:#010x}", f"{wk.physical:#010x}", bits(pte.value)):
        assert value in source
    assert f"It holds {pte.value:#010x} (P RW US A D)" in wk.text


def test_the_walk_in_another_address_space_reads_that_directory(kernel):
    """The same linear address in process B's directory: B's own page table, and the frame B was given."""
    m = vmkit.machine(kernel, "native")
    m.run()
    a, b = walk(m, HEAP, cr3=PD_A), walk(m, HEAP, cr3=PD_B)
    assert a.entry("PTE").address == PT_A + 0x400 and b.entry("PTE").address == PT_B + 0x400
    assert not a.allowed and not b.allowed          # the kernel unmapped every heap page at the end
    assert a.entry("PDE").value & 0xFFFFF000 == PT_A and b.entry("PDE").value & 0xFFFFF000 == PT_B


def test_the_walks_error_code_is_the_one_the_guest_was_given(kernel):
    """B's user read of a kernel page: the walk's #PF error code is the one reflected into the guest
    (the true-fault event) and the one its handler printed."""
    m = vmkit.machine(kernel, TE)
    events = m.run_until(event=lambda e: e.kind == "true-fault" and e.detail["linear"] == KERNEL)
    reflected = events[-1].detail["error_code"]
    wk = walk(m, KERNEL, user=True)
    assert wk.error_code == reflected == 5
    assert "P=1 (a protection violation), W=0 (a read), U=1 (from ring 3)" in wk.text
    assert "supervisor page" in wk.why
    m.run()
    assert f"error {wk.error_code:08x}" in m.result().serial


def test_a_walk_with_paging_off_is_the_identity(kernel):
    m = vmkit.machine(kernel, "native")
    wk = walk(m, 0x100000)
    assert not wk.paging and wk.physical == 0x100000 and wk.entries == []


def test_the_walk_stepper_shows_one_more_step_per_press(kernel):
    """Does each press add the next entry, and does choosing a user read of a kernel page end in #PF?"""
    m = first_syscall(vmkit.machine(kernel, "native"))
    s = WalkStepper(m, HEAP, "user write", spaces={"process A": PD_A, "process B": PD_B})
    pde = walk(m, HEAP, True, True).entry("PDE")
    assert "CR3" in s.words.value and f"{pde.value:#010x}" not in s.words.value
    s.step()
    assert f"{pde.value:#010x}" in s.words.value and "PTE" not in s.words.value
    s.whole()
    assert "Physical address" in s.words.value and s.buttons["step"].disabled
    s.address.value, s.access.value = f"{KERNEL:#x}", "user read"
    s.whole()
    assert "#PF" in s.words.value and "error code 0x5" in s.words.value
    s.space.value = "process B"
    s.address.value = f"{HEAP:#x}"
    s.whole()
    assert f"{PT_B + 0x400:#x}" in s.words.value and "not present" in s.words.value


# --- the shadow beside the guest ----------------------------------------------------------------------------------
def test_the_shadow_drawn_is_the_vmms_shadow(kernel):
    """Every row: the shadow PTE drawn is the one in the VMM's memory, made from the guest entry the
    walk finds; frame and rights are the guest's except where the VMM removed write access."""
    m = vmkit.machine(kernel, TE)
    m.run_until(event=lambda e: e.kind == "true-fault" and e.detail["linear"] == KERNEL)
    g = shadow_beside_guest(m, max_rows=200)
    assert g.rows and m.shadow.active.directory == m.cpu["cr3"]
    for r in g.rows:
        address, value = r.shadow
        assert value == m.shadow.read(address) == u32(m, address)
        assert (address, value) == m.shadow.shadow_entry(r.linear)
        guest = r.guest_entry
        assert guest == (r.guest.entries[-1].address, u32(m, r.guest.entries[-1].address))
        if value & 1:
            assert r.source == guest[0]                           # the VMM made it from that entry
            assert value & 0xFFFFF000 == r.guest.physical & 0xFFFFF000
            assert value & 4 == r.guest.entries[0].value & guest[1] & 4
            assert f"{value:#010x}" in g.source and f"{guest[1]:#010x}" in g.source
    assert "PDE 1023: the VMM&#x27;s own 4 MiB at 0xffc00000" in g.source or "PDE 1023" in g.source


def test_page_table_pages_are_read_only_in_the_shadow_and_clean_pages_until_written(kernel):
    """The kernel's alias of a page table is read-only in the shadow (stores to it trace); B's heap,
    read but never written, stays read-only until its D bit would be set."""
    m = vmkit.machine(kernel, TE)
    m.run_until(event=lambda e: e.kind == "true-fault" and e.detail["linear"] == KERNEL)   # B is running
    assert guest_registers(m)["cr3"] == PD_B
    g = shadow_beside_guest(m, linears=[0xC0385400, HEAP], max_rows=200)
    rows = {r.linear: r for r in g.rows}
    heap = rows[HEAP]
    assert heap.kind == "dirty" and not heap.shadow[1] & 2 and heap.guest.entries[-1].value & 2
    assert not heap.guest.entries[-1].value & 0x40 and "D bit" in heap.why
    table = rows[0xC0385000]
    if table.shadow and table.shadow[1] & 1:
        assert table.kind == "traced" and not table.shadow[1] & 2 and m.shadow.traced_frame(PT_B)
    traced = [r for r in g.rows if r.kind == "traced"]
    assert traced and all(m.shadow.traced_frame(r.guest.physical) and not r.shadow[1] & 2 for r in traced)
    assert f"{len(traced)} read-only as page tables" in g.caption


def test_a_page_the_shadow_has_not_filled_is_a_hidden_fault_to_come(kernel):
    m = vmkit.machine(kernel, TE)
    m.run_until(event="true-fault")                               # A's first heap touch: not mapped yet
    rows = {r.linear: r for r in shadow_beside_guest(m, linears=[HEAP, USER_STACK]).rows}
    assert rows[HEAP].kind == "refused"                           # the guest itself maps nothing there
    stack = rows[USER_STACK]
    assert stack.kind in ("missing", "same")
    if stack.kind == "missing":
        assert "hidden fault" in stack.why


def test_without_paging_there_is_no_shadow_to_draw(kernel):
    g = shadow_beside_guest(vmkit.machine(kernel, TE))
    assert g.rows == [] and "paging off" in g.text


# --- events ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def te_run(kernel):
    return vmkit.run(kernel, TE)


def test_each_shadow_event_reads_as_a_sentence_with_its_addresses(te_run):
    seen = set()
    for e in te_run.events:
        if e.kind in ("hidden-fault", "true-fault", "shadow-fill", "trace"):
            line = event_line(e)
            for key in ("linear", "shadow_entry", "guest_entry", "entry", "old", "new"):
                if key in e.detail and e.detail[key]:
                    assert f"{e.detail[key]:#x}" in line or f"{e.detail[key]:#010x}" in line, (key, line)
            seen.add(e.kind)
    assert seen == {"hidden-fault", "true-fault", "shadow-fill", "trace"}


def test_the_story_of_a_demand_zero_page(te_run):
    """A's first heap page: a true fault, the handler's traced PTE store, then hidden faults until the
    shadow maps it writable: the table holds those events, in the run's order."""
    story = page_story(te_run.events, HEAP)
    kinds = [row[1] for row in story.rows]
    assert kinds[0] == "true-fault" and "trace" in kinds and kinds[-1] == "shadow-fill"
    assert kinds.index("true-fault") < kinds.index("trace") < len(kinds) - 1
    trace = te_run.events[story.rows[kinds.index("trace")][0]]
    assert trace.detail["entry"] == PT_A + 0x400 and trace.detail["old"] == 0 and trace.detail["new"] & 7 == 7
    last = te_run.events[story.rows[-1][0]]
    assert last.detail["linear"] == HEAP and last.detail["value"] & 2
    assert [row[0] for row in story.rows] == sorted(row[0] for row in story.rows)


def test_the_stepper_stops_at_each_shadow_event_and_explains_it(kernel):
    s = ShadowStepper(kernel)
    assert "nothing yet" in s.what.value
    s.next_event()
    assert s.last_events and any(is_shadow_event(e) for e in s.last_events)
    s.next_trace()
    trace = s.focus
    assert trace.kind == "trace" and f"{trace.detail['entry']:#x}" in s.page.value
    s.next_true_fault()
    fault = s.focus
    assert fault.kind == "true-fault" and f"{fault.detail['linear']:#010x}" in s.what.value
    wk = walk(s.machine, fault.detail["linear"])
    assert f"{wk.entries[0].value:#010x}" in s.page.value
    assert f"trace faults {s.machine.stats['trace_faults']}" in s.status.value
    s.run()
    assert s.machine.finished and "exit code 67" in s.status.value and s.buttons["next"].disabled
    s.reset()
    assert not s.machine.finished and not s.buttons["next"].disabled


def test_the_stepper_under_binary_translation_shows_guest_instructions(kernel):
    s = ShadowStepper(kernel, BT)
    s.next_trace()
    assert s.focus.kind == "trace"
    assert "the guest instruction: 0xc0101005 (high_start+0x5): mov dword ptr [0xc0380000], 0" in s.what.value


# --- costs ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workloads():
    return {name: {n: compare.WORKLOADS[name].source(n) for n in (10, 30)} for name in ("ptemod", "pgfault")}


def test_each_page_table_store_is_a_trace_fault_or_a_call_out(workloads):
    """cmp_ptemod stores to its page table once a round: under trap-and-emulate every store faults;
    adaptive translation takes two faults, retranslates, and calls out for every store after."""
    ptemod = workloads["ptemod"][30]
    te = vmkit.run(ptemod, TE)
    table = store_table(te, first=5)
    assert [row[2] for row in table.rows[:5]] == ["trace fault"] * 5 and table.rows[5][2] == "25 more"
    assert "30 trace faults, 0 stores by call-out" in table.caption and te.stats["trace_faults"] == 30
    assert "becomes" in table.rows[0][3]
    adaptive = vmkit.run(ptemod, BT)
    rows = store_table(adaptive, first=40).rows
    assert [row[2] for row in rows[:3]] == ["trace fault", "trace fault", "call-out, no fault"]
    assert "retranslated" in rows[1][3] and all(row[2] == "call-out, no fault" for row in rows[2:])
    assert (adaptive.stats["trace_faults"], adaptive.stats["trace_callouts"], adaptive.stats["retranslations"]) \
        == (2, 29, 1)
    fixed = vmkit.run(ptemod, BT, adaptive=False)
    assert "30 trace faults, 0 stores by call-out, 0 retranslations" in store_table(fixed).caption


def test_the_cost_table_divides_the_difference_of_two_runs(workloads):
    runs = {t: (vmkit.run(workloads["ptemod"][10], t), vmkit.run(workloads["ptemod"][30], t)) for t in ("native", TE)}
    table = cost_table(runs, 20)
    te = dict(zip(table.header, table.rows[1]))
    short, long = runs[TE]
    assert te["trace faults"] == f"{(long.stats['trace_faults'] - short.stats['trace_faults']) / 20:.1f}" == "1.0"
    assert te["true faults"] == "0.0" and te["hidden faults"] == "0.0"
    assert te["traps"] == f"{(long.stats['traps'] - short.stats['traps']) / 20:.1f}"
    native = dict(zip(table.header, table.rows[0]))
    assert native["traps"] == "0.0" and native["trace faults"] == "0.0"
    assert re.fullmatch(r"(≈ 0|[\d,]+( \([\d.]+×\))?)", native["µs per round"])     # timed, not asserted
    pgfault = {t: (vmkit.run(workloads["pgfault"][10], t), vmkit.run(workloads["pgfault"][30], t)) for t in (TE,)}
    row = dict(zip(table.header, cost_table(pgfault, 20).rows[0]))
    assert row["true faults"] == "1.0" and row["trace faults"] == "0.0"


def test_the_papers_numbers_are_figure_4s():
    rows = {row[0]: row for row in paper_table().rows}
    assert tuple(rows["pgfault"][2:]) == ("1,093", "3,927", "11,242")
    assert tuple(rows["ptemod"][3:]) == ("391", "12,733")
    assert viz_compare.paper_cycles("pgfault") == (1093, 3927, 11242)


# --- the hardware's answers: first-generation VT-x's exits, EPT's two-dimensional walk ---------------------------
@pytest.fixture(scope="module")
def answers(kernel):
    """One run of the paging kernel under every answer to its paging."""
    return {"natively": vmkit.run(kernel), "trap-and-emulate": vmkit.run(kernel, TE),
            "binary translation": vmkit.run(kernel, BT), "VT-x without EPT": vmkit.run(kernel, HA, controls=NO_EPT),
            "VT-x with EPT": vmkit.run(kernel, HA, controls=EPT)}


def test_without_ept_every_shadow_paging_trap_is_an_exit_of_its_own(answers):
    """The same guest: each #PF trap-and-emulate takes (hidden, true or trace) is an EXCEPTION exit
    without EPT, each CR3 load a CR_ACCESS exit, each invlpg an INVLPG exit; the guest's reads of CR0
    and CR2 trap under trap-and-emulate and exit under VT-x only for CR3."""
    te, vtx = paging_counts(answers["trap-and-emulate"]), paging_counts(answers["VT-x without EPT"])
    stats = answers["VT-x without EPT"].stats
    for key in ("cr_load", "invlpg", "hidden", "true", "stores"):
        assert te[key] == vtx[key] > 0, key
    assert vtx["hidden"] + vtx["true"] + vtx["stores"] == stats["vmexit_EXCEPTION"]
    assert vtx["cr_load"] + vtx["cr_read"] == stats["vmexit_CR_ACCESS"] and vtx["invlpg"] == stats["vmexit_INVLPG"]
    assert vtx["cr_read"] == 1 and te["cr_read"] > vtx["cr_read"]          # only mov from CR3 exits
    assert (te["unit"], vtx["unit"], vtx["tlb_misses"]) == ("traps", "VM exits", None)
    table = paging_exits({"trap-and-emulate": answers["trap-and-emulate"],
                          "VT-x without EPT": answers["VT-x without EPT"]})
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["invlpg"] == [str(te["invlpg"]), f"{vtx['invlpg']} INVLPG"]
    assert rows["hidden faults"] == [str(te["hidden"]), f"{vtx['hidden']} EXCEPTION"]
    assert rows["in all"] == [str(te["total"]), str(vtx["total"])]
    assert not any("EPT violation" in label or "TLB" in label for label in rows)     # empty rows left out


def test_with_ept_the_paging_work_takes_no_exit_but_each_new_frame_one(answers):
    ept = paging_counts(answers["VT-x with EPT"])
    stats = answers["VT-x with EPT"].stats
    assert all(ept[key] == 0 for key in ("cr_load", "cr_read", "invlpg", "hidden", "true", "stores"))
    assert ept["ept"] == ept["total"] == stats["vmexit_EPT_VIOLATION"] > 0
    assert (ept["tlb_misses"], ept["walk_references"]) == (stats["tlb_misses"], stats["walk_references"])
    table = paging_exits(answers)
    rows = {row[0]: row[1:] for row in table.rows}
    guest_pf = [paging_counts(run)["guest_pf"] for run in answers.values()]
    assert len(set(guest_pf)) == 1 and guest_pf[0] == answers["trap-and-emulate"].stats["true_faults"] == 17
    assert rows["#PFs the guest's own handler ran"] == ["17"] * 5
    assert rows["a guest frame's first touch (EPT violation)"][-1] == f"{ept['ept']} EPT_VIOLATION"
    assert rows["TLB misses"] == ["—"] * 4 + [f"{stats['tlb_misses']:,}"]
    bt = answers["binary translation"].stats
    assert rows["page-table stores (trace faults, call-outs)"][2] == \
        f"{bt['trace_faults'] + bt['trace_callouts']} ({bt['trace_faults']} faults, {bt['trace_callouts']} call-outs)"
    assert rows["in all"][0] == "0" and table.header[1] == "natively (no VMM)"


def test_the_drawn_two_dimensional_walk_is_the_machines_in_order_with_the_guests_entries(kernel):
    """A TLB miss on A's first heap page: the 14 references the machine lists, numbered in its order;
    the guest's PDE and PTE at the addresses the guest's own walk reads, with the values memory holds;
    each EPT reference with the index the SDM takes from its guest-physical address."""
    m = first_syscall(vmkit.machine(kernel, HA, controls=EPT))
    g = two_d_walk(m, HEAP)
    listed = m.two_dimensional_walk(HEAP)
    assert [(what, gpa) for _, what, gpa in g.refs] == listed and [n for n, _, _ in g.refs] == list(range(1, 15))
    assert len(g.refs) == 14 and g.native == 2 and "14 memory references" in g.caption and "natively 2" in g.caption
    wk = walk(m, HEAP)
    guest = [(n, what, gpa) for n, what, gpa in g.refs if not what.startswith("EPT")]
    assert [(n, gpa) for n, _, gpa in guest] == [(5, PD_A + (HEAP >> 22) * 4), (10, PT_A + 0x100 * 4)]
    assert [gpa for _, _, gpa in guest] == [e.address for e in wk.entries]
    lines = g.text.splitlines()[1:-1]
    assert [int(line.split(".")[0]) for line in lines] == list(range(1, 15))
    for n, what, gpa in g.refs:
        line, label = lines[n - 1], re.search(rf'n{n} \[label=<(.*?)>\]', g.source, re.S).group(1)
        if what.startswith("EPT"):
            level = int(what.split()[2])
            title, shift = EPT_ENTRIES[level]
            assert f"{title} [{(gpa >> shift) & 0x1FF}]" in line and f"gPA {gpa:#010x}" in line
            assert f"{title} [{(gpa >> shift) & 0x1FF}]" in label and f"<B>{n}</B>" in label
        else:
            value = u32(m, gpa)
            assert f"at gPA {gpa:#010x}: {value:#010x}" in line
            assert f"at {gpa:#x}" in label and f"{value:#010x}" in label and f"<B>{n}</B>" in label
    order = [g.source.index(f"\tn{n} [label") for n in range(1, 15)]
    assert order == sorted(order)                                 # drawn in the CPU's order
    assert f"host-physical {wk.physical:#010x}" in g.source


PSE_GUEST = """
    mov dword [pd], 0x83                 ; 0-4 MiB: identity, one 4 MiB page
    mov eax, pd
    mov cr3, eax
    mov eax, cr4
    or eax, 0x10                         ; CR4.PSE
    mov cr4, eax
    mov eax, cr0
    or eax, 0x80000000                   ; CR0.PG
    mov cr0, eax
    mov ebx, [0x200000]
    mov al, 1
    out 0xf4, al
align 4096
pd: times 1024 dd 0
"""


def test_a_two_dimensional_walk_has_4_references_with_paging_off_9_for_a_4_mib_page_5_to_a_hole(kernel):
    off = vmkit.machine(kernel, HA, controls=EPT)
    g = two_d_walk(off, 0x100000)
    assert [(what, gpa) for _, what, gpa in g.refs] == off.two_dimensional_walk(0x100000)
    assert len(g.refs) == 4 and g.native == 0 and "host-physical 0x00100000" in g.source
    big = vmkit.machine(PSE_GUEST, HA, controls=EPT)
    big.run()
    g = two_d_walk(big, 0x200123)
    assert len(g.refs) == 9 and g.native == 1 and [what for _, what, _ in g.refs][4] == "the guest's PDE"
    assert "a 4 MiB page at 0x0" in g.text and "host-physical 0x00200123" in g.source
    hole = two_d_walk(big, 0x12345678)
    assert len(hole.refs) == 5 and "not present" in hole.text and "#PF in the guest" in hole.source


# --- without graphviz ----------------------------------------------------------------------------------------------
def test_without_dot_the_walk_is_its_text(kernel, monkeypatch, tmp_path):
    m = first_syscall(vmkit.machine(kernel, "native"))
    monkeypatch.setenv("PATH", str(tmp_path))
    bundle = walk(m, HEAP, user=True)._repr_mimebundle_()
    assert "image/svg+xml" not in bundle and "PTE" in bundle["text/plain"]
    s = WalkStepper(m, HEAP)
    s.whole()
    assert "apt-get install graphviz" in s.picture.value


# --- Xen's answer: direct paging ---------------------------------------------------------------------------------
PV = "paravirt"
# pv_paging's six refused requests, in its order: the word each request's row names, and the rule's key words
PV_PAGING_REFUSALS = [("PIN_L2_TABLE", "one type at a time"), ("mod_l1_entry", "may not be mapped writable"),
                      ("guest_map_l1e", "frames the domain owns"), ("mod_l2_entry", "Xen's part"),
                      ("get_page_from_l2e", "4 MiB"), ("NEW_BASEPTR", "one type at a time"),
                      ("UNPIN_TABLE", "only a pinned frame")]


def refused_page_table_request(e):
    return e.kind == "hypercall" and e.detail.get("name") in ("mmu_update", "update_va_mapping", "mmuext_op") \
        and e.detail["result"] < 0


def test_each_refusal_of_pv_paging_is_drawn_with_the_frames_xen_looked_at_and_the_rule():
    """Stopped after each refused request: every frame the check names is described as Xen's frame table
    holds it, the request's own numbers are in it, the answer is the hypercall's (-EINVAL and Xen's
    reason), and the entry it would have changed still holds what memory holds."""
    from vmkit.viz.paging import frame_check, frame_text
    m = vmkit.machine(vmkit.guests.image("pv_paging"), PV)
    seen = []
    while True:
        m.run_until(event=refused_page_table_request)
        if m.finished:
            break
        t = frame_check(m)
        d = t.event.detail
        assert t.event is [e for e in m.events if refused_page_table_request(e)][-1]
        found = " | ".join(str(c) for row in t.rows for c in row)
        for mfn in t.frames:
            assert frame_text(m.xen.mm, mfn) in found
        assert t.rows[-1][2].startswith(f"-EINVAL ({d['result']}): {d['refused']}") and d["result"] == -22
        if d["name"] == "mmu_update":
            ptr, val = d["requests"][d["at"]]
            assert f"ptr {ptr:#x}, val {val:#010x}" in found
            assert f"still holds {u32(m, ptr & ~3):#010x}" in t.rows[-1][2]
        if d["name"] == "update_va_mapping":
            assert f"{d['va']:#x} := {d['val']:#010x}" in found
            assert f"still holds {m.xen.mm.u32(m.xen.mm.guest_map_l1e(m, d['va'])[0]):#010x}" in t.rows[-1][2]
        seen.append((found, t.rule, t.caption))
    assert len(seen) == len(PV_PAGING_REFUSALS) == 7
    for (found, rule, caption), (where, words) in zip(seen, PV_PAGING_REFUSALS):
        assert where in found and words in rule and rule in caption, (where, rule)


def test_the_check_of_a_writable_mapping_of_a_page_table_reads_the_frame_table():
    """The L1 table that maps the window, mapped writable at the window: Xen saw an L1 table with its
    references (the two page directories that point at it, and the one do_mmu_update holds)."""
    from vmkit.viz.paging import frame_check
    m = vmkit.machine(vmkit.guests.image("pv_paging"), PV)
    m.run_until(event=lambda e: refused_page_table_request(e) and e.detail["name"] == "mmu_update")
    t = frame_check(m)
    ptr, val = t.event.detail["requests"][0]
    l1 = ptr >> 12
    assert val >> 12 == l1 and t.frames == [l1]                 # the request maps the table onto itself
    page = m.xen.mm.pages[l1]
    assert (page.type, page.type_count) == ("l1_page_table", 2)
    assert f"2 references of that type, {page.count} in all, validated (one more while do_mmu_update" in t.rows[3][2]
    assert "3 references" in t.event.detail["refused"]
    assert [row[1] for row in t.rows] == ["do_mmu_update", "get_page, its type", "get_page_from_l1e",
                                          "get_page, get_page_type", ""]


BAD_REQUESTS = """
    mov ebp, [esi + 68]                  ; start_info.mfn_list
    mov eax, [ebp + 0x200 * 4]           ; the machine frame of pseudo-physical 0x200
    shl eax, 12
    or eax, 0x33                         ; P RW A and PCD, which is Xen's to set
    mov ecx, eax
    mov ebx, 0x3ff000
    xor edx, edx
    mov esi, 2
    mov eax, 14                          ; update_va_mapping
    int 0x82
    mov ecx, (0xfeb00 << 12) | 0x21      ; an I/O frame, not RAM
    mov ebx, 0x3ff000
    xor edx, edx
    mov esi, 2
    mov eax, 14
    int 0x82
    mov eax, [ebp + 5 * 4]               ; the page directory (pseudo-physical 5), as a linear page table, writable
    shl eax, 12
    mov [request], eax
    add dword [request], 4 * 2
    or eax, 0x23
    mov [request + 8], eax
    mov ebx, request
    mov ecx, 1
    mov edx, done
    mov esi, 0x7ff0
    mov eax, 1                           ; mmu_update
    int 0x82
    mov ebx, 2
    mov ecx, done
    mov eax, 29
    int 0x82
align 8
request: dq 0, 0
done: dd 0
"""


def test_other_rules_flags_not_ram_and_a_writable_linear_page_table():
    from vmkit.viz.paging import frame_check
    m = vmkit.machine(BAD_REQUESTS, PV)
    rules = []
    for _ in range(3):
        m.run_until(event=refused_page_table_request)
        assert not m.finished
        rules.append(frame_check(m).rule)
    assert "flags Xen keeps for itself" in rules[0]
    assert "only RAM" in rules[1]
    assert "only read-only (a linear page table)" in rules[2]


def test_without_a_refused_request_there_is_nothing_to_check():
    from vmkit.viz.paging import frame_check
    with pytest.raises(ValueError, match="no refused"):
        frame_check(vmkit.machine(vmkit.guests.image("pv_paging"), PV))


def test_the_p2m_table_is_each_domains_own_mfn_list_and_the_m2p_gives_it_back():
    from vmkit.viz.paging import p2m_table
    system = vmkit.machine(vmkit.guests.image("pv_dom0"), PV, modules=[vmkit.guests.image("pv_domu")])
    system.run_until(event=lambda e: e.detail.get("domain") == 1)          # dom0 has built and started d1
    domu = next(d for d in system.xen.every_domain if d.domid == 1)
    t = p2m_table(system, pfns=(0x5, 0x100, 0x3FF))
    assert t.map == {0: {p: system.p2m[p] for p in (0x5, 0x100, 0x3FF)}, 1: {p: domu.p2m[p] for p in (0x5, 0x100, 0x3FF)}}
    assert all(mfn != pfn for mapping in t.map.values() for pfn, mfn in mapping.items())
    for row, pfn in zip(t.rows, (0x5, 0x100, 0x3FF)):
        assert row[0] == f"{pfn:#x} ({pfn << 12:#x})"
        assert row[1] == f"{system.p2m[pfn]:#x} ({system.p2m[pfn] << 12:#x})" and row[2] == f"{pfn:#x}"
        assert row[3] == f"{domu.p2m[pfn]:#x} ({domu.p2m[pfn] << 12:#x})" and row[4] == f"{pfn:#x}"
    assert "dom0: 1024 frames" in t.caption and "one run upwards" in t.caption
    assert f"d1: 1024 frames, machine {min(domu.p2m):#x}-{max(domu.p2m):#x}, from the top of machine memory down" \
        in t.caption
    assert "not its own" not in t.text
    # lesson 06's self-check: a domU that names its pseudo-physical frame 0x100 as if it were machine
    assert system.xen.mm.pages[0x100].owner is system
    result, notes = domu.call(14, (0x3FF000, 0x100 << 12 | 0x23, 0, 2, 0))     # update_va_mapping
    assert result == -22 and notes["refused"] == "mfn 0x100 belongs to domain 0, not to domain 1"


def test_per_unit_counts_the_difference_of_two_runs_by_what_entered_the_hypervisor(workloads):
    from vmkit.viz.paging import per_unit
    batch = lambda **k: vmkit.guests.image("pv_mmu_batch", **k)
    runs = {"trap-and-emulate": ("cmp_ptemod", vmkit.run(workloads["ptemod"][10], TE),
                                 vmkit.run(workloads["ptemod"][30], TE), 20),
            "VT-x without EPT": ("cmp_ptemod", vmkit.run(workloads["ptemod"][10], HA, controls=NO_EPT),
                                 vmkit.run(workloads["ptemod"][30], HA, controls=NO_EPT), 20),
            "Xen, one by one": ("pv_mmu_batch", vmkit.run(batch(BATCH=0, UPDATES=64), PV),
                                vmkit.run(batch(BATCH=0, UPDATES=128), PV), 64),
            "Xen, batches of 64": ("pv_mmu_batch", vmkit.run(batch(BATCH=64, UPDATES=64), PV),
                                   vmkit.run(batch(BATCH=64, UPDATES=192), PV), 128),
            "Xen": ("cmp_ptemod", vmkit.run(workloads["ptemod"][10], PV), vmkit.run(workloads["ptemod"][30], PV), 20),
            "Xen, lazy MMU mode": ("cmp_ptemod", vmkit.run(compare.WORKLOADS["ptemod"].source(64, LAZY_MMU=1), PV),
                                   vmkit.run(compare.WORKLOADS["ptemod"].source(128, LAZY_MMU=1), PV), 64)}
    rows = {row[0]: row[1:] for row in per_unit(runs).rows}
    assert rows["trap-and-emulate"] == ["cmp_ptemod", "1", "1 trace fault", "—", "0"]
    assert rows["VT-x without EPT"] == ["cmp_ptemod", "1", "1 EXCEPTION exit", "—", "0"]
    assert rows["Xen, one by one"] == ["pv_mmu_batch", "1", "1 update_va_mapping hypercall", "1", "0"]
    assert rows["Xen, batches of 64"] == ["pv_mmu_batch", "1/64", "1/64 mmu_update hypercall", "1", "0"]
    assert rows["Xen"] == ["cmp_ptemod", "1", "1 mmu_update hypercall", "1", "0"]        # the same guest as above
    assert rows["Xen, lazy MMU mode"] == ["cmp_ptemod", "1/32", "1/32 mmu_update hypercall", "1", "0"]
    pgfault = {"trap-and-emulate": ("cmp_pgfault", vmkit.run(workloads["pgfault"][10], TE),
                                    vmkit.run(workloads["pgfault"][30], TE), 20)}
    table = per_unit(pgfault)
    assert "updates Xen validated" not in table.header                  # no Xen run: no such column
    assert table.rows[0][2:] == ["2", "1 #PF trap, 1 #GP trap (mov eax, cr2)", "1"]
    pgfault["Xen"] = ("cmp_pgfault", vmkit.run(workloads["pgfault"][10], PV), vmkit.run(workloads["pgfault"][30], PV), 20)
    assert per_unit(pgfault).rows[1][2:] == ["1", "1 #PF trap", "0", "1"]    # bounced, with CR2 in vcpu_info
