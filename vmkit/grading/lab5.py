"""Lab 5 (a KVM VMM's run loop): a student's device handlers and run loop on vmkit's model of VT-x and
on the real KVM, with budgets, and what the run did as plain data."""
import json
from types import SimpleNamespace

from ..errors import GuestError, GuestTimeout
from ..kvm.probe import probe
from ..kvm.userspace import RunLoopError, UserExit, exit_record, user_vcpu
from .checks import check_equal, check_facts, fail_cases

LOOP_TIMEOUT = 5.0                                  # seconds; a guest stuck in `jmp $` on KVM costs this
LOOP_MAX_EXITS = 5_000                              # a guest polling a status that never comes stops here
LOOP_FIELDS = ("exits", "serial", "exit_code", "mmio", "ended")   # in the order a difference is explained
MMIO_REGISTERS = ("scratch", "ticks", "rings")
DEBUG_EXIT_PORT = 0xF4
LOOP_HINTS = {
    "exits": "each exit as [reason, port or address, size, direction, value], a read with the value the "
             "guest got: the first difference is where your device model and vmkit's part",
    "serial": "what the guest printed: the low byte of each write to 0x3f8; a guest prints what it read, "
              "so a wrong answer shows here too",
    "exit_code": "a write of v to isa-debug-exit (0xf4) sets (v << 1) | 1, v taken at the access's size",
    "mmio": "the MMIO device at the end: SCRATCH keeps each byte written, TICKS counts reads, DOORBELL counts "
            "writes",
    "ended": '"exit" right after the write to 0xf4, "halted" at HLT, "shutdown" at SHUTDOWN',
}


def kvm_why_not():
    """Why the local KVM cannot run a lab's user-space loop (the probe's reason, with the fix), or None."""
    return probe().why_not("protected-mode")


def lab_devices():
    """A lab's device state: what COM1 printed, the exit code, the MMIO device's three registers."""
    return SimpleNamespace(serial=bytearray(), exit_code=None, scratch=0, ticks=0, rings=0)


def run_user_loop(source, loop, engine="hardware-assist", what="the guest"):
    """`loop(vcpu)` on a fresh vmkit.kvm.userspace.user_vcpu(source, engine) until it returns: (vcpu, what it
    returned), the vCPU closed. A guest that never ends and a broken rule of the KVM API (a read left
    unanswered, a halted vCPU run again) fail with a message that names them; an exception the loop
    raises reaches the caller as it is."""
    vcpu = user_vcpu(source, engine, timeout=LOOP_TIMEOUT, max_exits=LOOP_MAX_EXITS)
    try:
        with vcpu:
            return vcpu, loop(vcpu)
    except GuestTimeout as error:
        raise AssertionError(
            f"{what} on {engine} did not finish: {error}\n  where to look: a guest that polls COM1's line "
            f"status spins until an answer has the bit it tests; the loop must return when the guest ends "
            f"(debug exit, HLT, SHUTDOWN)") from None
    except RunLoopError as error:
        raise AssertionError(f"{what} on {engine}: {error}") from None
    except GuestError as error:
        raise AssertionError(f"{what} on {engine} stopped: {error}") from None


def run_handlers(source, on_io, on_mmio, engine="hardware-assist", what="the guest"):
    """The guest on a fresh vCPU, every IO exit handed to on_io(exit) and every MMIO exit to
    on_mmio(exit) (each returns a read's value), so that a lab can check one handler before the
    students write the loop: (vcpu, how the run ended), as run_user_loop."""
    def loop(vcpu):
        while True:
            exit = vcpu.run()
            if exit.reason in ("IO", "MMIO"):
                try:
                    value = (on_io if exit.reason == "IO" else on_mmio)(exit)
                except Exception as error:          # the student's handler: say which exit it failed on
                    text = _source_line(vcpu, exit)
                    raise AssertionError(f"the handler raised {type(error).__name__}: {error}\n  on the exit {exit}"
                                         + (f" (the guest's `{text}`)" if text else "")) from error
                if exit.reads:
                    vcpu.answer(value)
                elif exit.reason == "IO" and exit.port == DEBUG_EXIT_PORT:
                    return "exit"
            elif exit.reason in ("HLT", "SHUTDOWN"):
                return "halted" if exit.reason == "HLT" else "shutdown"
            else:
                raise AssertionError(f"the guest met an exit the lab's guests never make: {exit}")
    return run_user_loop(source, loop, engine, what)


def loop_facts(ended, vcpu, io_devices, mmio_devices=None):
    """What a run of a user-space loop did, as plain data: how it ended, what COM1 printed, the exit code,
    the MMIO registers at the end, and every exit (reads with the value answered). Device state is
    vmkit's DeviceModel or a lab's (lab_devices); the MMIO registers come from `mmio_devices` if given."""
    mmio_devices = io_devices if mmio_devices is None else mmio_devices
    if hasattr(io_devices, "port_access"):                       # vmkit's own DeviceModel
        serial, exit_code = io_devices.serial.output, io_devices.debug_exit.exit_code
    else:
        serial, exit_code = getattr(io_devices, "serial", b""), getattr(io_devices, "exit_code", None)
    try:
        serial = bytes(serial).decode("latin-1")
    except (TypeError, ValueError):
        serial = repr(serial)
    registers = getattr(mmio_devices, "mmio", mmio_devices)
    facts = {"ended": ended, "serial": serial, "exit_code": exit_code,
             "mmio": {name: getattr(registers, name, None) for name in MMIO_REGISTERS}, **exits_of(vcpu)}
    return json.loads(json.dumps(facts, default=repr))


def exits_of(vcpu):
    """{"exits": the vCPU's exits as plain data, "instructions": where each happened, in words}."""
    exits = vcpu.exits if vcpu is not None else []
    return {"exits": [exit_record(e) for e in exits], "instructions": [_instruction(vcpu, e) for e in exits]}


def _instruction(vcpu, exit):
    """", at eip 0x...: the guest's `source line`" for an exit, as far as the guest's listing tells."""
    eip = exit.detail.get("eip")
    text = _source_line(vcpu, exit)
    return "" if eip is None else f", at eip {eip:#x}" + (f": the guest's `{text}`" if text else "")


def _source_line(vcpu, exit):
    image, eip = getattr(vcpu, "image", None), exit.detail.get("eip")
    line = image.lines.get(eip) if image is not None and eip is not None else None
    return image.source_line(line).split(";")[0].strip() if line else ""


def check_handler(handler, script, expected, what, hint=None, show=3):
    """handler(devices, exit) for each access of `script` ([reason, port or address, size, direction,
    value]) in order, on one fresh lab_devices(): the value of every read, then the devices' state,
    against `expected` (the reference device model's answers to the same script)."""
    devices = lab_devices()
    wrong = []
    for (reason, where, size, direction, value), want in zip(script, expected["answers"]):
        exit = UserExit(reason, {"port" if reason == "IO" else "address": where, "size": size,
                                 "direction": direction, "value": value})
        try:
            got = handler(devices, exit)
        except Exception as error:                  # the student's code raised: report it as the answer
            wrong.append((str(exit), want if exit.reads else "no error", f"{type(error).__name__}: {error}"))
            continue
        if exit.reads and got != want:
            wrong.append((str(exit), want, got))
    fail_cases(what, wrong, len(script), "accesses", hint, show)
    state = loop_facts(None, None, devices)
    for field in ("serial", "exit_code", "mmio"):
        check_equal(state[field], expected[field], what=f"{what}: devices.{field} after the accesses",
                    hint=LOOP_HINTS[field])


def check_loop_facts(got, expected, what):
    """loop_facts of a student's run against the reference run's (the fields `expected` has), the first
    difference explained, with where in the guest each exit happened."""
    check_facts(got, expected, what, hints=LOOP_HINTS, fields=LOOP_FIELDS, unit="exit", end="(no more exits)",
                notes={"exits": got.get("instructions") or []})
