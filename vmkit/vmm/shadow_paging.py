"""Shadow page tables: how a VMM without hardware help virtualizes the MMU.

The guest kernel keeps its own page tables and loads its own CR3, but the CPU never walks them: the
real CR3 names a *shadow* page directory that the VMM builds from the guest's tables, page by page,
as the guest touches memory. Adams & Agesen (ASPLOS 2006, 2.4 and 3.3) name the three things that
keep the two in step, and this module keeps their names:

    hidden fault   the shadow has no entry (or a read-only one) where the guest's tables allow the
                   access: the VMM fills the shadow entry and the guest retries, never knowing.
    true fault     the guest's own tables refuse the access: the VMM reflects a #PF into the guest,
                   with the CR2 and error code the guest's own walk gives.
    trace          the guest writes one of its page tables. The VMM write-protects every page that
                   holds one (in the shadow), so the store faults; the VMM carries it out and brings
                   the shadow entries made from the changed guest entry in step.

Accessed and dirty bits are the guest's: the CPU sets them in the shadow entries, so the VMM sets
them in the guest's. A fill for a read maps the page read-only until the guest's dirty bit is set,
so the first write faults (a hidden fault) and the VMM sets D.

What a lab replaces is in SHADOW_HANDLERS: `hidden-fault`(mmu, linear, write, user) -> True when it
filled the shadow, False when the guest's tables refuse (a true fault); `trace`(mmu, entry, old, new)
-> what it did, after the guest changed the page-table entry at guest-physical `entry`. Everything
else here is the machinery they call: the guest's entries, the shadow's, and the bookkeeping.

The machinery, in one place:
- a pool of VMM pages (outside the guest's RAM and mapped in no linear space) for shadow tables;
- a small cache of shadow roots, one per guest CR3 recently loaded (ROOTS), so a process switch back
  does not start from an empty shadow; the least recently loaded root is dropped to make room;
- the top 4 MiB of every shadow root map the VMM's own memory (its GDT, IDT, TSS, translation
  cache), which is why the guest may map nothing there. Page protection cannot keep the guest
  kernel out of them (ring 1 is a supervisor ring, like ring 0): binary translation truncates the
  guest's segments below them and guards its cache; under trap-and-emulate a guest kernel that
  reads there reads the VMM;
- the bookkeeping that tracing needs: which guest frames hold page tables the shadow was made from
  (traced, write-protected in every shadow entry that maps them), which shadow entries were made from
  which guest entry, and which shadow entries map which guest frame.

Guest-physical addresses are machine addresses here: the guest's RAM starts at 0 on the vmkit PC,
so a shadow entry keeps the guest's frame number. A VMM that places its guests elsewhere in memory
also translates the frame (Xen's p2m table; hardware's nested paging does it in the walk).
"""
import contextlib
from collections import Counter, OrderedDict, defaultdict

from ..errors import GuestError
from ..machine.cpu import CR0_PG, CR0_WP, CR4_PSE, Fault, PDE_PS, PTE_A, PTE_D, PTE_P, PTE_RW, PTE_US
from ..machine.x86 import PF_

PAGE = 0x1000
FRAME = 0xFFFFF000
POOL_BASE = 0xFF800000        # VMM pages for shadow tables: physical, outside the guest's RAM
POOL_PAGES = 256
ROOTS = 4                     # shadow roots kept, one per guest CR3 recently loaded
VMM_PDE = 1023                # the top 4 MiB of the linear space belong to the VMM
SAME_FAULT_LIMIT = 8          # one guest access faulting this often in a row: the fill is wrong


class Root:
    """One shadow page directory, made for the guest page directory at `guest`."""

    def __init__(self, guest, directory):
        self.guest, self.directory = guest, directory
        self.tables = {}      # PDE index -> (shadow page table, guest frame it was made from or None)

    def __repr__(self):
        return f"Root(guest CR3 {self.guest:#x}, shadow {self.directory:#x}, {len(self.tables)} tables)"


class ShadowPageTables:
    """The shadow MMU of a VMM (`vmm`: trap-and-emulate, binary translation, or the VT-x model
    without EPT), with its `handlers`. `vmm_in_guest_space`: the VMM's own memory is mapped in the
    top 4 MiB of every shadow root (a VMM that runs in the guest's address space, as the software
    VMMs do); a VT-x VMM runs in root mode, outside it, and leaves the guest the whole space."""

    def __init__(self, vmm, handlers=None, vmm_in_guest_space=True, tracing=True):
        self.vmm, self.uc, self.cpu = vmm, vmm.uc, vmm.cpu
        # tracing=False: the shadow is a TLB, not kept in step with the guest's tables: nothing is
        # write-protected, and an entry goes only when the guest flushes it (invlpg, a CR3 load)
        self.tracing = tracing
        self.handlers = dict(SHADOW_HANDLERS) if handlers is None else dict(handlers)
        self.uc.mem_map(POOL_BASE, POOL_PAGES * PAGE)
        self.free = [POOL_BASE + PAGE * i for i in range(POOL_PAGES - 1, -1, -1)]
        self.vmm_table = self._vmm_table() if vmm_in_guest_space else None
        self.roots = OrderedDict()    # guest CR3 page -> Root, least recently loaded first
        self.active = None
        self.traced = Counter()       # guest frame -> how many shadow structures were made from it
        self.source = {}              # shadow entry -> the guest entry it was made from
        self.derived = defaultdict(set)   # guest entry -> the shadow entries made from it
        self.frame_of = {}            # shadow PTE -> the guest frame it maps
        self.maps = defaultdict(set)  # guest frame -> the shadow PTEs that map it
        self.stepping = None          # a store to a traced page the CPU is carrying out now
        self.writer = "vmkit"         # who vmkit's own stores into a traced page are made for
        self._same = (None, 0)

    # --- the VMM's own memory, in every root ------------------------------------------------------
    def _vmm_table(self):
        """A page table for the top 4 MiB: the VMM's pages, identity-mapped, supervisor only."""
        table = self._alloc()
        top = VMM_PDE << 22
        for start, length in self.cpu.regions:
            for page in range(max(start, top), start + length, PAGE):
                self._write(table + ((page >> 12) & 0x3FF) * 4, page | PTE_P | PTE_RW | PTE_A | PTE_D)
        return table

    # --- switching on and off, and CR3 ------------------------------------------------------------
    @property
    def on(self):
        return self.active is not None

    def enable(self, guest_cr3):
        """The guest turned paging on: the CPU pages from now on, on shadow tables."""
        self.cpu.guest_paging, self.cpu.store_watch = self.vmm.vcpu, self
        self.cpu["cr0"] = self.cpu["cr0"] | CR0_PG | CR0_WP   # WP: ring 1 must respect read-only shadow entries
        return self.load_cr3(guest_cr3)

    def disable(self):
        """The guest turned paging off: linear addresses are physical again; the shadows go."""
        self.active = None
        self.flush()
        self.cpu.store_watch = None
        self.cpu["cr0"] = self.cpu["cr0"] & ~CR0_PG

    def load_cr3(self, guest_cr3):
        """A CR3 load: switch to the shadow root made for this guest page directory, or build one.
        Returns what happened, for the event."""
        guest = guest_cr3 & FRAME
        root = self.roots.get(guest)
        if root is not None:
            self.roots.move_to_end(guest)
            what = "the cached shadow root"
        else:
            root = self._new_root(guest)
            what = "a new, empty shadow root"
            if self.tracing:
                self.vmm.stats["shadow_roots"] = self.vmm.stats.get("shadow_roots", 0) + 1
        self.active = root
        self.cpu["cr3"] = root.directory                # the real CR3: a CR3 load flushes the TLB
        return f"{what} at {root.directory:#x} ({len(self.roots)} of {ROOTS} cached)"

    def _new_root(self, guest):
        while len(self.roots) >= ROOTS:
            self._drop_root(next(iter(self.roots.values())))
        directory = self._alloc()
        if self.vmm_table is not None:
            self._check_vmm_hole(guest + VMM_PDE * 4, self.read(guest + VMM_PDE * 4))
            self._write(directory + VMM_PDE * 4, self.vmm_table | PTE_P | PTE_RW)
        root = self.roots[guest] = Root(guest, directory)
        self._trace(guest >> 12)                        # the guest's page directory is traced
        return root

    def flush(self):
        """Drop every shadow root (the guest changed CR0.WP or CR4.PSE: every entry's rights may
        change); the active one is rebuilt empty."""
        guest = self.active.guest if self.active is not None else None
        for root in list(self.roots.values()):
            self._drop_root(root)
        if self.tracing:
            self.vmm.stats["shadow_flushes"] = self.vmm.stats.get("shadow_flushes", 0) + 1
        if guest is not None:
            self.load_cr3(guest)

    # --- the guest's tables, as the handlers read and write them ----------------------------------
    def guest_entry_addresses(self, linear):
        """(address of the guest's PDE for `linear`, address of its PTE or None) in guest-physical
        memory; the PTE's only when the PDE is present and maps a page table, not a 4-MiB page."""
        vcpu = self.vmm.vcpu
        pde_address = (vcpu.cr3 & FRAME) + ((linear >> 22) << 2)
        pde = self.read(pde_address)
        if not pde & PTE_P or (pde & PDE_PS and vcpu.cr4 & CR4_PSE):
            return pde_address, None
        return pde_address, (pde & FRAME) + (((linear >> 12) & 0x3FF) << 2)

    def read(self, physical):
        """The 32-bit entry at guest-physical `physical` (a guest PDE or PTE, or a shadow entry)."""
        return int.from_bytes(self.uc.mem_read(physical, 4), "little")

    def write_guest(self, physical, value):
        """Write a guest page-table entry as the CPU writes its accessed and dirty bits: not a guest
        store, so no trace follows."""
        self._write(physical, value)

    @property
    def large_pages(self):
        """CR4.PSE in the guest's CR4: a PDE with PS = 1 maps 4 MiB."""
        return bool(self.vmm.vcpu.cr4 & CR4_PSE)

    @property
    def write_protect(self):
        """CR0.WP in the guest's CR0: its kernel must respect read-only pages too."""
        return bool(self.vmm.vcpu.cr0 & CR0_WP)

    # --- the shadow -----------------------------------------------------------------------------
    def shadow_entry(self, linear):
        """(address, value) of the shadow PTE for `linear` in the active root, or None when the
        shadow has no page table there."""
        if self.active is None:
            return None
        table = self.active.tables.get(linear >> 22)
        if table is None:
            return None
        address = table[0] + ((linear >> 12) & 0x3FF) * 4
        return address, self.read(address)

    def set_shadow(self, linear, value, source):
        """Make the shadow PTE for `linear` `value` (frame and rights), made from the guest entry at
        guest-physical `source` (the PTE, or the PDE of a 4-MiB page). The page table under it is
        made when missing. A frame that holds a guest page table is mapped read-only whatever `value`
        says: stores to it must trace."""
        if linear >> 22 == VMM_PDE and self.vmm_table is not None:
            raise GuestError(f"the guest maps linear {linear:#x}, but the top 4 MiB of the linear space "
                             f"(from {VMM_PDE << 22:#x}) belong to the VMM, whose memory must be in every "
                             f"address space the guest runs in; keep the guest's mappings below it",
                             self.vmm.result())
        table = self._table(linear)
        address = table + ((linear >> 12) & 0x3FF) * 4
        self._forget(address)
        frame = (value & FRAME) >> 12
        if value & PTE_P:
            if self.traced[frame]:
                value &= ~PTE_RW
            self.frame_of[address] = frame
            self.maps[frame].add(address)
        self._write(address, value)
        self.source[address] = source
        self.derived[source].add(address)
        self.cpu.flush_tlb()
        if self.tracing:                                # a TLB fill is its VMM's to count
            self.vmm.stats["shadow_fills"] = self.vmm.stats.get("shadow_fills", 0) + 1
            self.vmm.record("shadow-fill", linear=linear, shadow_entry=address, value=value, guest_entry=source)
        return address

    def drop(self, address):
        """Clear the shadow entry at `address`: the next access through it is a hidden fault again."""
        self._forget(address)
        self._write(address, 0)
        self.cpu.flush_tlb()

    def drop_linear(self, linear):
        """Clear the shadow PTE for `linear` (invlpg). True when there was one."""
        entry = self.shadow_entry(linear)
        if entry is None or not entry[1]:
            return False
        self.drop(entry[0])
        return True

    def drop_table(self, pde_index):
        """Drop the shadow page table under PDE `pde_index` of the active root, and every entry in it."""
        if self.active is None or pde_index not in self.active.tables:
            return False
        self._drop_table(self.active, pde_index)
        self.cpu.flush_tlb()
        return True

    def shadows_of(self, guest_entry):
        """The shadow entries made from the guest entry at guest-physical `guest_entry`, as
        (address, kind) with kind "pte" or "table" (a shadow page table's PDE: the guest entry is a PDE)."""
        tables = {root.directory + index * 4 for root in self.roots.values() for index in root.tables}
        return [(a, "table" if a in tables else "pte") for a in sorted(self.derived.get(guest_entry, ()))]

    def drop_shadow(self, address, kind):
        """Drop one entry from shadows_of(): a PTE, or a whole shadow page table."""
        if kind == "pte":
            return self.drop(address)
        for root in self.roots.values():
            index = (address - root.directory) // 4
            if 0 <= index < 1024 and index in root.tables:
                self._drop_table(root, index)
        self.cpu.flush_tlb()

    def _table(self, linear):
        root, index = self.active, linear >> 22
        if index in root.tables:
            return root.tables[index][0]
        pde_address = (root.guest) + index * 4
        pde = self.read(pde_address) if self.tracing else 0
        large = bool(pde & PDE_PS and self.large_pages)
        table = self._alloc()
        guest_table = None if large or not self.tracing else (pde & FRAME) >> 12
        root.tables[index] = (table, guest_table)
        if guest_table is not None:
            self._trace(guest_table)                    # the guest page table is traced from now on
        # every right is in the shadow PTEs, which combine the guest's PDE and PTE
        self._write(root.directory + index * 4, table | PTE_P | PTE_RW | PTE_US)
        self.source[root.directory + index * 4] = pde_address
        self.derived[pde_address].add(root.directory + index * 4)
        return table

    def _drop_table(self, root, index):
        table, guest_table = root.tables.pop(index)
        for address in range(table, table + PAGE, 4):
            if address in self.source:
                self._forget(address)
        self._forget(root.directory + index * 4)
        self._write(root.directory + index * 4, 0)
        self._release(table)
        if guest_table is not None:
            self._untrace(guest_table)

    def _drop_root(self, root):
        for index in list(root.tables):
            self._drop_table(root, index)
        del self.roots[root.guest]
        self._release(root.directory)
        self._untrace(root.guest >> 12)
        if self.active is root:
            self.active = None

    def _forget(self, address):
        source = self.source.pop(address, None)
        if source is not None:
            self.derived[source].discard(address)
            if not self.derived[source]:
                del self.derived[source]
        frame = self.frame_of.pop(address, None)
        if frame is not None:
            self.maps[frame].discard(address)
            if not self.maps[frame]:
                del self.maps[frame]

    # --- tracing: the guest's page-table pages are write-protected in the shadow ------------------
    def _trace(self, frame):
        if not self.tracing:
            return
        self.traced[frame] += 1
        if self.traced[frame] == 1:
            for address in self.maps.get(frame, ()):
                self._write(address, self.read(address) & ~PTE_RW)
            self.cpu.flush_tlb()

    def _untrace(self, frame):
        if not self.tracing:
            return
        self.traced[frame] -= 1
        if self.traced[frame] <= 0:
            del self.traced[frame]
            for address in list(self.maps.get(frame, ())):
                self.drop(address)                      # refilled, writable, at the next access

    def traced_frame(self, physical):
        return bool(self.traced.get(physical >> 12))

    # the Cpu's store watch: vmkit's own stores into a traced page (an emulated instruction, a push)
    def watches(self, physical):
        return self.traced_frame(physical)

    def store(self, physical, data):
        """vmkit stores `data` at guest-physical `physical`, in a traced page: the guest's page table
        changes, so the shadow follows, as after a trace."""
        start, end = physical & ~3, (physical + len(data) + 3) & ~3
        before = bytes(self.uc.mem_read(start, end - start))
        self.uc.mem_write(physical, bytes(data))
        self._propagate(start, before, bytes(self.uc.mem_read(start, end - start)), how=self.writer)

    @contextlib.contextmanager
    def writing(self, how):
        """vmkit's stores into traced pages inside the block are made for `how` (a "call-out")."""
        self.writer, before = how, self.writer
        try:
            yield
        finally:
            self.writer = before

    # --- a store the CPU carries out on a traced page ---------------------------------------------
    def begin_store(self, linear, how):
        """Let the next guest instruction store to the traced page at `linear`: its shadow entry is
        made writable for that one instruction, and end_store() compares the page with what it was.
        `how` the store reached the VMM ("fault" or "call-out"), for the trace event."""
        entry = self.shadow_entry(linear)
        if entry is None or not entry[1] & PTE_P:
            return False
        address, value = entry
        page = (value & FRAME)
        self.stepping = (address, page, bytes(self.uc.mem_read(page, PAGE)), linear, how)
        self._write(address, value | PTE_RW)
        self.cpu.flush_tlb()
        return True

    def end_store(self):
        """The instruction ran (or faulted): the page is write-protected again and every guest entry
        it changed is handed to the trace handler."""
        address, page, before, linear, how = self.stepping
        self.stepping = None
        value = self.read(address)
        if value & PTE_P and self.traced[page >> 12]:
            self._write(address, value & ~PTE_RW)
        self.cpu.flush_tlb()
        self._propagate(page, before, bytes(self.uc.mem_read(page, PAGE)), how=how, linear=linear)

    def _check_vmm_hole(self, entry, value):
        """The guest's PDE for the top 4 MiB must stay empty: the VMM lives there."""
        if value & PTE_P:
            raise GuestError(f"the guest maps the top 4 MiB of the linear space (its PDE {VMM_PDE} at "
                             f"{entry:#x} is present), but they belong to the VMM, whose memory must be in "
                             f"every address space the guest runs in; keep the guest's mappings below "
                             f"{VMM_PDE << 22:#x}", self.vmm.result())

    def _propagate(self, start, before, after, how, linear=None):
        for offset in _changed_words(before, after):
            old = int.from_bytes(before[offset:offset + 4], "little")
            new = int.from_bytes(after[offset:offset + 4], "little")
            if old != new:
                entry = start + offset
                if entry & 0xFFF == VMM_PDE * 4 and entry & FRAME in self.roots and self.vmm_table is not None:
                    self._check_vmm_hole(entry, new)
                effect = self.handlers["trace"](self, entry, old, new)
                self.vmm.record("trace", entry=entry, old=old, new=new, by=how, effect=effect,
                                **({"linear": linear} if linear is not None else {}))

    # --- a #PF the shadow raised -----------------------------------------------------------------
    def page_fault(self, linear, error_code, eip):
        """The CPU raised #PF on the shadow tables. Returns "hidden" or "trace" when the VMM handled
        it unseen (the guest retries the instruction), or ("true", error code) for the guest."""
        write, user = bool(error_code & 2), bool(error_code & 4)
        guest_allows = self.cpu.translate(linear, write, user, peek=True) is not None
        if write and error_code & 1 and guest_allows and self.traced_frame(self.cpu.translate(linear, peek=True)):
            return "trace"
        key = (eip, linear, error_code, self.vmm.instructions)   # the same access, with no progress since
        same, count = self._same
        self._same = (key, count + 1 if same == key else 1)
        if self._same[1] > SAME_FAULT_LIMIT:
            raise GuestError(f"the access at eip {eip:#x} to {linear:#x} faulted {SAME_FAULT_LIMIT} times in "
                             f"a row on the shadow tables, each time after the hidden-fault handler "
                             f"said it had filled the shadow: the entry it makes still refuses the access "
                             f"(present, writable for a write, user for ring 3?)", self.vmm.result())
        if self.handlers["hidden-fault"](self, linear, write, user):
            return "hidden"
        self._same = (None, 0)
        try:                                           # the guest's own walk: its A bits, its error code
            self.cpu.translate(linear, write, user)
        except Fault as fault:
            return "true", fault.error_code
        raise GuestError(f"the hidden-fault handler refused an access to {linear:#x} that the guest's "
                         f"own page tables allow: a true fault must be one the guest's tables refuse",
                         self.vmm.result())

    # --- what a VMM calls ---------------------------------------------------------------------------
    def handle_fault(self, error_code):
        """A #PF on the shadow tables at CR2, taken by the VMM (which counted its own entry). A hidden
        fault (the shadow filled) or a trace (the store carried out, via vmm.trace_fault) returns
        None: the guest never sees it, and its CR2 is what it was. A true fault returns the guest's
        error code, for the #PF the guest's own walk raises; the guest's CR2 is the address."""
        vmm, cpu = self.vmm, self.cpu
        linear, first = cpu["cr2"], len(vmm.events)
        outcome = self.page_fault(linear, error_code, cpu["eip"])
        if outcome == "hidden":
            vmm.stats["hidden_faults"] += 1
            vmm.record("hidden-fault", linear=linear, error_code=error_code, fills=len(vmm.events) - first)
            vmm.events.insert(first, vmm.events.pop())          # before the fills it caused
            cpu["cr2"] = vmm.vcpu.cr2
            return None
        if outcome == "trace":
            vmm.stats["trace_faults"] += 1
            vmm.trace_fault(linear, error_code)
            cpu["cr2"] = vmm.vcpu.cr2
            return None
        vmm.stats["true_faults"] += 1
        vmm.vcpu.cr2 = linear
        vmm.record("true-fault", linear=linear, error_code=outcome[1])
        return outcome[1]

    def trace_store(self, linear, error_code, how="fault"):
        """Carry out a guest store to one of its page tables: set the guest's accessed and dirty bits
        for it, then let the CPU make the store with the page writable for one instruction; after it,
        the shadow follows (end_store)."""
        self.cpu.translate(linear, True, bool(error_code & 4))
        self.begin_store(linear, how)

    def control_register_written(self, name, old, new):
        """The guest wrote CR0, CR3 or CR4 (its virtual CPU holds `new`): what the shadow does about
        it, for the VMM's event, or None."""
        if name == "cr0" and (old ^ new) & CR0_PG:
            if new & CR0_PG:
                return "paging on: the CPU now walks shadow tables, " + self.enable(self.vmm.vcpu.cr3)
            self.disable()
            return "paging off: the shadow tables are dropped"
        if not self.on:
            return None
        if name == "cr3":
            return "shadow: " + self.load_cr3(new)
        if (name == "cr0" and (old ^ new) & CR0_WP) or (name == "cr4" and (old ^ new) & CR4_PSE):
            self.flush()
            return "every shadow entry dropped: the rights of each may change"
        return None

    # --- pages --------------------------------------------------------------------------------------
    def _alloc(self):
        if not self.free:
            for root in list(self.roots.values()):
                if root is not self.active:
                    self._drop_root(root)
                    break
            else:
                self.flush()
        if not self.free:
            raise GuestError("the shadow page tables fill the VMM's pool even after a flush", self.vmm.result())
        page = self.free.pop()
        self.uc.mem_write(page, bytes(PAGE))
        return page

    def _release(self, page):
        self.free.append(page)

    def _write(self, address, value):
        self.uc.mem_write(address, (value & 0xFFFFFFFF).to_bytes(4, "little"))


def _changed_words(before, after, chunk=64):
    """The offsets of the 32-bit words that differ, found a chunk at a time (a page compared word by
    word in Python would cost more than the trap it follows)."""
    for base in range(0, len(after), chunk):
        if before[base:base + chunk] != after[base:base + chunk]:
            for offset in range(base, min(base + chunk, len(after)), 4):
                if before[offset:offset + 4] != after[offset:offset + 4]:
                    yield offset


# --- the handlers a lab writes -----------------------------------------------------------------------
# Named shadow_ here: the VMMs reach them through SHADOW_HANDLERS, by kind, and a notebook's fill and
# propagate stay its own.
def shadow_fill(mmu, linear, write, user):
    """The hidden-fault handler: walk the guest's tables for `linear` as the CPU would for this
    access. Refused: return False (a true fault). Allowed: set the guest's accessed bit (and dirty
    bit, for a write) and make the shadow PTE, with the guest's frame and the rights of its PDE and
    PTE together; writable only once the guest's dirty bit is set, so that the first write faults
    and the VMM can set it."""
    try:
        physical = mmu.cpu.translate(linear, write, user)   # the guest's walk: sets its A and D bits
    except Fault as fault:
        if fault.vector == PF_:
            return False
        raise
    pde_address, pte_address = mmu.guest_entry_addresses(linear)
    pde = mmu.read(pde_address)
    entry = mmu.read(pte_address) if pte_address is not None else pde
    source = pte_address if pte_address is not None else pde_address
    rights = pde & entry
    writable = bool(rights & PTE_RW) and bool(entry & PTE_D)
    if write and not rights & PTE_RW:                        # a kernel write that CR0.WP = 0 allows
        if rights & PTE_US:
            raise GuestError(f"the guest kernel writes the read-only user page at {linear:#x} with CR0.WP = 0; "
                             f"this VMM keeps the real CR0.WP set and cannot map a page writable for ring "
                             f"0 and read-only for ring 3", mmu.vmm.result())
        writable = True                                      # a supervisor page: ring 3 cannot reach it
    value = (physical & FRAME) | PTE_P | (PTE_RW if writable else 0) | (rights & PTE_US)
    mmu.set_shadow(linear, value, source)
    return True


def shadow_propagate(mmu, entry, old, new):
    """The trace handler: the guest changed the page-table entry at guest-physical `entry` from `old`
    to `new`. A change of accessed or dirty bits alone leaves the shadow as it is; any other change
    drops every shadow entry made from it (a PTE: refilled at the next access; a PDE: the shadow
    page table under it). A change that clears A or D while it sets the other keeps the shadow too,
    as the CPU keeps its TLB entry until invlpg (SDM vol. 3, 4.10.4): the bare machine then sets
    neither bit again at the next access either."""
    if (old ^ new) & ~(PTE_A | PTE_D) == 0 and new & (old ^ new):
        return "only A/D bits set: the shadow stays"
    shadows = mmu.shadows_of(entry)
    for address, kind in shadows:
        mmu.drop_shadow(address, kind)
    return f"{len(shadows)} shadow entr{'y' if len(shadows) == 1 else 'ies'} dropped" if shadows else "no shadow entry made from it"


SHADOW_HANDLERS = {"hidden-fault": shadow_fill, "trace": shadow_propagate}
