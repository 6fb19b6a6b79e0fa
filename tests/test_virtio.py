"""The virtio console (vmkit.machine.virtio): its registers as virtio 1.x's MMIO transport lays them
out, a request walked and returned exactly, VIRTIO_F_EVENT_IDX's suppression counted on the model,
and the guest virtio_console beside the same lines written to COM1, under "hardware-assist" and, where
the local KVM runs it, "kvm"."""
import struct

import pytest

import vmkit
from vmkit import guests
from vmkit.machine.virtio import (DESC_F_NEXT, F_EVENT_IDX, F_VERSION_1, OFFSET, STATUS_DRIVER_OK, TRANSMITQ,
                                  GuestMemory, VirtioConsole, vring_need_event)
from vmkit.vtx import VmcsControls

LINES = "".join(f"{i:02d}: hello, console\n" for i in range(8))
DESC, AVAIL, USED, NUM = 0x1000, 0x2000, 0x3000, 8


def ram():
    memory = bytearray(0x10000)

    def write(address, data):
        memory[address:address + len(data)] = data
    return memory, GuestMemory(lambda address, size: bytes(memory[address:address + size]), write)


def ready_device(event_idx=True, deferred=False):
    memory, guest = ram()
    out, irqs = bytearray(), []
    dev = VirtioConsole(guest, raise_irq=lambda: irqs.append(1), output=out.extend, deferred=deferred)
    w = lambda name, value: dev.write(OFFSET[name], 4, value)
    w("Status", 0)
    w("DriverFeaturesSel", 0)
    w("DriverFeatures", (1 << F_EVENT_IDX) if event_idx else 0)
    w("DriverFeaturesSel", 1)
    w("DriverFeatures", 1 << (F_VERSION_1 - 32))
    w("QueueSel", TRANSMITQ)
    w("QueueNum", NUM)
    for name, address in (("QueueDescLow", DESC), ("QueueDriverLow", AVAIL), ("QueueDeviceLow", USED)):
        w(name, address)
    w("QueueReady", 1)
    w("Status", 1 | 2 | 8 | STATUS_DRIVER_OK)
    return dev, memory, out, irqs


def post(memory, n, text):
    """Request n: a chain of two descriptors (2n, 2n + 1) over `text`, put in avail.ring (not published)."""
    base = 0x8000 + 0x100 * n
    half = len(text) // 2
    memory[base:base + len(text)] = text
    d = 2 * (n % (NUM // 2))
    memory[DESC + 16 * d:DESC + 16 * d + 32] = (struct.pack("<QIHH", base, half, DESC_F_NEXT, d + 1)
                                                + struct.pack("<QIHH", base + half, len(text) - half, 0, 0))
    memory[AVAIL + 4 + 2 * (n % NUM):AVAIL + 6 + 2 * (n % NUM)] = struct.pack("<H", d)


def publish(memory, idx):
    memory[AVAIL + 2:AVAIL + 4] = struct.pack("<H", idx)


def u16(memory, address):
    return struct.unpack_from("<H", memory, address)[0]


def test_the_registers_read_as_virtio_mmio_lays_them_out():
    dev = VirtioConsole()
    assert [dev.read(offset, 4) for offset in (0x000, 0x004, 0x008)] == [0x74726976, 2, 3]
    assert dev.read(OFFSET["DeviceFeatures"], 4) == 1 << F_EVENT_IDX
    dev.write(OFFSET["DeviceFeaturesSel"], 4, 1)
    assert dev.read(OFFSET["DeviceFeatures"], 4) == 1 << (F_VERSION_1 - 32)
    dev.write(OFFSET["QueueSel"], 4, TRANSMITQ)
    assert dev.read(OFFSET["QueueNumMax"], 4) == 16
    dev.write(OFFSET["QueueSel"], 4, 5)
    assert dev.read(OFFSET["QueueNumMax"], 4) == 0            # no such queue
    assert {name: offset for name, offset in OFFSET.items() if name.startswith("Queue")} == {
        "QueueSel": 0x30, "QueueNumMax": 0x34, "QueueNum": 0x38, "QueueReady": 0x44, "QueueNotify": 0x50,
        "QueueDescLow": 0x80, "QueueDescHigh": 0x84, "QueueDriverLow": 0x90, "QueueDriverHigh": 0x94,
        "QueueDeviceLow": 0xa0, "QueueDeviceHigh": 0xa4}
    assert (OFFSET["InterruptStatus"], OFFSET["InterruptACK"], OFFSET["Status"], OFFSET["ConfigGeneration"]) == (
        0x60, 0x64, 0x70, 0xfc)


def test_a_request_is_walked_and_the_used_ring_filled_exactly():
    dev, memory, out, irqs = ready_device(event_idx=False)
    post(memory, 0, b"00: hello\n")
    publish(memory, 1)
    dev.write(OFFSET["QueueNotify"], 4, TRANSMITQ)
    assert bytes(out) == b"00: hello\n"
    assert u16(memory, USED + 2) == 1
    assert struct.unpack_from("<II", memory, USED + 4) == (0, 0)      # id = the chain's head, len = 0 written
    assert dev.read(OFFSET["InterruptStatus"], 4) == 1 and irqs == [1]
    dev.write(OFFSET["InterruptACK"], 4, 1)
    assert dev.read(OFFSET["InterruptStatus"], 4) == 0


def test_vring_need_event_is_linux_s():
    assert vring_need_event(0, 1, 0)                   # event 0 lies in [0, 1)
    assert not vring_need_event(1, 1, 0)
    assert vring_need_event(0xFFFF, 2, 0xFFFE)         # across the wrap
    assert not vring_need_event(5, 4, 2)


def test_event_idx_interrupts_only_when_used_passes_used_event():
    dev, memory, out, irqs = ready_device()
    memory[AVAIL + 4 + 2 * NUM:AVAIL + 6 + 2 * NUM] = struct.pack("<H", 3)    # used_event: interrupt at the 4th
    for n in range(6):
        post(memory, n, b"%02d: x\n" % n)
        publish(memory, n + 1)
        dev.write(OFFSET["QueueNotify"], 4, TRANSMITQ)
    assert dev.counts["interrupts"] == 1 and dev.counts["interrupts_suppressed"] == 5
    assert u16(memory, USED + 4 + 8 * NUM) == 6        # avail_event: the device has taken 6


def test_event_idx_a_notify_only_when_vring_need_event_says_so():
    """A deferred device (KVM_IOEVENTFD's worker) is behind: the driver's notifies stop until it catches up."""
    dev, memory, out, irqs = ready_device(deferred=True)
    notified, old = 0, 0
    for n in range(6):
        post(memory, n % NUM, b"%02d\n" % n)
        publish(memory, n + 1)
        if vring_need_event(u16(memory, USED + 4 + 8 * NUM), n + 1, old):
            dev.write(OFFSET["QueueNotify"], 4, TRANSMITQ)
            notified += 1
        old = n + 1
        if n == 3:
            dev.service(TRANSMITQ)                     # the worker's turn: it took requests 0 to 3
    dev.service(TRANSMITQ)
    assert notified == dev.counts["notifies"] == 2     # request 0 (avail_event 0), request 4 (avail_event 4)
    assert bytes(out) == b"".join(b"%02d\n" % n for n in range(6))


def run(technique="hardware-assist", **equ):
    options = {"controls": VmcsControls(external_interrupt_exiting=True)} if technique == "hardware-assist" else {}
    return vmkit.run(guests.source("virtio_console", **equ), technique, **options)


@pytest.mark.parametrize("equ", [{}, {"INTERRUPTS": 1}, {"EVENT_IDX": 0}, {"BATCH": 4}, {"INTERRUPTS": 1, "EVENT_IDX": 0}])
def test_the_guest_prints_what_the_emulated_device_prints(equ):
    virtio, emulated = run(**equ), run(EMULATED=1)
    assert virtio.serial == emulated.serial == LINES
    assert virtio.exit_code == emulated.exit_code == 1


def per_request(equ, key, technique="hardware-assist"):
    """A stat's cost per request: the difference between 16 and 8 requests, over 8."""
    more, fewer = run(technique, REQUESTS=16, **equ), run(technique, REQUESTS=8, **equ)
    return (more.stats.get(key, 0) - fewer.stats.get(key, 0)) / 8


def test_exits_per_request_under_hardware_assist():
    assert per_request({"EMULATED": 1}, "vmexit_IO") == len("00: hello, console\n")      # one exit a byte
    assert per_request({}, "vmexits") == 1                       # one QueueNotify a request
    assert per_request({"BATCH": 4}, "vmexits") == 0.25          # one a batch
    assert per_request({"INTERRUPTS": 1}, "vmexits") == 1        # the one interrupt is at the end either way
    few = run(INTERRUPTS=1)
    assert few.stats["irqs"] == 1 and few.stats["vmexit_HLT"] == 1


def kvm_or_skip(feature="protected-mode"):
    report = vmkit.kvm.probe()
    if not report.can(feature):
        pytest.skip(f"this KVM cannot run it: {report.why_not(feature)}")


def test_the_guest_on_kvm_exits_as_on_the_model():
    kvm_or_skip()
    for equ in ({}, {"BATCH": 4}, {"EMULATED": 1}):
        on_kvm, on_model = run("kvm", **equ), run(**equ)
        assert on_kvm.serial == LINES
        assert {k: v for k, v in on_kvm.stats.items() if k.startswith("vmexit_")} == {
            k: v for k, v in on_model.stats.items() if k.startswith("vmexit_") and k != "vmexit_CPUID"}


def test_kvm_ioeventfd_takes_queue_notify_out_of_user_space():
    kvm_or_skip()
    with_fd = vmkit.run(guests.source("virtio_console", REQUESTS=16), "kvm", ioeventfd=True)
    without = run("kvm", REQUESTS=16)
    assert with_fd.serial == without.serial
    assert without.stats["vmexit_MMIO"] - with_fd.stats["vmexit_MMIO"] == 16
    assert 1 <= with_fd.stats["ioeventfd_signals"] <= 16
