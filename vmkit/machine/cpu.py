"""A view of the emulated CPU with the operations the interrupt logic needs: registers, the
descriptor tables, the TSS, the I/O permission check, and a far transfer into any ring."""
import ctypes

from unicorn import x86_const as X

from ..errors import GuestError
from . import quirks
from .x86 import (IOPL_MASK, IOPL_SHIFT, TSS_ESP, TSS_IOMAP_BASE, TSS_SS, decode_descriptor)

REGS = {name: getattr(X, f"UC_X86_REG_{name.upper()}") for name in
        ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp", "eip", "eflags",
         "cs", "ss", "ds", "es", "fs", "gs", "cr0")}
GENERAL = ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp", "eip", "eflags")


class Fault(Exception):
    """An exception the CPU raises while doing its own work (delivering an interrupt, checking I/O)."""

    def __init__(self, vector, error_code=0):
        super().__init__(vector, error_code)
        self.vector, self.error_code = vector, error_code


class _TableRegister(ctypes.Structure):
    """Unicorn's uc_x86_mmr: GDTR, IDTR, LDTR and TR."""
    _fields_ = (("selector", ctypes.c_uint16), ("base", ctypes.c_uint64),
                ("limit", ctypes.c_uint32), ("flags", ctypes.c_uint32))


class Cpu:
    def __init__(self, uc, ram_size):
        self.uc = uc
        self.ram_size = ram_size
        self.regions = [(0, ram_size)]     # where the CPU's own accesses may go (a VMM adds its memory)
        self._lib = quirks.engine_library()
        self._handle = uc._uch
        self._value = ctypes.c_uint64()
        self._value_ref = ctypes.byref(self._value)
        self._table = _TableRegister()
        self._buffer = ctypes.create_string_buffer(256)

    # registers
    def __getitem__(self, name):
        self._value.value = 0               # 16- and 32-bit registers fill only the low bytes
        self._lib.uc_reg_read(self._handle, REGS[name], self._value_ref)
        return self._value.value

    def __setitem__(self, name, value):
        self._value.value = value & 0xFFFFFFFF
        self._lib.uc_reg_write(self._handle, REGS[name], self._value_ref)

    def regs(self, names=GENERAL):
        return {n: self[n] for n in names}

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

    def read(self, address, size, what="memory"):
        if not self._inside(address, size):
            raise GuestError(f"the CPU had to read {what} at {address:#x}, outside the guest's "
                             f"{self.ram_size >> 20} MiB of RAM", None)
        if size > len(self._buffer):
            return bytes(self.uc.mem_read(address, size))
        self._lib.uc_mem_read(self._handle, address, self._buffer, size)
        return ctypes.string_at(self._buffer, size)

    def write(self, address, data, what="memory"):
        if not self._inside(address, len(data)):
            raise GuestError(f"the CPU had to write {what} at {address:#x}, outside the guest's "
                             f"{self.ram_size >> 20} MiB of RAM", None)
        self.uc.mem_write(address, bytes(data))

    def u32(self, address, what="memory"):
        return int.from_bytes(self.read(address, 4, what), "little")

    # descriptor tables
    def table_register(self, reg):
        """(selector, base, limit) of GDTR, IDTR, LDTR or TR."""
        t = self._table
        self._lib.uc_reg_read(self._handle, reg, ctypes.byref(t))
        return t.selector, t.base, t.limit

    def table(self, reg):
        return self.table_register(reg)[1:]

    def idt(self):
        return self.table(X.UC_X86_REG_IDTR)

    def descriptor(self, selector, fault_vector=13, ext=0):
        """The descriptor a selector names; `fault_vector`(selector) when it names nothing."""
        index = selector & ~7
        if selector & 4:
            sel, base, limit = self.table_register(X.UC_X86_REG_LDTR)
            if sel & ~3 == 0:
                raise Fault(fault_vector, (selector & ~3) | ext)
        else:
            base, limit = self.table(X.UC_X86_REG_GDTR)
        if index + 7 > limit:
            raise Fault(fault_vector, (selector & ~3) | ext)
        return decode_descriptor(self.read(base + index, 8, "a descriptor"))

    def segment_base(self, selector):
        return self.descriptor(selector).base if selector & ~3 else 0

    def tss(self):
        return self.table_register(X.UC_X86_REG_TR)

    def tss_stack(self, cpl, ext=1):
        """SS:ESP for ring `cpl`, from the task-state segment (SDM 6.12.1)."""
        selector, base, limit = self.tss()
        if selector & ~3 == 0 or limit < TSS_SS[cpl] + 1:
            raise Fault(10, (selector & ~3) | ext)           # #TS: no usable TSS
        raw = self.read(base + TSS_ESP[cpl], 8, "the TSS")         # espN, then ssN right after it
        return int.from_bytes(raw[4:6], "little"), int.from_bytes(raw[:4], "little")

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
        self["ss"], self["cs"], self["esp"], self["eflags"], self["eip"] = ss, cs, esp, eflags, eip
