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
* ``skip_sync_pc``: a hook that writes EIP makes uc_reg_write set the engine's
  skip_sync_pc_on_exit (uc.c), which only an exit from translated code clears again
  (check_exit_request in qemu/accel/tcg/tcg-runtime.c). Written from an interrupt hook, outside
  translated code, it stays set for the rest of emu_start, and every later in/out and memory hook
  skips bringing EIP up to date (softmmu/ioport.c, accel/tcg/cputlb.c): they read where the block
  began. vmkit clears it after handling an exception inside the hook (resync_pc).

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
    skip_sync_pc: int


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


class _Saved:
    """The CPU state saved into one context kept per engine (allocating one each time is slow), and
    the hidden fields at their offsets in it, as ctypes integers made once."""

    def __init__(self, uc):
        o = offsets()
        self.uc, self.context = uc, uc.context_save()
        self.handle, self.pointer = uc._uch, self.context.context
        self.old_exception, self.error_code, self.exception_is_int, self.hflags = (
            _int32(self.context, offset) for offset in (o.old_exception, o.error_code, o.exception_is_int, o.hflags))
        self.save_into, self.restore_from = engine_library().uc_context_save, engine_library().uc_context_restore

    def update(self):
        self.save_into(self.handle, self.pointer)          # what uc.context_update does
        return self

    def restore(self):
        self.restore_from(self.handle, self.pointer)       # what uc.context_restore does


def _saved(uc):
    """The engine's _Saved, brought up to date. It is kept on the engine's Python object, not in a
    table of this module's: a table would keep every engine, and its guest's memory, alive."""
    saved = getattr(uc, "_vmkit_saved", None)
    if saved is None:
        saved = uc._vmkit_saved = _Saved(uc)
    return saved.update()


def saved_context(uc):
    """(the _Saved kept for `uc`, the address of its uc_context, the offsets of old_exception and hflags in
    it): for compiled code that does what clear_fault_and_set_cpl does (delivery.c). Keep the first
    alive as long as the address is used."""
    saved = _saved(uc)
    o = offsets()
    return saved, _address(saved.context), o.old_exception, o.hflags


def exception_state(uc):
    """(error_code, is_software_int) of the exception the hook was just told about."""
    saved = _saved(uc)
    return saved.error_code.value & 0xFFFFFFFF, bool(saved.exception_is_int.value)


def clear_fault_and_set_cpl(uc, cpl=None):
    """The remedy for Unicorn #1883 (forget the handled fault); optionally set CPL for a ring change.
    Registers must be written only after this, because it restores a saved context."""
    saved = _saved(uc)
    saved.old_exception.value = -1
    if cpl is not None:
        h = saved.hflags
        h.value = (h.value & ~HF_CPL_MASK) | cpl
    saved.restore()


def irq_inhibited(uc):
    """True in the one-instruction shadow after sti (or mov ss), when the CPU accepts no interrupt."""
    return bool(_saved(uc).hflags.value & HF_INHIBIT_IRQ)


def engine_library():
    """The ctypes handle of libunicorn that the Python binding loaded. Calling it directly costs
    about a microsecond less per call than the binding's generic register and memory accessors,
    which matters on every interrupt vmkit delivers."""
    from unicorn.unicorn_py3.unicorn import uclib  # private to unicorn's binding: loaded only where vmkit uses it
    return uclib


class EngineCalls:
    """The libunicorn functions the CPU's work calls most (uc.h: uc_reg_read, uc_reg_write, their
    _batch forms, uc_mem_read, uc_mem_write), declared again with plain addresses for arguments:
    the binding's declarations make ctypes check and convert each array and buffer on every call,
    which costs about a third of the call. The caller passes the engine's handle and the addresses
    of buffers it keeps alive itself."""
    _VOID, _INT, _U64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64

    def __init__(self):
        lib = engine_library()
        declare = lambda name, *argtypes: ctypes.CFUNCTYPE(ctypes.c_int, *argtypes)(   # noqa: E731
            ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)
        v, i, u = self._VOID, self._INT, self._U64
        self.reg_read = declare("uc_reg_read", v, i, v)
        self.reg_write = declare("uc_reg_write", v, i, v)
        self.reg_read_batch = declare("uc_reg_read_batch", v, v, v, i)
        self.reg_write_batch = declare("uc_reg_write_batch", v, v, v, i)
        self.mem_read = declare("uc_mem_read", v, u, v, u)
        self.mem_write = declare("uc_mem_write", v, u, ctypes.c_char_p, u)


_calls = None


def engine_calls():
    global _calls
    if _calls is None:
        _calls = EngineCalls()
    return _calls


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
    return Offsets(old_exception, error_code, exception_is_int, hflags, emu_counter, _probe_skip_sync_pc())


_SYNC_CODE = bytes.fromhex("cc90" "66bafd03" "9090" "ec" "f4")   # int3; nop; mov dx, 0x3fd; nop; nop; in al, dx; hlt
_SYNC_AT, _SYNC_AFTER, _SYNC_IN = 0x1000, 0x1002, 0x1008
_UC_SIZE = 1 << 15                 # bytes of the engine's struct that are searched


def _sync_probe(clear=None):
    """int3, whose hook moves EIP on (as the machine does when it handles an exception inside the
    hook), then an `in` whose hook reads EIP: the engine's bytes before and after the write, and
    the EIP the `in` hook saw (clearing the byte at `clear` after the write)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    uc.mem_write(_SYNC_AT, _SYNC_CODE)
    uc.reg_write(X.UC_X86_REG_ESP, 0x8000)
    seen = {}

    def on_intr(uc, vector, _):
        seen["before"] = ctypes.string_at(uc._uch.value, _UC_SIZE)
        uc.reg_write(X.UC_X86_REG_EIP, _SYNC_AFTER)
        seen["after"] = ctypes.string_at(uc._uch.value, _UC_SIZE)
        if clear is not None:
            ctypes.c_bool.from_address(uc._uch.value + clear).value = False

    def on_in(uc, port, size, _):
        seen["eip"] = uc.reg_read(X.UC_X86_REG_EIP)
        seen["at_in"] = ctypes.string_at(uc._uch.value, _UC_SIZE)
        return 0
    uc.hook_add(UC_HOOK_INTR, on_intr)
    uc.hook_add(UC_HOOK_INSN, on_in, None, 1, 0, X.UC_X86_INS_IN)
    uc.emu_start(_SYNC_AT, _SYNC_AT + len(_SYNC_CODE) - 1)
    return seen


def _probe_skip_sync_pc():
    # 5. a flag the EIP write sets and that is still set at the `in`: the one whose clearing gives
    #    the `in` hook its own EIP
    seen = _sync_probe()
    if seen.get("eip") == _SYNC_IN:
        return -1                          # this Unicorn brings EIP up to date anyway: nothing to clear
    flags = [o for o in range(_UC_SIZE) if seen["before"][o] == 0 and seen["after"][o] == 1 and seen["at_in"][o] == 1]
    return _only([o for o in flags if _sync_probe(clear=o).get("eip") == _SYNC_IN], "skip_sync_pc_on_exit")


def resync_pc(uc):
    """After a hook wrote EIP outside translated code: let later hooks see EIP up to date again."""
    flag = getattr(uc, "_vmkit_skip_sync_pc", False)      # kept on the engine, as _saved() keeps its state
    if flag is False:
        offset = offsets().skip_sync_pc
        flag = uc._vmkit_skip_sync_pc = None if offset < 0 else ctypes.c_bool.from_address(uc._uch.value + offset)
    if flag is not None:
        flag.value = False


def hook_time_stamp_counter(uc, on_rdtsc, on_rdtscp):
    """Let vmkit answer rdtsc/rdtscp (Unicorn reads the host's clock, which breaks reproducibility).
    Unicorn's engine supports these hooks; its Python binding does not list them yet. Each callback
    sets EDX:EAX itself and returns 1 so the instruction's own result is skipped."""
    from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC  # private to unicorn's binding, as above
    from unicorn.unicorn_py3.unicorn import uccallback  # private to unicorn's binding, as above
    for insn, callback in ((X.UC_X86_INS_RDTSC, on_rdtsc), (X.UC_X86_INS_RDTSCP, on_rdtscp)):
        wrapped = uccallback(uc, HOOK_INSN_CPUID_CFUNC)(lambda engine, key, cb=callback: cb())
        uc._Uc__do_hook_add(UC_HOOK_INSN, wrapped, 1, 0, insn)
