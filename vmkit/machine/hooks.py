"""The vmkit PC's commonest events handled inside Unicorn's hooks, in C (hooks.c), and recorded by the
machine afterwards (Machine._record_compiled).

An `int 0x80` round trip from ring 3 takes two hooks: the interrupt, which the machine delivers through
the IDT, and the iret back, which it records. In Python each hook is a dozen calls into the engine and
about as many Python functions. hooks.c is registered ahead of the machine's Python hooks and handles
the two itself where the outcome is known to be the one Machine._on_interrupt and Machine._on_watched,
the reference, would reach; their events wait here, in order, until the machine records them, which it
does before it records any other event or looks at its events (tests/test_compiled_delivery.py runs guests
both ways and compares every event, count and register). hooks.c says when it may act; the machine
arms the hooks for a slice (Machine._arm) and disarms them when anything asks for the slice's end.

For a VMM the interrupt hook is hooks.c's vmkit_vmm_trap: when the VMM arms it for a slice
(Machine.traps_compiled: trap-and-emulate with its shipped cli and sti handlers), the #GP of a guest
kernel's cli or sti is moved past in C and waits as a TRAP event, which the VMM emulates when the
machine records it (TrapAndEmulate.compiled_trap).

VMKIT_DELIVERY=reference switches them off, with the compiled delivery (vmkit.machine.delivery).
"""
import ctypes
import struct

from unicorn import UC_HOOK_CODE, UC_HOOK_INTR

from . import native, quirks
from .delivery import Outcome

EVENTS = 64                        # hooks.c: events that can wait to be recorded
INT, RETURN, TRAP = 1, 2, 3        # hooks.c: what an event is (`int n`, an iret or retf, a VMM's trap)
LEFT = 1024                        # events handled before the machine looks at the clock again


class Event(ctypes.Structure):
    """hooks.c's struct pc_event."""
    _fields_ = [("kind", ctypes.c_uint32), ("eip", ctypes.c_uint32), ("started", ctypes.c_uint64),
                ("vector", ctypes.c_uint32), ("op", ctypes.c_uint32), ("d", Outcome), ("pad", ctypes.c_uint32)]


class State(ctypes.Structure):
    """hooks.c's struct pc."""
    _fields_ = [("engine", ctypes.c_void_p), ("counter", ctypes.c_void_p), ("armed", ctypes.c_uint32),
                ("deliveries", ctypes.c_uint32), ("handled_interrupt", ctypes.c_uint32),
                ("handled_watch", ctypes.c_uint32), ("slice_n", ctypes.c_uint64), ("until", ctypes.c_uint64),
                ("skip_sync_pc", ctypes.c_int64), ("left", ctypes.c_uint32), ("count", ctypes.c_uint32),
                ("traps", ctypes.c_uint32), ("exception_is_int", ctypes.c_int32), ("error_code", ctypes.c_int32),
                ("events", Event * EVENTS)]


# one event as plain numbers: kind, eip, started, vector, op, then the Outcome's fields in order
_EVENT = struct.Struct("<IIQII" + "I" * (len(Outcome._fields_) - 1) + "6I" + "I")
assert _EVENT.size == ctypes.sizeof(Event)


class CompiledHooks:
    """hooks.c attached to one engine, with the block counter it reads and the compiled delivery it uses."""

    def __init__(self, uc, counter, engine, deliveries=True):
        """`counter`: the machine's counting.BlockCounter; `engine`: its Cpu's delivery.Compiled.
        `deliveries`: handle `int n` and the returns too (the vmkit PC), not only sti and popf (a VMM);
        a VMM's slice may also be armed for its cli and sti traps (arm(traps=True))."""
        self.lib = native.library()
        self.uc, self.counter, self.engine = uc, counter, engine      # kept alive with the hooks
        s = self.state = State()
        s.engine, s.counter, s.deliveries = engine.engine_ref, ctypes.addressof(counter.c), deliveries
        self.deliveries = deliveries
        offsets = quirks.offsets()
        s.skip_sync_pc, s.exception_is_int, s.error_code = offsets.skip_sync_pc, offsets.exception_is_int, offsets.error_code
        self._user = ctypes.c_void_p(ctypes.addressof(s))
        self._events = ctypes.addressof(s.events)
        interrupt = self.lib.vmkit_pc_interrupt if deliveries else self.lib.vmkit_vmm_trap
        native.hook_add(uc, UC_HOOK_INTR, ctypes.cast(interrupt, ctypes.c_void_p), self._user)

    def watch(self, address):
        """Handle the watched instruction at `address` (before the machine's own hook on it is added)."""
        native.hook_add(self.uc, UC_HOOK_CODE, ctypes.cast(self.lib.vmkit_pc_watched, ctypes.c_void_p), self._user,
                        address, address)

    def arm(self, slice_n, until, traps=False):
        s = self.state
        s.slice_n, s.until, s.left, s.traps, s.armed = slice_n, until, LEFT, traps, 1

    def disarm(self):
        self.state.armed = 0

    def take(self):
        """The events waiting, as tuples of _EVENT's fields, oldest first; none wait afterwards."""
        count = self.state.count
        if not count:
            return ()
        raw = ctypes.string_at(self._events, count * _EVENT.size)
        self.state.count = 0
        return [_EVENT.unpack_from(raw, i * _EVENT.size) for i in range(count)]
