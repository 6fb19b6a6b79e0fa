"""The virtual CPU: the privileged state a VMM keeps for its guest, because the real CPU's belongs
to the VMM. A trap-and-emulate VMM reads and writes it when it emulates an instruction."""
from dataclasses import dataclass, field

DR7_FIXED = 1 << 10


@dataclass
class VCpu:
    interrupt_flag: bool = False     # the guest's IF: cli and sti trap and change this, not the real one
    iopl: int = 0
    cr0: int = 0x11                  # protected mode on, paging off, as the platform boots
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    gdtr: tuple = (0, 0)             # (base, limit) the guest loaded with lgdt
    idtr: tuple = (0, 0)             # (base, limit) the guest loaded with lidt
    tr: int = 0                      # the selector the guest loaded with ltr
    ldtr: int = 0
    ldt: tuple = (0, 0)              # (base, limit) of the LDT that LDTR names, as lldt cached it
    dr: list = field(default_factory=lambda: [0] * 7 + [DR7_FIXED])   # DR7 bit 10 always reads 1
    msr: dict = field(default_factory=dict)

    def flags_view(self, real_eflags):
        """EFLAGS as the guest should see them: the real arithmetic flags, the virtual IF and IOPL."""
        eflags = real_eflags & ~((1 << 9) | (3 << 12))
        return eflags | (self.interrupt_flag << 9) | (self.iopl << 12)
