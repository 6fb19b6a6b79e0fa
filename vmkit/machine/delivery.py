"""Interrupt and exception delivery: what the CPU does between the event and the handler's first
instruction (Intel SDM vol. 3, 6.12). Unicorn reports the event and leaves this to vmkit.

The steps, in the manual's order: find the gate in the IDT; for `int n`, check the gate's DPL
against CPL; find the handler's code segment; if it is more privileged, switch to the stack the
TSS names for that ring and push the old SS:ESP; push EFLAGS, CS, EIP and, for some exceptions, an
error code; clear TF (and IF for an interrupt gate); jump to the handler.

Every read and write here is to a linear address, through `Cpu.read` and `Cpu.write`: with paging
on they walk the guest's page tables (`Cpu.translate`), and a page the walk refuses raises a #PF
(a Fault with CR2 and the error code) that Machine.deliver treats like any other fault during
delivery: a #PF while delivering a #PF or a contributory exception is a double fault (SDM table 6-5).
"""
import struct

from .cpu import Fault
from .x86 import EXCEPTIONS, GP, IF, NP, NT, RF, SS_, TF, TS, VM, decode_gate, frame_names

SOFTWARE, EXCEPTION, EXTERNAL = "int", "exception", "irq"
# what delivery reads of the CPU, in one call into the engine (Cpu.get)
STATE = ("eip", "cs", "eflags", "esp", "ss", "cr0", "idtr", "gdtr", "ldtr", "tr")


def deliver(cpu, vector, source, error_code=None):
    """Deliver `vector` now. `source` is SOFTWARE (int n), EXCEPTION or EXTERNAL (an IRQ).
    Returns a record of what happened; raises Fault if the delivery itself faults."""
    ext = 0 if source == SOFTWARE else 1
    idt_error = vector * 8 + 2 + ext                 # error code naming an IDT entry (SDM 6.13)
    old_eip, old_cs, old_eflags, old_esp, old_ss, cr0, (_, base, limit), *tables, tr = cpu.get(STATE)
    paging = cpu.paging(cr0)
    if vector * 8 + 7 > limit:
        raise Fault(GP, idt_error)
    gate = decode_gate(cpu.u64(base + vector * 8, "the IDT", paging))
    if gate.type not in (0xE, 0xF):
        raise Fault(GP, idt_error)                    # task gates and 16-bit gates are not modelled
    cpl = old_cs & 3
    if source == SOFTWARE and gate.dpl < cpl:
        raise Fault(GP, idt_error)                    # int n may only use gates open to its ring
    if not gate.present:
        raise Fault(NP, idt_error)
    selector = gate.selector
    if selector & ~3 == 0:
        raise Fault(GP, ext)
    code = cpu.descriptor(selector, GP, ext, tables=tables, paging=paging)
    if not code.is_code or code.dpl > cpl:
        raise Fault(GP, (selector & ~3) | ext)
    if not code.present:
        raise Fault(NP, (selector & ~3) | ext)

    switch = not code.conforming and code.dpl < cpl
    if switch:
        new_cpl = code.dpl
        ss, esp = cpu.tss_stack(new_cpl, ext, tr=tr, paging=paging)
        stack_base = _check_stack_segment(cpu, ss, new_cpl, ext, tables, paging).base
        pushed = [old_ss, old_esp, old_eflags, old_cs, old_eip]
    else:
        new_cpl, ss, esp = cpl, old_ss, old_esp
        stack_base = cpu.segment_base(ss, tables=tables, paging=paging)
        pushed = [old_eflags, old_cs, old_eip]
    if error_code is not None:
        pushed.append(error_code)

    esp = (esp - 4 * len(pushed)) & 0xFFFFFFFF
    stack = stack_base + esp
    # in memory, from the new top of stack up: [error code], EIP, CS, EFLAGS, [ESP, SS]
    in_memory = list(reversed(pushed))
    # the pushes are made at the new CPL: a user-mode access when the handler runs in ring 3 (SDM
    # vol. 3, 4.6: only the GDT, LDT, IDT and TSS reads are supervisor accesses whatever the CPL)
    cpu.write(stack, struct.pack(f"<{len(in_memory)}I", *[v & 0xFFFFFFFF for v in in_memory]), "the interrupt frame",
              user=new_cpl == 3)

    eflags = old_eflags & ~(TF | NT | RF | VM)
    if gate.is_interrupt_gate:
        eflags &= ~IF
    cpu.far_transfer(new_cpl, (selector & ~3) | new_cpl, ss, esp, gate.offset, eflags)
    names = frame_names(switch, error_code is not None)
    return {
        "vector": vector, "from_ring": cpl, "to_ring": new_cpl, "gate": gate.kind,
        "handler": gate.offset, "stack_switch": switch, "esp": esp, "ss": ss,
        "frame": list(zip(names, in_memory)), "error_code": error_code,
        "if_cleared": gate.is_interrupt_gate, "return_eip": old_eip,
    }


def _check_stack_segment(cpu, ss, cpl, ext, tables, paging):
    """The checks on the TSS's stack segment; each failure is an invalid-TSS fault naming it."""
    if ss & ~3 == 0 or ss & 3 != cpl:
        raise Fault(TS, (ss & ~3) | ext)
    desc = cpu.descriptor(ss, TS, ext, tables=tables, paging=paging)
    if not desc.writable or desc.dpl != cpl:
        raise Fault(TS, (ss & ~3) | ext)
    if not desc.present:
        raise Fault(SS_, (ss & ~3) | ext)
    return desc


def exception_class(vector, source):
    """benign, contributory, page or double: decides what a second fault means (SDM table 6-5)."""
    if source != EXCEPTION:
        return "benign"
    return EXCEPTIONS.get(vector, ("", "", "benign"))[2]


def second_fault(first_class, second_vector):
    """What happens when delivering an event of `first_class` raises `second_vector`:
    'serial' (deliver the second normally), 'double' (#DF) or 'triple' (shutdown)."""
    second = EXCEPTIONS.get(second_vector, ("", "", "benign"))[2]
    if first_class == "double" and second in ("contributory", "page"):
        return "triple"
    if first_class == "contributory" and second == "contributory":
        return "double"
    if first_class == "page" and second in ("contributory", "page"):
        return "double"
    return "serial"

