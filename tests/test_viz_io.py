"""Pictures of interrupt and I/O virtualization (vmkit.viz.io): a tick's way into a guest with
interrupts masked, exit by exit on the model; exits per request of COM1 against virtio; the split
virtqueue's rings as the device model holds them at each step; the passthrough diagram. Each is
checked against the run it was drawn from."""
import struct

import pytest

import vmkit
import vmkit.guests
from vmkit.machine.virtio import DESC_F_NEXT, GuestMemory, RingState, VirtioConsole
from vmkit.viz import io


@pytest.fixture(scope="module")
def moments():
    return io.interrupt_moments("popf_critical")


def test_the_tick_exits_asks_for_the_window_and_is_injected_where_the_window_opened(moments):
    image, ms = moments
    intr, entry, window, inject = ms
    assert intr.event.detail["reason"] == "INTR" and not intr.if_flag and not intr.window
    assert image.symbols["round"] < intr.eip < image.symbols["round"] + 0x20       # inside popf's critical section
    assert entry.event is None and entry.window and not entry.if_flag              # the VMM set window exiting
    assert window.event.detail["reason"] == "IRQ_WINDOW_OPEN" and window.if_flag
    assert window.eip == image.symbols["round"]            # after `sti; loop round`: the instruction after the shadow
    assert window.detail["instructions"] == window.event.icount - intr.event.icount > 0
    assert inject.event.kind == "interrupt" and inject.eip == window.eip
    assert inject.event.icount == window.event.icount      # no instruction between the exit and the injection
    assert inject.detail["entry_interruption_info"] == 0x80000020 and not inject.window


def test_the_moments_are_the_runs_own(moments):
    """The same tick in a plain run: the first INTR and window exits and the injection agree."""
    image, ms = moments
    run = vmkit.run(image, "hardware-assist", controls=io.KVM_WITHOUT_IRQCHIP)
    first = lambda match: next(e for e in run.events if match(e))
    assert first(lambda e: e.kind == "vmexit" and e.detail["reason"] == "INTR").icount == ms[0].event.icount
    assert first(lambda e: e.kind == "interrupt").icount == ms[3].event.icount


def test_the_interrupt_stepper_walks_the_moments_and_stops_at_both_ends():
    s = io.InterruptStepper("popf_critical")
    assert s.buttons["back"].disabled and "moment 1 of 4" in s.status.value
    for _ in range(5):
        s.next()
    assert "moment 4 of 4" in s.status.value and s.buttons["next"].disabled
    assert "0x80000020" in s.what.value and "VM entry: the injection" in s.what.value
    s.back()
    assert "IRQ_WINDOW_OPEN" in s.what.value and "interrupt-window exiting on" in s.status.value
    diagram = io.interrupt_diagram(s.moments, 2)
    assert "> 3. IRQ_WINDOW_OPEN" in diagram.text and "fillcolor=\"#fff3b0\"" in diagram.source


def test_a_guest_that_never_masks_a_tick_is_refused():
    with pytest.raises(ValueError, match="masked"):
        io.interrupt_moments(vmkit.guests.source("virtio_console"))


def test_irq_table_lists_the_runs_interrupt_events_in_order():
    run = vmkit.run(vmkit.guests.image("popf_critical"), "hardware-assist", controls=io.KVM_WITHOUT_IRQCHIP)
    table = io.irq_table(run)
    assert [row[0] for row in table.rows] == ["vmexit INTR", "vmexit IRQ_WINDOW_OPEN", "interrupt"] * 2
    assert "2 INTR exits, 2 IRQ_WINDOW_OPEN exits, 2 interrupts" in table.caption


def runs(**equ):
    source = lambda n: vmkit.guests.source("virtio_console", REQUESTS=n, **equ)
    return (vmkit.run(source(8), "hardware-assist"), vmkit.run(source(16), "hardware-assist"), 8)


def test_exits_per_request_are_the_differences_of_the_runs():
    table, plot = io.exits_per_request({"COM1": runs(EMULATED=1), "virtio": runs(), "virtio, BATCH=4": runs(BATCH=4)})
    assert [row[:4] for row in table.rows] == [["COM1", "19", "19", "0"], ["virtio", "1", "0", "1"],
                                               ["virtio, BATCH=4", "0.25", "0", "0.25"]]
    assert "COM1: 19 exits a request" in plot.text and plot.png().startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def rings():
    return io.ring_moments(3)


def test_each_request_goes_round_the_rings_as_the_split_virtqueue_says(rings):
    image, ms = rings
    assert len(ms) == 9
    for n in range(3):
        filled, published, used = (m.state for m in ms[3 * n:3 * n + 3])
        head = filled.avail_ring[n]
        assert head == 2 * n and filled.avail_idx == n and filled.used_idx == n        # in the ring, not yet available
        addr, length, flags, nxt = filled.desc[head]
        assert flags & DESC_F_NEXT and nxt == head + 1 and filled.buffers[head] == b"%02d: " % n
        assert filled.buffers[nxt] == b"hello, console\n"
        assert published.avail_idx == n + 1 and published.used_idx == n and published.counts["notifies"] == n
        assert used.used_idx == n + 1 and used.used_ring[n] == (head, 0)               # id = the head, 0 bytes written
        assert used.avail_event == used.last_avail == n + 1 and used.counts["notifies"] == n + 1


def test_the_ring_diagram_marks_what_changed_and_says_it_in_words(rings):
    _, ms = rings
    d = io.ring_diagram(ms[2].state, ms[1].state, ms[2].title)
    assert 'BGCOLOR="#fff3b0">idx 1<' in d.source                  # used.idx moved
    assert "ring[0] = id 0, len 0" in d.source and "takes avail.ring[1] next" in d.source
    assert "used.idx 1, elements [(0, 0)]" in d.text
    first = io.ring_diagram(ms[0].state)
    assert "ring[0] = 0 (not available yet)" in first.source and "avail.ring[0] = 0 not available yet" in first.text


def test_the_ring_stepper_steps_and_redraws():
    s = io.RingStepper(2)
    assert "step 1 of 6" in s.status.value and s.buttons["back"].disabled
    s.next(), s.next()
    assert "used.idx 1" in s.status.value and "QueueNotify exits so far 1" in s.status.value
    assert "notified, used" in s.what.value and "<svg" in s.diagram.value


def test_ring_state_of_a_queue_not_set_up_is_empty():
    state = VirtioConsole().ring_state()
    assert isinstance(state, RingState) and state.num == 0 and state.desc == []


def test_ring_state_reads_guest_memory_without_writing_it():
    memory = bytearray(0x4000)
    writes = []
    dev = VirtioConsole(GuestMemory(lambda a, n: bytes(memory[a:a + n]),
                                    lambda a, data: writes.append(a)))
    q = dev.queues[1]
    q.num, q.desc, q.driver, q.device = 4, 0x1000, 0x2000, 0x3000
    memory[0x1000:0x1010] = struct.pack("<QIHH", 0x100, 3, 0, 0)
    memory[0x100:0x103] = b"abc"
    memory[0x2002:0x2004] = struct.pack("<H", 1)
    state = dev.ring_state()
    assert state.buffers == {0: b"abc"} and state.avail_idx == 1 and writes == []


def test_the_passthrough_diagram_names_each_step_and_says_it_was_not_run():
    d = io.passthrough_diagram()
    assert "not run here" in d.caption
    for words in ("VFIO_IOMMU_MAP_DMA", "IRTE in posted format", "PIR", "notification vector"):
        assert words in d.text or words in d.source
