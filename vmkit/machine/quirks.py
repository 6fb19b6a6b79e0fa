"""The few places where vmkit reaches under Unicorn's public API, each found by a probe at start-up.

Unicorn (2.1) emulates x86 instructions faithfully but leaves out, or hides, CPU state that a
machine model needs:

* ``old_exception``: after a hook has handled a fault, QEMU's CPU still remembers it, so the next
  fault turns into a double fault and the third silently ends emulation (Unicorn issue #1883).
  vmkit resets the field after every fault it handles.
* ``error_code`` and ``exception_is_int``: the error code of a #GP, and whether vector 13 came from
  a fault or from ``int 0x0d``, are in the CPU state but not readable as registers.
* ``hflags``: the CPU's current privilege level. Unicorn refuses to load SS for a privilege level
  other than the current one, so to deliver an interrupt into another ring vmkit first sets CPL the
  way the CPU does internally, then loads SS and CS normally (their descriptor checks still run).
  Bit 3 of hflags is the interrupt shadow after ``sti`` or ``mov ss``.
* ``emu_counter``: with ``emu_start(count=n)`` Unicorn counts instructions; reading its counter is
  how vmkit knows exactly how many ran when a slice stops early. Deterministic time depends on it.

The offsets are not hard-coded: a probe runs tiny guests and finds each field by comparing the
CPU state before and after a known event. If the probe cannot find them, Unicorn has changed, and
the error says which version vmkit was checked against.
"""
import ctypes
from dataclasses import dataclass

from unicorn import Uc, UC_ARCH_X86, UC_MODE_32, UC_HOOK_INSN, UC_HOOK_INTR
from unicorn import x86_const as X

from .x86 import encode_descriptor

CHECKED_WITH = "unicorn 2.1.x"
HF_CPL_MASK = 0x3
HF_INHIBIT_IRQ = 1 << 3


class UnicornChanged(RuntimeError):
    pass


@dataclass(frozen=True)
class Offsets:
    old_exception: int
    error_code: int
    exception_is_int: int
    hflags: int
    emu_counter: int


_offsets = None


def offsets():
    global _offsets
    if _offsets is None:
        _offsets = _probe()
    return _offsets


# --- reading and writing the hidden state -------------------------------------------------------

def _address(ctx):
    address = getattr(ctx, "_vmkit_address", None)
    if address is None:
        address = ctx._vmkit_address = ctypes.cast(ctx._context, ctypes.c_void_p).value
    return address


def _int32(ctx, offset):
    return ctypes.c_int32.from_address(_address(ctx) + offset)


_scratch = {}


def _saved(uc):
    """The CPU state, saved into one context kept per engine (allocating one each time is slow)."""
    ctx = _scratch.get(id(uc))
    if ctx is None or ctx[0] is not uc:
        ctx = _scratch[id(uc)] = (uc, uc.context_save())
    else:
        uc.context_update(ctx[1])
    return ctx[1]


def exception_state(uc):
    """(error_code, is_software_int) of the exception the hook was just told about."""
    o = offsets()
    ctx = _saved(uc)
    return _int32(ctx, o.error_code).value & 0xFFFFFFFF, bool(_int32(ctx, o.exception_is_int).value)


def clear_fault_and_set_cpl(uc, cpl=None):
    """The remedy for Unicorn #1883 (forget the handled fault); optionally set CPL for a ring change.
    Registers must be written only after this, because it restores a saved context."""
    o = offsets()
    ctx = _saved(uc)
    _int32(ctx, o.old_exception).value = -1
    if cpl is not None:
        h = _int32(ctx, o.hflags)
        h.value = (h.value & ~HF_CPL_MASK) | cpl
    uc.context_restore(ctx)


def irq_inhibited(uc):
    """True in the one-instruction shadow after sti (or mov ss), when the CPU accepts no interrupt."""
    return bool(_int32(_saved(uc), offsets().hflags).value & HF_INHIBIT_IRQ)


def forget(uc):
    _scratch.pop(id(uc), None)


def engine_library():
    """The ctypes handle of libunicorn that the Python binding loaded. Calling it directly costs
    about a microsecond less per call than the binding's generic register and memory accessors,
    which matters on every interrupt vmkit delivers."""
    from unicorn.unicorn_py3.unicorn import uclib  # private to unicorn's binding: loaded only where vmkit uses it
    return uclib


def instruction_counter(uc):
    """Unicorn's count of instructions started in the current/last emu_start(count=n)."""
    return ctypes.c_uint64.from_address(uc._uch.value + offsets().emu_counter).value


def set_instruction_counter(uc, value):
    """Leave Unicorn's counter as emu_start(count=n) would have left it, after a slice counted by
    vmkit.machine.counting (which runs with count=0, so that Unicorn does not count)."""
    ctypes.c_uint64.from_address(uc._uch.value + offsets().emu_counter).value = value


# --- the probe ------------------------------------------------------------------------------------

_GDT = (encode_descriptor(0, 0, 0) + encode_descriptor(0, 0xFFFFF, 0x9A) + encode_descriptor(0, 0xFFFFF, 0x92)
        + encode_descriptor(0, 0xFFFFF, 0xFA) + encode_descriptor(0, 0xFFFFF, 0xF2))
_CODE = 0x10000


def _probe_cpu(code):
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x100000)
    uc.mem_write(0x800, _GDT)
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x800, len(_GDT) - 1, 0))
    uc.reg_write(X.UC_X86_REG_CR0, 0x11)
    uc.reg_write(X.UC_X86_REG_CS, 0x08)
    for r in (X.UC_X86_REG_SS, X.UC_X86_REG_DS, X.UC_X86_REG_ES):
        uc.reg_write(r, 0x10)
    uc.reg_write(X.UC_X86_REG_ESP, 0x80000)
    uc.mem_write(_CODE, code)
    seen = {}

    def on_intr(uc, vector, _):
        seen["vector"], seen["ctx"] = vector, bytes(uc.context_save())
        uc.emu_stop()
    uc.hook_add(UC_HOOK_INTR, on_intr)
    before = bytes(uc.context_save())
    uc.emu_start(_CODE, _CODE + 0x1000, count=50)
    return uc, before, seen


def _i32(raw, off):
    return int.from_bytes(raw[off:off + 4], "little", signed=True)


def _only(candidates, what):
    if len(candidates) != 1:
        raise UnicornChanged(f"vmkit could not find the CPU's {what} in this Unicorn's state "
                             f"({len(candidates)} candidates); vmkit was checked with {CHECKED_WITH}. "
                             f"Install that version: pip install 'unicorn>=2.1,<2.2'")
    return candidates[0]


def _probe():
    # 1. mov ax, 0x1233 ; mov ds, ax  ->  #GP(0x1230): the selector is past the GDT's limit
    _, before, gp = _probe_cpu(bytes.fromhex("66b833128ed8f4"))
    n = len(gp["ctx"])
    old_exception = _only([o for o in range(0, n - 3, 4)
                           if _i32(before, o) == -1 and _i32(gp["ctx"], o) == 13], "old_exception")
    error_code = _only([o for o in range(0, n - 3, 4)
                        if _i32(gp["ctx"], o) == 0x1230 and _i32(before, o) != 0x1230], "error_code")
    # 2. int 0x0d: the same vector, but a software interrupt
    _, _, soft = _probe_cpu(bytes.fromhex("cd0df4"))
    exception_is_int = _only([o for o in range(error_code - 16, error_code + 16, 4)
                              if _i32(soft["ctx"], o) == 1 and _i32(gp["ctx"], o) == 0], "exception_is_int")
    # 3. iretd to ring 3, then hlt there -> #GP at CPL 3: hflags' low bits go from 0 to 3
    user = _CODE + 20
    code = (bytes.fromhex("6a23" "6800f00700" "6802020000" "6a1b" "68") + user.to_bytes(4, "little")
            + b"\xcf" + b"\xf4\xf4")
    _, before, r3 = _probe_cpu(code)
    hflags = _only([o for o in range(0, n - 3, 4)
                    if _i32(before, o) & 0x80 and _i32(before, o) & 3 == 0 and _i32(r3["ctx"], o) & 3 == 3
                    and _i32(before, o) & ~3 == _i32(r3["ctx"], o) & ~3], "hflags")
    # 4. count=k over a run of nops: the engine's counter holds k+1 (it counts the one it refused)
    hits = None
    for k in (1234, 4321):
        uc = Uc(UC_ARCH_X86, UC_MODE_32)
        uc.mem_map(0, 0x10000)
        uc.mem_write(0, b"\x90" * 0x8000)
        uc.emu_start(0, 0x8000, count=k)
        raw = ctypes.string_at(uc._uch.value, 4096)
        found = {o for o in range(0, len(raw), 8) if int.from_bytes(raw[o:o + 8], "little") == k + 1}
        hits = found if hits is None else hits & found
    emu_counter = _only(sorted(hits), "instruction counter")
    return Offsets(old_exception, error_code, exception_is_int, hflags, emu_counter)


def hook_time_stamp_counter(uc, on_rdtsc, on_rdtscp):
    """Let vmkit answer rdtsc/rdtscp (Unicorn reads the host's clock, which breaks reproducibility).
    Unicorn's engine supports these hooks; its Python binding does not list them yet. Each callback
    sets EDX:EAX itself and returns 1 so the instruction's own result is skipped."""
    from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC  # private to unicorn's binding, as above
    from unicorn.unicorn_py3.unicorn import uccallback  # private to unicorn's binding, as above
    for insn, callback in ((X.UC_X86_INS_RDTSC, on_rdtsc), (X.UC_X86_INS_RDTSCP, on_rdtscp)):
        wrapped = uccallback(uc, HOOK_INSN_CPUID_CFUNC)(lambda engine, key, cb=callback: cb())
        uc._Uc__do_hook_add(UC_HOOK_INSN, wrapped, 1, 0, insn)
