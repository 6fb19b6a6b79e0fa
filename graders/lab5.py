"""Lab 5 (a KVM VMM's run loop): guests on vmkit's hardware-assist model with the model's own devices,
vmkit's device model answering scripted accesses, the reference loop that injects interrupts (QEMU's
kvm_arch_pre_run) and vmkit's device side of the virtqueue."""
import vmkit
from vmkit.grading.lab5 import MMIO_REGISTERS
from vmkit.kvm.devices import DeviceModel
from vmkit.kvm.userspace import UserExit, exit_record
from vmkit.vtx.hardware_assist import KERNEL_HANDLED


def user_space_run(source):
    """The guest on vmkit's hardware-assist model with the model's own devices, as loop_facts: the exits
    are the model's vmexit events that reach user space (KVM answers CPUID inside the kernel)."""
    machine = vmkit.machine(source, "hardware-assist", timeout=30)
    result = machine.run()
    ended = "exit" if result.exit_code is not None else "shutdown" if result.shutdown else "halted"
    exits = [exit_record(UserExit(e.detail["reason"], e.detail)) for e in result.of_kind("vmexit")
             if e.detail["reason"] not in KERNEL_HANDLED]
    return {"ended": ended, "serial": result.serial_bytes.decode("latin-1"), "exit_code": result.exit_code,
            "mmio": {name: getattr(machine.mmio, name) for name in MMIO_REGISTERS}, "exits": exits}


def user_space_runs(sources):
    """user_space_run for each guest, in one process."""
    return [user_space_run(source) for source in sources]


def device_answers(script):
    """vmkit's device model taking each access of `script` ([reason, port or address, size, direction,
    value]) in order: {"answers": each read's value (None for a write), "serial", "exit_code", "mmio"}."""
    devices = DeviceModel()
    answers = [(devices.port_access if reason == "IO" else devices.mmio_access)(where, size, value, direction)
               for reason, where, size, direction, value in script]
    return {"answers": answers, "serial": bytes(devices.serial.output).decode("latin-1"),
            "exit_code": devices.debug_exit.exit_code,
            "mmio": {name: getattr(devices.mmio, name) for name in MMIO_REGISTERS}}


FACTS = {f.__name__: f for f in (user_space_runs, device_answers)}


# --- the probes: each graded cell's cases, asked of the student's kernel and decided here -------------
import vmkit.guests
from vmkit.grading.answers import RAISED
from vmkit.grading.checks import check, check_equal, fail_cases
from vmkit.grading.lab5 import LOOP_HINTS, check_loop_facts
from vmkit.kvm import MMIO_BASE
from .probing import Probe, got_shown, lab_setup

SETUP = lab_setup("lab5_kvm_run_loop")          # GUEST (through guest()): the grader's own
guest = SETUP["guest"]
COM1, LSR, DEBUG_EXIT = 0x3F8, 0x3FD, 0xF4
ID, SCRATCH, TICKS, DOORBELL = (MMIO_BASE + offset for offset in (0x0, 0x4, 0x8, 0xC))
ID_READS = int.from_bytes(b"vmk1", "little")
DEVICES = vmkit.guests.source("devices")


def handler_asked(kind, name):
    return f"vmkit.grading.lab5.handler_cases(cases, {kind!r}, vmkit.grading.yours({name}, {name!r}))"


def handler_expected(cases):
    """The model's own runs of cases["runs"], and vmkit's device model on each of cases["scripts"]."""
    return {"runs": user_space_runs(cases["runs"]), "scripts": [device_answers(script) for script in cases["scripts"]]}


def ran(facts, what):
    check(isinstance(facts, dict) and "error" not in facts, f"{what} runs to its end",
          got=facts.get("error") if isinstance(facts, dict) else facts)


def parts(answers, cases):
    """The answers to a dict of cases: one per case of each kind."""
    check(isinstance(answers, dict) and all(isinstance(answers.get(key), (list, dict, str)) for key in cases),
          "the answers to every kind of case", got=answers)
    return answers


def same_runs(runs, expected, whats, engine="hardware-assist", fields=None):
    check(isinstance(runs, list) and len(runs) == len(expected), f"one run per guest on {engine}", got=runs)
    for what, got, want in zip(whats, runs, expected):
        ran(got, f"the guest ({what}) on {engine}")
        check_loop_facts(got, {key: want[key] for key in (fields or want)}, what=f"the guest ({what}) on {engine}")


def same_scripts(answers, expected, scripts, name, hint):
    """Each script's answers (a read's value; a write's None unless it raised) and the devices' state
    after it, against vmkit's device model."""
    check(isinstance(answers, list) and len(answers) == len(scripts), "one answer per script", got=answers)
    for (what, script), got, want in zip(scripts.items(), answers, expected):
        check(isinstance(got, dict) and "error" not in got and len(got.get("answers", ())) == len(script),
              f"{name} on {what} answers every access", got=got)
        wrong = [(f"{access[0]} {access[3]} at {access[1]:#x}, {access[2]} byte(s)" +
                  (f", value {access[4]:#x}" if access[4] is not None else ""),
                  w if w is not None else "no error", got_shown(g))
                 for access, g, w in zip(script, got["answers"], want["answers"])
                 if (g != w if w is not None else isinstance(g, dict))]
        fail_cases(f"{name} on {what}", wrong, len(script), "accesses", hint)
        for field in ("serial", "exit_code", "mmio"):
            check_equal(got[field], want[field], what=f"{name} on {what}: devices.{field} after the accesses",
                        hint=LOOP_HINTS[field])


# Part 1: handle_io
PART1_SCRIPT = [["IO", LSR, 1, "in", None], ["IO", COM1, 1, "out", ord("h")], ["IO", COM1, 1, "out", ord("i")],
                ["IO", COM1, 2, "out", 0x0A21], ["IO", 0x80, 1, "in", None], ["IO", 0x80, 2, "in", None],
                ["IO", DEBUG_EXIT, 1, "out", 2]]
PART1_VISIBLE = {"runs": [guest("mov esi, hello\ncall puts\nin al, 0x80\nmovzx eax, al\ncall hex32\nmov al, 2\n"
                                "out DEBUG_EXIT, al", data='hello: db "hello from the guest", 10, 0')],
                 "scripts": [PART1_SCRIPT]}


def part1_visible(answers, expected, cases):
    answers = parts(answers, cases)
    script, = answers["scripts"]
    check(isinstance(script, dict) and "error" not in script, "handle_io answers the accesses", got=script)
    lsr, _, _, _, floating, floating_word, _ = script["answers"]
    check_equal(lsr, 0x60, what="an in al from COM1's line status (0x3fd)",
                hint="the spec's rule for the line status register: which bits the guests wait for")
    check_equal(script["serial"], "hi!", what="devices.serial after out 'h', out 'i' (al) and out 0x0a21 (ax) to 0x3f8",
                hint="the spec's rule for COM1's transmit register, whatever the width of the access")
    check_equal(floating, 0xFF, what="an in al from port 0x80, where nothing answers",
                hint="the spec's rule for a port where nothing is")
    check_equal(floating_word, 0xFFFF, what="an in ax from port 0x80", hint="the spec's rule for a port where nothing "
                "is, at the access's size")
    check_equal(script["exit_code"], 5, what="devices.exit_code after an out of 2 to 0xf4",
                hint="the spec's rule for isa-debug-exit (QEMU's hw/misc/debugexit.c)")
    run, = answers["runs"]
    ran(run, "a guest that prints")
    check_equal(run["serial"], "hello from the guest\n000000ff ", what="what the guest printed",
                hint="it prints the byte it read from port 0x80")
    check_equal([run["ended"], run["exit_code"]], ["exit", 5], what="(how the run ended, the exit code)")


PART1_RUNS = {
    "reads of 2 and 4 bytes, writes of 2 and 4 bytes": (
        "mov eax, 0x12345678\nmov dx, 0x300\nin ax, dx\ncall hex32\nin eax, 0x80\ncall hex32\nmov dx, LSR\n"
        "in ax, dx\ncall hex32\nmov dx, COM1\nmov ax, 0x4b4f\nout dx, ax\nmov eax, 0x0a21213f\nout dx, eax\n"
        "out 0x80, al\nmov dx, 0x2f8\nout dx, ax\nmov ax, 0x1234\nout DEBUG_EXIT, ax"),
    "a poll before every byte, then hlt": "mov esi, text\ncall puts\nin al, 0x80\ncall hex32",
    "a 32-bit exit code": "mov esi, text\ncall puts\nmov eax, 0x40000000\nout DEBUG_EXIT, eax",
}
PART1_SCRIPTS = {
    "accesses of every size": [
        ["IO", 0x3F8, 1, "out", 0x4F], ["IO", 0x3F8, 2, "out", 0x4B4B], ["IO", 0x3F8, 4, "out", 0x0A21213F],
        ["IO", 0x3FD, 2, "in", None], ["IO", 0x3FD, 4, "in", None], ["IO", 0x300, 2, "in", None],
        ["IO", 0x80, 4, "in", None], ["IO", 0x2F8, 1, "in", None], ["IO", 0x80, 4, "out", 0x12345678],
        ["IO", 0x2F8, 2, "out", 0x4141], ["IO", 0xF4, 2, "out", 0x1234]],
    "an exit code of 4 bytes": [["IO", 0xF4, 4, "out", 0x89ABCDEF]],
    "the exit code 0, then 0xff": [["IO", 0xF4, 1, "out", 0], ["IO", 0xF4, 1, "out", 0xFF]],
}
PART1_HIDDEN = {"runs": [guest(body, data='text: db "polling the line status", 10, 0') for body in PART1_RUNS.values()],
                "scripts": list(PART1_SCRIPTS.values())}


def part1_hidden(answers, expected, cases):
    answers = parts(answers, cases)
    same_runs(answers["runs"], expected["runs"], list(PART1_RUNS))
    same_scripts(answers["scripts"], expected["scripts"], PART1_SCRIPTS, "handle_io",
                 "a read takes exit.size bytes; COM1 sends the low byte of any write")


# Part 2: handle_mmio
PART2_SCRIPT = [["MMIO", ID, 4, "read", None], ["MMIO", SCRATCH, 4, "write", 0x12345678],
                ["MMIO", SCRATCH, 1, "write", 0xAB], ["MMIO", SCRATCH, 4, "read", None]] + \
               [["MMIO", TICKS, 4, "read", None]] * 3 + \
               [["MMIO", DOORBELL, 4, "write", 1], ["MMIO", DOORBELL, 4, "write", 2], ["MMIO", DOORBELL, 4, "read", None],
                ["MMIO", ID + 1, 1, "read", None], ["MMIO", ID, 4, "write", 0], ["MMIO", ID, 4, "read", None],
                ["MMIO", SCRATCH + 2, 2, "write", 0xBEEF], ["MMIO", SCRATCH + 3, 1, "read", None],
                ["MMIO", TICKS + 1, 1, "read", None], ["MMIO", MMIO_BASE + 0x40, 4, "read", None]]
PART2_VISIBLE = {"runs": [DEVICES], "scripts": [PART2_SCRIPT]}


def part2_visible(answers, expected, cases):
    answers = parts(answers, cases)
    script, = answers["scripts"]
    check(isinstance(script, dict) and "error" not in script, "handle_mmio answers the accesses", got=script)
    got = script["answers"]
    check_equal(got[0], ID_READS, what="a dword read of ID", hint="the spec's table: ID, little-endian")
    check_equal(got[3], 0x123456AB, what="SCRATCH after a dword write of 0x12345678 and a byte write of 0xab",
                hint="the spec: an access of 1 or 2 bytes lands inside a register")
    check_equal(got[4:7], [1, 2, 3], what="three reads of TICKS", hint="the spec's table: TICKS")
    check_equal(got[9], 2, what="a read of DOORBELL after two rings", hint="the spec's table: DOORBELL")
    check_equal(got[10], ord("m"), what="a byte read at ID + 1", hint="the spec: where in its register an access falls")
    check_equal(got[12], ID_READS, what="a read of ID after a write of 0 to it", hint="the spec's table: ID")
    check_equal(got[14], 0xBE, what="a byte read at SCRATCH + 3 after a word write of 0xbeef at SCRATCH + 2",
                hint="the spec: an access of 1 or 2 bytes lands inside a register")
    check_equal(got[15], 0, what="a byte read at TICKS + 1, the fourth read of TICKS",
                hint="the spec: a read of TICKS counts at any size and offset inside it")
    check_equal(got[16], 0, what="a read at +0x40", hint="the spec: the device decodes the whole offset")
    check_equal(script["mmio"], {"scratch": 0xBEEF56AB, "ticks": 4, "rings": 2},
                what="(devices.scratch, devices.ticks, devices.rings)")
    run, = answers["runs"]
    ran(run, "the devices guest")
    check_equal(run["serial"], expected["runs"][0]["serial"], what="what the devices guest printed",
                hint="it prints what it read from each register")


PART2_RUNS = {
    "bytes and words inside ID and SCRATCH": (
        "movzx eax, byte [ID + 1]\ncall hex32\nmovzx eax, word [ID + 2]\ncall hex32\n"
        "mov dword [SCRATCH], 0x12345678\nmov word [SCRATCH + 2], 0xbeef\nmov byte [SCRATCH + 1], 0x11\n"
        "mov eax, [SCRATCH]\ncall hex32\nmovzx eax, byte [SCRATCH + 3]\ncall hex32\nmov dword [ID], 0\n"
        "mov eax, [ID]\ncall hex32"),
    "TICKS read at every size, DOORBELL rung by bytes and words": (
        "movzx eax, byte [TICKS]\ncall hex32\nmovzx eax, word [TICKS]\ncall hex32\nmov eax, [TICKS]\ncall hex32\n"
        "mov byte [DOORBELL + 1], 7\nmov word [DOORBELL + 2], 0\nmov dword [DOORBELL], 9\nmov eax, [DOORBELL]\n"
        "call hex32\nmovzx eax, byte [TICKS + 2]\ncall hex32\nmov eax, [TICKS]\ncall hex32"),
    "the rest of the page": (
        "mov eax, [MMIO + 0x40]\ncall hex32\nmov dword [MMIO + 0x14], 0x5a5a5a5a\nmov eax, [SCRATCH]\ncall hex32\n"
        "mov eax, [MMIO + 0x18]\ncall hex32\nmov eax, [TICKS]\ncall hex32\nmov dword [MMIO + 0x1c], 1\n"
        "mov eax, [DOORBELL]\ncall hex32\nmov eax, [MMIO + 0xffc]\ncall hex32\nmov al, 0\nout DEBUG_EXIT, al"),
}
_B = MMIO_BASE
PART2_SCRIPTS = {
    "bytes and words inside registers": [
        ["MMIO", _B + 1, 1, "read", None], ["MMIO", _B + 2, 2, "read", None], ["MMIO", _B + 3, 1, "read", None],
        ["MMIO", _B + 0, 4, "write", 0], ["MMIO", _B + 0, 4, "read", None],
        ["MMIO", _B + 4, 4, "write", 0x12345678], ["MMIO", _B + 5, 1, "write", 0xAB], ["MMIO", _B + 6, 2, "write", 0xBEEF],
        ["MMIO", _B + 7, 1, "read", None], ["MMIO", _B + 4, 2, "read", None], ["MMIO", _B + 4, 4, "read", None],
        ["MMIO", _B + 9, 1, "read", None], ["MMIO", _B + 0xA, 2, "read", None], ["MMIO", _B + 8, 4, "read", None],
        ["MMIO", _B + 0xD, 1, "write", 7], ["MMIO", _B + 0xE, 2, "write", 0], ["MMIO", _B + 0xC, 1, "read", None],
        ["MMIO", _B + 0xF, 1, "read", None]],
    "the rest of the page": [
        ["MMIO", _B + 0x10, 4, "read", None], ["MMIO", _B + 0x40, 4, "read", None], ["MMIO", _B + 0x14, 4, "write", 1],
        ["MMIO", _B + 0x1C, 4, "write", 1], ["MMIO", _B + 0x18, 4, "read", None], ["MMIO", _B + 0xFFC, 4, "read", None],
        ["MMIO", _B + 0x801, 1, "read", None], ["MMIO", _B + 4, 4, "read", None], ["MMIO", _B + 0xC, 4, "read", None]],
}
PART2_HIDDEN = {"runs": [guest(body) for body in PART2_RUNS.values()], "scripts": list(PART2_SCRIPTS.values())}


def part2_hidden(answers, expected, cases):
    answers = parts(answers, cases)
    same_runs(answers["runs"], expected["runs"], list(PART2_RUNS))
    same_scripts(answers["scripts"], expected["scripts"], PART2_SCRIPTS, "handle_mmio",
                 "where in its register an access falls (the offset's low two bits), and that beyond +0xF there "
                 "is no register")


# Part 3: run_loop, with vmkit's device model
LOOP_ASKED = "vmkit.grading.lab5.loop_cases(cases, vmkit.grading.yours(run_loop, 'run_loop'))"


def loop_expected(cases):
    return user_space_runs(cases["runs"])


PART3_VISIBLE = {"runs": [DEVICES, guest("mov esi, bye\ncall puts\nmov eax, [TICKS]\nmov al, 0x2a\nout DEBUG_EXIT, al",
                                         data='bye: db "bye", 10, 0')],
                 "scripts": [[["IO", {"port": LSR, "size": 1, "direction": "in", "value": None}],
                              ["MMIO", {"address": TICKS, "size": 4, "direction": "read", "value": None}],
                              ["HLT", {"interrupts": False}]],
                             [["IO", {"port": DEBUG_EXIT, "size": 1, "direction": "in", "value": None}],
                              ["HLT", {"interrupts": False}]],
                             [["SHUTDOWN", {}]],
                             [["INTERNAL_ERROR", {"eip": 0x100010}]]]}


def part3_visible(answers, expected, cases):
    answers = parts(answers, cases)
    runs = answers["runs"].get("hardware-assist") if isinstance(answers["runs"], dict) else None
    check(isinstance(runs, list) and len(runs) == 2, "two runs on the model", got=runs)
    devices, bye = runs
    ran(devices, "the devices guest under your loop")
    check_equal(devices["ended"], "halted", what="how the devices guest ended", hint="it ends with cli; hlt: return at HLT")
    check_equal(devices["serial"], expected[0]["serial"], what="what the devices guest printed",
                hint="each in and each MMIO read needs its answer")
    check_equal(len(devices["exits"]), len(expected[0]["exits"]),
                what="the exits your loop took (the model's, less the CPUID exit KVM keeps in the kernel)")
    ran(bye, "a guest that ends with an exit code")
    check_equal([bye["ended"], bye["exit_code"], bye["serial"]], ["exit", 0x55, "bye\n"],
                what="(how it ended, the exit code, what it printed)",
                hint="the part's spec: an out to isa-debug-exit ends the run")
    script, debug_read, shutdown, error = answers["scripts"]

    def returned(outcome):
        return outcome.get("returned", got_shown({RAISED: f"{outcome.get('raised')}: {outcome.get('message')}"}))
    check_equal(returned(script), "halted", what="a scripted in, MMIO read, HLT")
    check_equal(script["answers"], [0x60, 1], what="the answers your loop gave the two scripted reads",
                hint="KVM's API: KVM_EXIT_IO and KVM_EXIT_MMIO, a read completed at the next KVM_RUN")
    check_equal([returned(debug_read), debug_read.get("answers")], ["halted", [0xFF]],
                what="a scripted in al from 0xf4, then HLT", hint="the spec: which access to isa-debug-exit ends the run")
    check_equal(returned(shutdown), "shutdown", what="a scripted SHUTDOWN", hint="the spec's list of exits")
    check("raised" in error and not error.get("run_loop_error"), "a scripted INTERNAL_ERROR",
          expected="your loop raises an exception that names it",
          got=f"it returned {error.get('returned')!r}" if "returned" in error else error.get("message"),
          hint="the spec's list of exits: one the loop does not understand")


PART3_TEXT = 'text: db "on its way", 10, 0\nnever: db "this must never print", 10, 0\nalign 8\nno_idt: dw 0\n dd 0'
PART3_RUNS = {
    "a triple fault after printing": guest("mov esi, text\ncall puts\nmov eax, [ID]\ncall hex32\nlidt [no_idt]\nud2",
                                           data=PART3_TEXT),
    "code after the debug exit": guest("mov esi, text\ncall puts\nmov al, 7\nout DEBUG_EXIT, al\nmov esi, never\n"
                                       "call puts\nmov eax, [TICKS]", data=PART3_TEXT),
    "a read of port 0xf4 before the debug exit": guest("in al, DEBUG_EXIT\nmovzx eax, al\ncall hex32\nmov eax, [TICKS]\n"
                                                       "call hex32\nmov [SCRATCH], eax\nmov al, 1\nout DEBUG_EXIT, al",
                                                       data=PART3_TEXT),
    "the course's devices guest": DEVICES,
}
ERROR_EXITS = ("INTERNAL_ERROR", "FAIL_ENTRY", "SYSTEM_EVENT")
PART3_HIDDEN = {"runs": list(PART3_RUNS.values()),
                "scripts": [[["IO", {"port": COM1, "size": 1, "direction": "out", "value": 0x41}],
                             [reason, {"eip": 0x100010}]] for reason in ERROR_EXITS]}


def judge_each_engine(runs, expected, whats, judge_run, what="the guest ({}) under your loop on {}"):
    """judge_run(run, want, said) for each guest's run on the model and, where the kernel could run
    them, on KVM; `said` names the guest and the engine for the student."""
    check(isinstance(runs, dict), "runs on each engine", got=runs)
    for engine in ("hardware-assist", "kvm"):
        if engine == "kvm" and not isinstance(runs.get("kvm"), list):
            continue
        got = runs.get(engine)
        check(isinstance(got, list) and len(got) == len(whats), f"one run per guest on {engine}", got=got)
        for name, run, want in zip(whats, got, expected):
            judge_run(run, want, what.format(name, engine))


def every_engine(runs, expected, whats, fields=None):
    """The model's runs against the reference; KVM's too, where the kernel could run them."""
    check(isinstance(runs, dict), "runs on each engine", got=runs)
    same_runs(runs.get("hardware-assist"), expected, whats, fields=fields)
    if isinstance(runs.get("kvm"), list):
        same_runs(runs["kvm"], expected, whats, "kvm", fields=fields)


def part3_hidden(answers, expected, cases):
    answers = parts(answers, cases)
    every_engine(answers["runs"], expected, list(PART3_RUNS))
    check(isinstance(answers["scripts"], list) and len(answers["scripts"]) == len(ERROR_EXITS), "one outcome per script",
          got=answers["scripts"])
    for reason, outcome in zip(ERROR_EXITS, answers["scripts"]):
        check("raised" in outcome and not outcome.get("run_loop_error"), f"a {reason} exit",
              expected="your loop raises an exception that names it",
              got=f"your loop ran the vCPU again: {outcome.get('message')}" if outcome.get("run_loop_error")
              else f"it returned {outcome.get('returned')!r}",
              hint="only HLT and SHUTDOWN (and the debug exit) end a run normally")


# Part 4: run_irq_loop, interrupts injected with the window's handshake
from vmkit.grading.lab5 import (IRQ_FIELDS, check_irq_facts, check_ring_rounds, irq_run, irq_script, reference_serve,
                                ring_rounds, virtio_run)


def reference_irq_loop(vcpu, devices, on_io, on_mmio, pic):
    """run_loop's contract, and before every KVM_RUN QEMU's kvm_arch_pre_run without an in-kernel PIC
    (target/i386/kvm/kvm.c): inject what the PIC offers when ready_for_interrupt_injection and IF allow,
    then ask for the interrupt window while a line is still raised. A HLT with IF set waits for the
    next interrupt, and ends the run when the PIC has none to offer."""
    while True:
        if pic.pending() is not None and vcpu.ready_for_interrupt_injection and vcpu.if_flag:
            vcpu.interrupt(pic.acknowledge()[1])
        vcpu.request_interrupt_window = pic.pending() is not None
        exit = vcpu.run()
        if exit.reason == "IO":
            value = on_io(devices, exit)
            if exit.direction == "in":
                vcpu.answer(value)
            elif exit.port == DEBUG_EXIT:
                return "exit"
        elif exit.reason == "MMIO":
            value = on_mmio(devices, exit)
            if exit.direction == "read":
                vcpu.answer(value)
        elif exit.reason == "HLT":
            if not exit.interrupts or pic.pending() is None:
                return "halted"
        elif exit.reason == "SHUTDOWN":
            return "shutdown"
        elif exit.reason != "IRQ_WINDOW_OPEN":
            raise RuntimeError(f"unexpected exit: {exit}")


IRQ_ASKED = "vmkit.grading.lab5.irq_cases(cases, vmkit.grading.yours(run_irq_loop, 'run_irq_loop'))"
IRQ_WITHHELD = {"vmkit.grading.lab5": ["_handshake", "run_handlers"], "vmkit.grading": ["run_handlers"]}


def irq_expected(cases):
    return {"runs": [irq_run(source, reference_irq_loop) for source in cases["runs"]],
            "scripts": [irq_script(script, reference_irq_loop) for script in cases["scripts"]]}


def virtio_guest(**equ):
    return vmkit.guests.source("virtio_console", **equ)


def mmio_write(value, offset=4):
    return {"address": MMIO_BASE + offset, "size": 4, "direction": "write", "value": value}


IN_LSR = {"port": LSR, "size": 1, "direction": "in", "value": None}
READY, MASKED, SHADOW = ({"if_flag": 1, "ready_for_interrupt_injection": 1}, {"if_flag": 0},
                         {"if_flag": 1, "ready_for_interrupt_injection": 0})
PART4_VISIBLE_SCRIPTS = {
    "a line raised while IF is 0, the window, then a HLT": [
        ["MMIO", {**mmio_write(1), **MASKED}, [5]], ["IRQ_WINDOW_OPEN", READY], ["HLT", {"interrupts": False}]],
    "two lines at once, the guest ready at every exit": [
        ["IO", {**IN_LSR, **READY}, [3, 4]], ["MMIO", {**mmio_write(2), **READY}], ["MMIO", {**mmio_write(3), **READY}],
        ["HLT", {"interrupts": False}]],
    "IF set inside sti's shadow (not ready), then a HLT with IF set": [
        ["MMIO", {**mmio_write(1), **SHADOW}, [1]], ["HLT", {"interrupts": True}], ["HLT", {"interrupts": False}]],
    "a HLT with IF set and no line raised": [["HLT", {"interrupts": True}]],
}
PART4_VISIBLE = {"runs": [virtio_guest(INTERRUPTS=1, REQUESTS=4)], "scripts": list(PART4_VISIBLE_SCRIPTS.values())}
PART4_RUNS = {
    "the virtio console with EVENT_IDX, 12 requests, 3 a batch": virtio_guest(INTERRUPTS=1, REQUESTS=12, BATCH=3),
    "the virtio console without EVENT_IDX: an interrupt a request": virtio_guest(INTERRUPTS=1, EVENT_IDX=0, REQUESTS=6),
    "the virtio console polling, no interrupt": virtio_guest(REQUESTS=3),
    "the course's devices guest": DEVICES,
}
PART4_SCRIPTS = {
    "ready, but IF clear": [["MMIO", {**mmio_write(1), "if_flag": 0, "ready_for_interrupt_injection": 1}, [2]],
                            ["IRQ_WINDOW_OPEN", READY], ["SHUTDOWN", {}]],
    "a line raised at a window exit, another while the first is queued": [
        ["MMIO", {**mmio_write(1), **MASKED}, [6]], ["IRQ_WINDOW_OPEN", READY, [1]], ["MMIO", {**mmio_write(2), **MASKED}],
        ["MMIO", {**mmio_write(3), **MASKED}], ["IRQ_WINDOW_OPEN", READY], ["IO", {**IN_LSR, **READY}],
        ["IO", {"port": DEBUG_EXIT, "size": 1, "direction": "out", "value": 0, **READY}]],
    "three lines, the guest ready only at every other exit": [
        ["IO", {**IN_LSR, **READY}, [7, 5, 0]], ["MMIO", {**mmio_write(1), **MASKED}], ["IRQ_WINDOW_OPEN", READY],
        ["MMIO", {**mmio_write(2), **SHADOW}], ["HLT", {"interrupts": True}], ["HLT", {"interrupts": True}]],
    "a window exit with nothing left to inject, then an error exit": [
        ["MMIO", {**mmio_write(1), **READY}, [4]], ["IRQ_WINDOW_OPEN", READY], ["FAIL_ENTRY", {"eip": 0x100010}]],
}
PART4_HIDDEN = {"runs": list(PART4_RUNS.values()), "scripts": list(PART4_SCRIPTS.values())}


def same_irq_scripts(answers, expected, named):
    check(isinstance(answers, list) and len(answers) == len(expected), "one outcome per script", got=answers)
    for what, got, want in zip(named, answers, expected):
        check(isinstance(got, dict) and "error" not in got, f"a scripted vCPU ({what}) runs", got=got)
        if "raised" in want:
            check("raised" in got and not got.get("run_loop_error"), f"a scripted vCPU ({what}): the loop at the last exit",
                  expected="an exception that names it", got=got.get("message") if got.get("run_loop_error")
                  else f"it returned {got.get('returned')!r}", hint="the spec's list of exits: one the loop does not understand")
        else:
            check_equal(got.get("returned", f"it raised {got.get('raised')}: {got.get('message')}"), want["returned"],
                        what=f"a scripted vCPU ({what}): what the loop returned",
                        hint="a HLT with IF set ends the run only when the PIC offers nothing")
        check_equal(got.get("entries"), want["entries"], what=f"a scripted vCPU ({what}): each run()'s [vector injected, "
                    f"window requested]", hint="before every run: inject what the PIC offers when ready_for_interrupt_"
                    "injection and if_flag are both set, then request the window while a line is still raised")
        check_equal(got.get("acks"), want["acks"], what=f"a scripted vCPU ({what}): the lines the loop acknowledged",
                    hint="acknowledge the PIC only to inject what it gives, one line an entry")


def irq_judge(named_runs, named_scripts):
    def judge(answers, expected, cases):
        answers = parts(answers, cases)
        def judge_run(run, want, said):
            ran(run, said)
            check_irq_facts(run, {key: want[key] for key in IRQ_FIELDS}, said)
        judge_each_engine(answers["runs"], expected["runs"], named_runs, judge_run)
        same_irq_scripts(answers["scripts"], expected["scripts"], named_scripts)
    return judge


# Part 5: serve_transmitq, the device side of the transmit queue
RING_ASKED = "vmkit.grading.lab5.ring_cases(cases, vmkit.grading.yours(serve_transmitq, 'serve_transmitq'))"
RING_WITHHELD = {"vmkit.machine.virtio": ["serve_queue"], "vmkit.grading.lab5": ["reference_serve"]}


def ring_expected(cases):
    return {"rings": [ring_rounds(case, reference_serve) for case in cases["rings"]],
            "runs": [virtio_run(source, None) for source in cases["runs"]]}


def chain(*texts, writable=()):
    return [[text, i in writable] for i, text in enumerate(texts)]


PART5_VISIBLE_RINGS = {
    "one chain of three buffers, then two chains, EVENT_IDX": {"num": 8, "rounds": [
        {"post": [chain("hello", ", ", "ring\n")], "used_event": 0},
        {"post": [chain("one\n"), chain("two\n")], "used_event": 1}]},
    "a device-writable buffer at the end of a chain": {"num": 8, "rounds": [
        {"post": [chain("sent\n", "status", writable=(1,))], "used_event": 0}]},
    "indices across 65535, used_event not reached, then reached": {"num": 4, "start": 65534, "rounds": [
        {"post": [chain("a"), chain("b")], "used_event": 2},
        {"post": [chain("c"), chain("d"), chain("e")], "used_event": 2}]},
    "a request the driver adds while the device works": {"num": 8, "rounds": [
        {"post": [chain("first\n")], "late": [chain("late\n")], "used_event": 0}]},
    "no EVENT_IDX: VRING_AVAIL_F_NO_INTERRUPT, then cleared, then nothing new": {"num": 8, "event_idx": False, "rounds": [
        {"post": [chain("quiet\n")], "no_interrupt": True}, {"post": [chain("loud\n")]}, {}]},
}
PART5_VISIBLE = {"rings": list(PART5_VISIBLE_RINGS.values()),
                 "runs": [virtio_guest(INTERRUPTS=1, REQUESTS=4), virtio_guest(REQUESTS=3, BATCH=2)]}
PART5_RINGS = {
    "chains of one to five buffers, a writable one in the middle": {"num": 16, "rounds": [
        {"post": [chain("a", "bb", "ccc", "dddd", "e"), chain("x", "buffer", "y", writable=(1,)), chain("z")],
         "used_event": 2}]},
    "many rounds round a small ring across 65535": {"num": 2, "start": 65533, "rounds": [
        {"post": [chain("1"), chain("2")], "used_event": 65533}, {"post": [chain("3")], "used_event": 65535},
        {"post": [chain("4"), chain("5")], "used_event": 0}, {"post": [], "used_event": 0}]},
    "late requests twice, used_event far ahead": {"num": 8, "start": 100, "rounds": [
        {"post": [chain("p")], "late": [chain("q"), chain("r")], "used_event": 150},
        {"post": [chain("s")], "late": [chain("t")], "used_event": 104}]},
    "a chain that loops back to its head": {"num": 4, "rounds": [
        {"post": [chain("ab", "cd")], "loop": True, "used_event": 0}, {"post": [chain("ok")], "used_event": 1}]},
    "used_event right after the wrap at 65535": {"num": 8, "start": 65535, "rounds": [
        {"post": [chain("w"), chain("x")], "used_event": 0}, {"post": [chain("y")], "used_event": 65535}]},
    "no EVENT_IDX across 65535, NO_INTERRUPT on and off": {"num": 4, "event_idx": False, "start": 65535, "rounds": [
        {"post": [chain("a"), chain("b")]}, {"post": [chain("c")], "no_interrupt": True}, {"no_interrupt": False},
        {"post": [chain("d")], "no_interrupt": False}]},
}
PART5_RUNS = {
    "EVENT_IDX, 12 requests, 4 a batch, the interrupt at the end": virtio_guest(INTERRUPTS=1, REQUESTS=12, BATCH=4),
    "no EVENT_IDX, an interrupt a request": virtio_guest(INTERRUPTS=1, EVENT_IDX=0, REQUESTS=5),
    "polling, 20 requests": virtio_guest(REQUESTS=20, BATCH=3),
}
PART5_HIDDEN = {"rings": list(PART5_RINGS.values()), "runs": list(PART5_RUNS.values())}
VIRTIO_FIELDS = ("serial", "exit_code", "ended", "exits", "injected")


def ring_judge(named_rings, named_runs):
    def judge(answers, expected, cases):
        answers = parts(answers, cases)
        check(isinstance(answers["rings"], list) and len(answers["rings"]) == len(named_rings), "one outcome per ring",
              got=answers["rings"])
        for what, got, want in zip(named_rings, answers["rings"], expected["rings"]):
            check_ring_rounds(got, want, f"the ring ({what})")
        def judge_run(run, want, said):
            ran(run, said)
            check_irq_facts(run, {key: want[key] for key in VIRTIO_FIELDS}, said)
            check_equal(run.get("interrupts"), want["interrupts"], what=f"{said}: the interrupts your device raised",
                        hint="interrupt only when something was used and the driver asked (used_event, or no "
                             "VRING_AVAIL_F_NO_INTERRUPT)")
        judge_each_engine(answers["runs"], expected["runs"], named_runs, judge_run,
                          "the virtio console ({}) with your device side on {}")
    return judge


# Part 6: coalesced MMIO, the student's design
from vmkit.grading.lab5 import judge_coalesced_run, judge_coalesced_script, script_reference

COALESCED_ASKED = "vmkit.grading.lab5.coalesced_cases(cases, vmkit.grading.yours(run_coalesced, 'run_coalesced'))"
_DATA = 'text: db "rung", 10, 0\nalign 8\nno_idt: dw 0\n dd 0'
PART6_VISIBLE_RUNS = {
    "rings, bytes of SCRATCH, two reads, writes left at the end": guest(
        "mov ecx, 12\n.ring:\nmov [DOORBELL], ecx\nloop .ring\nmov byte [SCRATCH + 1], 0x5a\n"
        "mov word [SCRATCH + 2], 0x1234\nmov eax, [SCRATCH]\ncall hex32\nmov eax, [DOORBELL]\ncall hex32\n"
        "mov dword [SCRATCH], 0x600d\nmov dword [DOORBELL], 0"),
}
_B = MMIO_BASE
PART6_VISIBLE_SCRIPTS = [
    [["MMIO", _B + 4, 4, "write", 0x11223344], ["MMIO", _B + 0xC, 4, "write", 1], ["MMIO", _B + 5, 1, "write", 0xAA],
     ["INTERNAL_ERROR"]],
    [["MMIO", _B + 0xC, 4, "write", 1], ["MMIO", _B + 0xC, 1, "write", 0], ["MMIO", _B + 0xC, 4, "read", None],
     ["MMIO", _B + 0xC, 2, "write", 0], ["SHUTDOWN"]],
]
PART6_VISIBLE = {"runs": list(PART6_VISIBLE_RUNS.values()), "scripts": PART6_VISIBLE_SCRIPTS}
PART6_RUNS = {
    "writes, then the debug exit": guest(
        "mov dword [SCRATCH], 0xcafe\nmov byte [SCRATCH + 3], 0x7f\nmov esi, text\ncall puts\nmov ecx, 5\n"
        ".ring:\nmov [DOORBELL], cl\nloop .ring\nmov word [SCRATCH], 0x4242\nmov al, 9\nout DEBUG_EXIT, al", data=_DATA),
    "writes, then a triple fault": guest(
        "mov dword [DOORBELL], 1\nmov dword [SCRATCH], 0x01020304\nmov eax, [TICKS]\nmov word [SCRATCH + 2], 0xffff\n"
        "mov byte [DOORBELL + 3], 1\nlidt [no_idt]\nud2", data=_DATA),
    "bytes of SCRATCH between reads of other registers": guest(
        "mov byte [SCRATCH], 1\nmov eax, [TICKS]\nmov byte [SCRATCH + 1], 2\nmov eax, [ID]\nmov byte [SCRATCH + 2], 3\n"
        "movzx eax, byte [TICKS + 3]\nmov byte [SCRATCH + 3], 4\nmov eax, [SCRATCH]\ncall hex32\n"
        "mov word [SCRATCH + 2], 0x5566\nmovzx eax, word [SCRATCH + 2]\ncall hex32", data=_DATA),
    "thirty rings, a line printed after every fifth": guest(
        "mov ecx, 30\n.ring:\nmov [DOORBELL], ecx\nmov eax, ecx\nxor edx, edx\nmov ebx, 5\ndiv ebx\ntest edx, edx\n"
        "jnz .next\nmov esi, text\ncall puts\n.next:\nloop .ring\nmov eax, [DOORBELL]\ncall hex32\n"
        "mov [SCRATCH], eax\nmov dword [MMIO + 0x20], 5", data=_DATA),
    "the course's devices guest": DEVICES,
}
PART6_SCRIPTS = {
    "writes, then FAIL_ENTRY": [["MMIO", _B + 4, 2, "write", 0x1234], ["MMIO", _B + 0xC, 4, "write", 0],
                                ["MMIO", _B + 6, 2, "write", 0x5678], ["FAIL_ENTRY"]],
    "twenty rings, then HLT": [["MMIO", _B + 0xC, 4, "write", n] for n in range(20)] + [["HLT"]],
    "writes around an in and a read of TICKS, then SYSTEM_EVENT": [
        ["MMIO", _B + 4, 4, "write", 7], ["IO", LSR, 1, "in", None], ["MMIO", _B + 7, 1, "write", 0x80],
        ["MMIO", _B + 8, 4, "read", None], ["MMIO", _B + 0xC, 1, "write", 1], ["SYSTEM_EVENT"]],
}
PART6_HIDDEN = {"runs": list(PART6_RUNS.values()), "scripts": list(PART6_SCRIPTS.values())}


def coalesced_expected(cases):
    """vmkit's device model behind the uncoalesced loop on each guest, and on each script's accesses."""
    return {"runs": user_space_runs(cases["runs"]), "scripts": [script_reference(script) for script in cases["scripts"]]}


def judge_coalesced(runs_named, scripts_named):
    def judge(answers, expected, cases):
        answers = parts(answers, cases)
        judge_each_engine(answers["runs"], expected["runs"], runs_named, judge_coalesced_run)
        check(isinstance(answers["scripts"], list) and len(answers["scripts"]) == len(scripts_named),
              "one outcome per script", got=answers["scripts"])
        for what, got, want in zip(scripts_named, answers["scripts"], expected["scripts"]):
            judge_coalesced_script(got, want, f"a scripted vCPU ({what})")
    return judge


PROBES = {
    "part4_visible": Probe(IRQ_ASKED, PART4_VISIBLE, irq_expected,
                           irq_judge(["the virtio console, waiting in hlt for its interrupt"], list(PART4_VISIBLE_SCRIPTS)),
                           withhold=IRQ_WITHHELD),
    "part4_hidden": Probe(IRQ_ASKED, PART4_HIDDEN, irq_expected, irq_judge(list(PART4_RUNS), list(PART4_SCRIPTS)),
                          withhold=IRQ_WITHHELD),
    "part5_visible": Probe(RING_ASKED, PART5_VISIBLE, ring_expected,
                           ring_judge(list(PART5_VISIBLE_RINGS), ["the virtio console with interrupts",
                                                                   "the virtio console polling"]),
                           withhold=RING_WITHHELD),
    "part5_hidden": Probe(RING_ASKED, PART5_HIDDEN, ring_expected, ring_judge(list(PART5_RINGS), list(PART5_RUNS)),
                          withhold=RING_WITHHELD),
    "part1_visible": Probe(handler_asked("io", "handle_io"), PART1_VISIBLE, handler_expected, part1_visible),
    "part1_hidden": Probe(handler_asked("io", "handle_io"), PART1_HIDDEN, handler_expected, part1_hidden),
    "part2_visible": Probe(handler_asked("mmio", "handle_mmio"), PART2_VISIBLE, handler_expected, part2_visible),
    "part2_hidden": Probe(handler_asked("mmio", "handle_mmio"), PART2_HIDDEN, handler_expected, part2_hidden),
    "part3_visible": Probe(LOOP_ASKED, PART3_VISIBLE, loop_expected, part3_visible),
    "part3_hidden": Probe(LOOP_ASKED, PART3_HIDDEN, loop_expected, part3_hidden),
    "part6_visible": Probe(COALESCED_ASKED, PART6_VISIBLE, coalesced_expected,
                           judge_coalesced(list(PART6_VISIBLE_RUNS), ["writes, then INTERNAL_ERROR",
                                                                      "rings around a read, then SHUTDOWN"])),
    "part6_hidden": Probe(COALESCED_ASKED, PART6_HIDDEN, coalesced_expected,
                          judge_coalesced(list(PART6_RUNS), list(PART6_SCRIPTS))),
}
