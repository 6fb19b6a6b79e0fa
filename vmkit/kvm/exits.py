"""What a KVM exit says: kvm_run decoded into a reason and its details, and where in the guest it
happened.

The reasons are the header's KVM_EXIT_* names without the prefix: "IO", "MMIO", "HLT",
"SHUTDOWN" (a triple fault), "INTR" (a signal made KVM_RUN return: the timeout's, or the device
model's kick for a timer tick), "IRQ_WINDOW_OPEN" (the guest can take an interrupt now, after user
space set kvm_run.request_interrupt_window: vmkit.kvm.interrupts), "INTERNAL_ERROR" (the kernel
could not go on, e.g. an instruction its emulator does not handle), "FAIL_ENTRY" (the hardware
refused to enter the guest), and the rarer ones.
"""
import bisect
from dataclasses import dataclass, field

from ..asm import disassemble
from . import api

DIRECTIONS = {api.KVM_EXIT_IO_IN: "in", api.KVM_EXIT_IO_OUT: "out"}


@dataclass
class Exit:
    reason: str                                   # "IO", "MMIO", "HLT", ...
    detail: dict = field(default_factory=dict)

    def __str__(self):
        return f"{self.reason} " + ", ".join(f"{k}={v:#x}" if isinstance(v, int) and v > 9 else f"{k}={v}"
                                             for k, v in self.detail.items())


def decode(vcpu, reason=None):
    """The exit in `vcpu`'s kvm_run as an Exit. IO: port, size, direction ("in"/"out"), count and,
    for out, the values written. MMIO: address, size, direction ("read"/"write") and, for a write, the
    value. INTERNAL_ERROR: suberror, what it means, and the instruction's bytes when KVM gives them.
    FAIL_ENTRY: the hardware's entry failure reason."""
    run = vcpu.kvm_run
    reason = run.exit_reason if reason is None else reason
    name = api.EXIT_REASONS.get(reason, f"exit reason {reason}")
    u = run.u
    if reason == api.KVM_EXIT_IO:
        io = u.io
        detail = {"port": io.port, "size": io.size, "direction": DIRECTIONS.get(io.direction, io.direction),
                  "count": io.count}
        if io.direction == api.KVM_EXIT_IO_OUT:
            data = vcpu.io_data()
            detail["values"] = [int.from_bytes(data[i:i + io.size], "little") for i in range(0, len(data), io.size)]
        return Exit(name, detail)
    if reason == api.KVM_EXIT_MMIO:
        m = u.mmio
        detail = {"address": m.phys_addr, "size": m.len, "direction": "write" if m.is_write else "read"}
        if m.is_write:
            detail["value"] = int.from_bytes(bytes(m.data)[:m.len], "little")
        return Exit(name, detail)
    if reason == api.KVM_EXIT_INTERNAL_ERROR:
        return Exit(name, internal_error(u.internal))
    if reason == api.KVM_EXIT_FAIL_ENTRY:
        return Exit(name, {"hardware_entry_failure_reason": u.fail_entry.hardware_entry_failure_reason,
                           "cpu": u.fail_entry.cpu})
    if reason == api.KVM_EXIT_UNKNOWN:
        return Exit(name, {"hardware_exit_reason": u.hw.hardware_exit_reason})
    if reason == api.KVM_EXIT_EXCEPTION:
        return Exit(name, {"vector": u.ex.exception, "error_code": u.ex.error_code})
    if reason == api.KVM_EXIT_SYSTEM_EVENT:
        return Exit(name, {"type": u.system_event.type})
    return Exit(name, {})


def internal_error(internal):
    """KVM_EXIT_INTERNAL_ERROR's details. For an emulation failure the data is struct
    emulation_failure: flags, then (if flags bit 0) the instruction's length and bytes."""
    data = list(internal.data[:min(internal.ndata, 16)])
    detail = {"suberror": internal.suberror,
              "what": api.INTERNAL_ERRORS.get(internal.suberror, f"suberror {internal.suberror}")}
    if internal.suberror == api.KVM_INTERNAL_ERROR_EMULATION and len(data) >= 3 and data[0] & 1:
        raw = b"".join(d.to_bytes(8, "little") for d in data[1:3])
        detail["instruction_bytes"] = raw[1:1 + min(raw[0], 15)]
    elif data:
        detail["data"] = data
    return detail


# --- where the exit happened ---------------------------------------------------------------------------
# Events name the instruction that exited, as VT-x's guest RIP does. KVM's RIP at an exit is not
# always that instruction: it is *at* it when user space must complete it (an `in`, an MMIO read:
# the guest waits for the answer) and *past* it when the kernel already has (hlt, an MMIO write; an
# `out` depends on the kernel: mainline KVM on VT-x completes it at the next KVM_RUN, an emulating
# KVM such as PVM before the exit). The locator checks which instruction fits the exit: the one at
# RIP or the one ending at RIP (the image's listing gives instruction starts; backwards decoding is
# the fallback outside it). When both fit (two identical `out`s in a row) it uses what this kernel
# did at the last `out` that was unambiguous.

REGISTER_SIZES = {"al": 1, "ax": 2, "eax": 4}
STRING_SIZES = {"b": 1, "w": 2, "d": 4}


class ExitLocator:
    """Finds the instruction that made each exit. `read(address, size)` reads guest memory; `lines`
    is the image's address -> source line map (its keys are instruction starts)."""

    def __init__(self, read, lines=None):
        self.read = read
        self.lines = sorted(lines or ())
        self.out_completed = None          # learned: does this kernel exit past an `out`?
        self._cache = {}

    def locate(self, rip, reason, direction=None, port=None, size=None, dx=None, address=None):
        """The instruction's address. IO: the port, the size and DX; MMIO: the address accessed."""
        key = (rip, reason, direction, port, size, address)
        eip = self._cache.get(key)
        if eip is not None:
            return eip
        if reason not in ("IO", "MMIO", "HLT") or (reason == "MMIO" and direction == "read"):
            return rip
        fits = lambda insn: _fits(insn, reason, direction, port, size, dx)
        here = _decode(self.read, rip, 15) if reason == "IO" else None
        at = here is not None and fits(here)
        before = self._ending_at(rip, fits, address) if not (reason == "IO" and direction == "in") else None
        if at and before is not None:                              # ambiguous: both would do
            eip = before if self.out_completed in (None, True) else rip
        else:
            eip = rip if at or before is None else before
            if reason == "IO" and direction == "out" and (at or before is not None):
                self.out_completed = not at
            self._cache[key] = eip
        return eip

    def _ending_at(self, rip, fits, address=None):
        """The start of an instruction that ends exactly at `rip` and fits the exit, or None. Listed
        starts come first, earliest first: the listing also has rows inside long instructions, and
        an earlier real instruction can only end before the one sought. An instruction that names
        the MMIO address itself beats one that only has some memory operand."""
        first = bisect.bisect_left(self.lines, rip - 15)
        listed = self.lines[first:bisect.bisect_left(self.lines, rip)]
        fitting = []
        for start in listed + [rip - k for k in range(1, 16)]:
            insn = _decode(self.read, start, rip - start)
            if insn is not None and insn.address + insn.size == rip and fits(insn):
                if address is not None and f"[{address:#x}]" in insn.op_str:
                    return start
                fitting.append(start)
        return fitting[0] if fitting else None


def _decode(read, address, size):
    try:
        code = read(address, size)
    except (IndexError, ValueError, OSError):
        return None
    found = disassemble(code, address, 1)
    return found[0] if found else None


def _fits(insn, reason, direction, port, size, dx):
    """Could `insn` have made this exit? For I/O the port and the access size must agree too."""
    name = insn.mnemonic.split()[-1]
    if reason == "HLT":
        return name == "hlt"
    if reason == "MMIO":
        return "[" in insn.op_str or name.startswith(("movs", "stos", "lods", "cmps", "scas"))
    if name in ("ins", "insb", "insw", "insd", "outs", "outsb", "outsw", "outsd"):
        return name.startswith("in" if direction == "in" else "out") and (
            size is None or STRING_SIZES.get(name[-1]) == size) and (dx is None or port is None or dx == port)
    if name != direction:
        return False
    operands = [op.strip() for op in insn.op_str.split(",")]
    register, where = (operands[0], operands[1]) if direction == "in" else (operands[1], operands[0])
    if size is not None and REGISTER_SIZES.get(register) != size:
        return False
    if port is None:
        return True
    return (dx == port) if where == "dx" else (int(where, 0) == port)
