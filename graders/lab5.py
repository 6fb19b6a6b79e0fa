"""Lab 5 (a KVM VMM's run loop): guests on vmkit's hardware-assist model with the model's own devices,
and vmkit's device model answering scripted accesses."""
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
                ["IO", 0x80, 1, "in", None], ["IO", DEBUG_EXIT, 1, "out", 2]]
PART1_VISIBLE = {"runs": [guest("mov esi, hello\ncall puts\nin al, 0x80\nmovzx eax, al\ncall hex32\nmov al, 2\n"
                                "out DEBUG_EXIT, al", data='hello: db "hello from the guest", 10, 0')],
                 "scripts": [PART1_SCRIPT]}


def part1_visible(answers, expected, cases):
    answers = parts(answers, cases)
    script, = answers["scripts"]
    check(isinstance(script, dict) and "error" not in script, "handle_io answers the accesses", got=script)
    lsr, _, _, floating, _ = script["answers"]
    check_equal(lsr, 0x60, what="an in al from COM1's line status (0x3fd)",
                hint="bit 5 (ready for a byte) and bit 6 (idle): 0x60")
    check_equal(script["serial"], "hi", what="devices.serial after out 'h' and out 'i' to 0x3f8",
                hint="the part's spec: each out to COM1 sends one byte")
    check_equal(floating, 0xFF, what="an in al from port 0x80, where nothing answers", hint="the bus floats high: all ones")
    check_equal(script["exit_code"], 5, what="devices.exit_code after an out of 2 to 0xf4",
                hint="QEMU's isa-debug-exit: the exit code is (v << 1) | 1")
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
               [["MMIO", DOORBELL, 4, "write", 1], ["MMIO", DOORBELL, 4, "write", 2], ["MMIO", DOORBELL, 4, "read", None]]
PART2_VISIBLE = {"runs": [DEVICES], "scripts": [PART2_SCRIPT]}


def part2_visible(answers, expected, cases):
    answers = parts(answers, cases)
    script, = answers["scripts"]
    check(isinstance(script, dict) and "error" not in script, "handle_mmio answers the accesses", got=script)
    got = script["answers"]
    check_equal(got[0], ID_READS, what="a dword read of ID", hint='the bytes "vmk1", little-endian: 0x316b6d76')
    check_equal(got[3], 0x123456AB, what="SCRATCH after a dword write of 0x12345678 and a byte write of 0xab",
                hint="a byte write replaces one byte and keeps the other three")
    check_equal(got[4:7], [1, 2, 3], what="three reads of TICKS", hint="each read counts itself")
    check_equal(got[9], 2, what="a read of DOORBELL after two rings", hint="a read says how often it rang, not what was written")
    check_equal(script["mmio"], {"scratch": 0x123456AB, "ticks": 3, "rings": 2},
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
                              ["HLT", {"interrupts": False}]]]}


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
    script, = answers["scripts"]
    check_equal(script.get("returned", got_shown({RAISED: f"{script.get('raised')}: {script.get('message')}"})), "halted",
                what="a scripted in, MMIO read, HLT")
    check_equal(script["answers"], [0x60, 1], what="the answers your loop gave the two scripted reads",
                hint="after an in and after an MMIO read the vCPU waits for its answer")


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


# Part 4: run_vm
VM_ASKED = "vmkit.grading.lab5.vm_cases(cases, vmkit.grading.yours(run_vm, 'run_vm'))"


def part4_visible(answers, expected, sources):
    runs = answers.get("hardware-assist") if isinstance(answers, dict) else None
    check(isinstance(runs, list) and len(runs) == 1, "one run on the model", got=answers)
    run, = runs
    check(isinstance(run, dict) and "error" not in run, "run_vm returns a dict with ended, serial and exit_code",
          got=run.get("error") if isinstance(run, dict) else run)
    check_equal(run["serial"], expected[0]["serial"], what="what the devices guest printed under your VMM",
                hint="parts 1 to 3 check each piece alone")
    check_equal([run["ended"], run["exit_code"]], ["halted", None], what="(how it ended, the exit code)")


PART4_DATA = 'text: db "one VM of several", 10, 0\nalign 8\nno_idt: dw 0\n dd 0'
PART4_RUNS = {
    "the course's devices guest": DEVICES,
    "a guest that prints and exits": guest("mov esi, text\ncall puts\nmov eax, [TICKS]\nmov [SCRATCH], eax\nmov al, 3\n"
                                           "out DEBUG_EXIT, al", data=PART4_DATA),
    "a guest that prints words and reads every size": guest(
        "mov eax, 0x12345678\nmov dx, 0x300\nin ax, dx\ncall hex32\nmovzx eax, byte [ID + 2]\ncall hex32\n"
        "mov dx, COM1\nmov ax, 0x0a4b\nout dx, ax\nmov dword [DOORBELL], 1\nmov eax, [DOORBELL]\ncall hex32",
        data=PART4_DATA),
    "a guest that triple-faults": guest("mov esi, text\ncall puts\nlidt [no_idt]\nud2", data=PART4_DATA),
}


def part4_hidden(answers, expected, sources):
    every_engine(answers, expected, [f"{what}, under your VMM" for what in PART4_RUNS],
                 fields=("exits", "serial", "exit_code", "ended"))


PROBES = {
    "part1_visible": Probe(handler_asked("io", "handle_io"), PART1_VISIBLE, handler_expected, part1_visible),
    "part1_hidden": Probe(handler_asked("io", "handle_io"), PART1_HIDDEN, handler_expected, part1_hidden),
    "part2_visible": Probe(handler_asked("mmio", "handle_mmio"), PART2_VISIBLE, handler_expected, part2_visible),
    "part2_hidden": Probe(handler_asked("mmio", "handle_mmio"), PART2_HIDDEN, handler_expected, part2_hidden),
    "part3_visible": Probe(LOOP_ASKED, PART3_VISIBLE, loop_expected, part3_visible),
    "part3_hidden": Probe(LOOP_ASKED, PART3_HIDDEN, loop_expected, part3_hidden),
    "part4_visible": Probe(VM_ASKED, [DEVICES], user_space_runs, part4_visible),
    "part4_hidden": Probe(VM_ASKED, list(PART4_RUNS.values()), user_space_runs, part4_hidden),
}
