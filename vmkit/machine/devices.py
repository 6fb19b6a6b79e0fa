"""The devices of the vmkit PC: COM1, isa-debug-exit, the 8259 PIC pair and the 8254 PIT, and the
memory-mapped device that the hardware-assist model and real KVM add (MmioDevice, at the end).

Each port device is plain state plus `read(port, size)` / `write(port, size, value)`. Time is the
machine's virtual clock in CPU cycles (one instruction is one cycle), so the PIT is a pure
function of the clock and every run is reproducible.
"""
CPU_HZ = 100_000_000        # the virtual CPU retires this many instructions per virtual second
PIT_HZ = 1_193_182          # the 8254's input clock, as on every PC since 1981


class Serial:
    """COM1, a 16550 UART reduced to what guests use: transmit, line status, divisor latch."""
    BASE = 0x3F8
    PORTS = range(0x3F8, 0x400)
    LSR_THR_EMPTY = 0x60     # transmitter holding register and shift register empty

    def __init__(self):
        self.output = bytearray()
        self.regs = {1: 0, 3: 0, 4: 0, 7: 0}   # IER, LCR, MCR, scratch
        self.divisor = 12                        # 9600 baud

    @property
    def dlab(self):
        return bool(self.regs[3] & 0x80)

    def write(self, port, size, value):
        reg = port - self.BASE
        if reg == 0 and not self.dlab:
            self.output.append(value & 0xFF)
        elif reg in (0, 1) and self.dlab:
            shift = 0 if reg == 0 else 8
            self.divisor = (self.divisor & ~(0xFF << shift)) | ((value & 0xFF) << shift)
        elif reg in self.regs:
            self.regs[reg] = value & 0xFF

    def read(self, port, size):
        reg = port - self.BASE
        if reg == 5:
            return self.LSR_THR_EMPTY
        if reg in (0, 1) and self.dlab:
            return (self.divisor >> (0 if reg == 0 else 8)) & 0xFF
        if reg == 2:
            return 0x01                          # IIR: no interrupt pending
        if reg == 6:
            return 0xB0                          # MSR: clear to send, data set ready, carrier
        return self.regs.get(reg, 0)


class DebugExit:
    """QEMU's isa-debug-exit at 0xf4: writing v ends the run with exit code (v << 1) | 1."""
    PORTS = range(0xF4, 0xF8)

    def __init__(self):
        self.exit_code = None

    def write(self, port, size, value):
        self.exit_code = ((value & ((1 << (8 * size)) - 1)) << 1) | 1

    def read(self, port, size):
        return 0xFF


class Pic8259:
    """One 8259A programmable interrupt controller: IRR, ISR, IMR, fixed priority (IRQ 0 highest)."""

    def __init__(self, vector_base, name):
        self.name = name
        self.vector_base = vector_base
        self.imr = 0xFF          # vmkit PC: every line masked at boot
        self.irr = 0
        self.isr = 0
        self.init_step = 0       # 0 = ready; 2, 3, 4 = waiting for that ICW
        self.needs_icw4 = False
        self.single = False
        self.auto_eoi = False
        self.read_isr = False

    def write(self, port, size, value):
        value &= 0xFF
        if port & 1 == 0:                        # command port
            if value & 0x10:                     # ICW1: start initialisation
                self.imr, self.irr, self.isr, self.read_isr = 0, 0, 0, False
                self.needs_icw4, self.single, self.init_step = bool(value & 1), bool(value & 2), 2
            elif value & 0x08:                   # OCW3
                if value & 0x02:
                    self.read_isr = bool(value & 1)
            else:                                # OCW2: end of interrupt
                command = value >> 5
                if command == 0b001 and self.isr:                # non-specific EOI
                    self.isr &= self.isr - 1                     # clear the highest-priority bit
                elif command == 0b011:                           # specific EOI
                    self.isr &= ~(1 << (value & 7))
        else:                                    # data port
            if self.init_step == 2:
                self.vector_base = value & 0xF8
                self.init_step = 0 if self.single and not self.needs_icw4 else (4 if self.single else 3)
            elif self.init_step == 3:
                self.init_step = 4 if self.needs_icw4 else 0
            elif self.init_step == 4:
                self.auto_eoi = bool(value & 2)
                self.init_step = 0
            else:                                # OCW1: the interrupt mask
                self.imr = value

    def read(self, port, size):
        if port & 1:
            return self.imr
        return self.isr if self.read_isr else self.irr

    def raise_line(self, line):
        self.irr |= 1 << line

    def highest(self):
        """The line this chip would signal now, or None: requested, unmasked, and above all in service."""
        ready = self.irr & ~self.imr & 0xFF
        if not ready:
            return None
        line = (ready & -ready).bit_length() - 1
        if self.isr and (self.isr & -self.isr).bit_length() - 1 <= line:
            return None
        return line

    def acknowledge(self, line):
        self.irr &= ~(1 << line)
        if not self.auto_eoi:
            self.isr |= 1 << line
        return self.vector_base + line


class PicPair:
    """Master at 0x20/0x21, slave at 0xa0/0xa1 cascaded on the master's line 2."""
    PORTS = (0x20, 0x21, 0xA0, 0xA1)
    CASCADE = 2

    def __init__(self):
        self.master = Pic8259(0x08, "master")
        self.slave = Pic8259(0x70, "slave")

    def chip(self, port):
        return self.master if port < 0x80 else self.slave

    def write(self, port, size, value):
        self.chip(port).write(port, size, value)

    def read(self, port, size):
        return self.chip(port).read(port, size)

    def raise_irq(self, irq):
        if irq < 8:
            self.master.raise_line(irq)
        else:
            self.slave.raise_line(irq - 8)
            self.master.raise_line(self.CASCADE)

    def pending(self):
        """The IRQ the CPU would be offered now, or None."""
        line = self.master.highest()
        if line == self.CASCADE:
            s = self.slave.highest()
            return None if s is None else 8 + s
        return line

    def acknowledge(self):
        """The CPU's interrupt-acknowledge cycle: returns (irq, vector)."""
        irq = self.pending()
        if irq is None:
            return None, None
        if irq >= 8:
            self.master.acknowledge(self.CASCADE)
            vector = self.slave.acknowledge(irq - 8)
            if self.slave.irr & ~self.slave.imr:     # the slave still asks: keep the cascade line up
                self.master.raise_line(self.CASCADE)
            return irq, vector
        return irq, self.master.acknowledge(irq)

    def irq0_enabled(self):
        return not self.master.imr & 1


class PitChannel:
    def __init__(self):
        self.mode = 0
        self.access = 3          # 1 = low byte, 2 = high byte, 3 = low then high
        self.reload = None       # None = not programmed, not counting
        self.start = 0           # clock when counting began
        self.pending_low = None
        self.write_high_next = False
        self.read_high_next = False
        self.latched = None

    def periodic(self):
        return self.mode in (2, 3, 6, 7)


class Pit8254:
    """8254 timer: channel 0 drives IRQ0. Supports modes 0, 2, 3 and 4 (the ones kernels program)."""
    PORTS = range(0x40, 0x44)

    def __init__(self):
        self.channels = [PitChannel(), PitChannel(), PitChannel()]
        self.fired = 0           # channel 0 interrupts raised so far

    # time: tick k of channel 0 happens at clock start + ceil(k * reload * CPU_HZ / PIT_HZ)
    def _tick_time(self, ch, k):
        return ch.start + -(-k * ch.reload * CPU_HZ // PIT_HZ)

    def armed(self):
        ch = self.channels[0]
        return ch.reload is not None and (ch.periodic() or self.fired == 0)

    def next_tick(self):
        """Clock of channel 0's next interrupt, or None when it will not fire again."""
        if not self.armed():
            return None
        return self._tick_time(self.channels[0], self.fired + 1)

    def advance(self, clock):
        """How many channel 0 interrupts happened up to `clock` since the last call."""
        n = 0
        while self.armed() and self.next_tick() <= clock:
            self.fired += 1
            n += 1
        return n

    def count_at(self, ch, clock):
        if ch.reload is None:
            return 0
        elapsed = (clock - ch.start) * PIT_HZ // CPU_HZ
        if ch.periodic():
            return ch.reload - (elapsed % ch.reload)
        return max(ch.reload - elapsed, 0) & 0xFFFF

    def write(self, port, size, value, clock):
        value &= 0xFF
        if port == 0x43:
            index = value >> 6
            if index == 3:                       # read-back command: latch the counts asked for
                for i in range(3):
                    if value & (2 << i) and not value & 0x20:
                        self.channels[i].latched = self.count_at(self.channels[i], clock)
                return
            ch = self.channels[index]
            access = (value >> 4) & 3
            if access == 0:                      # counter latch command
                ch.latched = self.count_at(ch, clock)
                return
            ch.access, ch.mode = access, (value >> 1) & 7
            ch.reload, ch.pending_low, ch.write_high_next, ch.read_high_next = None, None, False, False
            if index == 0:
                self.fired = 0
            return
        ch = self.channels[port - 0x40]
        if ch.access == 1:
            self._load(ch, port, value, clock)
        elif ch.access == 2:
            self._load(ch, port, value << 8, clock)
        elif not ch.write_high_next:
            ch.pending_low, ch.write_high_next = value, True
        else:
            ch.write_high_next = False
            self._load(ch, port, ch.pending_low | (value << 8), clock)

    def _load(self, ch, port, count, clock):
        ch.reload, ch.start = count or 0x10000, clock
        if port == 0x40:
            self.fired = 0

    def read(self, port, size, clock):
        if port == 0x43:
            return 0xFF
        ch = self.channels[port - 0x40]
        value = ch.latched if ch.latched is not None else self.count_at(ch, clock)
        if ch.access == 1:
            ch.latched = None
            return value & 0xFF
        if ch.access == 2:
            ch.latched = None
            return (value >> 8) & 0xFF
        high, ch.read_high_next = ch.read_high_next, not ch.read_high_next
        if high:
            ch.latched = None
        return (value >> 8) & 0xFF if high else value & 0xFF


# --- the MMIO device -------------------------------------------------------------------------------------
# One 4 KiB page at MMIO_BASE = 0xFEB00000, above the guest's RAM, where a PC has nothing (the I/O
# APIC is at 0xFEC00000, the local APIC at 0xFEE00000). Its registers, 32 bits each, little-endian,
# any access of 1, 2 or 4 bytes inside one of them:
#
#     +0x0  ID        read-only   0x316b6d76, the bytes "vmk1"
#     +0x4  SCRATCH   read/write  keeps what was written
#     +0x8  TICKS     read-only   counts its own reads: each read returns one more (1, 2, 3, ...),
#                                 a register whose reads have an effect, so the VMM must see each one
#     +0xC  DOORBELL  write: rings the doorbell (counts rings, keeps the value written);
#                     read: how many times it has rung
#
# Other offsets in the page read as 0 and ignore writes. The hardware-assist model (vmkit.vtx) and
# KVM's user-space device model (vmkit.kvm.devices) both serve it.
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
