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

The same steps are compiled in delivery.c (vmkit.machine.native), which the machine uses where it can:
`deliver` and `return_frame` below call it, and fall back on the Python here, the reference, for a CPU
with a VMM's view of the guest's tables, for what the C code leaves to it, and where the library is
not built or VMKIT_DELIVERY=reference asks for the reference (tests/test_compiled_delivery.py compares
the two).
"""
import ctypes
import os
import struct

from unicorn import x86_const as X

from . import native, quirks
from ..errors import GuestError
from .cpu import Fault
from .x86 import EXCEPTIONS, GP, IF, NP, NT, RF, SS_, TF, TS, VM, decode_gate, frame_names, SYSTEM_TYPES

SOFTWARE, EXCEPTION, EXTERNAL = "int", "exception", "irq"
SOURCES = {SOFTWARE: 0, EXCEPTION: 1, EXTERNAL: 2}            # delivery.c's numbers for them
# what delivery reads of the CPU, in one call into the engine (Cpu.get)
STATE = ("eip", "cs", "eflags", "esp", "ss", "cr0", "idtr", "gdtr", "ldtr", "tr")
RETURN_STATE = ("cs", "esp", "ss", "cr0", "gdtr", "ldtr")     # what return_frame reads


def deliver(cpu, vector, source, error_code=None):
    """Deliver `vector` now. `source` is SOFTWARE (int n), EXCEPTION or EXTERNAL (an IRQ).
    Returns a record of what happened; raises Fault if the delivery itself faults."""
    engine = compiled(cpu)
    if engine is not None:
        record = engine.deliver(vector, source, error_code)
        if record is not None:
            return record
    return deliver_reference(cpu, vector, source, error_code)


def deliver_reference(cpu, vector, source, error_code=None):
    """deliver(), in Python: the reference."""
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


def return_frame(cpu, skip=0):
    """What an iret or a far return at the current CPL would pop from SS:ESP, looked at before it runs:
    (cpl, esp, ss, words), the words EIP, CS, EFLAGS and, when CS's RPL is an outer ring, two more
    (ESP and SS for an iret) read past `skip` bytes of parameters (retf imm16) that must be readable too.
    None when the stack cannot be read: the CPU will fault on it."""
    engine = compiled(cpu)
    if engine is not None:
        return engine.return_frame(skip)
    return return_frame_reference(cpu, skip)


def return_frame_reference(cpu, skip=0):
    """return_frame(), in Python: the reference."""
    cs, esp, ss, cr0, *tables = cpu.get(RETURN_STATE)
    cpl = cs & 3
    paging = cpu.paging(cr0)
    try:
        base = cpu.segment_base(ss, tables=tables, paging=paging)
        raw = cpu.peek(base + esp, 12, paging)
        if raw is not None and raw[4] & 3 > cpl:      # to an outer ring: SS:ESP are popped too
            more = cpu.peek(base + esp + 12, 8 + skip, paging)
            raw = None if more is None else raw + more
    except (Fault, GuestError):
        return None
    if raw is None:
        return None
    return cpl, esp, ss, struct.unpack_from("<5I" if len(raw) >= 20 else "<3I", raw)


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



# --- the compiled twin (delivery.c) ------------------------------------------------------------------
OK, FAULT, REFERENCE, NONE = 0, 1, 2, 3       # delivery.c: how a call ended
_STATE_IDS = ("EIP", "CS", "EFLAGS", "ESP", "SS", "CR0", "CR3", "CR4", "IDTR", "GDTR", "LDTR", "TR")
_FAR_IDS = ("SS", "CS", "ESP", "EFLAGS", "EIP")


class Engine(ctypes.Structure):
    """delivery.c's struct engine: the engine's functions and handle, and where its hidden fields are."""
    _fields_ = [("uc", ctypes.c_void_p), ("reg_read_batch", ctypes.c_void_p), ("reg_write_batch", ctypes.c_void_p),
                ("mem_read", ctypes.c_void_p), ("mem_write", ctypes.c_void_p), ("context_save", ctypes.c_void_p),
                ("context_restore", ctypes.c_void_p), ("context", ctypes.c_void_p), ("old_exception", ctypes.c_int32),
                ("hflags", ctypes.c_int32), ("ram_size", ctypes.c_uint64),
                ("state_ids", ctypes.c_int32 * len(_STATE_IDS)), ("far_ids", ctypes.c_int32 * len(_FAR_IDS))]


class Outcome(ctypes.Structure):
    """delivery.c's struct delivery: how the call ended and what it did."""
    _fields_ = [(name, ctypes.c_uint32) for name in (
        "status", "fault_vector", "fault_error", "has_cr2", "cr2", "from_ring", "to_ring", "gate_type", "handler",
        "stack_switch", "esp", "ss", "if_cleared", "return_eip", "frame_count")] + [("frame", ctypes.c_uint32 * 6)]


class Compiled:
    """delivery.c bound to one Cpu's engine."""

    def __init__(self, lib, cpu):
        uclib = quirks.engine_library()
        self.saved, *context = quirks.saved_context(cpu.uc)   # a uc_context kept for this engine, the fields' offsets
        e = self.engine = Engine()
        e.uc = cpu.uc._uch.value
        for name in ("reg_read_batch", "reg_write_batch", "mem_read", "mem_write", "context_save", "context_restore"):
            setattr(e, name, ctypes.cast(getattr(uclib, f"uc_{name}"), ctypes.c_void_p).value)
        e.context, e.old_exception, e.hflags = context
        e.ram_size = cpu.ram_size
        e.state_ids[:] = [getattr(X, f"UC_X86_REG_{n}") for n in _STATE_IDS]
        e.far_ids[:] = [getattr(X, f"UC_X86_REG_{n}") for n in _FAR_IDS]
        self.outcome = Outcome()
        declare = lambda f, *argtypes: (setattr(f, "argtypes", argtypes), setattr(f, "restype", ctypes.c_int), f)[-1]  # noqa: E731
        self._deliver = declare(lib.vmkit_deliver, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int32,
                                ctypes.c_uint32, ctypes.c_void_p)
        self._return_frame = declare(lib.vmkit_far_return_frame, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)
        self.engine_ref, self.outcome_ref = ctypes.addressof(e), ctypes.addressof(self.outcome)

    def deliver(self, vector, source, error_code):
        """deliver() in C: the record, or None when the reference must do it; raises Fault."""
        status = self._deliver(self.engine_ref, vector, SOURCES[source], error_code is not None, error_code or 0,
                               self.outcome_ref)
        o = self.outcome
        if status == FAULT:
            raise Fault(o.fault_vector, o.fault_error, cr2=o.cr2 if o.has_cr2 else None)
        if status != OK:
            return None
        in_memory = o.frame[:o.frame_count]
        names = frame_names(o.stack_switch, error_code is not None)
        return {
            "vector": vector, "from_ring": o.from_ring, "to_ring": o.to_ring, "gate": SYSTEM_TYPES[o.gate_type],
            "handler": o.handler, "stack_switch": bool(o.stack_switch), "esp": o.esp, "ss": o.ss,
            "frame": list(zip(names, in_memory)), "error_code": error_code,
            "if_cleared": bool(o.if_cleared), "return_eip": o.return_eip,
        }

    def return_frame(self, skip):
        """return_frame() in C."""
        if self._return_frame(self.engine_ref, skip, self.outcome_ref) != OK:
            return None
        o = self.outcome
        return o.from_ring, o.esp, o.ss, tuple(o.frame[:o.frame_count])


def available():
    """(True, where the library is) or (False, why delivery runs the reference)."""
    if os.environ.get("VMKIT_DELIVERY") == "reference":
        return False, "VMKIT_DELIVERY=reference: the reference was asked for"
    return (True, native.library_path()) if native.library() is not None else (False, native.why_not())


def compiled(cpu):
    """The compiled delivery for `cpu`, or None where the reference must run: a VMM's view of the guest's
    tables (shadow paging's guest CR3, stand-in tables, a store watch) is known only to the Python; and
    without the library, or with VMKIT_DELIVERY=reference."""
    if cpu.guest_paging is not None or cpu.store_watch is not None or cpu.stand_ins:
        return None
    return engine(cpu)


def engine(cpu):
    """delivery.c bound to `cpu`'s engine, whatever view of the guest's tables a VMM keeps (what the CPU
    itself sees), or None: no library, or VMKIT_DELIVERY=reference."""
    bound = cpu.compiled
    if bound is None:
        lib = None if os.environ.get("VMKIT_DELIVERY") == "reference" else native.library()
        bound = cpu.compiled = Compiled(lib, cpu) if lib is not None else False
    return bound or None
