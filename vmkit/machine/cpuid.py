"""CPUID on the vmkit PC: what the emulated CPU answers, as a 32-bit Intel CPU would.

Unicorn's CPU says "GenuineIntel" and answers CPUID from QEMU's CPU model. One answer is wrong for
a CPU that is not in 64-bit mode: leaf 80000001H, EDX bit 11 (SYSCALL/SYSRET). Intel's SYSCALL and
SYSRET exist only in 64-bit mode (SDM vol. 2B, SYSCALL and SYSRET: "Invalid" in compatibility and
legacy mode; their Operation raises #UD unless CS.L and IA32_EFER.LMA are 1), and QEMU, since its
2023 change "target/i386: Intel only supports SYSCALL/SYSRET in long mode", clears the bit for an
Intel CPU outside long mode (target/i386/cpu.c, cpu_x86_cpuid, leaf 0x80000001) and makes both
instructions #UD there (target/i386/tcg/translate.c). Unicorn 2.1 is built from an older QEMU:
it reports the bit and runs `syscall` as a no-op (see Machine.on_syscall). The vmkit PC answers
as QEMU does now.
"""
from functools import lru_cache

from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
from unicorn import x86_const as X

EXTENDED_FEATURES = 0x80000001
EDX_SYSCALL = 1 << 11            # CPUID.80000001H:EDX[11], SYSCALL/SYSRET


@lru_cache(maxsize=64)
def emulated_cpuid(leaf, subleaf=0):
    """What CPUID answers on Unicorn's CPU itself (a scratch Unicorn runs the instruction)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, b"\x0f\xa2")                                    # cpuid
    uc.reg_write(X.UC_X86_REG_EAX, leaf)
    uc.reg_write(X.UC_X86_REG_ECX, subleaf)
    uc.emu_start(0, 2)
    return tuple(uc.reg_read(r) for r in (X.UC_X86_REG_EAX, X.UC_X86_REG_EBX, X.UC_X86_REG_ECX, X.UC_X86_REG_EDX))


def cpuid(leaf, subleaf=0):
    """The vmkit PC's answer: Unicorn's, with SYSCALL/SYSRET cleared in leaf 80000001H."""
    eax, ebx, ecx, edx = emulated_cpuid(leaf, subleaf)
    if leaf == EXTENDED_FEATURES:
        edx &= ~EDX_SYSCALL
    return eax, ebx, ecx, edx


def corrected(leaf):
    """Whether the vmkit PC's answer for `leaf` differs from Unicorn's (so the machine gives it)."""
    return leaf == EXTENDED_FEATURES
