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


# --- interrupts from user space: KVM_INTERRUPT and the interrupt window ----------------------------
INJECTION_GUEST = r"""
bits 32
org 0x100000
    lidt [idtr]
    mov dword [0xfeb00004], 1       ; the device raises its line; IF is 0: the window is asked for
    sti
    nop                             ; sti's shadow covers this one: the window opens after it
    mov dword [0xfeb00004], 2       ; IF is 1: injected at the next entry, before the cli
    cli
    mov dword [0xfeb00004], 3       ; IF is 0 again
    sti
    hlt                             ; the shadow covers the hlt: HLT with IF 1, injected there
    mov al, bl
    out 0xf4, al
handler:
    inc ebx
    mov [0xfeb0000c], ebx           ; DOORBELL: the handler ran
    iretd
align 8
idt: times 0x20 dq 0
    dw handler - $$ + 0x100000 & 0xffff, 0x08, 0x8e00, (handler - $$ + 0x100000) >> 16
idt_end:
idtr: dw idt_end - idt - 1
    dd idt
"""


def inject_loop(vcpu, raised_by=lambda exit: exit.reason == "MMIO" and exit.address == MMIO_BASE + 4):
    """QEMU's kvm_arch_pre_run before every run(): inject when the vCPU can take it, else ask for the
    window. Returns the exits, each with (if_flag, ready_for_interrupt_injection) as they were."""
    pending, seen = 0, []
    while True:
        if pending and vcpu.ready_for_interrupt_injection and vcpu.if_flag:
            vcpu.interrupt(0x20)
            pending -= 1
        vcpu.request_interrupt_window = pending > 0
        exit = vcpu.run()
        seen.append((exit_record(exit), vcpu.if_flag, vcpu.ready_for_interrupt_injection))
        pending += raised_by(exit)
        if exit.reads:
            vcpu.answer(0)
        if exit.reason == "IO" and exit.port == 0xF4 or exit.reason in ("SHUTDOWN", "INTERNAL_ERROR"):
            return seen


def interrupts_engine(name, *features):
    if name == "kvm":
        why = probe().why_not("protected-mode", *features)
        if why:
            pytest.skip(why)
    return name


@pytest.mark.parametrize("name", ENGINES)
def test_an_interrupt_is_injected_at_the_entry_the_window_handshake_allows(name):
    with user_vcpu(INJECTION_GUEST, interrupts_engine(name, "interrupts", "interrupt-window", "iret")) as vcpu:
        seen = inject_loop(vcpu)
    window = ["IRQ_WINDOW_OPEN"]
    assert seen == [
        (["MMIO", MMIO_BASE + 4, 4, "write", 1], False, False),       # IF 0: not ready, the window asked for
        (window, True, True),                                         # after sti and the nop in its shadow
        (["MMIO", MMIO_BASE + 0xC, 4, "write", 1], False, False),     # the handler, entered by the injection
        (["MMIO", MMIO_BASE + 4, 4, "write", 2], True, True),         # back after iretd, IF 1
        (["MMIO", MMIO_BASE + 0xC, 4, "write", 2], False, False),     # injected at once, before the cli
        (["MMIO", MMIO_BASE + 4, 4, "write", 3], False, False),       # after the cli
        (["HLT"], True, True),                                  # sti; hlt: ready at the HLT exit
        (["MMIO", MMIO_BASE + 0xC, 4, "write", 3], False, False),
        (["IO", 0xF4, 1, "out", 3], True, True)], seen
    assert vcpu.injected == [(2, 0x20), (4, 0x20), (7, 0x20)]


@pytest.mark.parametrize("name", ENGINES)
def test_the_virtio_console_takes_its_used_ring_interrupt_from_a_user_space_pic(name):
    """The device model's PIC and virtio console behind a hand-written loop, the device reaching the
    rings through vcpu.memory: the guest waits in hlt for IRQ 5 and gets it by KVM_INTERRUPT."""
    for equ in ({"INTERRUPTS": 1}, {"INTERRUPTS": 1, "EVENT_IDX": 0, "BATCH": 3}):
        source = vmkit.guests.source("virtio_console", **equ)
        reference = vmkit.run(source, "hardware-assist")
        devices = DeviceModel()
        with user_vcpu(source, interrupts_engine(name, "interrupts")) as vcpu:
            devices.virtio.memory = vcpu.memory
            while True:
                pic = devices.pic
                if pic.pending() is not None and vcpu.ready_for_interrupt_injection and vcpu.if_flag:
                    vcpu.interrupt(pic.acknowledge()[1])
                vcpu.request_interrupt_window = pic.pending() is not None
                exit = vcpu.run()
                if exit.reason == "IO":
                    value = devices.port_access(exit.port, exit.size, exit.value, exit.direction)
                    if exit.reads:
                        vcpu.answer(value)
                    elif exit.port == 0xF4:
                        break
                elif exit.reason == "MMIO":
                    value = devices.mmio_access(exit.address, exit.size, exit.value, exit.direction)
                    if exit.reads:
                        vcpu.answer(value)
                else:
                    assert exit.reason in ("HLT", "IRQ_WINDOW_OPEN") and exit.detail.get("interrupts", True), exit
        assert (devices.debug_exit.exit_code, bytes(devices.serial.output)) == (1, reference.serial_bytes), equ
        assert [vector for _, vector in vcpu.injected] == [0x25]          # IRQ 5 at the guest's base 0x20
        assert vcpu.record() == model_exits(reference)                    # the same exits as the model's VMM


@pytest.mark.parametrize("name", ENGINES)
def test_breaking_the_interrupt_handshake_is_an_error_that_says_so(name):
    with user_vcpu(INJECTION_GUEST, engine(name)) as vcpu:
        with pytest.raises(RunLoopError, match="not stopped at an exit"):
            vcpu.interrupt(0x20)                                      # before the first run
        vcpu.run()                                                    # the MMIO write, IF 0
        with pytest.raises(RunLoopError, match="not ready for an interrupt.*window"):
            vcpu.interrupt(0x20)
        with pytest.raises(RunLoopError, match="vector is an int"):
            vcpu.interrupt(0x100)


def test_a_scripted_vcpu_plays_back_the_interrupt_state_and_keeps_each_entry():
    vcpu = ScriptedVcpu([("MMIO", {"address": MMIO_BASE, "size": 4, "direction": "write", "value": 1}),
                         ("IRQ_WINDOW_OPEN", {"if_flag": 1, "ready_for_interrupt_injection": 1}),
                         ("HLT", {"interrupts": True}), ("HLT", {"interrupts": False})])
    vcpu.run()
    assert (vcpu.if_flag, vcpu.ready_for_interrupt_injection) == (False, False)
    vcpu.request_interrupt_window = True
    assert vcpu.run().reason == "IRQ_WINDOW_OPEN" and vcpu.ready_for_interrupt_injection
    vcpu.interrupt(0x21)
    with pytest.raises(RunLoopError, match="queued already"):
        vcpu.interrupt(0x22)
    assert not vcpu.ready_for_interrupt_injection                    # one is queued: no other now
    vcpu.request_interrupt_window = False
    assert vcpu.run().detail == {"interrupts": True} and vcpu.if_flag  # a HLT with IF 1 is ready too
    vcpu.run()
    assert vcpu.entries == [(None, False), (None, True), (0x21, False), (None, False)]
    assert vcpu.record() == [["MMIO", MMIO_BASE, 4, "write", 1], ["IRQ_WINDOW_OPEN"], ["HLT"], ["HLT"]]
