"""vmkit.machine.counting: instructions counted per translated block, against the reference.

The reference is Unicorn's own count, emu_start(count=n), which calls a hook before every
instruction; VMKIT_COUNT=reference makes vmkit use it. Every guest here runs both ways and must give
the same events (with their icount), stats, registers and ending, under every technique. The whole
runs (every guest, workload and fuzz family) are compared with the compiled delivery's reference too
(VMKIT_DELIVERY=reference, tests/test_compiled_delivery.py): one default run, checked against each.
"""
import dataclasses
import os
import pathlib
import re

import pytest

import vmkit
from vmkit import compare
from vmkit.machine import counting, native

import test_fuzz

GUESTS = pathlib.Path(__file__).parent / "guests"
PLATFORM = (GUESTS / "platform.inc").read_text()
TECHNIQUES = ("native", "trap-and-emulate", "binary-translation", "paravirt", "hardware-assist")
MAX_INSTRUCTIONS = 100_000         # every run ends on the budget or before: nothing depends on real time
TIMEOUT = 5                        # a flood of I/O exits ends on the clock: such a run is not compared

pytestmark = pytest.mark.skipif(not counting.available()[0], reason=f"no block counter: {counting.available()[1]}")


class Reference:
    """Within the `with`, new machines work the reference way that `variable`=reference asks for."""

    def __init__(self, variable):
        self.variable = variable

    def __enter__(self):
        os.environ[self.variable] = "reference"

    def __exit__(self, *exc):
        os.environ.pop(self.variable, None)


@pytest.fixture
def reference():
    """Within the `with`, machines count the reference way (emu_start(count=n))."""
    yield Reference("VMKIT_COUNT")
    os.environ.pop("VMKIT_COUNT", None)


@pytest.fixture
def references(reference):
    """The count's reference and the delivery's (delivery.py and the Python hooks, not delivery.c
    and hooks.c): a whole run made the default way must equal each."""
    yield (reference, Reference("VMKIT_DELIVERY"))
    os.environ.pop("VMKIT_DELIVERY", None)


def outcome(image, technique, **options):
    """Everything a run shows but its time: the result as plain data, and the error it raised."""
    try:
        result, error = vmkit.run(image, technique, max_instructions=MAX_INSTRUCTIONS, timeout=TIMEOUT, **options), None
    except vmkit.VmkitError as e:
        result, error = getattr(e, "result", None), (type(e).__name__, str(e))
    plain = None if result is None else dataclasses.asdict(result)
    if plain is not None:
        plain.pop("seconds")
    return plain, error


def assert_same(references, image, technique, what, **options):
    """The run made the default way equals the one made within each of `references` (one `with`, or
    a tuple of them); the default run is made once."""
    have, have_error = outcome(image, technique, **options)
    for reference in references if isinstance(references, tuple) else (references,):
        with reference:
            want, want_error = outcome(image, technique, **options)
        if any(error and "of real time" in error[1] for error in (want_error, have_error)):
            continue                       # ended by the clock on the wall (a flood of exits): not comparable
        way = f"{what} ({reference.variable}=reference)" if isinstance(reference, Reference) else what
        assert have_error == want_error, way
        if want is None:
            assert have is None, way
            continue
        for i, (a, b) in enumerate(zip(want["events"], have["events"])):
            assert a == b, f"{way}: event {i} differs"
        assert len(have["events"]) == len(want["events"]), way
        assert have == want, way


def platform_guest(path):
    text = re.sub(r'^%include "platform.inc"$', lambda _: PLATFORM, path.read_text(), count=1, flags=re.M)
    return vmkit.assemble(text)


def course_guests():
    for name in vmkit.guests.names():
        try:
            yield name, vmkit.guests.image(name)
        except vmkit.VmkitError:
            continue                       # a part of a guest (lesson 10's kernels, with their workloads below)


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_guests_of_the_course_and_the_tests_run_the_same_every_way(references, technique):
    """The course's guests and the tests' guests (timer, paging, rings, I/O bitmap, faults) under
    every technique: the same events, icount included, the same stats and registers, counted per
    block or the reference way, delivered in C or in Python."""
    images = list(course_guests())
    for path in sorted(GUESTS.glob("*.asm")):
        try:
            images.append((path.name, platform_guest(path)))
        except vmkit.VmkitError:
            continue                       # a guest the tests assemble with constants of their own
    assert len(images) > 30
    for name, image in images:
        assert_same(references, image, technique, f"{name} under {technique}")


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_the_comparison_workloads_run_the_same_every_way(references, technique):
    """Lesson 10's workloads (system calls, cli/sti, port reads, #DE, a sieve, page faults, PTE
    stores), three rounds each, in every column of the comparison that runs on `technique`."""
    for name, w in compare.WORKLOADS.items():
        for column in (*compare.COLUMNS, *compare.VARIANTS):
            base, preset = compare.technique_of(column)
            if base != technique:
                continue
            image = vmkit.assemble(w.source(3, **compare.guest_tunables(w, column)))
            assert_same(references, image, base, f"{name} in column {column}", **preset)


@pytest.mark.parametrize("technique", ("native", "trap-and-emulate", "binary-translation"))
def test_fuzzed_guests_run_the_same_every_way(references, technique):
    """The fuzz tier's random guests: random bytes, handlers, privileged mixes, timer storms,
    descriptor-table boots, privileged streams in every ring."""
    for family in test_fuzz.FAMILIES:
        for index in range(3):
            image = test_fuzz.case_image(family, test_fuzz.SEED, index)
            assert_same(references, image, technique, f"fuzz case {family} {index} under {technique}")


# A block that the guest rewrites: the same address and size (5 bytes), another count of instructions.
SELF_MODIFYING = """
    xor eax, eax
    mov esi, 2
phase:
    mov ecx, 300
spin:
    call block
    dec ecx
    jnz spin
    mov dword [block], 0x9004c083      ; add eax, 4 ; nop   (the ret stays)
    dec esi
    jnz phase
    hlt
block:
    inc eax
    inc eax
    inc eax
    inc eax
    ret
"""

# Two address spaces with different code at the same virtual address, of the same size (5 bytes)
# and a different count of instructions (5 and 3), called in turn.
TWO_ADDRESS_SPACES = """
    mov eax, cr4
    or eax, 0x10                        ; CR4.PSE: 4-MiB pages
    mov cr4, eax
    mov dword [0x300000], 0x83          ; both directories map the first 4 MiB as they are
    mov dword [0x301000], 0x83
    mov dword [0x300004], 0x302003      ; 4 MiB to 8 MiB: a page table each
    mov dword [0x301004], 0x303003
    mov dword [0x302000], 0x304003      ; virtual 0x400000: one frame in one, another in the other
    mov dword [0x303000], 0x305003
    mov dword [0x304000], 0x40404040    ; inc eax x 4 ; ret
    mov byte [0x304004], 0xc3
    mov dword [0x305000], 0x9004c083    ; add eax, 4 ; nop ; ret
    mov byte [0x305004], 0xc3
    mov eax, 0x300000
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    xor eax, eax
    mov ecx, 200
again:
    mov edx, 0x300000
    mov cr3, edx
    call 0x400000
    mov edx, 0x301000
    mov cr3, edx
    call 0x400000
    dec ecx
    jnz again
    hlt
"""


@pytest.mark.parametrize("source, eax, instructions", [
    (SELF_MODIFYING, 300 * 4 * 2, 3 + 300 * 8 + 3 + 1 + 300 * 6 + 3 + 1),
    (TWO_ADDRESS_SPACES, 200 * 8, 21 + 200 * (3 + 5 + 3 + 3 + 2)),
], ids=["self-modifying", "two-address-spaces"])
def test_a_block_with_the_same_address_and_size_and_another_count(reference, source, eax, instructions):
    """Rewritten code, and another address space's code, at one address with one size but another
    number of instructions: counted exactly, at the end and at every point on the way."""
    image = vmkit.assemble(source)
    result = vmkit.run(image)
    assert result.regs["eax"] == eax and result.stats["instructions"] == instructions
    with reference:
        assert vmkit.run(image).stats["instructions"] == instructions
    for k in (1, 2, 7, 29, 500, 1001, instructions - 1):
        m = vmkit.machine(image)
        m.run_until(instructions=k)
        with reference:
            r = vmkit.machine(image)
            r.run_until(instructions=k)
        assert (m.instructions, m.cpu["eip"], m.cpu["eax"], m.cpu["ecx"]) == \
            (r.instructions, r.cpu["eip"], r.cpu["eax"], r.cpu["ecx"]) == (k, r.cpu["eip"], r.cpu["eax"], r.cpu["ecx"])


def test_steps_and_budgets_stop_at_exactly_the_same_instruction(reference):
    """step() runs one instruction, max_instructions=k stops after exactly k, both ways."""
    image = vmkit.assemble(SELF_MODIFYING)
    m, r = vmkit.machine(image), None
    with reference:
        r = vmkit.machine(image)
    for _ in range(60):
        m.step()
        with reference:
            r.step()
        assert (m.instructions, m.cpu["eip"], m.cpu["eax"]) == (r.instructions, r.cpu["eip"], r.cpu["eax"])
    for budget in (1, 13, 1000):
        with pytest.raises(vmkit.GuestTimeout) as e:
            vmkit.run(image, max_instructions=budget)
        assert e.value.result.stats["instructions"] == budget


def test_without_the_library_vmkit_counts_the_reference_way_and_says_so(reference):
    with reference:
        built, why = counting.available()
        assert not built and "VMKIT_COUNT=reference" in why
        line = [c for c in vmkit.doctor() if c.name == "block counter"][0]
        assert not line.ok and "reference" in line.detail
        assert vmkit.run(SELF_MODIFYING).stats["instructions"] == 3 + 300 * 8 + 3 + 1 + 300 * 6 + 3 + 1
    assert [c for c in vmkit.doctor() if c.name == "block counter"][0].ok


def test_the_library_builds_from_its_source(tmp_path):
    path = native.build(str(tmp_path / "vmkit.so"))
    assert os.path.getsize(path) > 0


def test_a_slice_goes_on_the_reference_way_when_the_block_table_is_full(reference):
    """Past 32,768 distinct blocks the C table gives up: every slice from then on is counted by
    Unicorn (its cache emptied first, since its blocks were translated without its counting hook)."""
    image = vmkit.assemble(TWO_ADDRESS_SPACES)
    m = vmkit.machine(image)
    m.run_until(instructions=1000)
    m._blocks.c.full = 1                   # as the C side sets it when the table overflows
    got = m.run()
    with reference:
        want = vmkit.run(image)
    assert (got.stats, got.regs, got.events) == (want.stats, want.regs, want.events)
    assert m._blocks.reference


def test_run_until_an_address_inside_a_block_counts_exactly(reference):
    """run_until(eip=X), X inside a translated block: Unicorn stops in front of X (the block it
    translates stops there, and counts the stop as one of its instructions); the count is of the
    instructions before X, as emu_start(count=n) has it."""
    image = vmkit.assemble(SELF_MODIFYING)
    inside = [i.address for i in image.disassemble() if i.mnemonic == "inc"][2]
    m = vmkit.machine(image)
    with reference:
        r = vmkit.machine(image)
    for _ in range(5):
        m.run_until(eip=inside)
        with reference:
            r.run_until(eip=inside)
        assert (m.instructions, m.cpu["eip"], m.cpu["eax"]) == (r.instructions, r.cpu["eip"], r.cpu["eax"])
    assert m.cpu["eip"] == inside and m.instructions == 3 + 1 + 2 + 4 * 8


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_event_by_event_the_counts_agree(reference, technique):
    """next_event() (run_until an event: the slice ends after the instruction that recorded it, or in
    front of a watched one) and step(), both ways, on guests with rings, a timer, paging and I/O."""
    for name in ("rings", "popf_critical", "paging_kernel", "trap_density", "devices"):
        image = vmkit.guests.image(name)
        m = vmkit.machine(image, technique)
        with reference:
            r = vmkit.machine(image, technique)
        for i in range(60):
            if m.finished or r.finished:
                break
            got, want = advance(m, i), None
            with reference:
                want = advance(r, i)
            assert (got, m.instructions, m.cpu["eip"]) == (want, r.instructions, r.cpu["eip"]), f"{name}, {i}"
            if isinstance(got, tuple):
                break


def advance(machine, i):
    """A step() every third time, else next_event(): the new events, or the error that ended the run."""
    try:
        return machine.step() if i % 3 == 2 else machine.next_event()
    except vmkit.VmkitError as e:
        return type(e).__name__, str(e)
