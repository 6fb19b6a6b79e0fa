"""Direct paging under paravirt: a PV guest starts with paging on, on page tables the domain builder
made and mapped read-only; it changes them only with mmu_update, update_va_mapping and mmuext_op,
and Xen validates each change with page types and reference counts (vmkit.xen.mm, after Xen's
mm.c). Every rule is tested with a request it refuses: Xen's errno, and nothing changed."""
import struct

import pytest

import vmkit
import vmkit.guests
from vmkit.xen import Paravirt
from vmkit.xen import abi as xen
from vmkit.xen import grant_tables
from vmkit.xen.layout import PAGE_TABLES, START_INFO
from vmkit.xen.mm import L1, L2, WRITABLE, XEN

PV = "paravirt"
YIELD_FOREVER = vmkit.assemble("again:\nmov ebx, 0\nmov eax, 29\nint 0x82\njmp again")
SPIN = vmkit.assemble("spin:\ninc dword [count]\njmp spin\ncount: dd 0")
P, RW, US, A, D, PWT, PCD, PSE, G = 1, 2, 4, 0x20, 0x40, 8, 0x10, 0x80, 0x100
REQUESTS, DONE = 0x300000, 0x301000            # where the tests put a hypercall's arguments in dom0
UVMF_INVLPG = xen.UVMF_INVLPG


# --- helpers -------------------------------------------------------------------------------------------
def frame_table(m):
    """Each frame's owner, count, type, type count, validated and pinned (a type with no references is
    no type: Xen forgets it when a validation fails)."""
    return [(getattr(p.owner, "domid", p.owner), p.count, p.type if p.type_count else None, p.type_count,
             p.validated and p.type_count > 0, p.pinned) for p in m.xen.mm.pages]


def snapshot(m):
    """Everything a refused request must leave as it was: the frame table, and the memory of every
    live domain (its page tables among it), but for the pages the test writes its requests into."""
    mm = m.xen.mm
    scratch = {REQUESTS >> 12, DONE >> 12}
    memory = b"".join(mm.read(mfn << 12, 4096) for d in m.xen.domains.values() for pfn, mfn in enumerate(d.p2m)
                      if not (d is m and pfn in scratch))
    return frame_table(m), memory


def expected_counts(m):
    """The references every frame should hold, counted from scratch: its allocation, every present
    entry of every table in use, every pin, every domain's page directory, every grant mapping."""
    mm = m.xen.mm
    count = [1 if p.owner is not None else 0 for p in mm.pages]
    typed = [0] * mm.frames
    for mfn, page in enumerate(mm.pages):
        if page.owner in (None, XEN) or not page.validated or page.type not in (L1, L2):
            continue
        entries = mm.table(mfn) if page.type == L1 else mm.table(mfn)[:xen.L2_PAGETABLE_FIRST_XEN_SLOT]
        for entry in entries:
            target = entry >> 12
            if not entry & P or (page.type == L2 and target == mfn):
                continue
            count[target] += 1
            if page.type == L2 or entry & RW:
                typed[target] += 1
        if page.pinned:
            count[mfn] += 1
            typed[mfn] += 1
    for domain in m.xen.domains.values():
        count[domain.guest_table] += 1
        typed[domain.guest_table] += 1
    for mapping in m.xen.maptrack.values():          # a grant's PTE holds none: the grant holds them
        host_pte = 1 if mapping.host_addr else 0
        count[mapping.frame] += mapping.uses - host_pte
        typed[mapping.frame] += 0 if mapping.readonly else mapping.uses - host_pte
    return count, typed


def assert_counts_consistent(m):
    count, typed = expected_counts(m)
    for mfn, page in enumerate(m.xen.mm.pages):
        if page.owner is XEN:
            continue
        assert (page.count, page.type_count) == (count[mfn], typed[mfn]), f"mfn {mfn:#x}: {page}"


def mmu_update(m, *requests, foreigndom=xen.DOMID_SELF):
    """mmu_update from dom0 with `requests` [(ptr, val)]: (result, done, the hypercall's notes)."""
    m.write(REQUESTS, b"".join(xen.MMU_UPDATE.pack(ptr, val) for ptr, val in requests) or b"\0")
    m.put_u32(DONE, 0)
    result, notes = m.call(1, (REQUESTS, len(requests), DONE, foreigndom, 0))
    return result, m.u32(DONE), notes


def mmuext(m, *ops, foreigndom=xen.DOMID_SELF):
    m.write(REQUESTS, b"".join(xen.MMUEXT_OP.pack(cmd, arg1, 0) for cmd, arg1 in ops))
    m.put_u32(DONE, 0)
    result, notes = m.call(26, (REQUESTS, len(ops), DONE, foreigndom, 0))
    return result, m.u32(DONE), notes


def update_va(m, va, pte, flags=UVMF_INVLPG):
    return m.call(14, (va, pte, 0, flags, 0))


def pte_address(m, va):
    """The machine address of the PTE that maps `va` in the domain's current tables."""
    return m.xen.mm.guest_map_l1e(m, va)[0]


def pde_address(m, va):
    return (m.guest_table << 12) + 4 * (va >> 22)


def refused(m, call, errno=xen.EINVAL):
    """Make the call; it must fail with -errno and change nothing. Returns the reason Xen gave."""
    m.write(REQUESTS, bytes(64))                                   # pages touched before the snapshot
    m.put_u32(DONE, 0)
    before = snapshot(m)
    result, notes = call()
    assert result == -errno, notes
    assert snapshot(m) == before
    return notes.get("refused")


@pytest.fixture
def dom0():
    m = Paravirt(YIELD_FOREVER)
    m.write(REQUESTS, bytes(64))
    m.put_u32(DONE, 0)
    return m


# --- the start of day ------------------------------------------------------------------------------------
def test_a_pv_guest_starts_with_paging_on_on_the_builders_tables_mapped_read_only(dom0):
    cr0, cr3 = dom0.cpu["cr0"], dom0.cpu["cr3"]
    assert cr0 & 0x80010001 == 0x80010001                          # PE, WP, PG
    magic, nr_pages, *_rest = xen.START_INFO.unpack(dom0.read(START_INFO, xen.START_INFO.size))
    fields = dict(zip(("pt_base", "nr_pt_frames", "mfn_list"),
                      struct.unpack_from("<3I", dom0.read(START_INFO + xen.SI_PT_BASE, 12))))
    assert fields == {"pt_base": PAGE_TABLES, "nr_pt_frames": 2, "mfn_list": PAGE_TABLES + 2 * 4096}
    assert cr3 == dom0.guest_table << 12 == dom0.p2m[PAGE_TABLES >> 12] << 12
    assert list(struct.unpack(f"<{nr_pages}I", dom0.read(fields["mfn_list"], 4 * nr_pages))) == dom0.p2m
    mm = dom0.xen.mm
    directory, table = mm.pages[dom0.p2m[5]], mm.pages[dom0.p2m[6]]
    assert (directory.type, directory.type_count, directory.pinned) == (L2, 2, True)   # the pin and CR3
    assert (table.type, table.type_count, table.validated) == (L1, 1, True)           # one PDE
    for pfn in (5, 6):                                             # the tables: mapped, read-only
        assert mm.u32(pte_address(dom0, pfn << 12)) & (P | RW) == P
    assert mm.u32(pte_address(dom0, 0x100000)) & (P | RW | US) == P | RW | US
    assert dom0.mapped_frame(0) is None                            # the first page is never mapped
    assert_counts_consistent(dom0)


def test_pseudo_physical_is_not_machine_and_the_m2p_says_which_is_which(dom0):
    domu = dom0.xen.create_domain(SPIN.code)
    assert all(mfn != pfn for pfn, mfn in enumerate(dom0.p2m))     # Xen's own frames come first
    assert dom0.p2m == list(range(dom0.p2m[0], dom0.p2m[0] + 1024))  # dom0: one run, as construct_dom0 takes it
    assert domu.p2m == sorted(domu.p2m, reverse=True)              # a domU: from the top of machine memory down
    assert not set(domu.p2m) & set(dom0.p2m)
    m2p = lambda m, mfn: int.from_bytes(m.cpu.read(xen.MACH2PHYS_VIRT_START + 4 * mfn, 4), "little")  # as the guest reads it
    assert m2p(domu, domu.p2m[0x123]) == 0x123 and m2p(dom0, domu.p2m[0x123]) == 0x123
    assert m2p(domu, 1) == xen.INVALID_M2P_ENTRY                   # Xen's frame: no domain's
    domu.write(0x200000, b"domU")
    assert dom0.xen.mm.read(domu.p2m[0x200] << 12, 4) == b"domU"   # where its "physical" 0x200000 really is
    assert dom0.xen.mm.read(0x200000, 4) != b"domU"


def test_the_pages_of_a_destroyed_domain_go_back_to_the_free_memory(dom0):
    mm = dom0.xen.mm
    free = len(mm.free)
    domu = dom0.xen.create_domain(SPIN.code, 512)
    assert len(mm.free) == free - 512
    dom0.xen.destroy_domain(domu)
    assert len(mm.free) == free and all(mm.pages[mfn].owner is None for mfn in domu.p2m)
    big = [dom0.xen.create_domain(SPIN.code, 8192) for _ in range(len(mm.free) // 8192)]
    assert all(isinstance(d, Paravirt) for d in big) and len(mm.free) < 8192
    assert dom0.xen.create_domain(SPIN.code, 8192) == -xen.ENOMEM       # machine memory has run out
    assert_counts_consistent(dom0)


# --- the story guest ---------------------------------------------------------------------------------------
def test_the_paging_guest_tells_its_story():
    m = vmkit.machine(vmkit.guests.image("pv_paging"), PV)
    result = m.run()
    symbols = m.image.symbols
    new_pd = m.pfn_to_mfn(symbols["new_pd"] >> 12)
    assert result.serial.splitlines() == [
        f"start of day: paging on, the page directory at virtual 0x5000 = machine frame {m.p2m[5]:#x}, "
        "2 page-table frames",
        f"the kernel's first page: pseudo-physical frame 0x100 = machine frame {m.p2m[0x100]:#x}",
        "refused: pin a page directory that is mapped writable: -22",
        f"mmuext_op: pinned machine frame {new_pd:#x} as an L2 table and loaded it (NEW_BASEPTR): 2 ops done",
        f"page fault at {symbols['new_pd'] + 8:#x}, error code 3 (present, write): page tables are read-only",
        "the page directory is unchanged",
        "mmu_update: the window shows: page A",
        "update_va_mapping: the window shows: page B",
        "refused: map the L1 table writable: -22",
        "refused: map a frame that is Xen's: -22",
        "refused: change Xen's part of the page directory: -22",
        "refused: map a 4 MiB page: -22",
        "refused: load a writable data page as page directory: -22",
        "refused: unpin a frame that is not pinned: -22",
        "after all that, the window still shows: page B"]
    assert result.exit_code == 0
    assert m.guest_table == new_pd and m.cpu["cr3"] == new_pd << 12
    page = m.xen.mm.pages[new_pd]
    assert (page.type, page.pinned, page.type_count) == (L2, True, 2)
    old = m.xen.mm.pages[m.p2m[5]]
    assert (old.type, old.pinned, old.type_count) == (L2, True, 1)       # no longer CR3, still pinned
    fault = result.of_kind("trap")[0]
    assert (fault.detail["vector"], fault.detail["error_code"], fault.detail["address"]) == (14, 3, symbols["new_pd"] + 8)
    assert "store to a page table" in fault.detail["why"]
    reasons = [e.detail["refused"] for e in result.of_kind("hypercall") if "refused" in e.detail]
    assert len(reasons) == 7
    assert "in use as a writable page" in reasons[0] and "in use as an L1 page table" in reasons[1]
    assert "belongs to Xen" in reasons[2] and "Xen's private area" in reasons[3] and "PSE" in reasons[4]
    assert "not pinned" in reasons[6]
    assert result.stats["pt_updates"] == 3                             # the new PD's mapping, and the window twice
    assert_counts_consistent(m)


def test_a_store_into_a_page_table_without_a_page_fault_handler_crashes_the_domain():
    source = "mov edi, [esi + 60]\nmov dword [edi + 8], 0x12345007\nmov ebx, 2\nmov ecx, reason\nmov eax, 29\n" \
             "int 0x82\nreason: dd 0"
    m = vmkit.machine(source, PV)
    before = m.xen.mm.read(m.guest_table << 12, 4096)
    result = m.run()
    assert result.exit_code == xen.SHUTDOWN_crash and result.shutdown
    trap = result.of_kind("trap")[0]
    assert (trap.detail["cause"], trap.detail["error_code"], trap.detail["address"]) == ("#PF", 3, PAGE_TABLES + 8)
    assert "store to a page table" in trap.detail["why"]
    assert m.xen.mm.read(m.guest_table << 12, 4096) == before
    assert m.xen_u32(0x1000 + xen.VI_ARCH_CR2) == PAGE_TABLES + 8          # vcpu_info.arch.cr2


# --- each rule, with a request it refuses -----------------------------------------------------------------------
def test_a_page_table_may_not_be_mapped_writable(dom0):
    l1 = dom0.p2m[6]
    why = refused(dom0, lambda: mmu_update(dom0, (pte_address(dom0, 0x3FF000), l1 << 12 | P | RW | A))[::2])
    assert "in use as an L1 page table" in why
    why = refused(dom0, lambda: update_va(dom0, 0x3FF000, dom0.guest_table << 12 | P | RW | A))
    assert "in use as an L2 page table" in why
    assert update_va(dom0, 0x3FF000, l1 << 12 | P | A)[0] == 0      # read-only: allowed
    assert_counts_consistent(dom0)


def test_a_frame_mapped_writable_may_not_become_a_page_table(dom0):
    data = dom0.p2m[0x200]                                         # mapped writable at 0x200000
    why = refused(dom0, lambda: mmuext(dom0, (xen.MMUEXT_PIN_L1_TABLE, data))[::2])
    assert "in use as a writable page" in why
    refused(dom0, lambda: mmuext(dom0, (xen.MMUEXT_NEW_BASEPTR, data))[::2])
    refused(dom0, lambda: mmu_update(dom0, (pde_address(dom0, 0x400000), data << 12 | P | RW | A))[::2])


def test_a_pte_may_only_map_a_frame_the_domain_owns(dom0):
    domu = dom0.xen.create_domain(SPIN.code)
    va = 0x3FF000
    why = refused(dom0, lambda: update_va(dom0, va, domu.p2m[0x100] << 12 | P | A))
    assert f"belongs to domain {domu.domid}, not to domain 0" in why
    assert "belongs to Xen" in refused(dom0, lambda: update_va(dom0, va, dom0.xen.mm.gdt << 12 | P | A))
    assert "belongs to nobody" in refused(dom0, lambda: update_va(dom0, va, dom0.xen.mm.free[0] << 12 | P | A))
    assert "not RAM" in refused(dom0, lambda: update_va(dom0, va, 0xFEB00 << 12 | P | A))       # an I/O page


def test_the_domain_may_only_update_tables_it_owns(dom0):
    domu = dom0.xen.create_domain(SPIN.code)
    theirs = (domu.guest_table << 12) + 4 * 3
    assert "belongs to domain 1" in refused(dom0, lambda: mmu_update(dom0, (theirs, 0))[::2])


@pytest.mark.parametrize("flag, name", [(PWT, "PWT"), (PCD, "PCD"), (G, "GLOBAL"), (PSE, "PAT")])
def test_cache_and_global_bits_are_xens_to_set(dom0, flag, name):
    pte = dom0.p2m[0x200] << 12 | P | RW | A | flag
    assert "bad L1 flags" in refused(dom0, lambda: update_va(dom0, 0x3FF000, pte))


def test_no_4_mib_pages_and_no_changes_to_xens_part_of_the_page_directory(dom0):
    l1 = dom0.p2m[6]
    why = refused(dom0, lambda: mmu_update(dom0, (pde_address(dom0, 0x400000), dom0.p2m[0] << 12 | P | RW | PSE))[::2])
    assert "PSE" in why
    xen_slot = pde_address(dom0, xen.HYPERVISOR_VIRT_START)
    assert "Xen's private area" in refused(dom0, lambda: mmu_update(dom0, (xen_slot, l1 << 12 | P))[::2])
    assert "Xen's private area" in refused(dom0, lambda: mmu_update(dom0, (xen_slot, 0))[::2])


def test_a_linear_page_table_must_be_read_only(dom0):
    directory = dom0.guest_table << 12
    slot = pde_address(dom0, 0x800000)
    assert "write permission" in refused(dom0, lambda: mmu_update(dom0, (slot, directory | P | RW | A))[::2])
    assert mmu_update(dom0, (slot, directory | P | A))[0] == 0    # read-only: the directory maps itself
    assert dom0.read(0x800000 + 2 * 4096 + 4 * 5, 4) == dom0.xen.mm.read((dom0.guest_table << 12) + 20, 4)
    assert_counts_consistent(dom0)


def test_pinning_twice_unpinning_what_is_not_pinned_and_a_table_that_does_not_validate(dom0):
    root = dom0.guest_table
    assert "already pinned" in refused(dom0, lambda: mmuext(dom0, (xen.MMUEXT_PIN_L2_TABLE, root))[::2])
    spare = dom0.p2m[0x3F0]                                        # make it read-only, fill it with a bad PTE
    assert update_va(dom0, 0x3F0000, spare << 12 | P | A)[0] == 0
    assert mmu_update(dom0, (spare << 12, dom0.p2m[6] << 12 | P | RW | A))[0] == 0   # a plain write: not a table yet
    why = refused(dom0, lambda: mmuext(dom0, (xen.MMUEXT_PIN_L1_TABLE, spare))[::2])
    assert "L1 entry 0" in why and "in use as an L1 page table" in why
    assert "not pinned" in refused(dom0, lambda: mmuext(dom0, (xen.MMUEXT_UNPIN_TABLE, spare))[::2])
    assert mmu_update(dom0, (spare << 12, 0))[0] == 0
    assert mmuext(dom0, (xen.MMUEXT_PIN_L1_TABLE, spare))[0] == 0  # now it validates
    assert (dom0.xen.mm.pages[spare].type, dom0.xen.mm.pages[spare].pinned) == (L1, True)
    assert update_va(dom0, 0x3F0000, spare << 12 | P | RW | A)[0] == -xen.EINVAL
    assert mmuext(dom0, (xen.MMUEXT_UNPIN_TABLE, spare))[0] == 0
    assert dom0.xen.mm.pages[spare].type_count == 0
    assert update_va(dom0, 0x3F0000, spare << 12 | P | RW | A)[0] == 0       # a data page again
    assert_counts_consistent(dom0)


def test_unknown_commands_unreadable_lists_and_foreign_domains(dom0):
    domu = dom0.xen.create_domain(SPIN.code)
    ptr = pte_address(dom0, 0x3FF000)
    assert "invalid page update command 3" in refused(dom0, lambda: mmu_update(dom0, (ptr | 3, 0))[::2], xen.ENOSYS)
    refused(dom0, lambda: mmuext(dom0, (99, 0))[::2], xen.ENOSYS)
    refused(dom0, lambda: dom0.call(1, (0x7FFFF000, 1, DONE, xen.DOMID_SELF, 0)), xen.EFAULT)
    refused(dom0, lambda: dom0.call(26, (0x10, 1, DONE, xen.DOMID_SELF, 0)), xen.EFAULT)
    refused(dom0, lambda: mmu_update(dom0, (ptr, 0), foreigndom=0)[::2], xen.ESRCH)       # itself
    refused(dom0, lambda: mmu_update(dom0, (ptr, 0), foreigndom=77)[::2], xen.ESRCH)      # no such domain
    domu.write(REQUESTS, xen.MMU_UPDATE.pack(pte_address(domu, 0x3FF000), dom0.p2m[0x200] << 12 | P | A))
    assert domu.call(1, (REQUESTS, 1, 0, 0, 0))[0] == -xen.ESRCH                           # only dom0 may


def test_update_va_mapping_needs_an_address_below_xen_with_an_l1_table(dom0):
    pte = dom0.p2m[0x200] << 12 | P | A
    assert "Xen's part" in refused(dom0, lambda: update_va(dom0, xen.HYPERVISOR_VIRT_START, pte))
    assert "no L1 table" in refused(dom0, lambda: update_va(dom0, 0x800000, pte))      # beyond the 4 MiB mapped
    # a flush for the vcpus in a bitmap Xen cannot read: -EFAULT, but (as in Xen) after the update
    assert update_va(dom0, 0x3FF000, pte, flags=xen.UVMF_INVLPG | 0x7FFFF000)[0] == -xen.EFAULT
    assert dom0.mapped_frame(0x3FF000) == dom0.p2m[0x200]


def test_a_hypercall_cannot_write_into_a_page_table_either(dom0):
    result, notes = dom0.call(17, (xen.XENVER_extraversion, PAGE_TABLES, 0, 0, 0))   # copy_to_guest
    assert result == -xen.EFAULT and "writable" in notes["fault"]


def test_a_failing_request_ends_the_batch_and_the_ones_before_it_stay_done(dom0):
    window = pte_address(dom0, 0x3FE000)
    good = [(pte_address(dom0, 0x3F0000 + 0x1000 * i), dom0.p2m[0x200 + i] << 12 | P | RW | A) for i in range(3)]
    bad = (window, dom0.p2m[6] << 12 | P | RW | A)
    result, done, notes = mmu_update(dom0, *good, bad, good[0])
    assert (result, done, notes["at"], notes["done"]) == (-xen.EINVAL, 3, 3, 3)
    assert [dom0.mapped_frame(0x3F0000 + 0x1000 * i) for i in range(3)] == dom0.p2m[0x200:0x203]
    assert dom0.mapped_frame(0x3FE000) == dom0.p2m[0x3FE]
    assert_counts_consistent(dom0)


# --- what succeeds ------------------------------------------------------------------------------------------------
def test_mmu_update_moves_the_references_from_the_old_frame_to_the_new(dom0):
    mm = dom0.xen.mm
    old, new = dom0.p2m[0x3FF], dom0.p2m[0x200]
    before = (mm.pages[old].count, mm.pages[new].count, mm.pages[new].type_count)
    assert mmu_update(dom0, (pte_address(dom0, 0x3FF000), new << 12 | P | RW | A))[:2] == (0, 1)
    assert (mm.pages[old].count, mm.pages[new].count, mm.pages[new].type_count) == \
        (before[0] - 1, before[1] + 1, before[2] + 1)
    assert mm.pages[old].type_count == 0                           # no writable mapping of it left
    dom0.write(0x3FF000, b"via the window")
    assert dom0.read(0x200000, 14) == b"via the window"
    assert mmu_update(dom0, (pte_address(dom0, 0x3FF000), 0))[0] == 0                    # unmapped
    assert dom0.mapped_frame(0x3FF000) is None and mm.pages[new].count == before[1]
    assert_counts_consistent(dom0)


def test_preserve_ad_keeps_the_accessed_and_dirty_bits_and_machphys_updates_the_m2p(dom0):
    ptr = pte_address(dom0, 0x200000)
    dom0.write(0x200000, b"x")                                     # the CPU set A and D
    assert dom0.xen.mm.u32(ptr) & (A | D) == A | D
    assert mmu_update(dom0, (ptr | xen.MMU_PT_UPDATE_PRESERVE_AD, dom0.p2m[0x200] << 12 | P | RW))[0] == 0
    assert dom0.xen.mm.u32(ptr) & (A | D) == A | D
    mfn = dom0.p2m[0x201]
    assert mmu_update(dom0, (mfn << 12 | xen.MMU_MACHPHYS_UPDATE, 0x999))[0] == 0
    assert dom0.cpu.read(xen.MACH2PHYS_VIRT_START + 4 * mfn, 4) == (0x999).to_bytes(4, "little")


def test_a_new_page_directory_is_validated_when_pinned_and_the_old_one_let_go_when_unpinned(dom0):
    mm = dom0.xen.mm
    old = dom0.guest_table
    new = dom0.p2m[0x3F0]
    dom0.write(0x3F0000, dom0.read(PAGE_TABLES, 4 * 1008))        # a copy of the guest slots
    assert update_va(dom0, 0x3F0000, new << 12 | P | A)[0] == 0
    result, done, notes = mmuext(dom0, (xen.MMUEXT_PIN_L2_TABLE, new), (xen.MMUEXT_NEW_BASEPTR, new),
                                 (xen.MMUEXT_UNPIN_TABLE, old), (xen.MMUEXT_TLB_FLUSH_LOCAL, 0))
    assert (result, done) == (0, 4) and notes["ops"] == ["pin_l2_table", "new_baseptr", "unpin_table", "tlb_flush_local"]
    assert dom0.guest_table == new and dom0.cpu["cr3"] == new << 12
    assert mm.pages[old].type_count == 0 and not mm.pages[old].validated      # no longer a table
    assert mm.table(new)[xen.L2_PAGETABLE_FIRST_XEN_SLOT] == mm.xen_slots[xen.L2_PAGETABLE_FIRST_XEN_SLOT]
    assert update_va(dom0, PAGE_TABLES, old << 12 | P | RW | A)[0] == 0       # so it may be writable again
    dom0.write(PAGE_TABLES, b"free")
    assert_counts_consistent(dom0)


# --- grants, and several domains ------------------------------------------------------------------------------------
def test_a_page_table_cannot_be_granted_writable(dom0):
    domu = dom0.xen.create_domain(SPIN.code)
    grant_tables.grant(domu, 8, 0, domu.guest_table)
    status = grant_tables.map_grant_ref(dom0, 0x300000, xen.GNTMAP_host_map, 8, domu.domid)[0]
    assert status == xen.GNTST_general_error
    grant_tables.grant(domu, 9, 0, domu.guest_table)
    status, handle, _ = grant_tables.map_grant_ref(dom0, 0x300000, xen.GNTMAP_host_map | xen.GNTMAP_readonly, 9,
                                                   domu.domid)
    assert status == xen.GNTST_okay and dom0.read(0x300000, 4) == domu.xen.mm.read(domu.guest_table << 12, 4)
    with pytest.raises(Exception):
        dom0.write(0x300000, b"no")                                # read-only: a #PF for the CPU, -EFAULT for Xen
    assert_counts_consistent(dom0)
    assert grant_tables.unmap_grant_ref(dom0, 0x300000, handle) == xen.GNTST_okay


def test_the_reference_counts_hold_after_the_split_driver_run():
    m = Paravirt(vmkit.guests.image("pv_dom0"), modules=[vmkit.guests.image("pv_domu")])
    free = len(m.xen.mm.free)
    m.run()
    assert_counts_consistent(m)
    domu = m.xen.every_domain[1]
    assert all(m.xen.mm.pages[mfn].owner is None for mfn in domu.p2m) and len(m.xen.mm.free) == free


# --- batching ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, entries", [
    ({"BATCH": 0}, 1024),                       # one update_va_mapping per update
    ({"BATCH": 1}, 1024),                       # mmu_update with one request
    ({"BATCH": 16}, 64),
    ({"BATCH": 256}, 4),
    ({"BATCH": 64, "MULTICALL": 1}, 16),        # multicalls of 64 update_va_mapping
])
def test_batching_page_table_updates_enters_xen_once_per_batch(options, entries):
    result = vmkit.run(vmkit.guests.image("pv_mmu_batch", UPDATES=1024, **options), PV)
    assert result.exit_code == 0 and result.serial == "the region shows: page B\n"
    assert result.stats["pt_updates"] == 1024
    assert result.stats["hypercalls"] == entries + 5               # and three console writes, the flush, the shutdown
    assert result.stats["multicall_entries"] == (1024 if options.get("MULTICALL") else 0)
    calls = [e.detail["name"] for e in result.of_kind("hypercall")]
    assert calls.count("mmu_update") == (entries if options["BATCH"] and not options.get("MULTICALL") else 0)


# --- dom0 builds a domU, as Xen's toolstack does ---------------------------------------------------------------
def test_dom0_builds_the_domu_by_mapping_its_frames_and_xen_pins_its_page_directory():
    m = vmkit.machine(vmkit.guests.image("pv_dom0"), PV, modules=[vmkit.guests.image("pv_domu")])
    m.run_until(event=lambda e: e.detail.get("domain") == 1)           # the domU's first event
    domu = m.xen.domains[1]
    built = [e.detail for e in m.events if e.kind == "hypercall" and e.detail["domain"] == 0]
    windows = [d for d in built if d["name"] == "update_va_mapping_otherdomain"]
    assert [d["val"] >> 12 for d in windows[:-1]] == [domu.p2m[pfn] for pfn in (0x100, 2, 7, 6, 5, 3)]
    assert windows[-1]["val"] == 0 and all(d["result"] == 0 for d in windows)       # the window emptied last
    pin = next(d for d in built if d["name"] == "mmuext_op")
    assert pin["ops"] == ["pin_l2_table"] and pin["result"] == 0
    fields = struct.unpack_from("<3I", domu.xen_read(START_INFO + xen.SI_PT_BASE, 12))
    assert fields == (0x5000, 2, 0x7000)
    assert struct.unpack_from("<I", domu.xen_read(START_INFO + xen.SI_STORE_MFN, 4))[0] == domu.p2m[4]
    assert list(struct.unpack("<1024I", domu.xen_read(0x7000, 4096))) == domu.p2m
    mm = m.xen.mm
    assert (mm.pages[domu.p2m[5]].type, mm.pages[domu.p2m[5]].pinned, mm.pages[domu.p2m[5]].type_count) == (L2, True, 2)
    assert mm.pages[domu.p2m[6]].type == L1 and domu.guest_table == domu.p2m[5]
    assert m.mapped_frame(0x3F0000) is None                              # dom0 maps none of its frames now
    assert_counts_consistent(m)


def test_only_dom0_maps_another_domains_frames_and_never_a_page_table_writable():
    m = vmkit.machine(vmkit.guests.image("pv_dom0"), PV, modules=[vmkit.guests.image("pv_domu")])
    m.run_until(event=lambda e: e.detail.get("domain") == 1)
    domu = m.xen.domains[1]
    table = domu.p2m[6]
    m.write(REQUESTS, bytes(64))
    why = refused(m, lambda: m.call(22, (0x3F0000, table << 12 | P | RW | A, 0, UVMF_INVLPG, 1)))
    assert "in use as an L1 page table" in why
    assert m.call(22, (0x3F0000, table << 12 | P | A, 0, UVMF_INVLPG, 1))[0] == 0    # read-only: dom0 may look
    assert m.read(0x3F0000, 4) == mm_word(m, table)
    assert domu.call(22, (0x3F0000, m.p2m[0x100] << 12 | P | A, 0, UVMF_INVLPG, 0))[0] == -xen.ESRCH


def mm_word(m, mfn):
    return m.xen.mm.read(mfn << 12, 4)


def test_a_page_table_rule_that_says_yes_without_validating_is_a_teaching_error_not_a_crash():
    """A lab's get_page_type that returns True without typing the frame leaves the page directory
    without Xen's slots; the CPU could not load a segment from it (Unicorn would crash the process),
    so Xen refuses to run on it and says which rule to mend."""
    def says_yes(mm, mfn, type_):
        return True
    with pytest.raises(vmkit.GuestError, match="get_page_type.*validate"):
        Paravirt(vmkit.guests.image("pv_hello"), page_table_rules={"get_page_type": says_yes}).run()
