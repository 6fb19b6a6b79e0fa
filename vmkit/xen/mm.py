"""Direct paging: machine memory, the frame table, and every page-table update a PV guest asks for,
validated with page types and reference counts as Xen's xen/arch/x86/mm.c does it.

A PV guest's page tables are its own, in its own frames, and they hold *machine* frame numbers: the
CPU walks them as they are. Xen stays in control by never letting the guest write them. Every frame
has an entry in Xen's frame table (struct page_info): its owner, a general reference count, and a
*type* with a type count. The type says what the frame is in use as: an L1 page table, an L2 page
table (the page directory), or a page mapped writable somewhere; a frame has one type at a time,
and changes it only when its type count is 0. Then:

* a PTE that maps a frame writable takes a reference of type "writable" on it, so a frame in use as
  a page table can never be mapped writable, and a frame mapped writable can never become one;
* a PTE may only map a frame its domain owns (get_page checks the owner);
* a frame becomes a page table by validation: every entry in it is checked, and takes its reference,
  before the frame gets the type (alloc_l1_table, alloc_l2_table); it stops being one when its type
  count falls to 0, and its entries let their references go (free_l1_table, free_l2_table).

The guest asks for changes with three hypercalls: mmu_update (a batch of {ptr, val}: write val at
machine address ptr, validated as an entry of whatever table ptr is in), update_va_mapping (the PTE
that maps one virtual address) and mmuext_op (pin a frame as a table, unpin it, load a new page
directory, flush the TLB). A request that breaks a rule fails with Xen's errno, changes nothing, and
ends the batch; the ones before it stay done (the done count says how many). What refused it is
noted in the hypercall's event as Xen's MEM_LOG would say it.

The code follows the non-PAE x86_32 hypervisor of Xen's tree before commit 84d54d5d8b (May 2008),
whose two-level tables vmkit's PC walks: get_page, get_page_type, get_page_from_l1e,
get_page_from_l2e, mod_l1_entry, mod_l2_entry, new_guest_cr3, do_mmu_update, do_mmuext_op and
do_update_va_mapping keep their names. What vmkit leaves out: I/O pages (no domain here may map
one), foreign domains DOMID_IO and DOMID_XEN, shadow and translated modes, the writable page-table
assist (VMASST_TYPE_writable_pagetables: a store to a page table is a page fault for the guest, never
emulated), multi-vcpu flushes, and preemption. vmkit keeps no TLB of its own: after every change Xen
makes to a domain's tables it flushes Unicorn's, so a guest that forgets UVMF_INVLPG is not caught.

A lab replaces three of the rules with its own (PAGE_TABLE_RULES names them: get_page_type,
get_page_from_l1e, mod_l1_entry): `Paravirt(image, page_table_rules={...})` hands them to this
domain's Xen, whose frame table then calls them wherever it would call its own, each as rule(mm, ...)
with the frame table first.

Long because: the rules (references, types, validation) and the three hypercalls that apply them are
one piece of Xen, and each rule is kept as one function named after Xen's, so that it can be read
beside mm.c.
"""
import ctypes
import mmap
import struct
import types

from ..errors import GuestError
from . import abi as xen
from .layout import GDT_VIRT_START, PERDOMAIN_VIRT_START, RO_MPT

PAGE = xen.PAGE_SIZE
ENTRIES = PAGE // 4
P, RW, US, A, D, PSE = (xen.PAGE_PRESENT, xen.PAGE_RW, xen.PAGE_USER, xen.PAGE_ACCESSED, xen.PAGE_DIRTY,
                        xen.PAGE_PSE)
FRAME = ~xen.PTE_FLAGS & 0xFFFFFFFF

# page types (asm-x86/mm.h: PGT_none, PGT_l1_page_table, PGT_l2_page_table, PGT_writable_page)
NONE, L1, L2, WRITABLE = "none", "l1_page_table", "l2_page_table", "writable_page"
XEN = "xen"                       # the owner of Xen's own frames (dom_xen)
ROW = struct.Struct(f"<{ENTRIES}I")


class Page:
    """One frame's entry in the frame table (struct page_info): who owns it, how many references it
    has (the allocation holds one), its type, how many references of that type, and whether the type
    is validated and pinned."""
    __slots__ = ("owner", "count", "type", "type_count", "validated", "pinned")

    def __init__(self):
        self.owner, self.count, self.type, self.type_count, self.validated, self.pinned = None, 0, NONE, 0, False, False

    def __repr__(self):
        owner = getattr(self.owner, "domid", self.owner)
        flags = (" validated" if self.validated else "") + (" pinned" if self.pinned else "")
        return f"Page(owner={owner}, count={self.count}, type={self.type}, type_count={self.type_count}{flags})"


def _flags(entry):
    return entry & xen.PTE_FLAGS


def _mfn(entry):
    return entry >> 12


class FrameTable:
    """Machine memory and Xen's frame table: every frame's owner, references and type.

    Machine memory is one host buffer that every domain's CPU sees as its physical memory (the CPU
    walks the guests' tables, which name machine frames); what a domain can reach is what its
    validated page tables map. Xen's own frames come first: the machine-to-physical table, the page
    tables of Xen's part of every address space, its GDT. `rules` ({name: rule(mm, ...)}, names from
    PAGE_TABLE_RULES) take the place of this frame table's own methods of those names."""

    def __init__(self, size, rules=None):
        self.size = size
        self.frames = size // PAGE
        self._buffer = mmap.mmap(-1, size)              # zero, and backed by the host only when touched
        self._view = (ctypes.c_char * size).from_buffer(self._buffer)
        self.address = ctypes.addressof(self._view)
        self.pages = [Page() for _ in range(self.frames)]
        self.why = None                                 # what refused the last request (Xen's MEM_LOG)
        self.flush = lambda domain: None                # Xen's TLB flush: set by the hypervisor
        m2p_frames = -(-self.frames * 4 // PAGE)
        self.m2p = PAGE                                 # frame 0 is never used
        own = 1 + m2p_frames
        self.mpt_l1, self.perdomain_l1, self.gdt, self.zero = own, own + 1, own + 2, own + 3
        self.first_free = own + 4
        for mfn in range(self.first_free):
            page = self.pages[mfn]
            page.owner, page.count = XEN, 1
        self.free = list(range(self.first_free, self.frames))
        self.write(self.m2p, b"\xff" * (self.frames * 4))          # INVALID_M2P_ENTRY everywhere
        for i in range(m2p_frames):                                 # read-only, and readable from ring 3
            self.put_u32((self.mpt_l1 << 12) + 4 * i, ((1 + i) << 12) | P | US | A)
        for i in range(xen.FIRST_RESERVED_GDT_BYTE // PAGE):        # the guest's own GDT frames: none
            self.put_u32((self.perdomain_l1 << 12) + 4 * i, (self.zero << 12) | P | A)
        self.put_u32((self.perdomain_l1 << 12) + 4 * (xen.FIRST_RESERVED_GDT_BYTE // PAGE), (self.gdt << 12) | P | A)
        # the L2 slots of Xen's part, copied into every page directory it validates
        self.xen_slots = {RO_MPT >> 22: (self.mpt_l1 << 12) | P | US | A,
                          PERDOMAIN_VIRT_START >> 22: (self.perdomain_l1 << 12) | P | RW | A}
        assert GDT_VIRT_START >> 22 in self.xen_slots
        for name, rule in (rules or {}).items():       # a lab's rules, called wherever Xen's would be
            if name not in PAGE_TABLE_RULES:
                raise ValueError(f"no page-table rule {name!r}: a lab may replace {', '.join(PAGE_TABLE_RULES)}")
            setattr(self, name, types.MethodType(rule, self))

    # --- machine memory ----------------------------------------------------------------------------
    def read(self, address, size):
        return self._buffer[address:address + size]

    def write(self, address, data):
        self._buffer[address:address + len(data)] = bytes(data)

    def u32(self, address):
        return int.from_bytes(self._buffer[address:address + 4], "little")

    def put_u32(self, address, value):
        self._buffer[address:address + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")

    def table(self, mfn):
        """The 1024 entries of the page table in frame `mfn`."""
        return ROW.unpack_from(self._buffer, mfn << 12)

    def set_gpfn_from_mfn(self, mfn, pfn):
        """The machine-to-physical table: which pseudo-physical frame of its owner `mfn` is."""
        self.put_u32(self.m2p + 4 * mfn, pfn)

    def gpfn_from_mfn(self, mfn):
        return self.u32(self.m2p + 4 * mfn)

    def valid(self, mfn):
        return 0 <= mfn < self.frames

    # --- allocation ----------------------------------------------------------------------------------
    def allocate(self, owner, count, from_top=False):
        """`count` free frames for `owner`, scrubbed, each with its allocation reference; None when
        there are not enough. dom0's come in one run from the bottom, as Xen's construct_dom0 takes
        them; a domU's from the top down, so its pseudo-physical frame n is not machine frame n."""
        if count > len(self.free):
            return None
        if from_top:
            taken, self.free = self.free[:-count - 1:-1] if count else [], self.free[:len(self.free) - count]
        else:
            taken, self.free = self.free[:count], self.free[count:]
        for mfn in taken:
            page = self.pages[mfn]
            page.owner, page.count, page.type, page.type_count = owner, 1, NONE, 0
            page.validated = page.pinned = False
            self.write(mfn << 12, bytes(PAGE))
        return taken

    def _free_frame(self, mfn):
        page = self.pages[mfn]
        page.owner, page.type, page.type_count, page.validated, page.pinned = None, NONE, 0, False, False
        self.set_gpfn_from_mfn(mfn, xen.INVALID_M2P_ENTRY)
        self.free.append(mfn)

    def owned_by(self, domain):
        return [mfn for mfn, page in enumerate(self.pages) if page.owner is domain]

    def relinquish(self, domain):
        """A dying domain lets its memory go (Xen's domain_relinquish_resources): its page directory
        and pins drop their references, every table's entries are released, and each frame loses its
        allocation reference. A frame another domain still maps (a grant) lives until that mapping
        goes."""
        if domain.guest_table:
            self.put_page_and_type(domain.guest_table)
            domain.guest_table = 0
        owned = self.owned_by(domain)
        for mfn in owned:
            page = self.pages[mfn]
            if page.pinned:
                page.pinned = False
                self.put_page_and_type(mfn)
        for mfn in owned:                               # tables still typed (a loop of references)
            page = self.pages[mfn]
            if page.type in (L1, L2) and page.validated:
                page.validated = False
                self._free_page_type(mfn, page.type)
            page.type_count = 0
        for mfn in owned:
            self.put_page(mfn)                          # the allocation reference

    # --- references: get_page, put_page, get_page_type, put_page_type ---------------------------------
    def refuse(self, why):
        self.why = why
        return False

    def get_page(self, mfn, domain):
        """A general reference on frame `mfn`, which `domain` must own."""
        page = self.pages[mfn] if self.valid(mfn) else None
        if page is None or page.count == 0 or page.owner is not domain:
            owner = "nobody" if page is None or page.count == 0 else \
                "Xen" if page.owner is XEN else f"domain {page.owner.domid}"
            return self.refuse(f"mfn {mfn:#x} belongs to {owner}, not to domain {domain.domid}")
        page.count += 1
        return True

    def put_page(self, mfn):
        page = self.pages[mfn]
        page.count -= 1
        if page.count == 0:
            self._free_frame(mfn)

    def get_page_type(self, mfn, type_):
        """A reference of type `type_` on frame `mfn`: the frame must have that type already, or no
        references of any type, and then takes it, validated first if it is a page table."""
        page = self.pages[mfn]
        if page.type_count == 0:
            if page.type != type_:
                page.type, page.validated = type_, type_ == WRITABLE
                self.flush(page.owner)                 # Xen flushes stale TLB entries on a change of type
        elif page.type != type_:
            return self.refuse(f"mfn {mfn:#x} is in use as {_a(page.type)} ({page.type_count} "
                               f"reference{'s' if page.type_count > 1 else ''}): it cannot be used as "
                               f"{_a(type_)} too")
        elif not page.validated:
            return self.refuse(f"mfn {mfn:#x} is being validated as {_a(type_)}: it cannot refer to itself")
        page.type_count += 1
        if not page.validated:
            if not self.alloc_page_type(mfn, type_):
                page.type, page.type_count = NONE, 0    # nothing kept: the frame is as if never typed
                return False
            page.validated = True
        return True

    def put_page_type(self, mfn):
        page = self.pages[mfn]
        page.type_count -= 1
        if page.type_count == 0 and page.type in (L1, L2) and page.validated:
            page.validated = False                      # a table no longer in use: its entries let go
            self._free_page_type(mfn, page.type)

    def get_page_and_type(self, mfn, domain, type_):
        if not self.get_page(mfn, domain):
            return False
        if not self.get_page_type(mfn, type_):
            self.put_page(mfn)
            return False
        return True

    def put_page_and_type(self, mfn):
        self.put_page_type(mfn)
        self.put_page(mfn)

    # --- validating a frame as a page table -------------------------------------------------------
    def alloc_page_type(self, mfn, type_):
        """Validate frame `mfn` as a page table of `type_` (L1 or L2): every entry is checked and takes
        its references; when one fails, those taken are let go and the answer is False."""
        return self._alloc_l1_table(mfn) if type_ == L1 else self._alloc_l2_table(mfn)

    def _free_page_type(self, mfn, type_):
        if type_ == L1:
            owner = self.pages[mfn].owner
            for entry in self.table(mfn):
                self.put_page_from_l1e(entry, owner)
        else:
            for entry in self.table(mfn)[:xen.L2_PAGETABLE_FIRST_XEN_SLOT]:
                self.put_page_from_l2e(entry, mfn)
        self.flush(self.pages[mfn].owner)

    def _alloc_l1_table(self, mfn):
        owner = self.pages[mfn].owner
        entries = self.table(mfn)
        for i, entry in enumerate(entries):
            if not self.get_page_from_l1e(entry, owner):
                self.why = f"L1 entry {i} of mfn {mfn:#x} ({entry:#010x}): {self.why}"
                for earlier in entries[:i]:
                    self.put_page_from_l1e(earlier, owner)
                return False
        return True

    def _alloc_l2_table(self, mfn):
        owner = self.pages[mfn].owner
        entries = self.table(mfn)
        for i, entry in enumerate(entries[:xen.L2_PAGETABLE_FIRST_XEN_SLOT]):
            if not self.get_page_from_l2e(entry, mfn, owner):
                self.why = f"L2 entry {i} of mfn {mfn:#x} ({entry:#010x}): {self.why}"
                for earlier in entries[:i]:
                    self.put_page_from_l2e(earlier, mfn)
                return False
        for slot in range(xen.L2_PAGETABLE_FIRST_XEN_SLOT, ENTRIES):      # Xen's private mappings
            self.put_u32((mfn << 12) + 4 * slot, self.xen_slots.get(slot, 0))
        return True

    # --- what one entry refers to -----------------------------------------------------------------
    def get_page_from_l1e(self, l1e, domain):
        """The references a PTE holds: none when it is not present; on the frame it maps, which
        `domain` must own, of type writable when it maps it writable."""
        if not l1e & P:
            return True
        if _flags(l1e) & xen.L1_DISALLOW_MASK:
            return self.refuse(f"bad L1 flags {_flags(l1e) & xen.L1_DISALLOW_MASK:#x} (PAT, PCD, PWT and "
                               f"GLOBAL are Xen's to set)")
        mfn = _mfn(l1e)
        if not self.valid(mfn):
            return self.refuse(f"mfn {mfn:#x} is not RAM: an I/O page, which this domain may not map")
        if l1e & RW:
            if not self.get_page_and_type(mfn, domain, WRITABLE):
                if self.pages[mfn].type in (L1, L2) and self.pages[mfn].owner is domain:
                    self.why += " (a page table may not be mapped writable: Xen could not check the stores)"
                return False
            return True
        return self.get_page(mfn, domain)

    def put_page_from_l1e(self, l1e, domain):
        if not l1e & P or not self.valid(_mfn(l1e)):
            return
        if l1e & RW:
            self.put_page_and_type(_mfn(l1e))
        else:
            self.put_page(_mfn(l1e))

    def get_page_from_l2e(self, l2e, pfn, domain):
        """A PDE refers to an L1 table (which it validates, if no PDE did yet), or, read-only, to a
        page directory already in use: a linear page table."""
        if not l2e & P:
            return True
        if _flags(l2e) & xen.L2_DISALLOW_MASK:
            bad = _flags(l2e) & xen.L2_DISALLOW_MASK
            return self.refuse(f"bad L2 flags {bad:#x}" + (" (PSE: no 4 MiB pages for a PV guest)" if bad & PSE else ""))
        mfn = _mfn(l2e)
        if not self.valid(mfn):
            return self.refuse(f"mfn {mfn:#x} is not RAM")
        if self.get_page_and_type(mfn, domain, L1):
            return True
        why = self.why
        if self._get_l2_linear_pagetable(l2e, pfn, domain):
            return True
        if self.pages[mfn].type != L2 and mfn != pfn:
            self.why = why                              # not a linear page table: why it is no L1 table
        return False

    def _get_l2_linear_pagetable(self, pde, pde_pfn, domain):
        if pde & RW:
            return self.refuse("attempt to create a linear page table with write permission")
        mfn = _mfn(pde)
        if mfn != pde_pfn:
            if not self.get_page(mfn, domain):
                return False
            page = self.pages[mfn]
            if page.type != L2 or not page.validated:
                self.put_page(mfn)
                return self.refuse(f"mfn {mfn:#x} is not a page directory in use")
            page.type_count += 1
        return True

    def put_page_from_l2e(self, l2e, pfn):
        if l2e & P and _mfn(l2e) != pfn and self.valid(_mfn(l2e)):
            self.put_page_and_type(_mfn(l2e))

    # --- changing one entry -------------------------------------------------------------------------
    def mod_l1_entry(self, address, nl1e, domain, foreign, preserve_ad=False):
        """Write `nl1e` at machine address `address`, an entry of a validated L1 table of `domain`,
        taking the references the new entry needs (on frames of `foreign`) and dropping the old one's."""
        ol1e = self.u32(address)
        if nl1e & P:
            if _flags(nl1e) & xen.L1_DISALLOW_MASK:
                return self.refuse(f"bad L1 flags {_flags(nl1e) & xen.L1_DISALLOW_MASK:#x}")
            if (ol1e ^ nl1e) & (FRAME | P | RW) == 0:               # the same frame, rights and presence
                self.put_u32(address, nl1e | (ol1e & (A | D) if preserve_ad else 0))
                return True
            if not self.get_page_from_l1e(nl1e, foreign):
                return False
        self.put_u32(address, nl1e | (ol1e & (A | D) if preserve_ad else 0))
        self.put_page_from_l1e(ol1e, domain)
        return True

    def mod_l2_entry(self, address, nl2e, mfn, domain, preserve_ad=False):
        slot = (address & 0xFFF) // 4
        if slot >= xen.L2_PAGETABLE_FIRST_XEN_SLOT:
            return self.refuse(f"illegal L2 update in Xen's private area (slot {slot}: {slot << 22:#x} and up "
                               f"are Xen's)")
        ol2e = self.u32(address)
        if nl2e & P:
            if _flags(nl2e) & xen.L2_DISALLOW_MASK:
                bad = _flags(nl2e) & xen.L2_DISALLOW_MASK
                return self.refuse(f"bad L2 flags {bad:#x}" + (" (PSE: no 4 MiB pages for a PV guest)" if bad & PSE else ""))
            if (ol2e ^ nl2e) & (FRAME | P) == 0:
                self.put_u32(address, nl2e | (ol2e & (A | D) if preserve_ad else 0))
                return True
            if not self.get_page_from_l2e(nl2e, mfn, domain):
                return False
        self.put_u32(address, nl2e | (ol2e & (A | D) if preserve_ad else 0))
        self.put_page_from_l2e(ol2e, mfn)
        return True

    def new_guest_cr3(self, domain, mfn):
        """MMUEXT_NEW_BASEPTR: `mfn` becomes the page directory (validated, if it is not in use yet)."""
        if not self.get_page_and_type(mfn, domain, L2):
            self.why = f"cannot install mfn {mfn:#x} as the page directory: {self.why}"
            return False
        old, domain.guest_table = domain.guest_table, mfn
        domain.load_page_directory(mfn)
        if old:
            self.put_page_and_type(old)
        return True

    def check_page_directory(self, mfn):
        """Before the CPU runs on page directory `mfn`: it must be a validated L2 table, which holds
        Xen's own slots (the GDT, the machine-to-physical table), copied in when it was validated
        (`_alloc_l2_table`). A page-table rule that says yes without typing and validating the frame
        leaves them out, and the CPU could not even load a segment: a GuestError that says so."""
        page = self.pages[mfn]
        missing = [slot for slot, entry in self.xen_slots.items() if self.u32((mfn << 12) + 4 * slot) != entry]
        wrong = ([] if page.type == L2 else [f"it is typed as {_a(page.type)}"]) + \
                ([] if page.validated else ["it was never validated"]) + \
                ([f"Xen's own slots {', '.join(map(str, missing))} are missing"] if missing else [])
        if wrong:
            raise GuestError(
                f"the page directory in mfn {mfn:#x} cannot be run on: {'; '.join(wrong)} (Xen's GDT is mapped "
                f"through those slots). get_page_type(mfn, L2) must give the frame its type and validate it "
                f"(alloc_page_type, which copies Xen's slots in) before it says yes (Xen's xen/arch/x86/mm.c)", None)

    def guest_map_l1e(self, domain, va):
        """The machine address of the PTE for `va` in the domain's current tables, and its L1's mfn;
        None when the PDE is not present (or maps a 4 MiB page)."""
        pde = self.u32((domain.guest_table << 12) + 4 * (va >> 22))
        if pde & (P | PSE) != P:
            return None
        return (pde & FRAME) + 4 * ((va >> 12) & 0x3FF), _mfn(pde)

    # --- grant mappings (create_grant_va_mapping, destroy_grant_va_mapping) --------------------------
    def create_grant_va_mapping(self, domain, va, frame, readonly):
        """Point the PTE for `va` at the granted frame (the grant holds the references), dropping the
        old entry's; False when no L1 table covers `va`."""
        found = self.guest_map_l1e(domain, va)
        if found is None:
            return self.refuse(f"no L1 table maps {va:#x}")
        address, _ = found
        old = self.u32(address)
        self.put_u32(address, (frame << 12) | P | A | D | US | (0 if readonly else RW))
        self.put_page_from_l1e(old, domain)
        self.flush(domain)
        return True

    def destroy_grant_va_mapping(self, domain, va, frame):
        found = self.guest_map_l1e(domain, va)
        if found is None or _mfn(self.u32(found[0])) != frame:
            return self.refuse(f"the PTE for {va:#x} does not map mfn {frame:#x}")
        self.put_u32(found[0], 0)
        self.flush(domain)
        return True


# The rules a lab may replace (FrameTable(rules=...), Paravirt(page_table_rules=...)), each called as
# rule(mm, ...) like the method it stands for.
PAGE_TABLE_RULES = {"get_page_type": FrameTable.get_page_type, "get_page_from_l1e": FrameTable.get_page_from_l1e,
                    "mod_l1_entry": FrameTable.mod_l1_entry}


def _a(type_):
    return {L1: "an L1 page table", L2: "an L2 page table (a page directory)", WRITABLE: "a writable page",
            NONE: "nothing"}[type_]


# --- the hypercalls ---------------------------------------------------------------------------------------
def _foreign(domain, domid):
    """set_foreigndom: the domain whose frames the new entries may map (FD)."""
    if domid == xen.DOMID_SELF:
        return domain
    mm = domain.xen.mm
    if domid == domain.domid:
        return mm.refuse("cannot specify itself as foreign domain") or None
    other = domain.xen.domains.get(domid)
    if other is None:
        return mm.refuse(f"unknown domain {domid}") or None
    if not domain.privileged:
        return mm.refuse(f"only dom0 may map domain {domid}'s frames") or None
    return other


def _done(domain, pdone, done):
    if pdone:
        try:
            domain.put_u32(pdone, done)
        except Exception:                         # copy_to_guest's result is not checked either
            pass


def _refused(domain, index, why):
    domain.note(refused=why, at=index)


def mmu_update(domain, ureqs, count, pdone, foreigndom):
    """HYPERVISOR_mmu_update(reqs, count, done, foreigndom): each request {u64 ptr, u64 val};
    ptr's low two bits say what to do (MMU_NORMAL_PT_UPDATE: *ptr = val, checked; ptr is the machine
    address of the entry, in any table or page of the caller; MMU_MACHPHYS_UPDATE: the M2P entry of
    frame ptr >> 12 becomes val). The first request that fails ends the batch with -EINVAL (or
    -EFAULT, -ENOSYS); `done` says how many went through."""
    mm = domain.xen.mm
    count &= ~xen.MMU_UPDATE_PREEMPTED
    foreign = _foreign(domain, foreigndom)
    if foreign is None:
        _refused(domain, 0, mm.why)
        _done(domain, pdone, 0)
        return -xen.ESRCH
    rc = 0
    done = 0
    shown = []                                                    # the first few requests, for the event
    for i in range(count):
        try:
            ptr, val = domain.unpack(xen.MMU_UPDATE, ureqs + i * xen.MMU_UPDATE.size)
            if i < 4:
                shown.append((ptr, val))
        except Exception as bad:                                  # BadAddress: the requests are unreadable
            domain.note(fault=str(bad))
            rc = -xen.EFAULT
            break
        cmd = ptr & 3
        ptr &= 0xFFFFFFFF & ~3
        val &= 0xFFFFFFFF
        mm.why = None
        if cmd in (xen.MMU_NORMAL_PT_UPDATE, xen.MMU_PT_UPDATE_PRESERVE_AD):
            okay = _normal_update(mm, domain, foreign, ptr, val, cmd == xen.MMU_PT_UPDATE_PRESERVE_AD)
        elif cmd == xen.MMU_MACHPHYS_UPDATE:
            okay = mm.get_page(ptr >> 12, foreign)
            if okay:
                mm.set_gpfn_from_mfn(ptr >> 12, val)
                mm.put_page(ptr >> 12)
        else:
            mm.why = f"invalid page update command {cmd}"
            rc, okay = -xen.ENOSYS, False
        if not okay:
            rc = rc or -xen.EINVAL
            _refused(domain, i, mm.why)
            break
        done += 1
        domain.stats["pt_updates"] += 1
    mm.flush(domain)
    domain.note(count=count, done=done, requests=shown)
    _done(domain, pdone, done)
    return rc


def _normal_update(mm, domain, foreign, ptr, val, preserve_ad):
    mfn = ptr >> 12
    if not mm.get_page(mfn, domain):
        mm.why = f"could not get page for normal update: {mm.why}"
        return False
    page = mm.pages[mfn]
    okay = False
    if page.type in (L1, L2) and mm.get_page_type(mfn, page.type):
        okay = (mm.mod_l1_entry(ptr, val, domain, foreign, preserve_ad) if page.type == L1
                else mm.mod_l2_entry(ptr, val, mfn, domain, preserve_ad))
        mm.put_page_type(mfn)
    elif mm.get_page_type(mfn, WRITABLE):                          # not a page table: a plain write
        mm.put_u32(ptr, val)
        okay = True
        mm.put_page_type(mfn)
    mm.put_page(mfn)
    return okay


def update_va_mapping(domain, va, val_lo, val_hi, flags, foreigndom=xen.DOMID_SELF):
    """HYPERVISOR_update_va_mapping(va, new PTE low and high words, flags): mod_l1_entry on the PTE
    that maps `va` in the current page directory, then the flush the flags ask for (UVMF_INVLPG,
    UVMF_TLB_FLUSH; UVMF_ALL or a pointer to a vcpu bitmap above the two low bits).
    update_va_mapping_otherdomain adds `foreigndom`: the domain whose frame the PTE maps (dom0 only)."""
    mm = domain.xen.mm
    mm.why = None
    rc = 0
    foreign = _foreign(domain, foreigndom)
    if foreign is None:
        _refused(domain, 0, mm.why)
        return -xen.ESRCH
    if va >= xen.HYPERVISOR_VIRT_START:
        mm.why = f"{va:#x} is in Xen's part of the address space"
        rc = -xen.EINVAL
    else:
        found = mm.guest_map_l1e(domain, va)
        if found is None:
            mm.why = f"no L1 table maps {va:#x} (its PDE is not present)"
            rc = -xen.EINVAL
        elif not mm.mod_l1_entry(found[0], val_lo & 0xFFFFFFFF, domain, foreign):
            rc = -xen.EINVAL
        else:
            domain.stats["pt_updates"] += 1
    flush = flags & xen.UVMF_FLUSHTYPE_MASK
    target = flags & ~xen.UVMF_FLUSHTYPE_MASK
    if flush and target not in (xen.UVMF_LOCAL, xen.UVMF_ALL):
        try:
            domain.u32(target)                                     # the vcpu bitmap: one vcpu here
        except Exception:
            rc = -xen.EFAULT
    mm.flush(domain)
    domain.note(va=va, val=val_lo & 0xFFFFFFFF,
                flush={xen.UVMF_NONE: None, xen.UVMF_TLB_FLUSH: "tlb", xen.UVMF_INVLPG: "invlpg"}.get(flush, flush))
    if rc:
        _refused(domain, 0, mm.why)
    return rc


PIN_TYPES = {xen.MMUEXT_PIN_L1_TABLE: L1, xen.MMUEXT_PIN_L2_TABLE: L2}


def mmuext_op(domain, uops, count, pdone, foreigndom):
    """HYPERVISOR_mmuext_op(ops, count, done, foreigndom): each op {cmd, arg1, arg2}. PIN_L1_TABLE and
    PIN_L2_TABLE validate frame arg1 as a table and keep it one (the pin holds a typed reference);
    UNPIN_TABLE lets it go; NEW_BASEPTR loads frame arg1 as the page directory; TLB_FLUSH_LOCAL and
    INVLPG_LOCAL (arg1: the address) flush. Pinning an L3 or L4 is ignored on two-level paging."""
    mm = domain.xen.mm
    count &= ~xen.MMU_UPDATE_PREEMPTED
    foreign = _foreign(domain, foreigndom)
    if foreign is None:
        _refused(domain, 0, mm.why)
        _done(domain, pdone, 0)
        return -xen.ESRCH
    rc = 0
    done = 0
    ops = []
    for i in range(count):
        try:
            cmd, arg1, arg2 = domain.unpack(xen.MMUEXT_OP, uops + i * xen.MMUEXT_OP.size)
        except Exception as bad:
            domain.note(fault=str(bad))
            rc = -xen.EFAULT
            break
        mm.why = None
        ops.append(xen.MMUEXT_NAMES.get(cmd, str(cmd)))
        okay = True
        if cmd in PIN_TYPES:
            okay = mm.get_page_and_type(arg1, foreign, PIN_TYPES[cmd])
            if not okay:
                mm.why = f"error while pinning mfn {arg1:#x}: {mm.why}"
            elif mm.pages[arg1].pinned:
                mm.put_page_and_type(arg1)
                okay = mm.refuse(f"mfn {arg1:#x} is already pinned")
            else:
                mm.pages[arg1].pinned = True
        elif cmd in (xen.MMUEXT_PIN_L3_TABLE, xen.MMUEXT_PIN_L4_TABLE):
            pass                                                   # no such level: ignored
        elif cmd == xen.MMUEXT_UNPIN_TABLE:
            okay = mm.get_page(arg1, domain)
            if okay and mm.pages[arg1].pinned:
                mm.pages[arg1].pinned = False
                mm.put_page_and_type(arg1)
                mm.put_page(arg1)
            elif okay:
                mm.put_page(arg1)
                okay = mm.refuse(f"mfn {arg1:#x} is not pinned")
        elif cmd == xen.MMUEXT_NEW_BASEPTR:
            okay = mm.new_guest_cr3(domain, arg1)
        elif cmd in (xen.MMUEXT_TLB_FLUSH_LOCAL, xen.MMUEXT_INVLPG_LOCAL, 10, 11):
            mm.flush(domain)
        elif cmd in (8, 9):                                        # TLB_FLUSH_MULTI, INVLPG_MULTI: a vcpu mask
            try:
                domain.u32(arg2)
            except Exception:
                okay = mm.refuse("the vcpu mask cannot be read")
            mm.flush(domain)
        else:
            mm.why = f"invalid extended page-table command {cmd}" + (" (not modelled by vmkit)" if cmd <= 20 else "")
            rc, okay = -xen.ENOSYS, False
        if not okay:
            rc = rc or -xen.EINVAL
            _refused(domain, i, mm.why)
            break
        done += 1
    mm.flush(domain)
    domain.note(ops=ops if len(ops) <= 8 else ops[:8] + [f"... {len(ops)} in all"], done=done)
    _done(domain, pdone, done)
    return rc
