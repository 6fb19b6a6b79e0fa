"""A run loop written by hand, on the real KVM and on the hardware-assist model: the same exits for
the same guest, answers that reach the guest's registers, and the rules of the KVM API enforced with
errors that say what went wrong. KVM cases skip with the probe's reason where KVM cannot be used."""
import threading
import time

import pytest

import vmkit
import vmkit.guests
from vmkit.kvm import MMIO_BASE, DeviceModel
from vmkit.kvm.probe import probe
from vmkit.kvm.userspace import ENGINES, RunLoopError, ScriptedVcpu, UserExit, exit_record, user_vcpu
from vmkit.vtx.hardware_assist import KERNEL_HANDLED


def engine(name):
    """The engine's name, after skipping with the probe's reason if it is KVM and KVM cannot run here."""
    if name == "kvm":
        why = probe().why_not("protected-mode")
        if why:
            pytest.skip(why)
    return name


def vmkit_loop(vcpu, devices):
    """The loop at the heart of every KVM VMM, with vmkit's device model answering."""
    while True:
        exit = vcpu.run()
        if exit.reason == "IO":
            value = devices.port_access(exit.port, exit.size, exit.value, exit.direction)
            if exit.direction == "in":
                vcpu.answer(value)
            elif exit.port == 0xF4:
                return "exit"
        elif exit.reason == "MMIO":
            value = devices.mmio_access(exit.address, exit.size, exit.value, exit.direction)
            if exit.direction == "read":
                vcpu.answer(value)
        elif exit.reason == "HLT":
            return "halted"
        else:
            return exit.reason.lower()


def model_exits(result):
    """The user-space exits of a plain "hardware-assist" run, as UserVcpu.record() gives them."""
    return [exit_record(UserExit(e.detail["reason"], e.detail)) for e in result.of_kind("vmexit")
            if e.detail["reason"] not in KERNEL_HANDLED]


@pytest.mark.parametrize("name", ENGINES)
def test_the_devices_guest_exits_as_under_vmkits_own_loop(name):
    image = vmkit.guests.image("devices")
    reference = vmkit.run(image, "hardware-assist")
    devices = DeviceModel()
    with user_vcpu(image, engine(name)) as vcpu:
        assert vmkit_loop(vcpu, devices) == "halted"
    assert bytes(devices.serial.output) == reference.serial_bytes
    assert vcpu.record() == model_exits(reference)                # CPUID is answered inside, never handed out
    assert [e.eip for e in vcpu.exits] == [e.eip for e in reference.of_kind("vmexit")
                                           if e.detail["reason"] not in KERNEL_HANDLED]   # the exiting instructions


@pytest.mark.parametrize("name", ENGINES)
def test_answers_reach_the_guests_registers(name):
    source = (f"mov eax, 0x12345678\nmov dx, 0x300\nin ax, dx\nmov ebx, eax\nmov ecx, [{MMIO_BASE + 8:#x}]\n"
              f"mov dl, [{MMIO_BASE + 1:#x}]\nin eax, 0x80\nout 0x80, eax\ncli\nhlt")
    answers = iter([0xBEEF, 0xCAFEF00D, 0x7F, 0xDEADBEEF])
    with user_vcpu(source, engine(name)) as vcpu:
        seen = []
        while (exit := vcpu.run()).reason != "HLT":
            seen.append(exit_record(exit))
            if exit.reads:
                vcpu.answer(next(answers))
    assert seen == [["IO", 0x300, 2, "in", None], ["MMIO", MMIO_BASE + 8, 4, "read", None],
                    ["MMIO", MMIO_BASE + 1, 1, "read", None], ["IO", 0x80, 4, "in", None],
                    ["IO", 0x80, 4, "out", 0xDEADBEEF]]
    assert vcpu.record()[:4] == [["IO", 0x300, 2, "in", 0xBEEF], ["MMIO", MMIO_BASE + 8, 4, "read", 0xCAFEF00D],
                                 ["MMIO", MMIO_BASE + 1, 1, "read", 0x7F], ["IO", 0x80, 4, "in", 0xDEADBEEF]]
    regs = vcpu.registers()
    assert (regs["ebx"], regs["ecx"], regs["edx"] & 0xFF) == (0x1234BEEF, 0xCAFEF00D, 0x7F)   # in ax: AX only


@pytest.mark.parametrize("name", ENGINES)
def test_a_string_instruction_is_handed_out_one_item_at_a_time(name):
    source = "mov esi, text\nmov dx, 0x3f8\nmov ecx, 3\nrep outsb\nmov edi, buffer\nmov ecx, 2\nrep insb\n" \
             "mov eax, [buffer]\ncli\nhlt\ntext: db 'abc'\nbuffer: dd 0"
    with user_vcpu(source, engine(name)) as vcpu:
        while (exit := vcpu.run()).reason != "HLT":
            if exit.reads:
                vcpu.answer(0x41 + len(vcpu.exits))
    assert vcpu.record()[:5] == [["IO", 0x3F8, 1, "out", ord(c)] for c in "abc"] + \
                                [["IO", 0x3F8, 1, "in", 0x45], ["IO", 0x3F8, 1, "in", 0x46]]
    assert vcpu.registers()["eax"] == 0x4645


@pytest.mark.parametrize("name", ENGINES)
def test_the_rules_of_the_loop_are_errors_that_say_what_to_do(name):
    engine(name)
    poll = "mov dx, 0x3fd\n.wait: in al, dx\ntest al, 0x20\njz .wait\nout 0x80, al\ncli\nhlt"
    with user_vcpu(poll, name) as vcpu:
        vcpu.run()
        with pytest.raises(RunLoopError, match="still waiting for the value of its read"):
            vcpu.run()
        with pytest.raises(RunLoopError, match=r"takes 1 byte\(s\): answer an int from 0 to 0xff, not 256"):
            vcpu.answer(0x100)
        vcpu.answer(0x60)
        assert exit_record(vcpu.run()) == ["IO", 0x80, 1, "out", 0x60]
        with pytest.raises(RunLoopError, match="nothing waits for an answer"):
            vcpu.answer(0)
        assert vcpu.run().reason == "HLT"
        with pytest.raises(RunLoopError, match="halted with interrupts off"):
            vcpu.run()
    with user_vcpu("lidt [0]\nud2", name) as vcpu:                  # no IDT: a triple fault
        assert vcpu.run().reason == "SHUTDOWN"
        with pytest.raises(RunLoopError, match="triple fault"):
            vcpu.run()


@pytest.mark.parametrize("name", ENGINES)
def test_budgets_stop_a_guest_that_never_ends(name):
    poll = "mov dx, 0x3fd\n.wait: in al, dx\ntest al, 0x20\njz .wait\ncli\nhlt"
    with user_vcpu(poll, engine(name), max_exits=500) as vcpu, \
            pytest.raises(vmkit.GuestTimeout, match="made 500 exits without finishing"):
        while True:
            vcpu.run()
            vcpu.answer(0)                                           # "busy", for ever
    started = time.perf_counter()
    with user_vcpu("jmp $", name, timeout=0.5) as vcpu, pytest.raises(vmkit.GuestTimeout):
        vcpu.run()
    assert time.perf_counter() - started < 3


def test_closing_the_model_midway_ends_its_thread():
    before = threading.active_count()
    vcpu = user_vcpu("in al, 0x80\nhlt", "hardware-assist")
    assert vcpu.run().reads
    vcpu.close()
    assert threading.active_count() == before


def test_a_scripted_vcpu_plays_back_exits_under_the_same_rules():
    vcpu = ScriptedVcpu([("IO", {"port": 0x3FD, "size": 1, "direction": "in", "value": None}),
                         ("INTERNAL_ERROR", {"suberror": 1})])
    exit = vcpu.run()
    assert (exit.port, exit.reads) == (0x3FD, True)
    vcpu.answer(0x60)
    assert vcpu.run().suberror == 1 and vcpu.answers == [0x60]
    with pytest.raises(RunLoopError, match=r"KVM could not go on"):
        vcpu.run()
    with pytest.raises(AttributeError, match="a HLT exit has no 'port'"):
        _ = UserExit("HLT", {"interrupts": False}).port


def test_an_unknown_engine_or_a_missing_kvm_is_explained(tmp_path):
    with pytest.raises(ValueError, match="hardware-assist, kvm"):
        user_vcpu("hlt", "qemu")
    with pytest.raises(vmkit.KvmUnavailable, match="does not exist"):
        user_vcpu("hlt", "kvm", path=str(tmp_path / "kvm"))


def test_closing_the_model_after_a_debug_exit_ends_its_thread_at_once():
    # emu_stop inside an I/O hook is late: the model reaches the hlt after the debug-exit write,
    # an exit that nobody will answer once the loop has returned.
    source = "mov al, 3\nout 0xf4, al\ncli\nhlt"
    started = time.perf_counter()
    with user_vcpu(source, "hardware-assist") as vcpu:
        assert vmkit_loop(vcpu, DeviceModel()) == "exit"
    assert not vcpu._thread.is_alive()
    assert time.perf_counter() - started < 0.5
