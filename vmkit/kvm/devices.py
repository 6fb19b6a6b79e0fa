"""The user-space device model: the role QEMU plays for KVM.

KVM runs the guest's instructions; every access to a device leaves the guest (KVM_EXIT_IO for a
port, KVM_EXIT_MMIO for an address outside every memory slot) and comes here. This model answers
with the vmkit PC's devices: COM1, isa-debug-exit, the PIC pair and the PIT (the same classes the
emulated machine uses, so a guest sees the same registers on both), plus one memory-mapped device.

The MMIO device sits at MMIO_BASE = 0xFEB00000, one 4 KiB page above the guest's RAM, where a PC
has nothing (the I/O APIC is at 0xFEC00000, the local APIC at 0xFEE00000). Its registers, 32 bits
each, little-endian, any access of 1, 2 or 4 bytes inside one of them:

    +0x0  ID        read-only   0x316b6d76, the bytes "vmk1"
    +0x4  SCRATCH   read/write  keeps what was written
    +0x8  TICKS     read-only   counts its own reads: each read returns one more (1, 2, 3, ...),
                                a register whose reads have an effect, so the VMM must see each one
    +0xC  DOORBELL  write: rings the doorbell (counts rings, keeps the value written);
                    read: how many times it has rung

Other offsets in the page read as 0 and ignore writes.
"""
import threading
import time

from ..machine.devices import CPU_HZ, DebugExit, PicPair, Pit8254, Serial

MMIO_BASE = 0xFEB00000
MMIO_SIZE = 0x1000
MMIO_ID = int.from_bytes(b"vmk1", "little")
ID, SCRATCH, TICKS, DOORBELL = 0x0, 0x4, 0x8, 0xC
REGISTERS = {ID: "ID", SCRATCH: "SCRATCH", TICKS: "TICKS", DOORBELL: "DOORBELL"}


class MmioDevice:
    """A small memory-mapped device with the four registers above. `offset` is from MMIO_BASE."""

    def __init__(self):
        self.scratch = 0
        self.ticks = 0
        self.rings = 0
        self.doorbell = 0            # the last value rung

    @staticmethod
    def register(offset):
        """The name of the register an access at `offset` falls in, or None."""
        return REGISTERS.get(offset & ~3) if 0 <= offset < 0x10 else None

    def read(self, offset, size):
        base, shift = offset & ~3, 8 * (offset & 3)
        if base == ID:
            value = MMIO_ID
        elif base == SCRATCH:
            value = self.scratch
        elif base == TICKS:
            self.ticks += 1
            value = self.ticks
        elif base == DOORBELL:
            value = self.rings
        else:
            return 0
        return (value >> shift) & ((1 << (8 * size)) - 1)

    def write(self, offset, size, value):
        base, shift = offset & ~3, 8 * (offset & 3)
        mask = ((1 << (8 * size)) - 1) << shift
        if base == SCRATCH:
            self.scratch = (self.scratch & ~mask & 0xFFFFFFFF) | ((value << shift) & mask)
        elif base == DOORBELL:
            self.rings += 1
            self.doorbell = (value << shift) & mask


class DeviceModel:
    """The platform's devices as a KVM VMM serves them. Port semantics are the emulated machine's
    (vmkit.machine.Machine.port_access): an unknown port floats, reading all ones. The PIT counts
    real time here (KVM runs the guest at the host's speed), scaled to the platform's 100 MHz clock.
    One lock serialises the devices, as QEMU's big lock does, so several vCPU threads may call in."""

    def __init__(self):
        self.serial, self.debug_exit, self.pic, self.pit = Serial(), DebugExit(), PicPair(), Pit8254()
        self.mmio = MmioDevice()
        self.ports = {}
        for device in (self.serial, self.debug_exit, self.pic, self.pit):
            self.ports.update({port: device for port in device.PORTS})
        self.lock = threading.Lock()
        self._started = time.perf_counter()

    def clock(self):
        """Cycles of the platform's clock since the VM started, from real time."""
        return int((time.perf_counter() - self._started) * CPU_HZ)

    def device_name(self, port):
        device = self.ports.get(port)
        return type(device).__name__ if device else "none"

    def port_access(self, port, size, value, direction):
        """One port access; returns the value read (for "in") or None."""
        device = self.ports.get(port)
        with self.lock:
            if isinstance(device, Pit8254):
                clock = self.clock()
                if direction == "in":
                    return device.read(port, size, clock) & ((1 << (8 * size)) - 1)
                device.write(port, size, value, clock)
            elif device is not None:
                if direction == "in":
                    return device.read(port, size) & ((1 << (8 * size)) - 1)
                device.write(port, size, value)
            elif direction == "in":
                return (1 << (8 * size)) - 1                 # nothing there: the bus floats
        return None

    def mmio_access(self, address, size, value, direction):
        """One access in the MMIO page (anywhere else outside RAM reads as all ones); returns the
        value read, or None for a write."""
        offset = address - MMIO_BASE
        with self.lock:
            if not 0 <= offset < MMIO_SIZE:
                return (1 << (8 * size)) - 1 if direction == "read" else None
            if direction == "read":
                return self.mmio.read(offset, size)
            self.mmio.write(offset, size, value)
        return None
