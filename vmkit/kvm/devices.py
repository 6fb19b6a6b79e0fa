"""The user-space device model: the role QEMU plays for KVM.

KVM runs the guest's instructions; every access to a device leaves the guest (KVM_EXIT_IO for a
port, KVM_EXIT_MMIO for an address outside every memory slot) and comes here. This model answers
with the vmkit PC's devices: COM1, isa-debug-exit, the PIC pair and the PIT (the same classes the
emulated machine uses, so a guest sees the same registers on both), plus the memory-mapped device
at MMIO_BASE = 0xFEB00000, one 4 KiB page above the guest's RAM (its registers are described with
the class, in vmkit.machine.devices; the hardware-assist model serves the same device), and the
virtio console in the page after it (vmkit.machine.virtio), whose rings the device model reads and
writes in the VM's memory slot once the machine has given it one (`attach_memory`).
"""
import threading
import time

from ..machine.devices import CPU_HZ, MMIO_BASE, MMIO_SIZE, DebugExit, MmioDevice, PicPair, Pit8254, Serial
from ..machine.virtio import VIRTIO_BASE, VIRTIO_IRQ, VIRTIO_SIZE, GuestMemory, VirtioConsole


class DeviceModel:
    """The platform's devices as a KVM VMM serves them. Port semantics are the emulated machine's
    (vmkit.machine.Machine.port_access): an unknown port floats, reading all ones. The PIT counts
    real time here (KVM runs the guest at the host's speed), scaled to the platform's 100 MHz clock.
    One lock serialises the devices, as QEMU's big lock does, so several vCPU threads may call in."""

    def __init__(self):
        self.serial, self.debug_exit, self.pic, self.pit = Serial(), DebugExit(), PicPair(), Pit8254()
        self.mmio = MmioDevice()
        self.virtio = VirtioConsole(None, raise_irq=lambda: self.pic.raise_irq(VIRTIO_IRQ),
                                    output=self.serial.output.extend)
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

    def attach_memory(self, ram):
        """The guest's RAM (a bytes-like view from guest-physical 0) for the virtio device's rings."""
        def write(address, data):
            ram[address:address + len(data)] = data
        self.virtio.memory = GuestMemory(lambda address, size: bytes(ram[address:address + size]), write)

    @staticmethod
    def register(address):
        """The name of the device register at `address`, or None."""
        if 0 <= address - VIRTIO_BASE < VIRTIO_SIZE:
            return VirtioConsole.register(address - VIRTIO_BASE)
        return MmioDevice.register(address - MMIO_BASE)

    def mmio_access(self, address, size, value, direction):
        """One access in the MMIO device's or the virtio console's page (anywhere else outside RAM
        reads as all ones); returns the value read, or None for a write."""
        offset = address - MMIO_BASE
        device = self.mmio
        if 0 <= address - VIRTIO_BASE < VIRTIO_SIZE:
            device, offset = self.virtio, address - VIRTIO_BASE
        with self.lock:
            if not 0 <= offset < MMIO_SIZE:
                return (1 << (8 * size)) - 1 if direction == "read" else None
            if direction == "read":
                return device.read(offset, size)
            device.write(offset, size, value)
        return None
