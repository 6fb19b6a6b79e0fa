"""A virtio-mmio console: the paravirtual device with shared rings, beside the trap-per-register ones.

COM1 costs one exit per byte and the MMIO device of `devices` one per register access: the VMM
emulates a piece of hardware, register by register. A virtio device is hardware that was never
built: driver and device agree on rings in guest memory (a *virtqueue*), the driver puts whole
requests there and writes one register (QueueNotify) to say so, and the device answers in the same
memory and raises one interrupt for as many requests as it likes. This is KVM's answer (QEMU's
virtio devices, vhost) to what Xen's split drivers do with their shared rings and event channels.

The device sits in one 4 KiB page at VIRTIO_BASE = 0xFEB01000, the page after the MMIO device, under
"hardware-assist" and "kvm" (the model of VT-x and KVM's device model serve the same class), and
raises VIRTIO_IRQ (5) at the PIC. Its registers are virtio 1.x's MMIO transport (Virtual I/O
Device (VIRTIO) Version 1.2, section 4.2.2, "MMIO Device Register Layout"; the same offsets as
Linux's include/uapi/linux/virtio_mmio.h and QEMU's hw/virtio/virtio-mmio.c):

    0x000 MagicValue        R   0x74726976 ("virt")        0x044 QueueReady     RW
    0x004 Version           R   2 (1 was the legacy layout)  0x050 QueueNotify    W  queue index
    0x008 DeviceID          R   3: console                   0x060 InterruptStatus R bit 0: used ring
    0x00c VendorID          R                                0x064 InterruptACK   W
    0x010 DeviceFeatures    R   32 bits, chosen by ...Sel    0x070 Status         RW 0 resets
    0x014 DeviceFeaturesSel W                                0x080 QueueDescLow/High   0x084
    0x020 DriverFeatures    W   32 bits, chosen by ...Sel    0x090 QueueDriverLow/High 0x094 (avail)
    0x024 DriverFeaturesSel W                                0x0a0 QueueDeviceLow/High 0x0a4 (used)
    0x030 QueueSel          W                                0x0fc ConfigGeneration R
    0x034 QueueNumMax       R   0 for a queue that is not there
    0x038 QueueNum          W

The split virtqueue (spec 2.7; Linux's include/uapi/linux/virtio_ring.h), all little-endian:

    descriptor table  16 bytes each: u64 addr, u32 len, u16 flags (NEXT 1, WRITE 2), u16 next
    available ring    u16 flags, u16 idx, u16 ring[num], u16 used_event    (the driver writes it)
    used ring         u16 flags, u16 idx, {u32 id, u32 len} ring[num], u16 avail_event (the device)

A request is a chain of descriptors; the driver puts its head's index in avail.ring[idx % num] and
then increments avail.idx. The device takes heads in order, walks each chain, and returns it with
{id = head, len = bytes it wrote} in used.ring[used.idx % num], then increments used.idx.

VIRTIO_F_EVENT_IDX (feature bit 29) lets each side tell the other when to be told: the driver
writes used_event ("interrupt me when used.idx passes this") and the device avail_event ("notify
me when avail.idx passes this"). Both sides decide with Linux's vring_need_event(event, new, old):
`(u16)(new - event - 1) < (u16)(new - old)`, true when `event` lies in [old, new). Without the
feature the driver's avail.flags bit VRING_AVAIL_F_NO_INTERRUPT (1) is the only suppression.
This device sets avail_event to the last index it has taken, as Linux's vhost does (vhost_update_avail_event).

Backend: virtio-console (device ID 3; spec 5.3) with one port, whose transmit queue is queue 1
(receiveq0 is 0, transmitq0 is 1): each readable buffer's bytes go to the serial output the run
already records, so a guest's output through virtio reads exactly as through COM1, and the two
devices can be compared on the same text. A console over a block device because the comparison is
then one line: result.serial is the same string, the exits are not.

The device processes a queue when it is notified (`deferred=False`, the model's way: the VMM does
the work inside the QueueNotify exit), or, with `deferred=True`, only when `service()` is called
(a worker thread's turn, as with KVM_IOEVENTFD, where the kernel signals an eventfd instead of
exiting): only then do notifications the driver makes while the device is behind go unsent.

Limits. Under "hardware-assist" an interrupt the device raises inside a QueueNotify exit is taken
at the end of the running slice, not at the very next VM entry: stopping Unicorn inside an MMIO
access would make it run the store twice. The course's driver posts with interrupts off, as Linux's
virtio console does, so its output and counts are the same either way. With KVM_IOEVENTFD the
worker raises the IRQ without kicking the vCPU, so the ioeventfd is measured with the polling
driver only (tests/benchmarks/virtio.py).
"""
import struct
from dataclasses import dataclass, field

VIRTIO_BASE = 0xFEB01000
VIRTIO_SIZE = 0x1000
VIRTIO_IRQ = 5                       # a PIC line of its own (master, line 5)

MAGIC = 0x74726976                   # "virt"
VERSION = 2                          # virtio 1.x; 1 is the legacy (pre-1.0) register layout
DEVICE_CONSOLE = 3
VENDOR = 0x746B6D76                  # "vmkt"

F_EVENT_IDX = 29                     # VIRTIO_F_EVENT_IDX (VIRTIO_RING_F_EVENT_IDX in virtio_ring.h)
F_VERSION_1 = 32                     # VIRTIO_F_VERSION_1: a device that is not legacy
DESC_F_NEXT, DESC_F_WRITE = 1, 2     # VRING_DESC_F_NEXT, VRING_DESC_F_WRITE
AVAIL_F_NO_INTERRUPT = 1             # VRING_AVAIL_F_NO_INTERRUPT
INT_USED_RING = 1                    # InterruptStatus bit 0: "Used Buffer Notification"
STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK = 1, 2, 4, 8

QUEUE_NUM_MAX = 16
QUEUES = 2                           # receiveq0 (0), transmitq0 (1)
TRANSMITQ = 1

REGISTERS = {
    0x000: "MagicValue", 0x004: "Version", 0x008: "DeviceID", 0x00c: "VendorID",
    0x010: "DeviceFeatures", 0x014: "DeviceFeaturesSel", 0x020: "DriverFeatures", 0x024: "DriverFeaturesSel",
    0x030: "QueueSel", 0x034: "QueueNumMax", 0x038: "QueueNum", 0x044: "QueueReady", 0x050: "QueueNotify",
    0x060: "InterruptStatus", 0x064: "InterruptACK", 0x070: "Status",
    0x080: "QueueDescLow", 0x084: "QueueDescHigh", 0x090: "QueueDriverLow", 0x094: "QueueDriverHigh",
    0x0a0: "QueueDeviceLow", 0x0a4: "QueueDeviceHigh", 0x0fc: "ConfigGeneration",
}
OFFSET = {name: offset for offset, name in REGISTERS.items()}
_QUEUE_ADDRESSES = {0x080: "desc", 0x090: "driver", 0x0a0: "device"}


def vring_need_event(event_idx, new_idx, old):
    """Linux's vring_need_event (include/uapi/linux/virtio_ring.h): whether moving an index from `old`
    to `new_idx` passes `event_idx`, the other side's "tell me when you get here", in u16 arithmetic."""
    return (new_idx - event_idx - 1) & 0xFFFF < (new_idx - old) & 0xFFFF


class GuestMemory:
    """Guest-physical memory as the device reaches it: `read(address, size)` -> bytes and
    `write(address, data)`, over whatever holds the RAM (Unicorn's memory, KVM's memory slot)."""

    def __init__(self, read, write):
        self.read, self.write = read, write


class Virtqueue:
    """One split virtqueue as the device keeps it: where the driver put the three parts, and the
    device's own indices (the next available entry to take, the used index it last signalled)."""

    def __init__(self):
        self.num = 0
        self.ready = 0
        self.desc = self.driver = self.device = 0
        self.last_avail = 0                  # the next avail.ring entry the device takes
        self.used_idx = 0                    # the device's used.idx
        self.signalled = None                # used.idx at the last interrupt (None: never)


@dataclass
class RingState:
    """One queue's split virtqueue as guest memory holds it now, with the device's own indices: what a
    picture of the rings needs, read by the device model (`VirtioConsole.ring_state`), never written.

    desc:       one (addr, len, flags, next) per descriptor of the table
    buffers:    {descriptor index: the bytes its buffer holds} for each descriptor with a buffer
    avail_*:    the driver's area: flags, idx, ring[num] (chain heads), used_event (EVENT_IDX)
    used_*:     the device's area: flags, idx, ring[num] of (id, len), avail_event (EVENT_IDX)
    last_avail: the next available entry the device will take; device_used: the used.idx it keeps
    counts:     the device's counts so far (notifies, requests, interrupts, ...)"""

    queue: int
    num: int
    event_idx: bool
    desc: list = field(default_factory=list)
    buffers: dict = field(default_factory=dict)
    avail_flags: int = 0
    avail_idx: int = 0
    avail_ring: list = field(default_factory=list)
    used_event: int = 0
    used_flags: int = 0
    used_idx: int = 0
    used_ring: list = field(default_factory=list)
    avail_event: int = 0
    last_avail: int = 0
    device_used: int = 0
    counts: dict = field(default_factory=dict)


class VirtioConsole:
    """The device's registers and queues. `memory` reads and writes guest-physical memory
    (`read(address, size)` -> bytes, `write(address, data)`); `raise_irq()` is called for each
    interrupt; `output(bytes)` receives what the console transmits. `counts` says what happened:
    notifies, requests, interrupts, interrupts_suppressed, bytes."""

    def __init__(self, memory=None, raise_irq=None, output=None, *, deferred=False):
        self.memory, self.raise_irq, self.output = memory, raise_irq, output
        self.deferred = deferred
        self.serve = serve_queue             # the device's side of the ring (a VMM's own may replace it)
        self.device_features = 1 << F_EVENT_IDX | 1 << F_VERSION_1
        self.counts = {"notifies": 0, "requests": 0, "interrupts": 0, "interrupts_suppressed": 0, "bytes": 0}
        self.kicked = set()                  # queues notified and not yet serviced (deferred)
        self.reset()

    def reset(self):
        """Status 0: the device forgets the driver (spec 4.2.2.1: a write of 0 to Status resets it)."""
        self.status = 0
        self.device_features_sel = self.driver_features_sel = 0
        self.driver_features = 0
        self.queue_sel = 0
        self.interrupt_status = 0
        self.queues = [Virtqueue() for _ in range(QUEUES)]

    @staticmethod
    def register(offset):
        """The name of the register at `offset` in the device's page, or None."""
        return REGISTERS.get(offset & ~3)

    @property
    def event_idx(self):
        return bool(self.driver_features >> F_EVENT_IDX & 1)

    # --- the registers ---------------------------------------------------------------------------------
    def read(self, offset, size):
        base, shift = offset & ~3, 8 * (offset & 3)
        queue = self.queues[self.queue_sel] if self.queue_sel < QUEUES else None
        value = {
            0x000: MAGIC, 0x004: VERSION, 0x008: DEVICE_CONSOLE, 0x00c: VENDOR,
            0x010: self.device_features >> (32 * self.device_features_sel) & 0xFFFFFFFF
            if self.device_features_sel < 2 else 0,
            0x034: QUEUE_NUM_MAX if queue is not None else 0,
            0x044: queue.ready if queue is not None else 0,
            0x060: self.interrupt_status, 0x070: self.status, 0x0fc: 0,
        }.get(base, 0)
        return (value >> shift) & ((1 << (8 * size)) - 1)

    def write(self, offset, size, value):
        base = offset & ~3
        queue = self.queues[self.queue_sel] if self.queue_sel < QUEUES else None
        if base == 0x014:
            self.device_features_sel = value
        elif base == 0x024:
            self.driver_features_sel = value
        elif base == 0x020 and self.driver_features_sel < 2:
            shift = 32 * self.driver_features_sel
            self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) | (value << shift)
            self.driver_features &= self.device_features      # a feature the device lacks is not agreed
        elif base == 0x030:
            self.queue_sel = value
        elif base == 0x038 and queue is not None:
            queue.num = min(value, QUEUE_NUM_MAX)
        elif base == 0x044 and queue is not None:
            queue.ready = value & 1
        elif base == 0x050:
            self.notify(value)
        elif base == 0x064:
            self.interrupt_status &= ~value
        elif base == 0x070:
            if value == 0:
                self.reset()
            else:
                self.status = value
        elif queue is not None and (base & ~4) in _QUEUE_ADDRESSES:
            name, high = _QUEUE_ADDRESSES[base & ~4], base & 4
            old = getattr(queue, name)
            setattr(queue, name, (old & 0xFFFFFFFF) | value << 32 if high else (old & ~0xFFFFFFFF) | value)

    # --- the rings ---------------------------------------------------------------------------------------
    def notify(self, index):
        """QueueNotify: the driver says queue `index` has new requests."""
        self.counts["notifies"] += 1
        if self.deferred:
            self.kicked.add(index)
        else:
            self.service(index)

    def service(self, index=TRANSMITQ):
        """Take every request the driver has made available on queue `index`, hand it to the console,
        return it in the used ring, then interrupt if the driver wants to hear of it (`serve`, the
        device's side of the ring: serve_queue unless replaced). Returns the number of requests taken."""
        self.kicked.discard(index)
        if index >= QUEUES or not self.queues[index].ready or not self.status & STATUS_DRIVER_OK:
            return 0
        q = self.queues[index]
        old_used = q.used_idx
        output = self.output if index == TRANSMITQ else None
        need = self.serve(self.memory, q, self.event_idx, output, self.counts)
        taken = (q.used_idx - old_used) & 0xFFFF
        if taken and not need:
            self.counts["interrupts_suppressed"] += 1
        elif need:
            q.signalled = q.used_idx
            self.interrupt_status |= INT_USED_RING
            self.counts["interrupts"] += 1
            if self.raise_irq is not None:
                self.raise_irq()
        return taken

    # --- a picture of the rings ---------------------------------------------------------------------
    def ring_state(self, index=TRANSMITQ, buffer_limit=64):
        """Queue `index`'s rings as guest memory holds them now (RingState); buffers are read up to
        `buffer_limit` bytes each. A queue the driver has not set up has no rings to read: num 0."""
        q = self.queues[index]
        state = RingState(queue=index, num=q.num, event_idx=self.event_idx, last_avail=q.last_avail,
                          device_used=q.used_idx, counts=dict(self.counts))
        if not q.num or self.memory is None:
            return state
        for i in range(q.num):
            addr, length, flags, nxt = struct.unpack("<QIHH", bytes(self.memory.read(q.desc + 16 * i, 16)))
            state.desc.append((addr, length, flags, nxt))
            if length:
                state.buffers[i] = bytes(self.memory.read(addr, min(length, buffer_limit)))
        state.avail_flags, state.avail_idx = self._u16(q.driver), self._u16(q.driver + 2)
        state.avail_ring = [self._u16(q.driver + 4 + 2 * i) for i in range(q.num)]
        state.used_event = self._u16(q.driver + 4 + 2 * q.num)
        state.used_flags, state.used_idx = self._u16(q.device), self._u16(q.device + 2)
        state.used_ring = [struct.unpack("<II", bytes(self.memory.read(q.device + 4 + 8 * i, 8))) for i in range(q.num)]
        state.avail_event = self._u16(q.device + 4 + 8 * q.num)
        return state

    def _u16(self, address):
        return struct.unpack("<H", bytes(self.memory.read(address, 2)))[0]

def serve_queue(memory, q, event_idx, output, counts=None):
    """The device's side of a split virtqueue (spec 2.7), for every request the driver has made
    available on `q` (a Virtqueue: num, desc, driver, device, last_avail, used_idx): take the heads in
    avail.ring order from q.last_avail up to avail.idx; walk each chain (VRING_DESC_F_NEXT, at most
    q.num descriptors), the device-readable buffers' bytes to `output` (None: a queue that only
    receives), the device-writable ones left alone; put {id = head, len = 0} (a transmit writes
    nothing) in used.ring[used_idx % num], then the new used.idx (spec 2.7.8: the element before
    the index). With VIRTIO_F_EVENT_IDX, write avail_event = last_avail and look at avail.idx once
    more, since the driver may have added a request before it could see it (spec 2.7.10). Returns
    whether the driver is to be interrupted: something was used, and vring_need_event(used_event,
    new, old) says so (EVENT_IDX), or VRING_AVAIL_F_NO_INTERRUPT is clear (spec 2.7.7). `counts`
    (requests, bytes) is added to if given."""
    counts = {"requests": 0, "bytes": 0} if counts is None else counts

    def u16(address):
        return struct.unpack("<H", bytes(memory.read(address, 2)))[0]
    old_used = q.used_idx
    while True:
        avail_idx = u16(q.driver + 2)
        while q.last_avail != avail_idx:
            head = u16(q.driver + 4 + 2 * (q.last_avail % q.num))
            counts["requests"] += 1
            i, seen = head, 0
            while True:
                addr, length, flags, nxt = struct.unpack("<QIHH", memory.read(q.desc + 16 * i, 16))
                if not flags & DESC_F_WRITE and output is not None:
                    data = bytes(memory.read(addr, length))
                    counts["bytes"] += len(data)
                    output(data)
                seen += 1
                if not flags & DESC_F_NEXT or seen >= q.num:
                    break
                i = nxt
            memory.write(q.device + 4 + 8 * (q.used_idx % q.num), struct.pack("<II", head, 0))
            q.used_idx = (q.used_idx + 1) & 0xFFFF
            memory.write(q.device + 2, struct.pack("<H", q.used_idx))     # after the element, as the spec asks
            q.last_avail = (q.last_avail + 1) & 0xFFFF
        if not event_idx:
            break
        # avail_event, then one more look: a request the driver made available before it could see
        # the new avail_event was not notified, so the device must find it itself
        memory.write(q.device + 4 + 8 * q.num, struct.pack("<H", q.last_avail))
        if u16(q.driver + 2) == q.last_avail:
            break
    if q.used_idx == old_used:
        return False
    if event_idx:
        return vring_need_event(u16(q.driver + 4 + 2 * q.num), q.used_idx, old_used)
    return not u16(q.driver) & AVAIL_F_NO_INTERRUPT
