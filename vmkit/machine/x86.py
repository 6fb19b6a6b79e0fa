"""Facts of the x86 architecture (Intel SDM vol. 3): selectors, descriptors, gates, the TSS, EFLAGS,
exception vectors. Pure functions over bytes and integers, so a lab can use them too."""
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

# EFLAGS bits
CF, PF, AF, ZF, SF, TF, IF, DF, OF = 1 << 0, 1 << 2, 1 << 4, 1 << 6, 1 << 7, 1 << 8, 1 << 9, 1 << 10, 1 << 11
IOPL_SHIFT, IOPL_MASK = 12, 3 << 12
NT, RF, VM = 1 << 14, 1 << 16, 1 << 17

# Exception vectors (SDM vol. 3, table 6-1): mnemonic, name, class.
# Classes decide what a second fault during delivery does (SDM table 6-5).
EXCEPTIONS = {
    0: ("#DE", "divide error", "contributory"),
    1: ("#DB", "debug", "benign"),
    2: ("NMI", "non-maskable interrupt", "benign"),
    3: ("#BP", "breakpoint", "benign"),
    4: ("#OF", "overflow", "benign"),
    5: ("#BR", "bound range exceeded", "benign"),
    6: ("#UD", "invalid opcode", "benign"),
    7: ("#NM", "device not available", "benign"),
    8: ("#DF", "double fault", "double"),
    10: ("#TS", "invalid TSS", "contributory"),
    11: ("#NP", "segment not present", "contributory"),
    12: ("#SS", "stack-segment fault", "contributory"),
    13: ("#GP", "general protection", "contributory"),
    14: ("#PF", "page fault", "page"),
    16: ("#MF", "x87 floating-point error", "benign"),
    17: ("#AC", "alignment check", "benign"),
    18: ("#MC", "machine check", "benign"),
    19: ("#XM", "SIMD floating-point", "benign"),
}
DE, DB, BP, OF_, UD, NM, DF_, TS, NP, SS_, GP, PF_ = 0, 1, 3, 4, 6, 7, 8, 10, 11, 12, 13, 14
# Exceptions that push an error code (SDM 6.13)
HAS_ERROR_CODE = {8, 10, 11, 12, 13, 14, 17}


def vector_name(vector):
    return EXCEPTIONS[vector][0] if vector in EXCEPTIONS else f"vector {vector:#x}"


# Selectors: index (13 bits) | TI (table indicator, 1 = LDT) | RPL (2 bits)
@dataclass(frozen=True)
class Selector:
    index: int
    ti: int
    rpl: int

    @property
    def value(self):
        return (self.index << 3) | (self.ti << 2) | self.rpl


def decode_selector(value):
    return Selector(index=value >> 3, ti=(value >> 2) & 1, rpl=value & 3)


# Segment descriptors (8 bytes in the GDT or LDT)
class Descriptor(NamedTuple):
    base: int
    limit: int          # in bytes, granularity applied
    type: int           # 4 bits: for code/data bit 3 = code, bit 2 = conforming/expand-down, bit 1 = readable/writable
    s: int              # 1 = code or data, 0 = system (TSS, gates, LDT)
    dpl: int
    present: bool
    db: int             # default operation size (1 = 32-bit)
    granularity: int
    raw: int

    @property
    def is_code(self):
        return self.s == 1 and bool(self.type & 0x8)

    @property
    def is_data(self):
        return self.s == 1 and not self.type & 0x8

    @property
    def conforming(self):
        return self.is_code and bool(self.type & 0x4)

    @property
    def writable(self):
        return self.is_data and bool(self.type & 0x2)

    @property
    def readable(self):
        return self.is_data or bool(self.type & 0x2)

    @property
    def kind(self):
        if self.s:
            return "code" if self.is_code else "data"
        return SYSTEM_TYPES.get(self.type, f"system type {self.type}")


SYSTEM_TYPES = {0x1: "16-bit TSS (available)", 0x2: "LDT", 0x3: "16-bit TSS (busy)", 0x4: "16-bit call gate",
                0x5: "task gate", 0x6: "16-bit interrupt gate", 0x7: "16-bit trap gate",
                0x9: "32-bit TSS (available)", 0xB: "32-bit TSS (busy)", 0xC: "32-bit call gate",
                0xE: "32-bit interrupt gate", 0xF: "32-bit trap gate"}


def decode_descriptor(raw):
    """Decode an 8-byte segment descriptor given as bytes or as a 64-bit integer."""
    if isinstance(raw, (bytes, bytearray)):
        raw = int.from_bytes(raw[:8], "little")
    return _decode_descriptor(raw)


@lru_cache(maxsize=1024)           # a CPU caches descriptors in its segment registers; this is cheaper
def _decode_descriptor(raw):
    limit = (raw & 0xFFFF) | ((raw >> 32) & 0xF0000)
    base = ((raw >> 16) & 0xFFFFFF) | ((raw >> 32) & 0xFF000000)
    access = (raw >> 40) & 0xFF
    flags = (raw >> 52) & 0xF
    g = (flags >> 3) & 1
    return Descriptor(base=base, limit=(limit << 12) | 0xFFF if g else limit, type=access & 0xF,
                      s=(access >> 4) & 1, dpl=(access >> 5) & 3, present=bool(access >> 7),
                      db=(flags >> 2) & 1, granularity=g, raw=raw)


def encode_descriptor(base, limit, access, flags=0xC):
    """The 8 bytes of a descriptor; `access` is P|DPL|S|type, `flags` is G|D/B|L|AVL."""
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       (flags << 4) | ((limit >> 16) & 0xF), (base >> 24) & 0xFF)


# Gate descriptors (8 bytes in the IDT)
class Gate(NamedTuple):
    offset: int
    selector: int
    type: int
    dpl: int
    present: bool

    @property
    def kind(self):
        return SYSTEM_TYPES.get(self.type, f"type {self.type}")

    @property
    def is_interrupt_gate(self):
        return self.type == 0xE

    @property
    def is_trap_gate(self):
        return self.type == 0xF


def decode_gate(raw):
    """Decode an 8-byte gate descriptor given as bytes or as a 64-bit integer."""
    if isinstance(raw, (bytes, bytearray)):
        raw = int.from_bytes(raw[:8], "little")
    return _decode_gate(raw)


@lru_cache(maxsize=1024)           # decoded by content: a gate the guest rewrites is a new key
def _decode_gate(raw):
    access = (raw >> 40) & 0xFF
    return Gate(offset=(raw & 0xFFFF) | ((raw >> 32) & 0xFFFF0000), selector=(raw >> 16) & 0xFFFF,
                type=access & 0xF, dpl=(access >> 5) & 3, present=bool(access >> 7))


# The 32-bit TSS: the fields the CPU reads on an interrupt (SDM figure 7-2)
TSS_ESP = {0: 4, 1: 12, 2: 20}
TSS_SS = {0: 8, 1: 16, 2: 24}
TSS_IOMAP_BASE = 102


def frame_names(stack_switch, error_code):
    """Names of the dwords the CPU pushes on interrupt delivery, from the new top of stack up."""
    names = (["error code"] if error_code else []) + ["EIP", "CS", "EFLAGS"]
    return names + (["ESP", "SS"] if stack_switch else [])


# --- the instructions the machine watches with a code hook (Machine.install_hooks) -------------------
# They act inside Unicorn, unseen: iret, retf, sysexit and a far call through a call gate change
# rings; sti, popf and iret can set IF while an interrupt waits; Unicorn would run sysret as AMD's.
IRET, RETF, RETF_IMM, STI, POPF, CALL_FAR = 0xCF, 0xCB, 0xCA, 0xFB, 0x9D, 0x9A
WATCHED = (IRET, RETF, RETF_IMM, STI, POPF, CALL_FAR)
SYSEXIT = b"\x0f\x35"
SYSRET = b"\x0f\x07"


def watched(code, offset):
    """Whether the instruction at `offset` of `code` is one the machine watches: one of WATCHED,
    sysexit, sysret, or a far call through memory (FF /3)."""
    byte = code[offset]
    return (byte in WATCHED or code[offset:offset + 2] in (SYSEXIT, SYSRET)
            or (byte == 0xFF and len(code) > offset + 1 and (code[offset + 1] >> 3) & 7 == 3))
