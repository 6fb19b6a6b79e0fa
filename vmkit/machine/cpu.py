"""A view of the emulated CPU with the operations the interrupt logic needs: registers, the
descriptor tables, the TSS, the I/O permission check, and a far transfer into any ring."""
from unicorn import x86_const as X

from ..errors import GuestError
from . import quirks
from .x86 import (IOPL_MASK, IOPL_SHIFT, TSS_ESP, TSS_IOMAP_BASE, TSS_SS, decode_descriptor)

REGS = {name: getattr(X, f"UC_X86_REG_{name.upper()}") for name in
        ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp", "eip", "eflags",
         "cs", "ss", "ds", "es", "fs", "gs")}
GENERAL = ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp", "eip", "eflags")


class Fault(Exception):
    """An exception the CPU raises while doing its own work (delivering an interrupt, checking I/O)."""

    def __init__(self, vector, error_code=0):
        super().__init__(vector, error_code)
        self.vector, self.error_code = vector, error_code


class Cpu:
    def __init__(self, uc, ram_size):
        self.uc = uc
        self.ram_size = ram_size

    # registers
    def __getitem__(self, name):
        return self.uc.reg_read(REGS[name])

    def __setitem__(self, name, value):
        self.uc.reg_write(REGS[name], value)

    def regs(self, names=GENERAL):
        return {n: self.uc.reg_read(REGS[n]) for n in names}

    @property
    def cpl(self):
        return self.uc.reg_read(X.UC_X86_REG_CS) & 3

    @property
    def iopl(self):
        return (self.uc.reg_read(X.UC_X86_REG_EFLAGS) & IOPL_MASK) >> IOPL_SHIFT

    # memory, as the CPU's own accesses see it
    def read(self, address, size, what="memory"):
        if address < 0 or address + size > self.ram_size:
            raise GuestError(f"the CPU had to read {what} at {address:#x}, outside the guest's "
                             f"{self.ram_size >> 20} MiB of RAM", None)
        return bytes(self.uc.mem_read(address, size))

    def write(self, address, data, what="memory"):
        if address < 0 or address + len(data) > self.ram_size:
            raise GuestError(f"the CPU had to write {what} at {address:#x}, outside the guest's "
                             f"{self.ram_size >> 20} MiB of RAM", None)
        self.uc.mem_write(address, bytes(data))

    def u32(self, address, what="memory"):
        return int.from_bytes(self.read(address, 4, what), "little")

    # descriptor tables
    def table(self, reg):
        _, base, limit, _ = self.uc.reg_read(reg)
        return base, limit

    def idt(self):
        return self.table(X.UC_X86_REG_IDTR)

    def descriptor(self, selector, fault_vector=13, ext=0):
        """The descriptor a selector names; `fault_vector`(selector) when it names nothing."""
        index = selector & ~7
        if selector & 4:
            sel, base, limit, _ = self.uc.reg_read(X.UC_X86_REG_LDTR)
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
        selector, base, limit, _ = self.uc.reg_read(X.UC_X86_REG_TR)
        return selector, base, limit

    def tss_stack(self, cpl, ext=1):
        """SS:ESP for ring `cpl`, from the task-state segment (SDM 6.12.1)."""
        selector, base, limit = self.tss()
        if selector & ~3 == 0 or limit < TSS_SS[cpl] + 1:
            raise Fault(10, (selector & ~3) | ext)           # #TS: no usable TSS
        return (self.u32(base + TSS_SS[cpl], "the TSS") & 0xFFFF, self.u32(base + TSS_ESP[cpl], "the TSS"))

    def io_allowed(self, port, size):
        """The protected-mode I/O check: CPL <= IOPL, or the TSS's permission bitmap allows every port."""
        if self.cpl <= self.iopl:
            return True
        selector, base, limit = self.tss()
        if selector & ~3 == 0 or limit < TSS_IOMAP_BASE + 1:
            return False
        bitmap = base + int.from_bytes(self.read(base + TSS_IOMAP_BASE, 2, "the TSS"), "little")
        for p in range(port, port + size):
            byte = bitmap + p // 8
            if byte > base + limit or self.read(byte, 1, "the I/O bitmap")[0] >> (p % 8) & 1:
                return False
        return True

    # the one operation Unicorn's API does not offer: entering another ring
    def far_transfer(self, cpl, cs, ss, esp, eip, eflags):
        """Load CS:EIP and SS:ESP at privilege level `cpl`, as the CPU does at the end of delivery.
        The selectors have been checked by the caller; Unicorn loads their descriptors."""
        quirks.clear_fault_and_set_cpl(self.uc, cpl)
        uc = self.uc
        uc.reg_write(X.UC_X86_REG_SS, ss)
        uc.reg_write(X.UC_X86_REG_CS, cs)
        uc.reg_write(X.UC_X86_REG_ESP, esp)
        uc.reg_write(X.UC_X86_REG_EFLAGS, eflags)
        uc.reg_write(X.UC_X86_REG_EIP, eip)
