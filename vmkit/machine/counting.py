"""Counting instructions per translated block, exactly, at nearly the speed of uncounted Unicorn.

A counted slice used to be `emu_start(count=n)`: Unicorn then calls a code hook before every
instruction (hook_count_cb in Unicorn's uc.c), which makes the guest about 25 times slower. Here a
block hook written in C (blockcount.c, beside this file) adds each translated block's instruction
count before the block runs, and stops emulation in front of a block that would take the slice
past its length. The rest of the slice is then part of one block, a straight line (QEMU ends a
block at every jump), so it is run with `until` set to the address of the first instruction it
must not run: a block translated afresh stops there (Unicorn's translator emits a stop at the
`until` address, disas_insn in qemu/target/i386/translate.c; the block cached without it is
removed first with uc_ctl_remove_cache).

Inside a hook the exact count is the count at the current block's entry plus the index of EIP's
instruction in the block, decoded with capstone from the block's bytes; `started(eip)` gives what
Unicorn's own counter would say there (the instructions started, the one being run included).

The C code is part of vmkit's C library, built from source with the system's compiler
(vmkit.machine.native). Where it cannot be built or loaded (no compiler, a read-only environment), or
VMKIT_COUNT=reference asks for it, `available()` says why and the machine counts the reference way,
emu_start(count=n), with the same results; `vmkit.doctor()` reports which one this machine uses.
"""
import ctypes
import os
import weakref

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_INTR, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE
from unicorn.x86_const import UC_X86_REG_EIP
from unicorn.unicorn_const import UC_CTL_IO_READ_WRITE, UC_CTL_TB_REQUEST_CACHE

from ..asm import disassemble
from . import native, quirks
from .devices import MMIO_BASE
from .virtio import VIRTIO_BASE, VIRTIO_SIZE
from .x86 import watched

UC_HOOK_EDGE_GENERATED = 1 << 15   # unicorn.h, uc_hook_type (its Python binding does not name it)
REFUSED_LIMIT, REFUSED_NEW = 1, 2  # blockcount.c: why the block hook stopped in front of a block
NO_LIMIT = 1 << 62
OF = 4                             # the vector into raises
STEPS_COUNTED_BY_UNICORN = 2       # from the second slice of one instruction in a row
# in and out, which do not end a translated block (0xE4-0xE7, 0xEC-0xEF; ins and outs 0x6C-0x6F)
IO_OPCODES = frozenset(range(0xE4, 0xE8)) | frozenset(range(0xEC, 0xF0)) | frozenset(range(0x6C, 0x70))
PREFIXES = frozenset((0x66, 0x67, 0xF2, 0xF3, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0xF0))

ON_NEW = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32)
OUTSIDE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64, ctypes.c_uint32)


class Counter(ctypes.Structure):
    """The head of blockcount.c's struct counter (its table follows, used only by the C side)."""
    _fields_ = [("done", ctypes.c_uint64), ("limit", ctypes.c_uint64), ("start", ctypes.c_uint64),
                ("size", ctypes.c_uint32), ("icount", ctypes.c_uint32), ("refused", ctypes.c_uint32),
                ("full", ctypes.c_uint32), ("request_cache", ctypes.c_uint32), ("unused", ctypes.c_uint32),
                ("ctl", ctypes.c_void_p), ("emu_stop", ctypes.c_void_p), ("on_new", ctypes.c_void_p),
                ("outside", ctypes.c_void_p), ("inside_begin", ctypes.c_uint64), ("inside_end", ctypes.c_uint64),
                ("memory_end", ctypes.c_uint64), ("last_start", ctypes.c_uint64), ("last_size", ctypes.c_uint32),
                ("last_icount", ctypes.c_uint32), ("interrupt", ctypes.c_uint32)]


# --- the library ------------------------------------------------------------------------------------
def _load():
    """vmkit's C library (vmkit.machine.native) with the counter's functions declared, or None: not
    built, or VMKIT_COUNT=reference asks for the reference way."""
    if os.environ.get("VMKIT_COUNT") == "reference":
        return None
    lib = native.library()
    if lib is not None and lib.vmkit_count_new.restype is not ctypes.c_void_p:
        lib.vmkit_count_new.restype = ctypes.c_void_p
        lib.vmkit_count_free.argtypes = [ctypes.c_void_p]
    return lib


def available():
    """(True, where the library is) or (False, why vmkit counts the reference way)."""
    if os.environ.get("VMKIT_COUNT") == "reference":
        return False, "VMKIT_COUNT=reference: the reference way was asked for"
    return (True, native.library_path()) if _load() is not None else (False, native.why_not())


# --- one engine's counter ------------------------------------------------------------------------------
class BlockCounter:
    """The block counter attached to one Unicorn engine (a counted Machine makes its own, first thing
    in install_hooks, so that its interrupt hook runs before the machine's)."""

    def __init__(self, uc, read_code, memory, outside=None):
        """Attach to `uc`. `read_code(address, size)` reads code at a virtual address (None where
        nothing is mapped); RAM ends at physical `memory` (devices may be mapped past it).
        `outside` is (begin, end, memory, callback): for a block at an address below `memory` but
        outside [begin, end), callback(address, size) runs first, and returns True when it stopped
        the slice in front of the block."""
        lib = _load()
        self.uc = uc
        self.read_code = read_code         # (address, size) -> bytes at a virtual address, or None
        state = lib.vmkit_count_new()      # struct counter, zeroed; freed with this object
        if not state:
            raise MemoryError("no memory for the block counter")
        self.c = Counter.from_address(state)
        weakref.finalize(self, lib.vmkit_count_free, state)
        self.c.request_cache = UC_CTL_TB_REQUEST_CACHE | (2 << 26) | (UC_CTL_IO_READ_WRITE << 30)
        uclib = quirks.engine_library()
        self.c.ctl = ctypes.cast(uclib.uc_ctl, ctypes.c_void_p).value
        self.c.emu_stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
        self.on_new_callback = ON_NEW(self._on_new)        # kept alive as long as the engine
        self.c.on_new = ctypes.cast(self.on_new_callback, ctypes.c_void_p).value
        if outside is not None:
            self.c.inside_begin, self.c.inside_end, self.c.memory_end, callback = outside
            self.outside_callback = OUTSIDE(lambda address, size: int(bool(callback(address, size))))
            self.c.outside = ctypes.cast(self.outside_callback, ctypes.c_void_p).value
        self.offsets = {}                  # (address, size) -> instruction offsets, or None: two blocks share it
        self.layouts = {}                  # a block's bytes -> what _layout found in them
        self.in_tail = False
        self.unicorn_counts = False        # Unicorn's own counting hook is in place (after a reference run)
        self.single_steps = 0              # slices of one instruction in a row
        self.fences = set()
        self.to_fence = []
        self.reference = False             # True: this slice (or, once the table is full, every one) counts the reference way
        self.base = 0                      # instructions before the reference part of this slice
        self.lib = lib
        # Blocks translated before the hooks exist would not call them: start from an empty cache.
        uc.ctl_flush_tb()
        user = ctypes.c_void_p(ctypes.addressof(self.c))
        for kind, function in ((UC_HOOK_EDGE_GENERATED, lib.vmkit_count_new_block), (UC_HOOK_BLOCK, lib.vmkit_count_block),
                               (UC_HOOK_INTR, lib.vmkit_count_interrupt)):
            self._hook(kind, ctypes.cast(function, ctypes.c_void_p), user)
        # only over the devices' MMIO pages: a memory hook makes every access in its range sync EIP
        # first (cpu_restore_state), which VMM memory past RAM (binary translation's counts) would pay
        self._hook(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, ctypes.cast(lib.vmkit_count_access, ctypes.c_void_p), None,
                   max(memory, MMIO_BASE), VIRTIO_BASE + VIRTIO_SIZE - 1)

    def _hook(self, kind, function, user, begin=1, end=0):
        native.hook_add(self.uc, kind, function, user, begin, end)

    # --- the count inside a slice -----------------------------------------------------------------
    def started(self, eip):
        """Instructions started in this slice by the time a hook runs with EIP at `eip`, the
        instruction being run included: what emu_start(count=n)'s counter says there."""
        if self.reference:
            return self.base + quirks.instruction_counter(self.uc)
        c = self.c
        where = None if c.refused else self._where(eip)
        if where is None:
            return c.done                  # between blocks: the current one is done (or refused)
        index, decoded = where
        before = c.done - c.icount
        if index == decoded:
            return before + decoded        # EIP already past the block's last instruction (int n, sysenter)
        if c.interrupt == OF + 1 and index > 0 and self._follows_into(eip):
            return before + index          # into's #OF: EIP is already past it
        return before + index + 1

    def ran(self, eip):
        """Instructions the slice ran, once it has ended without a hook's stop or an error, with EIP
        at `eip`: all of the current block when EIP left it, else those before EIP (the `until`
        address, or the start of a block a stop from elsewhere kept from running). A block that
        stops at `until` counts the stop as an instruction (its icount), not run: EIP's index says."""
        if self.reference:
            return None
        c = self.c
        where = None if c.refused else self._where(eip)
        return c.done if where is None else c.done - c.icount + where[0]

    def _where(self, eip):
        """(index of the instruction at `eip` in the current block, the count of instructions decoded
        in it; EIP at the block's end has the index of that count), or None when EIP is not in the
        block or its bytes cannot be decoded."""
        c = self.c
        if not c.start <= eip <= c.start + c.size:
            return None
        offsets = self.offsets.get((c.start, c.size))
        if offsets is None:
            offsets = self._decode(c.start, c.size)
            if offsets is None:
                return None
        if eip == c.start + c.size:
            return len(offsets), len(offsets)
        try:
            return offsets.index(eip - c.start), len(offsets)
        except ValueError:
            return None

    def _follows_into(self, eip):
        offsets = self.offsets.get((self.c.start, self.c.size)) or self._decode(self.c.start, self.c.size) or []
        i = offsets.index(eip - self.c.start)
        code = self.read_code(self.c.start + offsets[i - 1], offsets[i] - offsets[i - 1]) or b""
        return code.lstrip(bytes(PREFIXES))[:1] == b"\xce"

    def _decode(self, start, size):
        """The offsets of the instructions of the block at `start`, from its bytes (None where they
        cannot be read)."""
        return self._layout(start, size)[0]

    def _layout(self, start, size):
        """(instruction offsets, offsets of the instructions needing a fence) of the block at `start`,
        from its bytes; the same bytes are decoded once."""
        code = self.read_code(start, size)
        if code is None:
            return None, ()
        layout = self.layouts.get(code)
        if layout is None:
            offsets = [insn.address - start for insn in disassemble(code, start)]
            fenced = []
            for i, offset in enumerate(offsets):
                at = offset
                while at < len(code) and code[at] in PREFIXES:
                    at += 1
                opcode = code[at:at + 2]
                if opcode[:1] and opcode[0] in IO_OPCODES and i + 1 < len(offsets):
                    fenced.append(offsets[i + 1])
                if i > 0 and opcode[:1] and watched(code, at):
                    # The machine's code hook on this instruction makes Unicorn fold the flags into
                    # EFLAGS form after it (gen_compute_eflags in disas_insn); if the instruction then
                    # faults, QEMU restores the flags' form recorded at the instruction's start
                    # (restore_state_to_opc), and EFLAGS reads wrong unless that form was EFLAGS
                    # already. Under emu_start(count=n) the instruction before had a hook and left
                    # it so: a fence there does the same.
                    fenced.append(offsets[i - 1])
            layout = self.layouts[code] = (offsets, tuple(fenced))
        return layout

    # --- a block QEMU has just translated, about to run for the first time ----------------------------
    def _on_new(self, start, size, icount):
        """Decode the block; where an in or out is followed by another instruction of the same block,
        that instruction needs a fence (blockcount.c), and so does the one before an instruction the
        machine watches: refuse the block (1) until it has them. The tail of a slice runs a block
        cut short at its `until` address, a prefix of one seen already: nothing to do."""
        if self.in_tail:
            return 0
        try:
            offsets, fenced = self._layout(start, size)
            key = (start, size)
            if key in self.offsets and self.offsets[key] != offsets:
                self.offsets[key] = None           # two blocks at this address and size: decode each time
            elif key not in self.offsets:
                self.offsets[key] = offsets
            for offset in fenced:
                self._needs_fence(start + offset)
            return 1 if self.to_fence and not self.reference else 0
        except Exception:                  # noqa: BLE001 - a C caller cannot take an exception: count the reference way
            self.reference = True
            return 1

    def _needs_fence(self, address):
        if address not in self.fences and address not in self.to_fence:
            self.to_fence.append(address)

    def _fence(self):
        for after in self.to_fence:
            if after not in self.fences:
                self.fences.add(after)
                self._hook(UC_HOOK_CODE, ctypes.cast(self.lib.vmkit_count_fence, ctypes.c_void_p), None, after, after)
        self.to_fence = []
        self.uc.ctl_remove_cache(self.c.start, self.c.start + max(self.c.size, 1))

    # --- one slice --------------------------------------------------------------------------------
    def run(self, begin, until, n, stopped, between):
        """Run at most `n` instructions from `begin`, stopping at EIP `until`, as emu_start(begin,
        until, count=n) would. `stopped()` says a hook has ended the slice; `between()` is called
        between two runs of the engine within the slice (the machine's repairs after emu_start).
        Returns True when the slice ran its full length."""
        c = self.c
        c.done, c.limit, self.base = 0, n, 0
        self.reference = bool(c.full)
        self.single_steps = self.single_steps + 1 if n == 1 else 0
        if self.reference or self.single_steps >= STEPS_COUNTED_BY_UNICORN:
            # Stepping, one instruction a slice, each would be cut short here at the price of two
            # blocks translated afresh; Unicorn's own count keeps its blocks from one step to the next
            return self._reference(begin, until, n)
        self._emulate(begin, until, stopped, between)
        if stopped() or not c.refused:
            return False
        if c.refused == REFUSED_NEW:       # Unicorn could not say, or the table is full
            between()
            return self._reference(c.start, until, n - c.done, base=c.done)
        # the block at c.start would take the slice past n: the rest, k instructions, is a straight
        # line inside it
        start, size, icount, k = c.start, c.size, c.icount, n - c.done
        if k == 0:
            return True
        offsets = self.offsets.get((start, size)) or self._decode(start, size)
        between()
        if offsets is None or len(offsets) != icount or k >= icount:
            return self._reference(start, until, k, base=c.done)
        target = start + offsets[k]
        if start <= until < target and until - start in offsets:
            target = until                 # the caller's `until` comes first
        self.uc.ctl_remove_cache(target, target + 1)
        c.limit = NO_LIMIT
        self.in_tail = True
        try:
            self._emulate(start, target, stopped, between)
        finally:
            self.in_tail = False
        if stopped():
            return False
        if c.refused:
            between()
            return self._reference(c.start, until, n - c.done, base=c.done)
        return target != until and self.uc.reg_read(UC_X86_REG_EIP) == target

    def _emulate(self, begin, until, stopped, between):
        """emu_start until a hook stops it, it ends, or the block hook refuses a block for its count;
        a block refused to be fenced is fenced and the run goes on."""
        c = self.c
        while True:
            c.refused = 0
            self.unicorn_counts = False    # (with count=0 Unicorn drops its counting hook, and its cache)
            self.uc.emu_start(begin, until)
            if stopped() or c.refused != REFUSED_NEW or c.full or not c.icount or not self.to_fence:
                return
            between()
            self._fence()
            begin = c.start

    def _reference(self, begin, until, n, base=0):
        """emu_start(count=n), Unicorn's own count: the reference this counter is tested against.
        Blocks translated without Unicorn's counting hook would not call it, so the cache is
        emptied before the hook is added (Unicorn empties it again when it drops the hook, at an
        emu_start without a count)."""
        self.reference, self.base = True, base
        self.c.limit = NO_LIMIT
        if not self.unicorn_counts:
            self.uc.ctl_flush_tb()
        self.unicorn_counts = True
        self.uc.emu_start(begin, until, count=n)
        return quirks.instruction_counter(self.uc) > n

    def may_resume(self):
        """Whether a hook may move EIP and let the slice go on (Machine._handle_in_hook): not in the
        tail of a slice, which runs a straight line to its end with no limit on the count."""
        return not self.in_tail

    def resume_after(self, started):
        """A hook has handled an exception and the slice goes on elsewhere: the block that faulted
        ended at the faulting instruction, `started` instructions into the slice. The C counter had
        added the whole block when it entered it; the next block adds to the exact count."""
        if self.reference:
            return                         # Unicorn's own counter runs on exactly
        c = self.c
        c.done, c.start, c.size, c.icount = started, 0, 0, 0
        c.last_start, c.last_size, c.last_icount = 0, 0, 0

    def ended(self, eip, error):
        """Instructions the slice ran, once it has ended, EIP at `eip`: Unicorn's counter after
        emu_start(count=n) (for an error, the faulting instruction counts, as it does there)."""
        if self.reference:
            return self.base + quirks.instruction_counter(self.uc)
        return self.started(eip) if error else self.ran(eip)
