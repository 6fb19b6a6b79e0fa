"""Lab 9 (direct paging): what vmkit's Xen, on its own page-table rules (vmkit.xen.mm, after Xen's
mm.c), answers to scripts of page-table requests, and how the course's PV kernels run on them."""
from vmkit.grading.lab9 import kernel_facts, lazy_facts, request_facts, run_kernel, run_requests, run_unbatched


def requests(steps):
    """The script `steps` (vmkit.grading.lab9.run_requests) on a fresh dom0 on Xen's own rules: request_facts."""
    return request_facts(*run_requests(None, steps))


def requests_many(scripts):
    """requests for each script, in one process."""
    return [requests(steps) for steps in scripts]


def guest_runs(cases):
    """For each [guest, options, modules], the kernel on Xen's own rules: kernel_facts."""
    return [kernel_facts(*run_kernel(None, guest, options, modules, timeout=30)) for guest, options, modules in cases]


def hypercall_bound(steps, batch, results):
    """The hypercalls a lazy section of `steps` needs at most, given each step's result made one request per
    hypercall (`results`): updates wait in a queue of at most `batch`, which is sent when it is full, before
    a read of an entry it holds, before any mmuext_op (a TLB flush, a CR3 load, a pin: each a hypercall
    of its own), and at the end; a refused update ends its batch, and the rest of the queue goes again."""
    calls, queue = 0, []

    def flush():
        nonlocal calls
        while queue:
            sent, calls = queue[:batch], calls + 1
            refused = next((k for k, (i, _) in enumerate(sent) if results[i] != 0), None)
            del queue[:len(sent) if refused is None else refused + 1]
    for i, (kind, *args) in enumerate(steps):
        if kind == "set_pte":
            queue.append((i, args[0]))
            if len(queue) == batch:
                flush()
        elif kind == "get_pte":
            if any(ptr == args[0] for _, ptr in queue):
                flush()
        else:
            flush()
            calls += 1
    flush()
    return calls


def unbatched(cases):
    """For each [steps, batch], the script one request per hypercall on Xen's own rules (lazy_facts), with
    the hypercall bound of a lazy section of it in batches of `batch`."""
    answers = []
    for steps, batch in cases:
        facts = lazy_facts(*run_unbatched(steps))
        facts["bound"] = hypercall_bound(steps, batch, facts["results"])
        answers.append(facts)
    return answers


FACTS = {f.__name__: f for f in (requests, requests_many, guest_runs, unbatched)}


# --- the probes: each graded cell's cases, asked of the student's kernel and decided here -------------
from vmkit.grading.checks import check, check_equal, shown
from vmkit.grading.lab9 import RULE_NAMES, check_lazy, check_xen_facts, new_xen
from vmkit.xen.mm import L1, L2, WRITABLE
from .probing import Probe

P, RW, US, PWT, PCD, A, D, PAT, G = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100
PIN_L1_TABLE, PIN_L2_TABLE, PRESERVE_AD, UNPIN_TABLE, NEW_BASEPTR = 0, 1, 2, 4, 5
WINDOW = 0x3FF000                      # a page of dom0's that the checks remap at will
REFERENCE_XEN = new_xen()                          # Xen's own rules: the machine frames the requests name
mfn = REFERENCE_XEN.mfn
DOMU = REFERENCE_XEN.create_domain()               # the same domain a script's create_domain makes: its frames


def domu(pfn):
    return REFERENCE_XEN.mfn(pfn, DOMU)


def rules_asked(*names):
    """The ask for some of the rules: each script on a fresh dom0 with the student's rules (never Xen's own)."""
    table = ", ".join(f"{name!r}: {name}" for name in names)
    return f"vmkit.grading.lab9.request_cases(cases, {{{table}}})"


def visible(hints):
    """A judge for a visible cell's script: each step's result (a request's, or what a look saw) against
    what it is on Xen's own rules, in order; `hints` by the step's words."""
    def judge(answers, expected, scripts):
        check(isinstance(answers, list) and len(answers) == len(scripts), "one run per script", got=shown(answers)[:200])
        for steps, got, want in zip(scripts, answers, expected):
            check(isinstance(got, dict) and "error" not in got, "dom0 on your rules makes every request of the check",
                  got=got.get("error") if isinstance(got, dict) else shown(got)[:200])
            results = got.get("results")
            check(isinstance(results, list) and len(results) == len(steps), "one result per request", got=shown(results)[:200])
            for step, result, reference in zip(steps, results, want["results"]):
                check_equal(result, reference, what=step[0], hint=hints.get(step[0]))
    return judge


def against_xen(what, fields=None):
    """A judge for hidden scripts or kernels: the run's facts against Xen's own rules, the first difference
    explained (a request named by its words)."""
    def judge(answers, expected, cases):
        check(isinstance(answers, list) and len(answers) == len(cases), "one run per case", got=shown(answers)[:200])
        names = what if isinstance(what, list) else [what] * len(cases)
        for name, case, got, want in zip(names, cases, answers, expected):
            check(isinstance(got, dict) and "error" not in got, f"{name} runs to its end",
                  got=got.get("error") if isinstance(got, dict) else shown(got)[:200])
            check_xen_facts(got, want, what=f"{name}, against Xen's own rules", fields=fields,
                            steps=case if fields is None and "results" in want else None)
    return judge


# Part 1: get_page_type
_data, _spare, _mapped, _bad, _me = mfn(0x200), mfn(0x3F0), mfn(0x3F1), mfn(0x3F2), mfn(0x3F3)
_HINT1 = "the domain builder validates the page directory as L2 (which validates its L1), pins it and loads it in CR3"
PART1_VISIBLE = [[
    ["dom0's page directory after the start of day", "frame", REFERENCE_XEN.pd],
    ["dom0's L1 table after the start of day", "frame", REFERENCE_XEN.l1],
    ["the type of the frame dom0 has at 0x200000", "frame", _data, "type"],
    ["pinning, as an L1 table, a frame mapped writable", "mmuext_op", [[PIN_L1_TABLE, _data]]],
    ["that frame after the refused pin", "frame", _data],
    ["mapping that frame writable a second time, at 0x3ff000", "update_va_mapping", WINDOW, _data << 12 | P | RW | A],
    ["its typed references after the second writable mapping", "frame", _data, "type_count"],
    ["making the spare frame read-only", "update_va_mapping", 0x3F0000, _spare << 12 | P | A],
    ["writing into the spare frame (no page table yet) a PTE that maps frame 0x3f1 read-only", "mmu_update",
     [[_spare << 12, _mapped << 12 | P | A]]],
    ["the references of frame 0x3f1 before the pin", "frame", _mapped, "count"],
    ["pinning the spare frame, now read-only", "mmuext_op", [[PIN_L1_TABLE, _spare]]],
    ["the spare frame after the pin", "frame", _spare],
    ["the references of frame 0x3f1 once the table that maps it is pinned", "frame", _mapped, "count"],
    ["unpinning the spare frame", "mmuext_op", [[UNPIN_TABLE, _spare]]],
    ["the references of frame 0x3f1 once that table is unpinned", "frame", _mapped, "count"],
    ["pinning the spare frame again", "mmuext_op", [[PIN_L1_TABLE, _spare]]],
    ["the references of frame 0x3f1 once the table is pinned again", "frame", _mapped, "count"],
    ["making frame 0x3f2 read-only", "update_va_mapping", 0x3F2000, _bad << 12 | P | A],
    ["writing into frame 0x3f2 a PTE that maps a frame of Xen's", "mmu_update",
     [[_bad << 12 | 8, REFERENCE_XEN.xen_frame << 12 | P | A]]],
    ["pinning frame 0x3f2 as an L1 table", "mmuext_op", [[PIN_L1_TABLE, _bad]]],
    ["frame 0x3f2 after the refused pin", "frame", _bad],
    ["making frame 0x3f3 read-only", "update_va_mapping", 0x3F3000, _me << 12 | P | A],
    ["writing into frame 0x3f3 a PTE that maps frame 0x3f3 itself writable", "mmu_update",
     [[_me << 12 | 4, _me << 12 | P | RW | A]]],
    ["pinning frame 0x3f3, a table that would map itself writable", "mmuext_op", [[PIN_L1_TABLE, _me]]],
    ["the typed references of frame 0x3f3 after the refused pin", "frame", _me, "type_count"]]]
_VALIDATED = "a page table is validated when it gets its first typed reference: every present entry then holds its references"
PART1_HINTS = {
    "dom0's page directory after the start of day": _HINT1 + ": two typed references",
    "dom0's L1 table after the start of day": _HINT1 + ": one PDE points at it",
    "the type of the frame dom0 has at 0x200000": "every present, writable PTE of a table being validated asks for a "
                                                   "WRITABLE reference",
    "pinning, as an L1 table, a frame mapped writable": "a frame in use as another type is refused",
    "that frame after the refused pin": "a refused request changes nothing",
    "mapping that frame writable a second time, at 0x3ff000": "in use as this type: one more",
    "pinning the spare frame, now read-only": "no typed reference left: it may take the type L1, once its entries "
                                              "are checked",
    "the references of frame 0x3f1 once the table that maps it is pinned": _VALIDATED,
    "the references of frame 0x3f1 once that table is unpinned": "a table's last typed reference gone, its entries "
                                                                 "let theirs go (Xen's put_page_type)",
    "the references of frame 0x3f1 once the table is pinned again": "a page table is validated every time it gets its "
                                                                    "first typed reference, not only when its type changes",
    "pinning frame 0x3f2 as an L1 table": "a frame whose entries do not all validate does not become a page table",
    "frame 0x3f2 after the refused pin": "a failed validation leaves the frame in no use: no type, no typed reference "
                                         "(Xen's validate_page)",
    "pinning frame 0x3f3, a table that would map itself writable": "while its entries are checked, the frame is already "
                                                                   "in use as its new type, with its one typed reference",
    "the typed references of frame 0x3f3 after the refused pin": "a failed validation leaves the frame in no use"}
PART1_HIDDEN = [
    ["map the page directory writable", "update_va_mapping", WINDOW, REFERENCE_XEN.pd << 12 | P | RW | A],
    ["pin the L1 table in use as a page directory", "mmuext_op", [[PIN_L2_TABLE, REFERENCE_XEN.l1]]],
    ["map the L1 table writable, with mmu_update", "mmu_update", [[REFERENCE_XEN.pte(WINDOW), REFERENCE_XEN.l1 << 12 | P | RW | A]]],
    ["map the L1 table read-only", "update_va_mapping", WINDOW, REFERENCE_XEN.l1 << 12 | P | A],
    ["make frame 0x3f0 read-only", "update_va_mapping", 0x3F0000, mfn(0x3F0) << 12 | P | A],
    ["write into frame 0x3f0 a PTE that maps frame 0x3f1 writable", "mmu_update",
     [[mfn(0x3F0) << 12, mfn(0x3F1) << 12 | P | RW | A]]],
    ["pin frame 0x3f0 as an L1 table", "mmuext_op", [[PIN_L1_TABLE, mfn(0x3F0)]]],
    ["pin frame 0x3f1, which that table maps writable", "mmuext_op", [[PIN_L1_TABLE, mfn(0x3F1)]]],
    ["unpin frame 0x3f0", "mmuext_op", [[UNPIN_TABLE, mfn(0x3F0)]]],
    ["pin frame 0x3f0 again", "mmuext_op", [[PIN_L1_TABLE, mfn(0x3F0)]]],
    ["make frame 0x3f1 read-only", "update_va_mapping", 0x3F1000, mfn(0x3F1) << 12 | P | A],
    ["pin frame 0x3f1 while the pinned table still maps it writable", "mmuext_op", [[PIN_L1_TABLE, mfn(0x3F1)]]],
    ["make frame 0x3f2 read-only", "update_va_mapping", 0x3F2000, mfn(0x3F2) << 12 | P | A],
    ["write into frame 0x3f2 a PTE that maps frame 0x3f2 itself writable", "mmu_update",
     [[mfn(0x3F2) << 12 | 0x10, mfn(0x3F2) << 12 | P | RW | A]]],
    ["pin frame 0x3f2, a table that would map itself writable", "mmuext_op", [[PIN_L1_TABLE, mfn(0x3F2)]]],
    ["map frame 0x3f2 writable again", "update_va_mapping", 0x3F2000, mfn(0x3F2) << 12 | P | RW | A],
    ["make frame 0x3f3 read-only", "update_va_mapping", 0x3F3000, mfn(0x3F3) << 12 | P | A],
    ["write into frame 0x3f3 a PTE that maps frame 0x201 writable", "mmu_update",
     [[mfn(0x3F3) << 12, mfn(0x201) << 12 | P | RW | A | US]]],
    ["point the page directory in use at frame 0x3f3, for 0x400000", "mmu_update",
     [[REFERENCE_XEN.pde(0x400000), mfn(0x3F3) << 12 | P | RW | A | US]]],
    ["point the page directory in use at frame 0x200, mapped writable, for 0x800000", "mmu_update",
     [[REFERENCE_XEN.pde(0x800000), mfn(0x200) << 12 | P | RW | A]]],
    ["load frame 0x3f0, an L1 table, as the page directory", "mmuext_op", [[NEW_BASEPTR, mfn(0x3F0)]]],
    ["unpin frame 0x3f0", "mmuext_op", [[UNPIN_TABLE, mfn(0x3F0)]]],
    ["map frame 0x3f0 writable again", "update_va_mapping", 0x3F0000, mfn(0x3F0) << 12 | P | RW | A],
]

# Part 2: get_page_from_l1e
PART2_VISIBLE = [[["the type of the frame dom0 has at 0x200000", "frame", mfn(0x200), "type"]]]
_HOLDS = "a present PTE holds a general reference on its frame, and a writable one a WRITABLE reference too"
PART2_HINTS = {"the type of the frame dom0 has at 0x200000": "the builder's L1 table maps it writable: a writable PTE "
                                                             "takes a WRITABLE reference"}
for _pfn, _flags, _what in [(0x200, P | RW | A, "frame 0x200, writable"), (0x201, P | A, "frame 0x201, read-only")]:
    PART2_VISIBLE[0] += [[f"{_what}, before the window maps it", "frame", mfn(_pfn)],
                         [f"update_va_mapping: dom0's window page onto its own {_what}", "update_va_mapping", WINDOW,
                          mfn(_pfn) << 12 | _flags],
                         [f"what dom0 reads through the window ({_what})", "read", WINDOW, 16],
                         [f"what dom0 reads at {_pfn << 12:#x}", "read", _pfn << 12, 16],
                         [f"{_what}, once the window maps it", "frame", mfn(_pfn)]]
    PART2_HINTS[f"{_what}, once the window maps it"] = _HOLDS
PART2_VISIBLE[0].append(["dom0's L1 table before the refusals", "frame", REFERENCE_XEN.l1])
for _what, _pte, _hint in [
        ("a PTE with PCD, for dom0's own frame", mfn(0x202) << 12 | P | RW | A | PCD,
         "the flags of L1_DISALLOW_MASK are Xen's to set"),
        ("Xen's GDT frame, writable", REFERENCE_XEN.xen_frame << 12 | P | RW | A, "a frame must be the domain's own"),
        ("Xen's GDT frame, read-only", REFERENCE_XEN.xen_frame << 12 | P | A,
         "a frame must be the domain's own, read-only too"),
        ("a frame past the end of machine memory, writable", REFERENCE_XEN.not_ram << 12 | P | RW | A,
         "a frame must be RAM"),
        ("dom0's L1 table, writable", REFERENCE_XEN.l1 << 12 | P | RW | A,
         "a frame in use as a page table is never mapped writable")]:
    PART2_VISIBLE[0] += [[f"update_va_mapping: the window onto {_what}", "update_va_mapping", WINDOW, _pte],
                         [f"what the window maps after {_what} was refused", "mapped", WINDOW]]
    PART2_HINTS[f"update_va_mapping: the window onto {_what}"] = _hint
PART2_VISIBLE[0] += [
    ["dom0's L1 table after it was refused as the window's frame, writable", "frame", REFERENCE_XEN.l1],
    ["making frame 0x3f0 read-only", "update_va_mapping", 0x3F0000, mfn(0x3F0) << 12 | P | A],
    ["writing into frame 0x3f0 (no page table yet) a PTE with PCD", "mmu_update",
     [[mfn(0x3F0) << 12, mfn(0x201) << 12 | P | A | PCD]]],
    ["pinning frame 0x3f0, whose entry has PCD, as an L1 table", "mmuext_op", [[PIN_L1_TABLE, mfn(0x3F0)]]],
    ["create domain 1", "create_domain"],
    ["the window onto a frame of domain 1, read-only, not naming domain 1", "update_va_mapping", WINDOW,
     domu(0x100) << 12 | P | A],
    ["the window onto a frame of domain 1, read-only, naming domain 1", "update_va_mapping", WINDOW,
     domu(0x100) << 12 | P | A, 1]]
PART2_HINTS.update({
    "dom0's L1 table after it was refused as the window's frame, writable": "a refused entry holds nothing: let go of "
                                                                            "what you took",
    "the window onto a frame of domain 1, read-only, not naming domain 1": "the frames an entry may map are those of "
                                                                           "`domain`: dom0's own unless it names a "
                                                                           "foreign domain",
    "the window onto a frame of domain 1, read-only, naming domain 1": "dom0 may map a frame of the foreign domain it "
                                                                       "names",
    "pinning frame 0x3f0, whose entry has PCD, as an L1 table": "validating a table checks every entry with "
                                                                "get_page_from_l1e: the flags of L1_DISALLOW_MASK "
                                                                "are Xen's to set"})
PART2_HIDDEN = [
    ["create domain 1", "create_domain"],
    ["map a frame of domain 1, read-only", "update_va_mapping", WINDOW, domu(0x100) << 12 | P | A],
    ["map a frame of domain 1, writable", "update_va_mapping", WINDOW, domu(0x100) << 12 | P | RW | A],
    ["map a frame of Xen's, read-only", "update_va_mapping", WINDOW, REFERENCE_XEN.xen_frame << 12 | P | A],
    ["map a free frame, read-only", "update_va_mapping", WINDOW, REFERENCE_XEN.free_frame << 12 | P | A],
    ["map I/O space, read-only", "update_va_mapping", WINDOW, REFERENCE_XEN.not_ram << 12 | P | A],
    ["map domain 1's page directory, read-only", "update_va_mapping", WINDOW, domu(5) << 12 | P | A],
    ["map the L1 table writable", "update_va_mapping", WINDOW, REFERENCE_XEN.l1 << 12 | P | RW | A],
    ["map the page directory writable, with mmu_update", "mmu_update", [[REFERENCE_XEN.pte(WINDOW), REFERENCE_XEN.pd << 12 | P | RW | A]]],
    ["a PTE with GLOBAL", "update_va_mapping", WINDOW, mfn(0x200) << 12 | P | A | G],
    ["a PTE with PAT", "update_va_mapping", WINDOW, mfn(0x200) << 12 | P | RW | A | PAT],
    ["a PTE with PWT and PCD", "update_va_mapping", WINDOW, mfn(0x200) << 12 | P | RW | A | PWT | PCD],
    ["map frame 0x200, read-only", "update_va_mapping", WINDOW, mfn(0x200) << 12 | P | A],
    ["map frame 0x200, writable", "update_va_mapping", WINDOW, mfn(0x200) << 12 | P | RW | A],
    ["unmap it", "update_va_mapping", WINDOW, 0],
    ["make frame 0x3f0 read-only", "update_va_mapping", 0x3F0000, mfn(0x3F0) << 12 | P | A],
    ["write into frame 0x3f0 a read-only PTE for a frame of domain 1", "mmu_update",
     [[mfn(0x3F0) << 12 | 0x14, domu(0x100) << 12 | P | A]]],
    ["pin frame 0x3f0 as an L1 table", "mmuext_op", [[PIN_L1_TABLE, mfn(0x3F0)]]],
    ["clear that PTE", "mmu_update", [[mfn(0x3F0) << 12 | 0x14, 0]]],
    ["pin frame 0x3f0 as an L1 table", "mmuext_op", [[PIN_L1_TABLE, mfn(0x3F0)]]],
    ["map a frame of domain 1 writable, naming domain 1 as the foreign domain", "update_va_mapping", WINDOW,
     domu(0x100) << 12 | P | RW | A, 1],
    ["map it read-only, naming domain 1", "update_va_mapping", WINDOW, domu(0x100) << 12 | P | A, 1],
    ["unmap it", "update_va_mapping", WINDOW, 0],
    # the flags once more, in tables being validated (mod_l1_entry checks them itself before it asks)
    ["make frame 0x3f2 read-only", "update_va_mapping", 0x3F2000, mfn(0x3F2) << 12 | P | A],
    ["write into frame 0x3f2 a PTE with GLOBAL", "mmu_update", [[mfn(0x3F2) << 12 | 0x20, mfn(0x203) << 12 | P | A | G]]],
    ["pin frame 0x3f2 as an L1 table", "mmuext_op", [[PIN_L1_TABLE, mfn(0x3F2)]]],
    ["make frame 0x3f3 read-only", "update_va_mapping", 0x3F3000, mfn(0x3F3) << 12 | P | A],
    ["write into frame 0x3f3 a writable PTE with PAT", "mmu_update",
     [[mfn(0x3F3) << 12 | 0x40, mfn(0x204) << 12 | P | RW | A | PAT]]],
    ["pin frame 0x3f3 as an L1 table", "mmuext_op", [[PIN_L1_TABLE, mfn(0x3F3)]]],
]

# Part 3: mod_l1_entry
_a, _b, _first = mfn(0x200), mfn(0x201), REFERENCE_XEN.mapped(WINDOW)


def _frames(when):
    return [[f"the frame the window mapped first, {when}", "frame", _first], [f"frame 0x200, {when}", "frame", _a],
            [f"frame 0x201, {when}", "frame", _b]]


_PCD_PTE, _XEN_PTE = "a PTE with PCD for the window", "a PTE for Xen's GDT frame for the window"
PART3_VISIBLE = [[
    *_frames("at the start"),
    ["mmu_update: the window's PTE onto frame 0x200", "mmu_update", [[REFERENCE_XEN.pte(WINDOW), _a << 12 | P | RW | A | US]]],
    ["what dom0 reads through the window", "read", WINDOW, 16],
    ["what dom0 reads at 0x200000", "read", 0x200000, 16],
    *_frames("after the remap"),
    ["update_va_mapping: the window onto frame 0x201, read-only", "update_va_mapping", WINDOW, _b << 12 | P | A | US],
    ["the frame the window maps", "mapped", WINDOW],
    *_frames("after the second remap"),
    [_PCD_PTE, "update_va_mapping", WINDOW, _a << 12 | P | RW | A | PCD],
    [f"the window's PTE after {_PCD_PTE} was refused", "entry", REFERENCE_XEN.pte(WINDOW)],
    *_frames(f"after {_PCD_PTE} was refused"),
    [_XEN_PTE, "update_va_mapping", WINDOW, REFERENCE_XEN.xen_frame << 12 | P | A],
    [f"the window's PTE after {_XEN_PTE} was refused", "entry", REFERENCE_XEN.pte(WINDOW)],
    *_frames(f"after {_XEN_PTE} was refused"),
    ["dom0 writes at 0x201000", "write", 0x201000, b"dirty".hex()],
    ["remapping 0x201000 with MMU_PT_UPDATE_PRESERVE_AD", "mmu_update",
     [[REFERENCE_XEN.pte(0x201000) | PRESERVE_AD, _b << 12 | P | RW]]],
    ["the PTE of 0x201000 after it", "entry", REFERENCE_XEN.pte(0x201000)],
    ["create domain 1", "create_domain"],
    ["the window onto a frame of domain 1, naming domain 1", "update_va_mapping", WINDOW,
     domu(0x100) << 12 | P | RW | A, 1],
    ["the same mapping with U/S set and A clear, not naming domain 1", "mmu_update",
     [[REFERENCE_XEN.pte(WINDOW), domu(0x100) << 12 | P | RW | US]]],
    ["mmu_update: the window's PTE cleared", "mmu_update", [[REFERENCE_XEN.pte(WINDOW), 0]]],
    ["the frame the window maps once its PTE is clear", "mapped", WINDOW]]]
_MOVED = "the new entry holds its references (a read-only one a general reference only), and the old entry's are gone"
_UNCHANGED = "a refused request changes nothing: not the entry, not a count"
PART3_HINTS = {**{step[0]: _MOVED for step in _frames("after the remap") + _frames("after the second remap")},
               **{step[0]: _UNCHANGED for step in _frames(f"after {_PCD_PTE} was refused")
                  + _frames(f"after {_XEN_PTE} was refused")},
               _PCD_PTE: "the flags of L1_DISALLOW_MASK are refused",
               _XEN_PTE: "an entry whose references get_page_from_l1e refuses is refused",
               f"the window's PTE after {_PCD_PTE} was refused": "a refused request writes nothing",
               f"the window's PTE after {_XEN_PTE} was refused": "a refused request writes nothing",
               "the PTE of 0x201000 after it": "with preserve_ad the new entry keeps the old one's accessed and dirty bits",
               "the same mapping with U/S set and A clear, not naming domain 1":
                   "an entry that keeps its frame, P and R/W holds the references it needs: it is not checked again"}
PART3_HIDDEN = [
    ["create domain 1", "create_domain"],
    ["map the window onto frame 0x200, with mmu_update", "mmu_update", [[REFERENCE_XEN.pte(WINDOW), mfn(0x200) << 12 | P | RW | A | US]]],
    ["map the window onto frame 0x201, with update_va_mapping", "update_va_mapping", WINDOW,
     mfn(0x201) << 12 | P | RW | A | US],
    ["pin frame 0x3ff, which nothing maps any more, as an L1 table", "mmuext_op", [[PIN_L1_TABLE, mfn(0x3FF)]]],
    ["in that pinned table, map frame 0x202 writable", "mmu_update", [[mfn(0x3FF) << 12 | 8, mfn(0x202) << 12 | P | RW | A]]],
    ["in that pinned table, map the L1 table writable", "mmu_update", [[mfn(0x3FF) << 12 | 12, REFERENCE_XEN.l1 << 12 | P | RW | A]]],
    ["in that pinned table, map frame 0x202 read-only", "mmu_update", [[mfn(0x3FF) << 12 | 8, mfn(0x202) << 12 | P | A]]],
    ["make frame 0x203 read-only", "update_va_mapping", 0x203000, mfn(0x203) << 12 | P | A],
    ["pin frame 0x203, which nothing maps writable any more", "mmuext_op", [[PIN_L1_TABLE, mfn(0x203)]]],
    ["a PTE with GLOBAL for 0x200000", "mmu_update", [[REFERENCE_XEN.pte(0x200000), mfn(0x200) << 12 | P | RW | A | G]]],
    ["dom0 writes at 0x200000", "write", 0x200000, "766d6b6974"],
    ["remap 0x200000, keeping its accessed and dirty bits", "mmu_update",
     [[REFERENCE_XEN.pte(0x200000) | PRESERVE_AD, mfn(0x200) << 12 | P | RW]]],
    ["remap 0x204000, not keeping them", "mmu_update", [[REFERENCE_XEN.pte(0x204000), mfn(0x204) << 12 | P | RW]]],
    ["map a frame of domain 1 at the window, naming domain 1 as the foreign domain", "update_va_mapping", WINDOW,
     domu(0x100) << 12 | P | RW | A, 1],
    ["set the dirty bit of that PTE", "mmu_update", [[REFERENCE_XEN.pte(WINDOW), domu(0x100) << 12 | P | RW | A | D]]],
    ["unmap the window", "mmu_update", [[REFERENCE_XEN.pte(WINDOW), 0]]],
    ["unmap 0x205000 and map 0x206000 onto its frame, in one batch", "mmu_update",
     [[REFERENCE_XEN.pte(0x205000), 0], [REFERENCE_XEN.pte(0x206000), mfn(0x205) << 12 | P | RW | A]]],
]

# Part 4: lazy MMU mode, a design of the student's
TLB_FLUSH_LOCAL = 6
pte = REFERENCE_XEN.pte


def _set(va, pfn, flags, frame=None):
    return ["set_pte", pte(va), (mfn(pfn) if frame is None else frame) << 12 | flags if flags else 0]


LAZY_VISIBLE = [[[_set(0x210000, 0x211, P | RW | A), _set(0x211000, 0x210, P | RW | A),
                  ["get_pte", pte(0x220000)],
                  _set(0x212000, 0x212, P | RW | A | PCD), _set(0x213000, 0x214, P | A),
                  _set(0x218000, 0x218, P | A), ["get_pte", pte(0x213000)],
                  _set(0x214000, 0x213, P | RW | A), ["get_pte", pte(0x214000)],
                  _set(0x215000, 0, 0), ["mmuext_op", TLB_FLUSH_LOCAL, 0],
                  _set(0x3F0000, 0x3F0, P | A), ["mmuext_op", PIN_L1_TABLE, mfn(0x3F0)],
                  _set(0x217000, 0x217, P | RW | A | US)], 4]]


def _hidden_lazy():
    # batches of 8: a region remapped, refusals of every kind, reads of queued and unqueued entries, a CR3 load
    one = []
    for k in range(20):
        va = 0x230000 + k * 0x1000
        if k == 5:
            one.append(["set_pte", pte(va), REFERENCE_XEN.xen_frame << 12 | P | A])
        elif k == 12:
            one.append(["set_pte", pte(va), REFERENCE_XEN.not_ram << 12 | P | RW | A])
        else:
            one.append(_set(va, 0x260 + (k * 7) % 20, P | RW | A | (US if k % 3 else 0)))
        if k in (3, 9, 15):
            one.append(["get_pte", pte(0x230000 + (k - 2) * 0x1000)])
        if k in (6, 14):
            one.append(["get_pte", pte(0x300000 + k * 0x1000)])
        if k == 10:
            one.append(["mmuext_op", NEW_BASEPTR, REFERENCE_XEN.pd])
    # batches of 3: refusals side by side, a refused update read back while it waits, a pin, an unpin
    two = [_set(0x240000, 0x240, P | RW | A | G), _set(0x241000, 0x241, P | RW | A | PWT),
           ["get_pte", pte(0x241000)], _set(0x242000, 0x242, P | RW | A | PAT),
           ["set_pte", pte(0x243000), REFERENCE_XEN.l1 << 12 | P | RW | A], ["get_pte", pte(0x243000)],
           _set(0x3F1000, 0x3F1, P | A), _set(0x244000, 0x3F1, P | A),
           ["mmuext_op", PIN_L1_TABLE, mfn(0x3F1)], _set(0x245000, 0x3F1, P | RW | A),
           ["get_pte", pte(0x245000)], ["mmuext_op", UNPIN_TABLE, mfn(0x3F1)],
           _set(0x246000, 0x3F1, P | RW | A), _set(0x247000, 0x247, 0x0), ["get_pte", pte(0x246000)],
           _set(0x248000, 0x249, P | A), _set(0x249000, 0x248, P | A)]
    # batches of 32: 40 updates that swap pages pairwise, a TLB flush, 8 more left queued at the end
    three = [_set(0x280000 + k * 0x1000, 0x280 + (k ^ 1), P | RW | A) for k in range(40)]
    three += [["mmuext_op", TLB_FLUSH_LOCAL, 0]] + [_set(0x2C0000 + k * 0x1000, 0x2C0 + k, P | A) for k in range(8)]
    # batches of 1
    four = [_set(0x250000, 0x251, P | RW | A), ["get_pte", pte(0x250000)], _set(0x251000, 0x251, P | RW | A | PCD),
            _set(0x252000, 0x250, P | A)]
    return [[one, 8], [two, 3], [three, 32], [four, 1]]


LAZY_HIDDEN = _hidden_lazy()
LAZY_ASKED = "vmkit.grading.lab9.lazy_cases(cases, lazy_updates)"


def lazy_judge(what):
    """A judge for lazy sections: each against the same script one request per hypercall, and its bound."""
    def judge(answers, expected, cases):
        check(isinstance(answers, list) and len(answers) == len(cases), "one run per script", got=shown(answers)[:200])
        for n, ((steps, batch), got, want) in enumerate(zip(cases, answers, expected), 1):
            name = f"{what}, script {n} of {len(cases)} (batches of {batch})"
            check(isinstance(got, dict) and "error" not in got, f"{name} runs to its end",
                  got=got.get("error") if isinstance(got, dict) else shown(got)[:200])
            check_lazy(got, want, steps, batch, want["bound"], name)
    return judge


PROBES = {
    "part1_visible": Probe(rules_asked("get_page_type"), PART1_VISIBLE, requests_many, visible(PART1_HINTS)),
    "part1_hidden": Probe(rules_asked("get_page_type"), [PART1_HIDDEN], requests_many,
                          against_xen("requests you have not seen, on your get_page_type")),
    "part2_visible": Probe(rules_asked("get_page_from_l1e"), PART2_VISIBLE, requests_many, visible(PART2_HINTS)),
    "part2_hidden": Probe(rules_asked("get_page_from_l1e"), [PART2_HIDDEN], requests_many,
                          against_xen("requests you have not seen, on your get_page_from_l1e")),
    "part3_visible": Probe(rules_asked("mod_l1_entry"), PART3_VISIBLE, requests_many, visible(PART3_HINTS)),
    "part3_hidden": Probe(rules_asked("mod_l1_entry"), [PART3_HIDDEN], requests_many,
                          against_xen("requests you have not seen, on your mod_l1_entry")),
    "part4_visible": Probe(LAZY_ASKED, LAZY_VISIBLE, unbatched, lazy_judge("your lazy_updates")),
    "part4_hidden": Probe(LAZY_ASKED, LAZY_HIDDEN, unbatched, lazy_judge("your lazy_updates on scripts you have not seen")),

}
