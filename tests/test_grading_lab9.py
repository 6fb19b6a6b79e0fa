"""Lab 9's grading pieces on their own: the hook that puts a student's page-table rules into vmkit's
Xen, the budget they run on, the dom0 the checks make requests on, the facts a run becomes, and the
reference facts of graders/lab9.py.

tests/test_grading.py grades the whole lab through nbgrader (solution, release, fixtures); these tests
say which piece is wrong when that round trip fails.
"""
import os
import sys
import time

import pytest

import vmkit
from vmkit.grading import (check_xen_facts, kernel_facts, new_xen, request_facts, run_kernel, run_requests,
                           table_entries)
from vmkit.xen import Paravirt
from vmkit.xen import mm as frames

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P, RW, A, PCD = 0x1, 0x2, 0x20, 0x10
W = 0x3FF000
IDLE = vmkit.assemble("again:\nmov ebx, 0\nmov eax, 29\nint 0x82\njmp again")


@pytest.fixture(scope="module")
def graders():
    sys.path.insert(0, REPO)
    import graders
    import graders.lab9
    yield graders
    sys.path.remove(REPO)


def xens_own(name):
    """Xen's own rule `name`, as a lab would pass it: rule(mm, ...)."""
    return frames.PAGE_TABLE_RULES[name]


# --- the hook in vmkit.xen -------------------------------------------------------------------------------
def test_page_table_rules_replace_xens_own_from_the_start_of_day():
    """Does Paravirt(page_table_rules=...) make Xen's frame table call the lab's rules wherever it would
    call its own (the domain builder's validation included), leave the others Xen's, and refuse a name
    Xen has no rule for?"""
    calls = {"get_page_type": 0, "get_page_from_l1e": 0, "mod_l1_entry": 0}

    def counting(name):
        def rule(mm, *args):
            calls[name] += 1
            return xens_own(name)(mm, *args)
        return rule
    m = Paravirt(IDLE, page_table_rules={name: counting(name) for name in calls})
    assert calls["get_page_type"] > 1000 and calls["get_page_from_l1e"] == 1024 and calls["mod_l1_entry"] == 0
    assert m.call(14, (W, m.p2m[0x200] << 12 | P | RW | A, 0, 2, 0))[0] == 0
    assert calls["mod_l1_entry"] == 1 and m.mapped_frame(W) == m.p2m[0x200]
    refuse_all = Paravirt(IDLE, page_table_rules={"mod_l1_entry": lambda mm, *args: mm.refuse("no")})
    result, notes = refuse_all.call(14, (W, 0, 0, 2, 0))
    assert (result, notes["refused"]) == (-22, "no") and refuse_all.mapped_frame(W) == refuse_all.p2m[0x3FF]
    assert refuse_all.xen.mm.get_page_type.__func__ is frames.FrameTable.get_page_type    # the others: Xen's
    assert "mod_l1_entry" not in vars(Paravirt(IDLE).xen.mm)                               # no rules: none bound
    with pytest.raises(ValueError, match="no page-table rule 'mod_l2_entry'"):
        Paravirt(IDLE, page_table_rules={"mod_l2_entry": xens_own("mod_l1_entry")})


def test_a_domu_and_dom0_share_the_rules():
    """Does a domU that dom0's Xen creates run on the same frame table, and so on the same rules?"""
    seen = set()

    def get_page_from_l1e(mm, l1e, domain):
        seen.add(domain.domid)
        return xens_own("get_page_from_l1e")(mm, l1e, domain)
    lab = new_xen({"get_page_from_l1e": get_page_from_l1e})
    domu = lab.create_domain()
    assert domu.xen.mm is lab.mm and seen == {0, domu.domid}


# --- the dom0 the checks use, and the facts ---------------------------------------------------------------
def test_the_checks_dom0_makes_requests_and_reports_the_frame_table():
    """Does LabXen make dom0's hypercalls, say why Xen refused one, and show frames as the frame table has
    them (the start of day: the page directory pinned and in CR3, the L1 table under one PDE)?"""
    lab = new_xen()
    assert lab.frame(lab.pd) == {"owner": 0, "count": 4, "type": "l2_page_table", "type_count": 2, "pinned": True}
    assert lab.frame(lab.l1) == {"owner": 0, "count": 3, "type": "l1_page_table", "type_count": 1, "pinned": False}
    assert lab.frame(lab.xen_frame)["owner"] == "xen" and lab.frame(lab.free_frame)["owner"] is None
    assert lab.update_va_mapping(W, lab.l1 << 12 | P | RW | A) == -22 and "in use as an L1 page table" in lab.why
    assert lab.mmu_update((lab.pte(W), lab.mfn(0x200) << 12 | P | RW | A)) == (0, 1) and lab.why is None
    lab.write(0x200000, b"through the window")
    assert lab.read(W, 18) == b"through the window" and lab.mapped(W) == lab.mfn(0x200)
    assert lab.mmuext_op((4, lab.mfn(0x200))) == (-22, 0) and "not pinned" in lab.why
    assert lab.read(0x800000, 4) is None                               # no L1 table maps it


def test_facts_list_the_frames_in_use_and_the_entries_of_the_tables_in_use():
    """Do request_facts hold each step's result, every frame not in its resting state, and every entry of
    the page tables in use, so that a leaked reference shows up even when every result is right?"""
    lab = new_xen()
    steps = [["remap the window", "mmu_update", [[lab.pte(W), lab.mfn(0x200) << 12 | P | RW | A]]],
             ["a PTE with PCD", "update_va_mapping", W, lab.mfn(0x201) << 12 | P | A | PCD]]
    facts = request_facts(*run_requests(None, steps))
    assert facts["results"] == [[0, 1], -22]
    assert facts["frames"][f"mfn {lab.mfn(0x200):#x} (domain 0's frame 0x200)"] == [0, 3, "writable_page", 2, False]
    assert f"mfn {lab.mfn(0x3FF):#x} (domain 0's frame 0x3ff)" not in facts["frames"]     # nothing uses it now
    assert facts["tables"][f"{lab.pte(W):#x}"] == lab.mfn(0x200) << 12 | P | RW | A
    assert len(table_entries(lab.mm)) == 1023 + 1                       # the L1's entries, the directory's one

    def leaks(mm, address, nl1e, domain, foreign, preserve_ad=False):
        if nl1e & P and not mm.get_page_from_l1e(nl1e, foreign):
            return False
        mm.put_u32(address, nl1e)
        return True                                                     # the old entry's references kept
    with pytest.raises(AssertionError) as failure:
        check_xen_facts(request_facts(*run_requests({"mod_l1_entry": leaks}, steps)), facts, "leaks", steps=steps)
    message = str(failure.value)
    assert "frames, 1 frame differs from Xen's own" in message and "(domain 0's frame 0x3ff)" in message
    assert "expected: nothing uses it" in message and "got:      domain 0's, 2 references, writable_page x1" in message


def test_a_differing_result_names_the_request():
    """Does a result that differs from Xen's name the request, by its place in the script and in words?"""
    lab = new_xen()
    steps = [["map the L1 table read-only", "update_va_mapping", W, lab.l1 << 12 | P | A],
             ["map the L1 table writable", "update_va_mapping", W, lab.l1 << 12 | P | RW | A]]
    facts = request_facts(*run_requests(None, steps))
    lets_through = request_facts(*run_requests({"get_page_from_l1e": lambda mm, l1e, domain: True}, steps))
    with pytest.raises(AssertionError, match=r"results, request 2 of 2 expected \(map the L1 table writable\)\n"
                                             r"  expected: -22\n  got:      0"):
        check_xen_facts(lets_through, facts, "yours", steps=steps)


# --- the budget, and rules that fail --------------------------------------------------------------------------
def test_a_rule_that_never_returns_is_stopped_within_its_budget_even_inside_another():
    """Is a rule stuck in a loop stopped after about a second with a message that names the call, and is
    one that loops over calls of another rule (each of which returns) stopped too, since the calls
    inside a rule share its clock?"""
    spare = new_xen().mfn(0x3F0)

    def get_page_type(mm, mfn, type_):
        while mfn == spare and type_ == frames.L1:
            pass
        return xens_own("get_page_type")(mm, mfn, type_)
    lab = new_xen({"get_page_type": get_page_type})
    start = time.perf_counter()
    with pytest.raises(AssertionError, match=rf"your get_page_type\(mfn {spare:#x}, 'l1_page_table'\) was still running "
                                             r"after 1 s; the reference"):
        lab.mmuext_op((0, spare))
    assert time.perf_counter() - start < 3

    free = new_xen().free_frame                                        # no table the builder makes maps it

    def spins(mm, l1e, domain):
        while l1e >> 12 == free:                                        # each inner call returns at once
            mm.get_page_type(free, frames.WRITABLE)
            mm.put_page_type(free)
        return xens_own("get_page_from_l1e")(mm, l1e, domain)
    start = time.perf_counter()
    with pytest.raises(AssertionError, match=rf"your get_page_from_l1e\({free << 12 | P | RW | A:#010x}, domain 0\) "
                                             r"was still running after 1 s"):
        run_requests({"get_page_from_l1e": spins, "get_page_type": xens_own("get_page_type")},
                     [["x", "update_va_mapping", W, free << 12 | P | RW | A]])
    assert time.perf_counter() - start < 3


def test_a_rule_that_raises_or_answers_neither_true_nor_false_fails_with_a_message():
    """Does a rule that raises name its call, one that returns None say what a rule returns, a dom0 whose
    tables the rules refuse fail to build with a message, and a table with a name Xen has no rule for
    fail the check?"""
    with pytest.raises(AssertionError, match=r"your get_page_from_l1e\(0x[0-9a-f]{8}, domain 0\) raised "
                                             r"NotImplementedError"):
        new_xen({"get_page_from_l1e": lambda mm, l1e, domain: (_ for _ in ()).throw(NotImplementedError())})
    with pytest.raises(AssertionError, match=r"your mod_l1_entry\(0x[0-9a-f]+, 0x00000000, domain 0, foreign 0\) "
                                             r"returned None"):
        new_xen({"mod_l1_entry": lambda mm, *args: None}).update_va_mapping(W, 0)
    with pytest.raises(AssertionError, match="Xen could not build dom0"):
        new_xen({"get_page_from_l1e": lambda mm, l1e, domain: mm.refuse("no") if l1e & P else True})
    with pytest.raises(AssertionError, match="the page-table rules"):
        new_xen({"mod_l2_entry": xens_own("mod_l1_entry")})


# --- the reference facts ------------------------------------------------------------------------------------
def test_the_reference_facts_are_the_same_in_a_fresh_interpreter(graders):
    """Are a script of requests (with a domU) and the course's PV kernels, on Xen's own rules, counted and
    recorded the same here and in the fresh process graders.reference computes them in?"""
    lab = new_xen()
    domu = lab.create_domain()
    steps = [["create domain 1", "create_domain"],
             ["map a frame of domain 1", "update_va_mapping", W, lab.mfn(0x100, domu) << 12 | P | A],
             ["name domain 1", "update_va_mapping", W, lab.mfn(0x100, domu) << 12 | P | RW | A, 1],
             ["pin frame 0x3ff", "mmuext_op", [[0, lab.mfn(0x3FF)]]]]
    assert graders.reference("lab9.requests", steps) == request_facts(*run_requests(None, steps))
    cases = [["pv_dom0", {}, ["pv_domu"]], ["pv_mmu_batch", {"BATCH": 16}, []]]
    here = [kernel_facts(*run_kernel(None, *case)) for case in cases]
    assert graders.reference("lab9.guest_runs", cases) == here
    assert here[0]["exit_code"] == 0 and here[1]["pt_updates"] == 1024
    assert not any(key.startswith("mfn") and "domain 1" in key for key in here[0]["frames"])   # all came back


def test_the_kernel_answers_with_plain_data_and_refuses_xens_own_rules():
    """Do the grader's questions get a script's results, looks included, as plain data, and nothing from
    rules that are, or call, Xen's own (the frame table's methods, withheld while they run)?"""
    import vmkit.grading.lab9 as lab9
    lab = new_xen()
    data = lab.mfn(0x200)
    steps = [["pin a writable frame", "mmuext_op", [[0, data]]], ["that frame", "frame", data],
             ["its type", "frame", data, "type"], ["the window", "mapped", W], ["read", "read", W, 4],
             ["the window's PTE", "entry", lab.pte(W)]]

    def get_page_type(mm, mfn, type_):
        return frames.FrameTable.get_page_type(mm, mfn, type_)
    def mine(mm, mfn, type_):                  # Xen's rule, written out as a student would
        page = mm.pages[mfn]
        if page.type_count:
            if page.type != type_:
                return mm.refuse("in use as another type")
            page.type_count += 1
            return True
        page.type, page.type_count = type_, 1
        if type_ != frames.WRITABLE and not mm.alloc_page_type(mfn, type_):
            page.type, page.type_count, page.validated = frames.NONE, 0, False
            return False
        page.validated = True
        return True
    mine = {"get_page_type": mine}
    facts, = lab9.request_cases([steps], mine)
    assert facts["results"][:3] == [[-22, 0], {"owner": 0, "count": 2, "type": "writable_page", "type_count": 1,
                                               "pinned": False}, "writable_page"]
    assert facts["results"][3] == lab.mapped(W) and facts["results"][4] == lab.read(W, 4).hex()
    assert "withheld" in lab9.request_cases([steps], {"get_page_type": get_page_type})[0]["error"]
    assert "vmkit's own" in lab9.request_cases([steps], {"get_page_type": xens_own("get_page_type")})[0]["error"]
    assert frames.FrameTable.get_page_type(lab.mm, lab.mfn(0x201), frames.WRITABLE)        # put back after
    table = {name: xens_own(name) for name in lab9.RULE_NAMES}
    assert "vmkit's own" in lab9.table_cases([["pv_ops", {}, []]], table, *table.values())[0]["error"]
