"""The user-space device model: the role QEMU plays for KVM.

KVM runs the guest's instructions; every access to a device leaves the guest (KVM_EXIT_IO for a
port, KVM_EXIT_MMIO for an address outside every memory slot) and comes here. This model answers
with the vmkit PC's devices: COM1, isa-debug-exit, the PIC pair and the PIT (the same classes the
emulated machine uses, so a guest sees the same registers on both), plus the memory-mapped device
at MMIO_BASE = 0xFEB00000, one 4 KiB page above the guest's RAM (its registers are described with
the class, in vmkit.machine.devices; the hardware-assist model serves the same device).
"""
import threading
import time

from ..machine.devices import CPU_HZ, MMIO_BASE, MMIO_SIZE, DebugExit, MmioDevice, PicPair, Pit8254, Serial


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
        self.started = time.perf_counter()        # the PIT's time 0, in time.perf_counter seconds

    def clock(self):
        """Cycles of the platform's clock since the VM started, from real time."""
        return int((time.perf_counter() - self.started) * CPU_HZ)

    def device_name(self, port):
        device = self.ports.get(port)
        return type(device).__name__ if device else "none"

    def port_access(self, port, size, value, direction):
        """One port access; returns the value read (for "in") or None."""
        device = self.ports.get(port)
        with self.lock:
            if device is self.pic:                    # the PIT first: its ticks are in IRR by now
                for _ in range(self.pit.advance(self.clock())):
                    self.pic.raise_irq(0)
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
