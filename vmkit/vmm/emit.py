"""Machine code a binary translator writes into its translation cache, one instruction a function.

Each function returns the bytes of one x86 instruction (Intel SDM vol. 2 gives every encoding;
the opcode is named in the comment). A translator rewrites guest instructions with them, so none
of them may need an assembler at run time. Which of them change EFLAGS is the SDM's to say (vol. 2,
each instruction's "Flags Affected").

Addresses in the VMM's data page are reached through GS, which the translator reserves for the
VMM while the guest kernel runs (VMware's translator did the same): `gs_store(0x10, 0)` is
`mov dword [gs:0x10], 0`. tests/test_binary_translation.py checks every encoding against NASM.
"""
GS = b"\x65"                         # segment-override prefix: the VMM's data page
OPERAND_16 = b"\x66"

REGISTERS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")   # the ModRM reg numbers
CONDITIONS = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")


def _u32(value):
    return (value & 0xFFFFFFFF).to_bytes(4, "little")


def _rel32(at, size, target):
    """The displacement of a relative branch of `size` bytes at `at` that lands on `target`."""
    return _u32(target - (at + size))


def _disp32(reg):
    """ModRM for [disp32] with `reg` in the reg field: mod 00, r/m 101."""
    return bytes([(REGISTERS.index(reg) << 3) | 0b101])


# --- control transfers -------------------------------------------------------------------------
def jmp(at, target):
    """jmp rel32 (E9 cd): 5 bytes, the shape every chainable exit of a translation has."""
    return b"\xE9" + _rel32(at, 5, target)


def jcc(condition, at, target):
    """jcc rel32 (0F 80+cc cd)."""
    return bytes([0x0F, 0x80 + CONDITIONS.index(condition)]) + _rel32(at, 6, target)


def jmp_short(offset):
    """jmp rel8 (EB cb): skip `offset` bytes."""
    return bytes([0xEB, offset & 0xFF])


def je_short(offset):
    """je rel8 (74 cb)."""
    return bytes([0x74, offset & 0xFF])


def jecxz(offset):
    """jecxz rel8 (E3 cb): the one conditional branch that reads no flag."""
    return bytes([0xE3, offset & 0xFF])


def jmp_gs(offset):
    """jmp dword [gs:offset] (FF /4): an indirect jump through a VMM variable."""
    return GS + b"\xFF" + _disp32("esp") + _u32(offset)


def int3():
    """int3 (CC): the one-byte trap a translation uses to call out to the VMM."""
    return b"\xCC"


# --- the stack and the flags ---------------------------------------------------------------------
def pushfd():
    return b"\x9C"


def popfd():
    return b"\x9D"


def push_imm32(value):
    """push imm32 (68 id)."""
    return b"\x68" + _u32(value)


def push_gs(offset):
    """push dword [gs:offset] (FF /6)."""
    return GS + b"\xFF" + _disp32("esi") + _u32(offset)


def pop(reg):
    """pop r32 (58+rd)."""
    return bytes([0x58 + REGISTERS.index(reg)])


def lea_esp(displacement):
    """lea esp, [esp + disp32] (8D /r with a SIB byte): move ESP without touching EFLAGS."""
    return b"\x8D\xA4\x24" + _u32(displacement)


# --- moves -----------------------------------------------------------------------------------------
def mov_imm(reg, value, bits=32):
    """mov r32, imm32 (B8+rd id), or mov r16, imm16 with the operand-size prefix."""
    if bits == 16:
        return OPERAND_16 + bytes([0xB8 + REGISTERS.index(reg)]) + (value & 0xFFFF).to_bytes(2, "little")
    return bytes([0xB8 + REGISTERS.index(reg)]) + _u32(value)


def gs_store(offset, value):
    """mov dword [gs:offset], imm32 (C7 /0 id): leaves EFLAGS alone."""
    return GS + b"\xC7" + _disp32("eax") + _u32(offset) + _u32(value)


def gs_store_reg(offset, reg):
    """mov [gs:offset], r32 (89 /r; for EAX the shorter A3 with a 32-bit offset)."""
    if reg == "eax":
        return GS + b"\xA3" + _u32(offset)
    return GS + b"\x89" + _disp32(reg) + _u32(offset)


def gs_load_reg(reg, offset, bits=32):
    """mov r32, [gs:offset] (8B /r; for EAX the shorter A1), or its 16-bit form."""
    size = OPERAND_16 if bits == 16 else b""
    if reg == "eax":
        return GS + size + b"\xA1" + _u32(offset)
    return GS + size + b"\x8B" + _disp32(reg) + _u32(offset)


def mov_eax_from_esp(displacement):
    """mov eax, [esp + disp8] (8B /r with a SIB byte)."""
    return b"\x8B\x44\x24" + bytes([displacement & 0xFF])


def mov_esp_from_eax(displacement):
    """mov [esp + disp8], eax (89 /r with a SIB byte)."""
    return b"\x89\x44\x24" + bytes([displacement & 0xFF])


def movzx_ecx_ah():
    """movzx ecx, ah (0F B6 /r)."""
    return b"\x0F\xB6\xCC"


def mov_ch_gs_table(table):
    """mov ch, [gs:ecx + table] (8A /r, base ecx, disp32): a byte from a VMM table."""
    return GS + b"\x8A\xA9" + _u32(table)


def mov_cl_al():
    """mov cl, al (88 /r)."""
    return b"\x88\xC1"


def mov_ecx_from_esp():
    """mov ecx, [esp] (8B /r with a SIB byte): the word on top of the stack, a return address."""
    return b"\x8B\x0C\x24"


def lea_ecx_ecx(displacement):
    """lea ecx, [ecx + disp32] (8D /r, mod 10): an addition that leaves EFLAGS alone. With the
    displacement -x, ECX becomes 0 exactly when it held x, which `jecxz` tests."""
    return lea_plus("ecx", displacement)


def lea_plus(reg, displacement):
    """lea r32, [r32 + disp32] (8D /r, mod 10; not ESP, which needs a SIB byte): r32 += disp32,
    EFLAGS untouched."""
    number = REGISTERS.index(reg)
    return b"\x8D" + bytes([0x80 | (number << 3) | number]) + _u32(displacement)


def nop():
    """nop (90)."""
    return b"\x90"


def lea_eax_eax_ecx():
    """lea eax, [eax + ecx] (8D /r with a SIB byte): EAX += ECX, EFLAGS untouched."""
    return b"\x8D\x04\x08"


def lea_ecx_ecx_eax():
    """lea ecx, [ecx + eax] (8D /r with a SIB byte): an addition that leaves EFLAGS alone."""
    return b"\x8D\x0C\x01"


def load_gs(offset):
    """mov gs, [gs:offset] (8E /5): load the selector stored there into GS itself."""
    return GS + b"\x8E" + _disp32("ebp") + _u32(offset)


def load_gs_from_code(address):
    """mov gs, [cs:address] (2E 8E /5): GS back from a constant in the translation cache."""
    return b"\x2E\x8E" + _disp32("ebp") + _u32(address)


# --- arithmetic (these change EFLAGS: used only where the flags are saved around them) -----------
def and_eax(value):
    """and eax, imm32 (25 id)."""
    return b"\x25" + _u32(value)


def or_eax_gs(offset):
    """or eax, [gs:offset] (0B /r)."""
    return GS + b"\x0B" + _disp32("eax") + _u32(offset)


def cmp_gs_byte(offset, value):
    """cmp byte [gs:offset], imm8 (80 /7 ib)."""
    return GS + b"\x80" + _disp32("edi") + _u32(offset) + bytes([value & 0xFF])


def add_gs(offset, value):
    """add dword [gs:offset], imm32 (81 /0 id): changes EFLAGS."""
    return GS + b"\x81" + _disp32("eax") + _u32(offset) + _u32(value)


def load_table_ecx(table):
    """mov ecx, [gs:table + ecx*8] (8B /r, SIB: scale 8, index ecx, no base)."""
    return GS + b"\x8B\x0C\xCD" + _u32(table)
