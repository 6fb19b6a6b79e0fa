"""A view of the emulated CPU with the operations the interrupt logic needs: registers, the
descriptor tables, the TSS, the I/O permission check, and a far transfer into any ring.

Every access the CPU makes on its own behalf (a gate, a descriptor, the TSS, the interrupt frame)
is to a *linear* address. With CR0.PG on it goes through the guest's page tables exactly as the
guest's own accesses do in Unicorn: `translate` is that one page walk, and `read` and `write` use it
for every byte they touch."""
import ctypes

import capstone
from capstone import x86_const as C
from unicorn import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH
from unicorn import x86_const as X

from ..errors import GuestError
from . import quirks
from .x86 import (IOPL_MASK, IOPL_SHIFT, PF_, TSS_ESP, TSS_IOMAP_BASE, TSS_SS, decode_descriptor)

CR0_WP, CR0_PG, CR4_PSE = 1 << 16, 1 << 31, 1 << 4
PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PDE_PS = 1, 2, 4, 0x20, 0x40, 0x80
PF_P, PF_W, PF_U = 1, 2, 4            # the page-fault error code's bits (SDM vol. 3, 4.7)
PAGE = 0x1000

REGS = {name: getattr(X, f"UC_X86_REG_{name.upper()}") for name in
        ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp", "eip", "eflags",
         "cs", "ss", "ds", "es", "fs", "gs", "cr0", "cr2", "cr3", "cr4")}
FAR_TRANSFER = ("ss", "cs", "esp", "eflags", "eip")    # in the order far_transfer loads them
GENERAL = ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp", "eip", "eflags")
TABLE_REGS = {"gdtr": X.UC_X86_REG_GDTR, "idtr": X.UC_X86_REG_IDTR, "ldtr": X.UC_X86_REG_LDTR,
              "tr": X.UC_X86_REG_TR}


_decoder = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
_decoder.detail = True


class Fault(Exception):
    """An exception the CPU raises while doing its own work (delivering an interrupt, checking I/O)."""

    def __init__(self, vector, error_code=0, cr2=None):
        super().__init__(vector, error_code)
        self.vector, self.error_code, self.cr2 = vector, error_code, cr2


class _TableRegister(ctypes.Structure):
    """Unicorn's uc_x86_mmr: GDTR, IDTR, LDTR and TR."""
    _fields_ = (("selector", ctypes.c_uint16), ("base", ctypes.c_uint64),
                ("limit", ctypes.c_uint32), ("flags", ctypes.c_uint32))


class _Batch:
    """One tuple of registers read or written in a single uc_reg_read_batch / uc_reg_write_batch call
    (uc.c: each walks the array with the same reg_read / reg_write as uc_reg_read does), with its
    ctypes arrays prepared once: a call through ctypes costs about as much as the register access
    itself, so five registers cost one call instead of five. A general register is a 64-bit slot,
    zero at first: a 16- or 32-bit register fills only its low bytes, so a batch is only ever read
    into (Cpu.set has batches of its own), and its upper bytes stay zero. GDTR, IDTR, LDTR and TR are
    Unicorn's uc_x86_mmr, read as (selector, base, limit)."""

    def __init__(self, names):
        self.count = len(names)
        self.ids = (ctypes.c_int * self.count)(*[REGS.get(n) or TABLE_REGS[n] for n in names])
        self.values = (ctypes.c_uint64 * self.count)()
        self.tables = [(i, _TableRegister()) for i, n in enumerate(names) if n in TABLE_REGS]
        pointers = [ctypes.addressof(self.values) + 8 * i for i in range(self.count)]
        for i, table in self.tables:
            pointers[i] = ctypes.addressof(table)
        self.pointers = (ctypes.c_void_p * self.count)(*pointers)
        self.ids_ref, self.pointers_ref = ctypes.addressof(self.ids), ctypes.addressof(self.pointers)


class Cpu:
    def __init__(self, uc, ram_size):
        self.uc = uc
        self.ram_size = ram_size
        self.regions = [(0, ram_size)]     # where the CPU's own accesses may go (a VMM adds its memory)
        # A VMM with shadow page tables (vmkit.vmm.shadow_paging) sets these two: `guest_paging`
        # holds the guest's own CR0, CR3 and CR4 (its virtual CPU), and vmkit's accesses for the CPU
        # walk the guest's tables instead of the shadow tables the real CR3 names; `store_watch`
        # is told of every store vmkit makes into a page that holds one of the guest's page tables.
        self.guest_paging = None
        self.store_watch = None
        # (start, length, guest base) of VMM copies that stand in for a guest table (the shadow IDT):
        # the CPU reads the copy, but faults as it would on the guest's own table at guest base()
        self.stand_ins = []
        self._lib = quirks.engine_calls()
        self._handle = uc._uch.value
        self._value = ctypes.c_uint64()
        self._value_ref = ctypes.addressof(self._value)
        self._table = _TableRegister()
        self._table_ref = ctypes.addressof(self._table)
        self._buffer = ctypes.create_string_buffer(256)
        self._buffer_ref = ctypes.addressof(self._buffer)
        self._u64 = ctypes.c_uint64.from_buffer(self._buffer)
        self._batches = {}
        self.compiled = None                # delivery.c bound to this engine, made on first use (vmkit.machine.delivery)

    # registers
    def __getitem__(self, name):
        self._value.value = 0               # 16- and 32-bit registers fill only the low bytes
        self._lib.reg_read(self._handle, REGS[name], self._value_ref)
        return self._value.value

    def __setitem__(self, name, value):
        self._value.value = value & 0xFFFFFFFF
        self._lib.reg_write(self._handle, REGS[name], self._value_ref)

    def regs(self, names=GENERAL):
        return dict(zip(names, self.get(names)))

    def _batch(self, names, key):
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = _Batch(names)
        return batch

    def get(self, names):
        """The registers `names` (a tuple; "gdtr", "idtr", "ldtr" and "tr" give (selector, base, limit)),
        read in one call into the engine, as a list in the same order."""
        batch = self._batches.get(names) or self._batch(names, names)
        self._lib.reg_read_batch(self._handle, batch.ids_ref, batch.pointers_ref, batch.count)
        values = batch.values[:]
        for i, t in batch.tables:
            values[i] = (t.selector, t.base, t.limit)
        return values

    def set(self, names, values):
        """Write the registers `names` (a tuple of general and segment registers) in one call, in that
        order: Unicorn loads a segment register through its descriptor, as `mov` would, so the order
        can matter (SS before CS when CPL changes, see far_transfer)."""
        batch = self._batch(names, ("set",) + names)
        batch.values[:] = [v & 0xFFFFFFFF for v in values]
        self._lib.reg_write_batch(self._handle, batch.ids_ref, batch.pointers_ref, batch.count)

    @property
    def cpl(self):
        return self["cs"] & 3

    @property
    def iopl(self):
        return (self["eflags"] & IOPL_MASK) >> IOPL_SHIFT

    # memory, as the CPU's own accesses see it
    def _inside(self, address, size):
        if 0 <= address and address + size <= self.ram_size:
            return True
        return any(start <= address and address + size <= start + length for start, length in self.regions)

    def _u32_physical(self, address):
        if not self._inside(address, 4):
            raise GuestError(f"the CPU had to read a paging-structure entry at physical {address:#x}, "
                             f"outside the guest's {self.ram_size >> 20} MiB of RAM", None)
        self._lib.mem_read(self._handle, address, self._buffer_ref, 4)
        return int.from_bytes(self._buffer.raw[:4], "little")

    def _set_bits(self, address, entry, bits):
        if entry & bits != bits:
            self.uc.mem_write(address, (entry | bits).to_bytes(4, "little"))

    def translate(self, linear, write=False, user=False, *, peek=False):
        """The physical address of `linear`, found as the CPU finds it: with CR0.PG off, the linear
        address itself; with it on, a walk of 32-bit paging's two levels (Intel SDM vol. 3, 4.3: CR3
        names the page directory, bits 31:22 of the address pick its PDE, bits 21:12 the PTE; a PDE
        with PS = 1 maps a 4-MByte page when CR4.PSE = 1, tables 4-4 to 4-6).

        Rights (SDM 4.6.1): `user` is a user-mode access, made at CPL 3 and not one of the implicit
        supervisor-mode accesses (the GDT, LDT, IDT and TSS are always supervisor accesses, whatever
        the CPL). A user access needs U/S = 1 in the PDE and the PTE, a user write R/W = 1 in both; a
        supervisor write needs R/W = 1 in both only when CR0.WP = 1.

        A violation, or an entry with P = 0, raises Fault(#PF) with CR2 = `linear` and the error code
        of SDM 4.7: P (bit 0) set for a protection violation and clear for a not-present page, W/R
        (bit 1) for a write, U/S (bit 2) for a user-mode access.

        Accessed and dirty bits (SDM 4.8): the walk sets A in each entry it uses, and D in the entry
        that maps the page on a write. As QEMU's page walk for 32-bit paging does (its x86 MMU fault
        handler, handle_mmu_fault in older trees, mmu_translate in newer ones), A is set in a PDE that points to a page table before the PTE is looked at,
        and in the entry that maps the page only once the access is allowed. `peek` walks without
        setting either bit and returns None instead of faulting: vmkit looking at guest memory for
        its own trace, not the CPU accessing it.

        There is no TLB here: every walk reads the tables as they are now. A guest that changes a
        PTE and does not invlpg may see the CPU use the old one (SDM 4.10.4), so no correct guest
        depends on the difference."""
        view = self.guest_paging
        cr0 = view.cr0 if view is not None else self["cr0"]
        if not cr0 & CR0_PG:
            return linear
        cr3, cr4 = (view.cr3, view.cr4) if view is not None else (self["cr3"], self["cr4"])
        if view is not None and linear >= self.ram_size and self._inside(linear, 1):
            for start, length, guest_base in self.stand_ins:
                if start <= linear < start + length and cr0 & CR0_PG and self.translate(
                        (guest_base() + linear - start) & 0xFFFFFFFF, write, user, peek=peek) is None:
                    return None
            return linear                   # the VMM's own memory, outside the guest's tables
        code = (PF_W if write else 0) | (PF_U if user else 0)
        pde_address = (cr3 & ~0xFFF) + ((linear >> 22) << 2)
        pde = self._u32_physical(pde_address)
        if not pde & PTE_P:
            return self._page_fault(linear, code, peek)
        if pde & PDE_PS and cr4 & CR4_PSE:
            entries = ((pde_address, pde),)
            physical = (pde & 0xFFC00000) | (linear & 0x3FFFFF)
        else:
            if not peek:
                self._set_bits(pde_address, pde, PTE_A)
            pte_address = (pde & ~0xFFF) + (((linear >> 12) & 0x3FF) << 2)
            pte = self._u32_physical(pte_address)
            if not pte & PTE_P:
                return self._page_fault(linear, code, peek)
            entries = ((pde_address, pde), (pte_address, pte))
            physical = (pte & ~0xFFF) | (linear & 0xFFF)
        rights = entries[0][1] & entries[-1][1]
        if user and (not rights & PTE_US or write and not rights & PTE_RW):
            return self._page_fault(linear, code | PF_P, peek)
        if write and not user and cr0 & CR0_WP and not rights & PTE_RW:
            return self._page_fault(linear, code | PF_P, peek)
        if not peek:
            address, entry = entries[-1]
            self._set_bits(address, entry, PTE_A | (PTE_D if write else 0))
        return physical

    @staticmethod
    def _page_fault(linear, code, peek):
        if peek:
            return None
        raise Fault(PF_, code, cr2=linear)

    def _pieces(self, address, size, write, user, what, peek=False):
        """(physical address, length) for each page the access touches, all translated before any
        byte moves: a fault on the second page leaves the first untouched, as the CPU leaves it."""
        pieces = []
        while size > 0:
            length = min(size, PAGE - (address & (PAGE - 1)))
            physical = self.translate(address & 0xFFFFFFFF, write, user, peek=peek)
            if physical is None:
                return None
            if not self._inside(physical, length):
                verb = "write" if write else "read"
                raise GuestError(f"the CPU had to {verb} {what} at {address:#x}, outside the guest's "
                                 f"{self.ram_size >> 20} MiB of RAM"
                                 + (f" (physical {physical:#x})" if physical != address else ""), None)
            pieces.append((physical, length))
            address, size = address + length, size - length
        return pieces

    def read(self, address, size, what="memory", *, user=False):
        """`size` bytes at linear `address`, read as the CPU reads them (through the page tables,
        setting accessed bits; `user` for a user-mode access). A #PF raises Fault."""
        if not self.paging():
            if not self._inside(address, size):
                raise GuestError(f"the CPU had to read {what} at {address:#x}, outside the guest's "
                                 f"{self.ram_size >> 20} MiB of RAM", None)
            if size <= len(self._buffer):
                self._lib.mem_read(self._handle, address, self._buffer_ref, size)
                return self._buffer.raw[:size]
            return bytes(self.uc.mem_read(address, size))
        return b"".join(bytes(self.uc.mem_read(p, n))
                        for p, n in self._pieces(address, size, False, user, what))

    def peek(self, address, size, paging=None):
        """`size` bytes at linear `address` as the guest would find them, or None when they are not
        mapped or not in memory; no accessed bit changes. For vmkit's own look at guest memory.
        `paging`: whether paging is on, when the caller knows it."""
        if size <= len(self._buffer) and not (self.paging() if paging is None else paging) \
                and self._inside(address, size):
            self._lib.mem_read(self._handle, address, self._buffer_ref, size)   # one call, no page walk
            return self._buffer.raw[:size]
        try:
            pieces = self._pieces(address, size, False, False, "memory", peek=True)
        except GuestError:
            return None
        return None if pieces is None else b"".join(bytes(self.uc.mem_read(p, n)) for p, n in pieces)

    def physical_pieces(self, address, size):
        """[(physical address, length)] of each page of `size` bytes at linear `address`, or None when
        one is not mapped; no accessed bit changes."""
        return self._pieces(address, size, False, False, "memory", peek=True)

    def write(self, address, data, what="memory", *, user=False):
        """Write `data` at linear `address` as the CPU writes it (through the page tables, setting
        accessed and dirty bits; `user` for a user-mode access). A #PF raises Fault, nothing written."""
        data = bytes(data)
        watch = self.store_watch
        if watch is None and not self.paging() and self._inside(address, len(data)):
            self._lib.mem_write(self._handle, address, data, len(data))     # one call, no page walk
            return
        offset = 0
        for physical, length in self._pieces(address, len(data), True, user, what):
            if watch is not None and watch.watches(physical):
                watch.store(physical, data[offset:offset + length])
            else:
                self.uc.mem_write(physical, data[offset:offset + length])
            offset += length

    def paging(self, cr0=None):
        """Whether linear addresses go through page tables (the guest's CR0.PG, under a shadowing VMM);
        `cr0`: the real CR0, when the caller has just read it."""
        view = self.guest_paging
        return bool((view.cr0 if view is not None else self["cr0"] if cr0 is None else cr0) & CR0_PG)

    def flush_tlb(self):
        """Forget every cached translation, as a CR3 load does: needed after a change to the page
        tables the real CR3 names (Unicorn's uc_ctl, UC_CTL_TLB_FLUSH)."""
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def u32(self, address, what="memory"):
        return int.from_bytes(self.read(address, 4, what), "little")

    def u64(self, address, what="memory", paging=None):
        """The 8 bytes at linear `address` as one little-endian number, read as `read` reads them (a
        descriptor, a gate, the TSS's ESPn and SSn): without paging, one call into the engine.
        `paging`: whether paging is on, when the caller knows it."""
        if (self.paging() if paging is None else paging) or not self._inside(address, 8):
            return int.from_bytes(self.read(address, 8, what), "little")
        self._lib.mem_read(self._handle, address, self._buffer_ref, 8)
        return self._u64.value

    # descriptor tables
    def table_register(self, reg):
        """(selector, base, limit) of GDTR, IDTR, LDTR or TR."""
        t = self._table
        self._lib.reg_read(self._handle, reg, self._table_ref)
        return t.selector, t.base, t.limit

    def table(self, reg):
        return self.table_register(reg)[1:]

    def idt(self):
        return self.table(X.UC_X86_REG_IDTR)

    def descriptor(self, selector, fault_vector=13, ext=0, *, tables=None, paging=None):
        """The descriptor a selector names; `fault_vector`(selector) when it names nothing. `tables`:
        (GDTR, LDTR) as Cpu.get reads them, and `paging`, when the caller has just read them."""
        index = selector & ~7
        if selector & 4:
            sel, base, limit = self.table_register(X.UC_X86_REG_LDTR) if tables is None else tables[1]
            if sel & ~3 == 0:
                raise Fault(fault_vector, (selector & ~3) | ext)
        else:
            _, base, limit = self.table_register(X.UC_X86_REG_GDTR) if tables is None else tables[0]
        if index + 7 > limit:
            raise Fault(fault_vector, (selector & ~3) | ext)
        return decode_descriptor(self.u64(base + index, "a descriptor", paging))

    def memory_operand(self, code, address):
        """The linear address of the memory operand of the instruction `code` at `address` (segment
        base + base + index * scale + displacement, 32-bit addressing), or None when it has none."""
        insn = next(_decoder.disasm(bytes(code), address, 1), None)
        memory = [op for op in insn.operands if op.type == C.X86_OP_MEM] if insn is not None else []
        if not memory:
            return None
        m = memory[0].mem
        linear = m.disp
        if m.base:
            linear += self[insn.reg_name(m.base)]
        if m.index:
            linear += self[insn.reg_name(m.index)] * m.scale
        segment = insn.reg_name(m.segment) if m.segment else (
            "ss" if m.base and insn.reg_name(m.base) in ("esp", "ebp") else "ds")
        return (self.segment_base(self[segment]) + linear) & 0xFFFFFFFF

    def segment_base(self, selector, *, tables=None, paging=None):
        return self.descriptor(selector, tables=tables, paging=paging).base if selector & ~3 else 0

    def tss(self):
        return self.table_register(X.UC_X86_REG_TR)

    def tss_stack(self, cpl, ext=1, *, tr=None, paging=None):
        """SS:ESP for ring `cpl`, from the task-state segment (SDM 6.12.1). `tr` and `paging`: TR as
        Cpu.get reads it and whether paging is on, when the caller has just read them."""
        selector, base, limit = self.tss() if tr is None else tr
        if selector & ~3 == 0 or limit < TSS_SS[cpl] + 1:
            raise Fault(10, (selector & ~3) | ext)           # #TS: no usable TSS
        raw = self.u64(base + TSS_ESP[cpl], "the TSS", paging)       # espN, then ssN right after it
        return (raw >> 32) & 0xFFFF, raw & 0xFFFFFFFF

    def io_allowed(self, port, size):
        """The protected-mode I/O check: CPL <= IOPL, or the TSS's permission bitmap allows every port."""
        if self.cpl <= self.iopl:
            return True
        selector, base, limit = self.tss()
        return selector & ~3 != 0 and self.io_bitmap_allows(base, limit, port, size)

    def io_bitmap_allows(self, base, limit, port, size):
        """The I/O permission bitmap of the TSS at `base`: every bit for the ports must be clear."""
        if limit < TSS_IOMAP_BASE + 1:
            return False
        bitmap = base + int.from_bytes(self.read(base + TSS_IOMAP_BASE, 2, "the TSS"), "little")
        # the CPU reads the two bitmap bytes covering the port; both must lie within the TSS limit
        first = bitmap + port // 8
        if first + 1 > base + limit:
            return False
        bits = int.from_bytes(self.read(first, 2, "the I/O bitmap"), "little") >> (port % 8)
        return bits & ((1 << size) - 1) == 0

    # the one operation Unicorn's API does not offer: entering another ring
    def far_transfer(self, cpl, cs, ss, esp, eip, eflags):
        """Load CS:EIP and SS:ESP at privilege level `cpl`, as the CPU does at the end of delivery.
        The selectors have been checked by the caller; Unicorn loads their descriptors."""
        quirks.clear_fault_and_set_cpl(self.uc, cpl)
        self.set(FAR_TRANSFER, (ss, cs, esp, eflags, eip))
