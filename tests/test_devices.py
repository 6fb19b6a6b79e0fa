"""The PIC and PIT on their own, against the 8259A and 8254 data sheets' behaviour."""
from vmkit.machine.devices import CPU_HZ, PIT_HZ, PicPair, Pit8254, Serial


def initialised_pics():
    pics = PicPair()
    for port, value in ((0x20, 0x11), (0xA0, 0x11), (0x21, 0x20), (0xA1, 0x28), (0x21, 4), (0xA1, 2),
                        (0x21, 1), (0xA1, 1)):
        pics.write(port, 1, value)
    return pics


def test_every_line_is_masked_at_boot():
    pics = PicPair()
    pics.raise_irq(0)
    assert pics.pending() is None and pics.read(0x21, 1) == 0xFF


def test_icw2_sets_the_vector_base_and_icw1_unmasks():
    pics = initialised_pics()
    pics.raise_irq(0)
    assert pics.acknowledge() == (0, 0x20)


def test_an_irq_in_service_blocks_itself_and_lower_priorities_until_eoi():
    pics = initialised_pics()
    pics.raise_irq(1)
    assert pics.acknowledge() == (1, 0x21)
    pics.raise_irq(1)
    pics.raise_irq(3)
    assert pics.pending() is None                   # IRQ1 is in service
    pics.raise_irq(0)
    assert pics.pending() == 0                      # a higher priority may nest
    pics.write(0x20, 1, 0x20)                       # non-specific EOI ends IRQ1
    assert pics.acknowledge() == (0, 0x20)


def test_the_slave_cascades_through_irq2():
    pics = initialised_pics()
    pics.raise_irq(12)
    assert pics.acknowledge() == (12, 0x2C)
    assert pics.master.isr == 1 << 2 and pics.slave.isr == 1 << 4


def test_ocw3_selects_irr_or_isr_for_reading():
    pics = initialised_pics()
    pics.write(0x21, 1, 0xFF)
    pics.raise_irq(0)
    pics.write(0x20, 1, 0x0A)
    assert pics.read(0x20, 1) == 1
    pics.write(0x20, 1, 0x0B)
    assert pics.read(0x20, 1) == 0


def test_pit_mode2_fires_every_reload_input_clocks():
    pit = Pit8254()
    for value in (0x34, 100, 0):                    # channel 0, lo/hi, mode 2, reload 100
        pit.write(0x43 if value == 0x34 else 0x40, 1, value, clock=1000)
    tenth = 1000 + -(-10 * 100 * CPU_HZ // PIT_HZ)  # the 10th expiry, rounded up to a whole cycle
    assert pit.next_tick() == 1000 + -(-100 * CPU_HZ // PIT_HZ)
    assert pit.advance(tenth - 1) == 9 and pit.advance(tenth) == 1


def test_pit_counts_down_and_latches():
    pit = Pit8254()
    for port, value in ((0x43, 0x34), (0x40, 0x00), (0x40, 0x10)):   # reload 0x1000
        pit.write(port, 1, value, clock=0)
    clock = -(-1000 * CPU_HZ // PIT_HZ)             # 1000 input clocks later
    pit.write(0x43, 1, 0x00, clock)                 # latch channel 0
    low, high = pit.read(0x40, 1, clock + 5000), pit.read(0x40, 1, clock + 5000)
    assert (high << 8 | low) == 0x1000 - 1000


def test_pit_mode0_fires_once():
    pit = Pit8254()
    for port, value in ((0x43, 0x30), (0x40, 10), (0x40, 0)):
        pit.write(port, 1, value, clock=0)
    assert pit.advance(10 ** 9) == 1 and pit.next_tick() is None


def test_serial_divisor_latch_is_not_output():
    com1 = Serial()
    com1.write(0x3FB, 1, 0x80)                      # DLAB on: 0x3f8 is the divisor's low byte
    com1.write(0x3F8, 1, 1)
    com1.write(0x3FB, 1, 0x03)
    com1.write(0x3F8, 1, ord("A"))
    assert bytes(com1.output) == b"A" and com1.divisor & 0xFF == 1
