"""Emulation handlers: what a VMM does for each privileged instruction its guest kernel executes.

The guest kernel runs in ring 1, so each of these instructions raises #GP; the VMM decodes it and
calls the handler named after its mnemonic. A handler changes the virtual CPU (never the real
privileged state, which belongs to the VMM), uses the device model for I/O, and returns a short
description of its effect for the event log. The VMM then moves EIP past the instruction.

    EMULATORS["cli"](vmm, insn)  ->  "virtual IF 1 -> 0"
"""
from functools import lru_cache

import capstone
from capstone import x86_const as C

from ..machine.x86 import decode_descriptor
from .vcpu import DR7_FIXED

_decoder = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
_decoder.detail = True

_PARTS = {}
for _r in "abcd":
    _PARTS.update({f"e{_r}x": (f"e{_r}x", 0, 32), f"{_r}x": (f"e{_r}x", 0, 16),
                   f"{_r}l": (f"e{_r}x", 0, 8), f"{_r}h": (f"e{_r}x", 8, 8)})
for _r in ("si", "di", "bp", "sp"):
    _PARTS.update({f"e{_r}": (f"e{_r}", 0, 32), _r: (f"e{_r}", 0, 16)})


def decode(code, address):
    """The one instruction at `address` (capstone, with operand details), or None."""
    return _decode(bytes(code), address)


@lru_cache(maxsize=4096)            # a VMM meets the same few instructions again and again
def _decode(code, address):
    return next(_decoder.disasm(code, address, 1), None)


def read_register(cpu, name):
    if name in ("cs", "ss", "ds", "es", "fs", "gs"):
        return cpu[name]
    full, shift, bits = _PARTS[name]
    return (cpu[full] >> shift) & ((1 << bits) - 1)


def write_register(cpu, name, value):
    full, shift, bits = _PARTS[name]
    mask = ((1 << bits) - 1) << shift
    cpu[full] = (cpu[full] & ~mask) | ((value << shift) & mask)


def effective_address(vmm, insn, op):
    """Linear address of a memory operand: segment base + base + index * scale + displacement."""
    m, cpu = op.mem, vmm.cpu
    address = m.disp
    if m.base:
        address += read_register(cpu, insn.reg_name(m.base))
    if m.index:
        address += read_register(cpu, insn.reg_name(m.index)) * m.scale
    segment = insn.reg_name(m.segment) if m.segment else (
        "ss" if m.base and insn.reg_name(m.base) in ("esp", "ebp") else "ds")
    return (cpu.segment_base(cpu[segment]) + address) & 0xFFFFFFFF


def operand_value(vmm, insn, op):
    if op.type == C.X86_OP_REG:
        return read_register(vmm.cpu, insn.reg_name(op.reg))
    if op.type == C.X86_OP_IMM:
        return op.imm & 0xFFFFFFFF
    return int.from_bytes(vmm.cpu.read(effective_address(vmm, insn, op), op.size), "little")


# --- the handlers ----------------------------------------------------------------------------------
# The eight a lab asks students to write (cli, sti, hlt, mov, lgdt, lidt, out, in) carry an emulate_
# prefix: the VMMs reach them through EMULATORS, by mnemonic, and a notebook's names stay its own.
def emulate_cli(vmm, insn):
    before, vmm.vcpu.interrupt_flag = vmm.vcpu.interrupt_flag, False
    return f"virtual IF {int(before)} -> 0"


def emulate_sti(vmm, insn):
    before, vmm.vcpu.interrupt_flag = vmm.vcpu.interrupt_flag, True
    if not before:      # SDM Vol. 2B, STI: only an STI that sets IF from 0 holds interrupts off one instruction
        vmm.interrupt_shadow()
    return f"virtual IF {int(before)} -> 1"


def emulate_hlt(vmm, insn):
    vmm.halt()
    return "the virtual CPU waits for an interrupt" if vmm.vcpu.interrupt_flag else "the virtual CPU stops"


def emulate_lgdt(vmm, insn):
    base, limit = _table_operand(vmm, insn)
    vmm.load_gdt(base, limit)
    return f"virtual GDTR <- base {base:#x} limit {limit:#x}; shadow GDT rebuilt with DPL 0 -> 1"


def emulate_lidt(vmm, insn):
    base, limit = _table_operand(vmm, insn)
    vmm.load_idt(base, limit)
    return f"virtual IDTR <- base {base:#x} limit {limit:#x}"


def _table_operand(vmm, insn):
    raw = vmm.cpu.read(effective_address(vmm, insn, insn.operands[0]), 6)
    return int.from_bytes(raw[2:6], "little"), int.from_bytes(raw[:2], "little")


def ltr(vmm, insn):
    selector = operand_value(vmm, insn, insn.operands[0]) & 0xFFFF
    vmm.load_tr(selector)
    return f"virtual TR <- {selector:#06x}"


def lldt(vmm, insn):
    vmm.load_ldt(operand_value(vmm, insn, insn.operands[0]) & 0xFFFF)
    base, limit = vmm.vcpu.ldt
    return f"virtual LDTR <- {vmm.vcpu.ldtr:#06x}; shadow LDT of base {base:#x} limit {limit:#x} with DPL 0 -> 1"


def emulate_mov(vmm, insn):
    """mov to or from a control or debug register (mov to SS is handled by the VMM, see load_ss)."""
    dst, src = (insn.reg_name(op.reg) if op.type == C.X86_OP_REG else None for op in insn.operands)
    v = vmm.vcpu
    if dst and dst.startswith(("cr", "dr")):
        value = read_register(vmm.cpu, src)
        if dst.startswith("cr"):
            old = getattr(v, dst)
            setattr(v, dst, value)
            more = vmm.control_register_written(dst, old, value)
            return f"virtual {dst.upper()} <- {value:#x}" + (f"; {more}" if more else "")
        v.dr[int(dst[2:])] = value | (DR7_FIXED if dst == "dr7" else 0)
        return f"virtual {dst.upper()} <- {value:#x}"
    if src and src.startswith(("cr", "dr")):
        value = getattr(v, src) if src.startswith("cr") else v.dr[int(src[2:])]
        write_register(vmm.cpu, dst, value)
        return f"{dst} <- virtual {src.upper()} ({value:#x})"
    if dst == "ss":
        selector = operand_value(vmm, insn, insn.operands[1]) & 0xFFFF
        return vmm.load_ss(selector)
    return None


def clts(vmm, insn):
    vmm.vcpu.cr0 &= ~(1 << 3)
    return "virtual CR0.TS <- 0"


def lmsw(vmm, insn):
    value = operand_value(vmm, insn, insn.operands[0])
    vmm.vcpu.cr0 = (vmm.vcpu.cr0 & ~0xF) | (value & 0xF) | (vmm.vcpu.cr0 & 1)   # lmsw cannot clear PE
    return f"virtual CR0 <- {vmm.vcpu.cr0:#x}"


def nothing_to_do(vmm, insn):
    return "nothing to do: the model has no caches"


def invlpg(vmm, insn):
    """invlpg: the guest drops a TLB entry; the VMM drops the shadow PTE made for that page."""
    linear = effective_address(vmm, insn, insn.operands[0])
    if not vmm.shadow.on:
        return "nothing to do: paging is off"
    if vmm.shadow.drop_linear(linear):
        return f"shadow PTE for {linear:#x} dropped"
    return f"no shadow PTE for {linear:#x}: nothing to drop"


def rdmsr(vmm, insn):
    value = vmm.vcpu.msr.get(vmm.cpu["ecx"], 0)
    vmm.cpu["eax"], vmm.cpu["edx"] = value & 0xFFFFFFFF, value >> 32
    return f"edx:eax <- virtual MSR {vmm.cpu['ecx']:#x}"


def wrmsr(vmm, insn):
    ecx = vmm.cpu["ecx"]
    vmm.vcpu.msr[ecx] = (vmm.cpu["edx"] << 32) | vmm.cpu["eax"]
    return f"virtual MSR {ecx:#x} <- {vmm.vcpu.msr[ecx]:#x}"


def sysexit(vmm, insn):
    """sysexit needs CPL 0 (SDM vol. 2B, SYSEXIT: #GP(0) if CPL is not 0), so the ring-1 kernel's
    traps; at its virtual CPL 0 the VMM carries it out (Machine.fast_system_return)."""
    vmm.leave_kernel()
    description = vmm.fast_system_return(insn.address)
    vmm.enter_user_mode()
    return description


def emulate_out(vmm, insn):
    port_op, value_op = insn.operands
    port = operand_value(vmm, insn, port_op)
    value = operand_value(vmm, insn, value_op)
    vmm.port_out(port, value_op.size, value)
    return f"device model: out {port:#x} <- {value:#x}"


def emulate_in(vmm, insn):
    value_op, port_op = insn.operands
    port = operand_value(vmm, insn, port_op)
    value = vmm.port_in(port, value_op.size)
    write_register(vmm.cpu, insn.reg_name(value_op.reg), value)
    return f"device model: in {port:#x} -> {value:#x}"


STRING_IO_CHUNK = 1024              # elements per trap: a long rep stays interruptible and budgeted


def _string_io(vmm, insn, direction):
    """outs/ins, with or without rep: one port access per element, as the CPU would make them. A
    long rep is done in chunks, the instruction left to trap again, as the CPU may stop one between
    iterations; so budgets and interrupts still apply."""
    cpu = vmm.cpu
    size = insn.operands[1 if direction == "out" else 0].size
    repeated = insn.prefix[0] in (0xF3, 0xF2)
    count = min(cpu["ecx"], STRING_IO_CHUNK) if repeated else 1
    step = -size if cpu["eflags"] & (1 << 10) else size
    port = cpu["edx"] & 0xFFFF
    for _ in range(count):
        if direction == "out":
            address = cpu.segment_base(cpu["ds"]) + cpu["esi"]
            vmm.port_out(port, size, int.from_bytes(cpu.read(address, size), "little"))
            cpu["esi"] = (cpu["esi"] + step) & 0xFFFFFFFF
        else:
            address = cpu.segment_base(cpu["es"]) + cpu["edi"]
            cpu.write(address, vmm.port_in(port, size).to_bytes(size, "little"))
            cpu["edi"] = (cpu["edi"] + step) & 0xFFFFFFFF
        if repeated:
            cpu["ecx"] = cpu["ecx"] - 1
    if repeated and cpu["ecx"]:
        cpu["eip"] = insn.address                    # not done yet: it traps again for the rest
    return f"device model: {count} x {direction} {port:#x}"


def outs(vmm, insn):
    return _string_io(vmm, insn, "out")


def ins(vmm, insn):
    return _string_io(vmm, insn, "in")


# The table the VMM calls, by mnemonic (capstone's names; rep forms share their base handler).
EMULATORS = {
    "cli": emulate_cli, "sti": emulate_sti, "hlt": emulate_hlt, "lgdt": emulate_lgdt, "lidt": emulate_lidt,
    "ltr": ltr, "lldt": lldt, "mov": emulate_mov, "clts": clts, "lmsw": lmsw, "invlpg": invlpg,
    "wbinvd": nothing_to_do, "invd": nothing_to_do, "rdmsr": rdmsr, "wrmsr": wrmsr, "sysexit": sysexit,
    "out": emulate_out,
    "in": emulate_in,
    "outsb": outs, "outsw": outs, "outsd": outs, "insb": ins, "insw": ins, "insd": ins,
}


# --- sensitive reads: they never trap, so only a binary translator can call these -----------------
def write_operand(vmm, insn, op, value):
    if op.type == C.X86_OP_REG:
        write_register(vmm.cpu, insn.reg_name(op.reg), value)
    else:
        vmm.cpu.write(effective_address(vmm, insn, op), (value & ((1 << 8 * op.size) - 1)).to_bytes(op.size, "little"))


def _store_table_register(vmm, insn, register, name):
    base, limit = register
    vmm.cpu.write(effective_address(vmm, insn, insn.operands[0]),
                  limit.to_bytes(2, "little") + base.to_bytes(4, "little"))
    return f"the guest reads its virtual {name}: base {base:#x} limit {limit:#x}"


def sgdt(vmm, insn):
    return _store_table_register(vmm, insn, vmm.vcpu.gdtr, "GDTR")


def sidt(vmm, insn):
    return _store_table_register(vmm, insn, vmm.vcpu.idtr, "IDTR")


def sldt(vmm, insn):
    write_operand(vmm, insn, insn.operands[0], vmm.vcpu.ldtr)
    return f"the guest reads its virtual LDTR ({vmm.vcpu.ldtr:#06x})"


def str_(vmm, insn):
    write_operand(vmm, insn, insn.operands[0], vmm.vcpu.tr)
    return f"the guest reads its virtual TR ({vmm.vcpu.tr:#06x})"


def smsw(vmm, insn):
    op = insn.operands[0]
    value = vmm.vcpu.cr0 if op.type == C.X86_OP_REG and op.size == 4 else vmm.vcpu.cr0 & 0xFFFF
    write_operand(vmm, insn, op, value)
    return f"the guest reads its virtual CR0 ({value:#x})"


def guest_descriptor(vmm, selector):
    """The guest's own descriptor for `selector` (its GDT or, with TI set, the LDT its LDTR names;
    not the shadow copies), or None."""
    if selector & 4:
        if vmm.vcpu.ldtr & ~3 == 0:
            return None
        base, limit = vmm.vcpu.ldt
    else:
        base, limit = vmm.vcpu.gdtr
        if selector & ~3 == 0:
            return None
    if (selector & ~7) + 7 > limit:
        return None
    return decode_descriptor(vmm.cpu.read(base + (selector & ~7), 8, "the guest's descriptor table"))


LAR_SYSTEM_TYPES = {0x1, 0x2, 0x3, 0x4, 0x5, 0x9, 0xB, 0xC}
LSL_SYSTEM_TYPES = {0x1, 0x2, 0x3, 0x9, 0xB}


def _visible(descriptor, selector, system_types):
    """The checks lar, lsl, verr and verw make at CPL 0 (the guest kernel's virtual CPL)."""
    if descriptor is None or (not descriptor.s and descriptor.type not in system_types):
        return False
    return descriptor.conforming or descriptor.dpl >= (selector & 3)


def _set_zf(vmm, on):
    vmm.cpu["eflags"] = (vmm.cpu["eflags"] & ~ZF_BIT) | (ZF_BIT if on else 0)


def lar(vmm, insn):
    selector = operand_value(vmm, insn, insn.operands[1]) & 0xFFFF
    d = guest_descriptor(vmm, selector)
    ok = _visible(d, selector, LAR_SYSTEM_TYPES)
    _set_zf(vmm, ok)
    if ok:
        write_operand(vmm, insn, insn.operands[0], (d.raw >> 32) & 0x00F0FF00)
    return f"access rights of {selector:#x} from the guest's own GDT" if ok else f"{selector:#x}: ZF=0"


def lsl(vmm, insn):
    selector = operand_value(vmm, insn, insn.operands[1]) & 0xFFFF
    d = guest_descriptor(vmm, selector)
    ok = _visible(d, selector, LSL_SYSTEM_TYPES)
    _set_zf(vmm, ok)
    if ok:
        write_operand(vmm, insn, insn.operands[0], d.limit)
    return f"limit of {selector:#x} from the guest's own GDT" if ok else f"{selector:#x}: ZF=0"


def verr(vmm, insn):
    selector = operand_value(vmm, insn, insn.operands[0]) & 0xFFFF
    d = guest_descriptor(vmm, selector)
    ok = d is not None and d.s == 1 and d.readable and _visible(d, selector, ())
    _set_zf(vmm, ok)
    return f"{selector:#x} readable at CPL 0: {ok}"


def verw(vmm, insn):
    selector = operand_value(vmm, insn, insn.operands[0]) & 0xFFFF
    d = guest_descriptor(vmm, selector)
    ok = d is not None and d.writable and d.dpl >= (selector & 3)
    _set_zf(vmm, ok)
    return f"{selector:#x} writable at CPL 0: {ok}"


def emulate_pushfd(vmm, insn):
    """pushf without a rewrite rule: the guest's flags, its virtual IF and IOPL among them."""
    cpu = vmm.cpu
    value = vmm.vcpu.flags_view(cpu["eflags"])
    esp = (cpu["esp"] - 4) & 0xFFFFFFFF
    cpu.write(cpu.segment_base(cpu["ss"]) + esp, value.to_bytes(4, "little"), "the guest's stack")
    cpu["esp"] = esp
    return f"pushed the virtual flags {value:#x}"


def emulate_popfd(vmm, insn):
    """popf without a rewrite rule, at the guest kernel's virtual CPL 0: IF and IOPL go to the
    virtual CPU, the arithmetic flags to the real ones."""
    cpu = vmm.cpu
    value = cpu.u32(cpu.segment_base(cpu["ss"]) + cpu["esp"], "the guest's stack")
    cpu["esp"] = (cpu["esp"] + 4) & 0xFFFFFFFF
    vmm.vcpu.interrupt_flag = bool(value & (1 << 9))
    vmm.vcpu.iopl = (value >> 12) & 3
    cpu["eflags"] = (cpu["eflags"] & ((1 << 9) | (3 << 12))) | (value & 0x244DD5) | 0x2
    return f"virtual IF {int(vmm.vcpu.interrupt_flag)}, IOPL {vmm.vcpu.iopl}; flags {value:#x}"


ZF_BIT = 1 << 6
# What a binary translator calls out for besides EMULATORS: the instructions Robin & Irvine found
# sensitive but unprivileged, answered from the virtual CPU and the guest's own tables.
SENSITIVE_READS = {"sgdt": sgdt, "sidt": sidt, "sldt": sldt, "str": str_, "smsw": smsw,
                   "lar": lar, "lsl": lsl, "verr": verr, "verw": verw}
# pushf and popf, for a translator that has no rewrite rule for them
FLAGS = {"pushfd": emulate_pushfd, "popfd": emulate_popfd}
