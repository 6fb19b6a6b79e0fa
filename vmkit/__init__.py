"""vmkit: real x86 guests under each classic virtualization technique, every transition recorded.

    import vmkit
    result = vmkit.run(source_or_image, technique="native")
    result.serial, result.exit_code, result.events, result.stats, result.regs
"""
from .asm import Image, Instruction, assemble, disassemble
from .errors import AsmError, GuestError, GuestInterrupted, GuestTimeout, KvmUnavailable, ToolMissing, VmkitError
from .machine import Machine
from .run import TECHNIQUES, machine, run
from .trace import EVENT_KINDS, Event, RunResult
from .doctor import doctor
from . import guests, kvm              # vmkit.guests.image(name); vmkit.kvm.probe(): no device is opened on import

__all__ = ["Image", "Instruction", "assemble", "disassemble", "AsmError", "GuestError", "GuestInterrupted",
           "GuestTimeout", "KvmUnavailable", "ToolMissing", "VmkitError", "Machine", "TECHNIQUES",
           "machine", "run", "EVENT_KINDS", "Event", "RunResult", "doctor"]
