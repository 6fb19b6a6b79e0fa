"""Lab 5 (a KVM VMM's run loop): a student's device handlers and run loop on vmkit's model of VT-x and
on the real KVM, with budgets, and what the run did as plain data; the loop that injects interrupts;
the device side of a virtqueue, on rings the grader builds and behind the virtio console guest.

Long because: the runners, the facts of a run and the kernel's side of every probe (handlers, loops,
injection, rings, coalescing) belong to one lab, and a split would scatter what its checks compare.
"""
import importlib
import json
import struct
from types import SimpleNamespace

from ..errors import GuestError, GuestTimeout
from ..kvm.probe import probe
from ..kvm.userspace import RunLoopError, UserExit, exit_record, user_vcpu
from .answers import RAISED, on_disk, plain, raised, refusal, withheld
from .checks import check, check_equal, check_facts, fail_cases

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


def run_handlers(source, on_io, on_mmio, engine="hardware-assist", what="the guest", devices=None):
    """The guest on a fresh vCPU, every IO exit handed to on_io(exit) and every MMIO exit to
    on_mmio(exit) (each returns a read's value), so that a lab can check one handler before the
    students write the loop: (vcpu, how the run ended), as run_user_loop. With `devices` (a
    vmkit.kvm.DeviceModel) its virtio console reaches the guest's RAM, and its PIC's interrupts are
    injected with the interrupt window's handshake."""
    def loop(vcpu):
        if devices is not None:
            devices.virtio.memory = vcpu.memory
        while True:
            if devices is not None:
                _handshake(vcpu, devices.pic)
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
            elif exit.reason == "HLT" and exit.detail.get("interrupts") and devices is not None \
                    and devices.pic.pending() is not None:
                continue
            elif exit.reason in ("HLT", "SHUTDOWN"):
                return "halted" if exit.reason == "HLT" else "shutdown"
            elif exit.reason != "IRQ_WINDOW_OPEN" or devices is None:
                raise AssertionError(f"the guest met an exit the lab's guests never make: {exit}")
    return run_user_loop(source, loop, engine, what)


def _handshake(vcpu, pic):
    if pic.pending() is not None and vcpu.ready_for_interrupt_injection and vcpu.if_flag:
        vcpu.interrupt(pic.acknowledge()[1])
    vcpu.request_interrupt_window = pic.pending() is not None


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


# --- the kernel's side of the grader's questions (graders/lab5.py asks them) ------------------------
# Each runs under vmkit as it is on disk (answers.on_disk), so a notebook that patched vmkit's devices
# or its vCPU (answers cut to size, the MMIO device decoding like a wrong answer) answers with its own
# code. While a student's device handler answers, vmkit's own model of that device is withheld.
ENGINES = ("hardware-assist", "kvm")
WITHHELD = {"io": (("kvm.devices", "DeviceModel", "port_access"),),
            "mmio": (("kvm.devices", "DeviceModel", "mmio_access"), ("machine.devices", "MmioDevice", "read"),
                     ("machine.devices", "MmioDevice", "write"))}


def _model_io(model, exit):
    return model.port_access(exit.port, exit.size, exit.value, exit.direction)


def _model_mmio(model, exit):
    return model.mmio_access(exit.address, exit.size, exit.value, exit.direction)


class withheld_devices:
    """vmkit's own model of the devices of `kinds` ("io", "mmio"), in the vmkit modules now imported:
    each method raises NotYours while the with block runs (its code swapped, so an instance made before
    is refused too), and is put back after."""

    def __init__(self, *kinds):
        self.methods, self.saved = [m for kind in kinds for m in WITHHELD[kind]], []

    def __enter__(self):
        for module, cls, name in self.methods:
            function = getattr(getattr(importlib.import_module(f"vmkit.{module}"), cls), name)
            self.saved.append((function, function.__code__))
            function.__code__ = refusal.__code__.replace(co_name=f"{cls}.{name}", co_qualname=f"{cls}.{name}")
        return self

    def __exit__(self, *exc):
        for function, code in reversed(self.saved):
            function.__code__ = code
        self.saved = []
        return False


def _error(error):
    return {"error": f"{type(error).__name__}: {error}"}


def handler_runs(sources, on_io=None, on_mmio=None):
    """loop_facts of each guest run through run_handlers with a student's handler for one kind of exit
    (on a fresh lab_devices()) and vmkit's device model for the other; {"error": ...} for a run that failed."""
    from ..kvm.devices import DeviceModel  # here, not at the top: called under on_disk, this is vmkit as installed
    def run(source):
        devices, model = lab_devices(), DeviceModel()
        io = (lambda e: on_io(devices, e)) if on_io else (lambda e: _model_io(model, e))
        mmio = (lambda e: on_mmio(devices, e)) if on_mmio else (lambda e: _model_mmio(model, e))
        vcpu, ended = run_handlers(source, io, mmio, what="the guest")
        return loop_facts(ended, vcpu, devices if on_io else model, devices if on_mmio else model)
    return each(sources, run)


def script_answers(handler, script):
    """handler(devices, exit) for each access of `script` ([reason, port or address, size, direction,
    value]) on one fresh lab_devices(): each read's value (None for a write), raised(error) where it
    raised, then the devices' state."""
    from ..kvm.userspace import UserExit  # here, not at the top: called under on_disk, this is vmkit as installed
    devices, answers = lab_devices(), []
    for reason, where, size, direction, value in script:
        exit = UserExit(reason, {"port" if reason == "IO" else "address": where, "size": size,
                                 "direction": direction, "value": value})
        try:
            got = handler(devices, exit)
            answers.append(plain(got) if exit.reads else None)
        except Exception as error:              # the student's code: its error is its answer
            answers.append(raised(error))
    state = loop_facts(None, None, devices)
    return {"answers": answers, **{field: state[field] for field in ("serial", "exit_code", "mmio")}}


def handler_cases(cases, kind, handler):
    """A student's device handler for `kind` ("io" or "mmio"), vmkit as on disk and vmkit's own model
    of that device withheld: {"runs": handler_runs of cases["runs"], "scripts": script_answers of each
    of cases["scripts"]}."""
    with withheld_devices(kind), on_disk(__name__) as fresh, fresh.withheld_devices(kind):
        runs = fresh.handler_runs(cases["runs"], **{f"on_{kind}": handler})
        return {"runs": runs, "scripts": fresh.each(cases["scripts"], lambda script: fresh.script_answers(handler, script))}


def _engines(features=()):
    """The engines a run is asked on here: the model, and the real KVM where it runs the lab's guests
    (and has the probe's `features` too)."""
    why = probe().why_not("protected-mode", *features)
    return {"hardware-assist": None, "kvm": why}


def on_each_engine(sources, run, features=()):
    """run(source, engine) for each guest, on the model and (where it runs, with the probe's `features`)
    on KVM: {engine: [what it returned, or {"error": ...} where it raised, ...]}, or {"kvm": why it
    was not asked}."""
    runs = {}
    for engine, why in _engines(features).items():
        if why:
            runs[engine] = why
            continue
        runs[engine] = each(sources, lambda source: run(source, engine))
    return runs


def each(items, answer):
    """answer(item) for each item, or {"error": ...} where it raised (the student's code: its error is
    its answer)."""
    answers = []
    for item in items:
        try:
            answers.append(answer(item))
        except Exception as error:              # the student's code: its error is its answer
            answers.append(_error(error))
    return answers


def loop_runs(sources, run_loop):
    """loop_facts of each guest under a student's run_loop with vmkit's device model, on the model and
    (where it runs) on KVM: {engine: [facts, ...]} or {"kvm": why it was not asked}."""
    from ..kvm.devices import DeviceModel  # here, not at the top: called under on_disk, this is vmkit as installed

    def run(source, engine):
        model = DeviceModel()
        vcpu, ended = run_user_loop(source, lambda v: run_loop(v, model, _model_io, _model_mmio), engine)
        return loop_facts(ended, vcpu, model)
    return on_each_engine(sources, run)


def scripted_loop(scripts, run_loop):
    """A student's run_loop on ScriptedVcpus (each a list of [reason, details]) with vmkit's device model:
    {"returned", "answers"}, or {"raised": the exception's name, "run_loop_error": whether the vCPU
    raised it (the loop ran it again)}."""
    from ..kvm.devices import DeviceModel  # here, not at the top: called under on_disk, this is vmkit as installed
    from ..kvm.userspace import RunLoopError, ScriptedVcpu, UserExit  # here, not at the top: called under on_disk, this is vmkit as installed
    outcomes = []
    for script in scripts:
        vcpu = ScriptedVcpu([UserExit(reason, dict(details)) for reason, details in script])
        try:
            returned = run_loop(vcpu, DeviceModel(), _model_io, _model_mmio)
            outcomes.append({"returned": plain(returned), "answers": plain(vcpu.answers)})
        except Exception as error:              # the student's code: its error is its answer
            outcomes.append({"raised": type(error).__name__, "message": str(error)[:300],
                             "run_loop_error": isinstance(error, RunLoopError)})
    return outcomes


def loop_cases(cases, run_loop):
    """loop_runs of cases["runs"] and scripted_loop of cases["scripts"], vmkit as on disk."""
    with on_disk(__name__) as fresh:
        return {"runs": fresh.loop_runs(cases["runs"], run_loop), "scripts": fresh.scripted_loop(cases["scripts"], run_loop)}


def vm_runs(sources, run_vm):
    """A student's run_vm on a fresh vCPU for each guest, on the model and (where it runs) on KVM: what it
    returned (ended, serial, exit_code) with the vCPU's exits; {engine: [facts, ...]} or {"kvm": why not}."""
    def run(source, engine):
        vcpu, outcome = run_user_loop(source, run_vm, engine)
        if not isinstance(outcome, dict):
            raise TypeError(f"run_vm returned {type(outcome).__name__}, not a dict")
        return {**{key: plain(outcome.get(key), f"run_vm's {key!r}") for key in ("ended", "serial", "exit_code")},
                "exits": exits_of(vcpu)["exits"]}
    return on_each_engine(sources, run)


def vm_cases(sources, run_vm):
    """vm_runs, vmkit as on disk."""
    with on_disk(__name__) as fresh:
        return fresh.vm_runs(sources, run_vm)


# --- coalesced MMIO (the lab's open part) --------------------------------------------------------
# vmkit's vCPUs have no KVM_REGISTER_COALESCED_MMIO: on both engines every MMIO write leaves the guest.
# The student's loop therefore plays both sides of the API: KVM's ring (a write it keeps runs the vCPU
# again without reaching the device model) and user space (the exits after which it calls the device
# model, draining what it kept). What the design costs is measured here, around the loop.
RING_SIZE = 8                                       # writes the student's ring may hold at one time


def trip_bound(exits, ring_size=RING_SIZE):
    """The most trips to the device model a coalescing loop may take on a run with these exits
    ([reason, where, size, direction, value] records): one per IO exit, one per MMIO read, one at the
    end, and for each stretch of k MMIO writes with no MMIO read between them, (k - 1) // ring_size
    (the writes that found the ring full)."""
    bound, stretch = 1, 0
    for record in list(exits) + [["MMIO", None, None, "read", None]]:
        if record[0] == "IO":
            bound += 1
        elif record[0] == "MMIO" and record[3] == "write":
            stretch += 1
        elif record[0] == "MMIO":
            bound += 1 + (max(stretch, 1) - 1) // ring_size
            stretch = 0
    return bound - 1                                # the sentinel read above is not the guest's


class _Devices:
    """What a coalescing loop is handed as `devices`: a token for the handlers, with nothing inside."""

    def __repr__(self):
        return "<the device model's state>"


class CountingVcpu:
    """The vCPU as a coalescing loop sees it, counting what the loop does with it: the exits after which
    the loop reached the device model (its trips), and the guest's MMIO writes not yet handed to the
    device model each time the vCPU runs (what the loop's ring held)."""

    def __init__(self, vcpu):
        self._vcpu = vcpu
        self._run = 0                                # how many times the vCPU has run
        self._trips = set()                          # the runs after which the device model was reached
        self.writes, self.delivered, self.most_waiting = 0, 0, 0

    def run(self):
        self.most_waiting = max(self.most_waiting, self.writes - self.delivered)
        exit = self._vcpu.run()
        self._run += 1
        if exit.reason == "MMIO" and exit.detail.get("direction") == "write":
            self.writes += 1
        return exit

    def answer(self, value):
        self._vcpu.answer(value)

    @property
    def exits(self):
        return self._vcpu.exits

    def handler(self, device, model):
        """device(model, exit), counted: the trip it belongs to, and a write it delivers."""
        def call(devices, exit):
            self._trips.add(self._run)
            if getattr(exit, "reason", None) == "MMIO" and getattr(exit, "direction", None) == "write":
                self.delivered += 1
            return device(model, exit)
        return call

    def counts(self):
        return {"trips": len(self._trips), "most_waiting": max(self.most_waiting, self.writes - self.delivered),
                "waiting_at_end": self.writes - self.delivered}


def coalesced_run(source, run_coalesced, engine="hardware-assist"):
    """A student's run_coalesced(vcpu, devices, on_io, on_mmio) on the guest, with vmkit's device model
    behind the handlers: loop_facts, with its counts (trips, most_waiting, waiting_at_end)."""
    from ..kvm.devices import DeviceModel  # here, not at the top: called under on_disk, this is vmkit as installed
    model, counted = DeviceModel(), []

    def loop(vcpu):
        counted.append(CountingVcpu(vcpu))
        watched = counted[0]
        return run_coalesced(watched, _Devices(), watched.handler(_model_io, model), watched.handler(_model_mmio, model))
    vcpu, ended = run_user_loop(source, loop, engine)
    return {**loop_facts(ended, vcpu, model), **counted[0].counts()}


def reference_run(source, engine="hardware-assist"):
    """vmkit's device model behind an uncoalesced loop: the run a coalescing loop must reproduce."""
    from ..kvm.devices import DeviceModel  # here, not at the top: called under on_disk, this is vmkit as installed
    model = DeviceModel()
    vcpu, ended = run_handlers(source, lambda e: _model_io(model, e), lambda e: _model_mmio(model, e), engine)
    return loop_facts(ended, vcpu, model)


def _scripted_exit(record):
    from ..kvm.userspace import UserExit  # here, not at the top: called under on_disk, this is vmkit as installed
    reason = record[0]
    if reason in ("IO", "MMIO"):
        return UserExit(reason, {"port" if reason == "IO" else "address": record[1], "size": record[2],
                                 "direction": record[3], "value": record[4]})
    return UserExit(reason, {"interrupts": False} if reason == "HLT" else {"eip": 0x100010})


def coalesced_script(script, run_coalesced):
    """A student's run_coalesced on a ScriptedVcpu playing `script` (exit records; the last ends the run),
    vmkit's device model behind it: {"returned" or "raised", "mmio", "answers", counts, "exits"}."""
    from ..kvm.devices import DeviceModel  # here, not at the top: called under on_disk, this is vmkit as installed
    from ..kvm.userspace import ScriptedVcpu  # here, not at the top: called under on_disk, this is vmkit as installed
    model, vcpu = DeviceModel(), ScriptedVcpu([_scripted_exit(record) for record in script])
    watched = CountingVcpu(vcpu)
    try:
        outcome = {"returned": plain(run_coalesced(watched, _Devices(), watched.handler(_model_io, model),
                                                   watched.handler(_model_mmio, model)))}
    except Exception as error:                  # the student's code: its error is its answer
        outcome = {"raised": type(error).__name__, "message": str(error)[:300]}
    state = loop_facts(None, vcpu, model)
    return {**outcome, "mmio": state["mmio"], "answers": plain(vcpu.answers), "exits": state["exits"],
            **watched.counts()}


def coalesced_runs(sources, run_coalesced):
    """coalesced_run of each guest on the model and (where it runs) on KVM: {engine: [facts, ...]} or
    {"kvm": why it was not asked}."""
    return on_each_engine(sources, lambda source, engine: coalesced_run(source, run_coalesced, engine))


def coalesced_cases(cases, run_coalesced):
    """coalesced_runs of cases["runs"] and coalesced_script of each of cases["scripts"], vmkit as on disk."""
    with on_disk(__name__) as fresh:
        scripts = fresh.each(cases["scripts"], lambda script: fresh.coalesced_script(script, run_coalesced))
        return {"runs": fresh.coalesced_runs(cases["runs"], run_coalesced), "scripts": scripts}


COALESCED_HINTS = {
    "same": "the run must be the uncoalesced loop's: every read answered as if each write had reached the "
            "device at its exit, and the device's final state the same",
    "ring": f"the ring holds at most RING_SIZE ({RING_SIZE}) writes; KVM's coalesced_mmio_write sends a write "
            f"that finds it full to user space (virt/kvm/coalesced_mmio.c)",
    "end": "by the time the loop returns or raises, the device model has had every write the guest made",
    "trips": "the part's bound on trips (trip_bound): writes in the zone must not each cost a trip",
}


def judge_coalesced_run(got, want, what, ring_size=RING_SIZE):
    """A coalescing loop's run (coalesced_run) against the uncoalesced reference (reference_run)."""
    check(isinstance(got, dict) and "error" not in got, f"{what} runs to its end",
          got=got.get("error") if isinstance(got, dict) else got)
    check_loop_facts(got, want, what)
    check(got["waiting_at_end"] == 0, f"{what}: writes the device model never got",
          expected=0, got=got["waiting_at_end"], hint=COALESCED_HINTS["end"])
    check(got["most_waiting"] <= ring_size, f"{what}: the most writes your ring held at one time",
          expected=f"at most {ring_size}", got=got["most_waiting"], hint=COALESCED_HINTS["ring"])
    bound = trip_bound(want["exits"], ring_size)
    check(got["trips"] <= bound, f"{what}: trips to the device model",
          expected=f"at most {bound} (of {len(want['exits'])} exits)", got=f"{got['trips']} trips",
          hint=COALESCED_HINTS["trips"])


def judge_coalesced_script(got, want, what, ring_size=RING_SIZE):
    """A coalescing loop on a script against vmkit's device model on the same accesses: want is
    {"ends": "returned" or "raised", "returned", "mmio", "answers", "exits"}."""
    check(isinstance(got, dict) and "error" not in got, f"{what} runs", got=got)
    if want["ends"] == "raised":
        check("raised" in got, f"{what}: the loop at the last exit", expected="an exception that names it",
              got=f"it returned {got.get('returned')!r}", hint="an exit the loop does not understand ends it with an error")
    else:
        check_equal(got.get("returned", got_raised(got)), want["returned"], what=f"{what}: what the loop returned")
    check_equal(got["answers"], want["answers"], what=f"{what}: the answers the loop gave the reads",
                hint=COALESCED_HINTS["same"])
    check_equal(got["mmio"], want["mmio"], what=f"{what}: the MMIO device at the end", hint=COALESCED_HINTS["end"])
    check(got["most_waiting"] <= ring_size, f"{what}: the most writes your ring held at one time",
          expected=f"at most {ring_size}", got=got["most_waiting"], hint=COALESCED_HINTS["ring"])
    bound = trip_bound(got["exits"], ring_size)
    check(got["trips"] <= bound, f"{what}: trips to the device model", expected=f"at most {bound}",
          got=f"{got['trips']} trips", hint=COALESCED_HINTS["trips"])


def got_raised(outcome):
    return f"it raised {outcome.get('raised')}: {outcome.get('message')}" if "raised" in outcome else outcome


def script_reference(script):
    """vmkit's device model on the accesses of `script`, the uncoalesced way: what a coalescing loop's
    scripted run must end with."""
    from ..kvm.devices import DeviceModel  # here, not at the top: called under on_disk, this is vmkit as installed
    model, answers = DeviceModel(), []
    for record in script[:-1]:
        exit = _scripted_exit(record)
        value = (_model_io if record[0] == "IO" else _model_mmio)(model, exit)
        if exit.reads:
            answers.append(value)
    last = script[-1][0]
    return {"ends": "returned" if last in ("HLT", "SHUTDOWN") else "raised",
            "returned": {"HLT": "halted", "SHUTDOWN": "shutdown"}.get(last),
            "answers": answers, "mmio": {name: getattr(model.mmio, name) for name in MMIO_REGISTERS}}


def check_coalesced(run_coalesced, sources, scripts):
    """The visible checks of a coalescing loop, in the notebook: each guest on the model against the
    uncoalesced loop with vmkit's device model, and each script against vmkit's device model; prints
    each run's trips against its bound."""
    for number, source in enumerate(sources, 1):
        want = reference_run(source)
        got = coalesced_run(source, run_coalesced)
        print(f"guest {number}: {len(want['exits'])} exits, {sum(r[0] == 'MMIO' and r[3] == 'write' for r in want['exits'])} "
              f"of them MMIO writes; your loop: {got['trips']} trips to the device model (at most "
              f"{trip_bound(want['exits'])}), its ring held at most {got['most_waiting']} writes")
        judge_coalesced_run(got, want, f"guest {number} under your loop")
    for number, script in enumerate(scripts, 1):
        judge_coalesced_script(coalesced_script(script, run_coalesced), script_reference(script),
                               f"script {number} (ending at {script[-1][0]})")


# --- interrupt injection (part 4) ----------------------------------------------------------------
IRQ_FEATURES = ("interrupts",)          # what KVM must do for the guests with interrupts (the virtio console's)
IRQ_FIELDS = ("exits", "injected", "serial", "exit_code", "ended")
IRQ_HINTS = {
    **LOOP_HINTS,
    "exits": "each exit as the loop got it; an IRQ_WINDOW_OPEN exit means the loop asked for the window "
             "(request_interrupt_window) before that run: the first difference is where your handshake and "
             "QEMU's kvm_arch_pre_run part",
    "injected": "each interrupt your loop injected, as [exits before it, vector]: the PIC acknowledged and "
                "KVM_INTERRUPT called before the next run, when ready_for_interrupt_injection and if_flag allow",
    "ended": '"exit" right after the write to 0xf4, "halted" at HLT with interrupts off or with nothing the PIC '
             'offers, "shutdown" at SHUTDOWN',
}


def irq_facts(ended, vcpu, model):
    """loop_facts of a run with interrupts, and each injection [exits before it, vector]."""
    return {**loop_facts(ended, vcpu, model), "injected": [list(i) for i in getattr(vcpu, "injected", [])]}


def check_irq_facts(got, expected, what):
    """irq_facts of a student's run against the reference run's, the first difference explained."""
    check_facts(got, expected, what, hints=IRQ_HINTS, fields=IRQ_FIELDS, unit="exit", end="(no more)",
                notes={"exits": got.get("instructions") or []})


class ScriptedPic:
    """The PIC as a scripted vCPU's loop sees it: lines raised at given exits (`raise_irq`), `pending()`
    the lowest line raised and not taken (or None), `acknowledge()` takes it and returns (irq, vector),
    vector 0x20 + irq. `acks` lists the lines acknowledged, in order."""

    def __init__(self):
        self.raised, self.acks = [], []

    def raise_irq(self, irq):
        if irq not in self.raised:
            self.raised = sorted(self.raised + [irq])

    def pending(self):
        return self.raised[0] if self.raised else None

    def acknowledge(self):
        if not self.raised:
            raise RuntimeError("acknowledge() with no line raised: the PIC offers nothing (pending() is None)")
        irq = self.raised.pop(0)
        self.acks.append(irq)
        return irq, 0x20 + irq


def scripted_irq_vcpu(script, pic):
    """A ScriptedVcpu playing `script` ([reason, {details}, [lines raised at that exit]]) whose exits
    raise their lines at `pic` as they are handed out."""
    from ..kvm.userspace import ScriptedVcpu, UserExit  # here, not at the top: called under on_disk, this is vmkit as installed

    class Raising(ScriptedVcpu):
        def _next_exit(self):
            exit = super()._next_exit()
            for irq in exit.detail.pop("raise", ()):
                pic.raise_irq(irq)
            return exit
    return Raising([UserExit(item[0], {**item[1], "raise": item[2] if len(item) > 2 else []}) for item in script])


def irq_script(script, run_irq_loop):
    """A loop on a scripted vCPU and ScriptedPic, vmkit's device model behind it: {"returned" or
    "raised", "entries": each run()'s [vector injected or None, window requested], "acks", "answers"}."""
    from ..kvm.devices import DeviceModel  # here, not at the top: called under on_disk, this is vmkit as installed
    from ..kvm.userspace import RunLoopError  # here, not at the top: called under on_disk, this is vmkit as installed
    pic = ScriptedPic()
    vcpu = scripted_irq_vcpu(script, pic)
    try:
        outcome = {"returned": plain(run_irq_loop(vcpu, DeviceModel(), _model_io, _model_mmio, pic))}
    except Exception as error:                  # the student's code: its error is its answer
        outcome = {"raised": type(error).__name__, "message": str(error)[:300],
                   "run_loop_error": isinstance(error, RunLoopError)}
    return {**outcome, "entries": [[v, w] for v, w in vcpu.entries], "acks": list(pic.acks),
            "answers": plain(vcpu.answers)}


def irq_run(source, run_irq_loop, engine="hardware-assist"):
    """A loop with interrupts on the guest, vmkit's device model behind it (its virtio console on the
    guest's RAM, its PIC handed to the loop): irq_facts."""
    from ..kvm.devices import DeviceModel  # here, not at the top: called under on_disk, this is vmkit as installed
    model = DeviceModel()

    def loop(vcpu):
        model.virtio.memory = vcpu.memory
        return run_irq_loop(vcpu, model, _model_io, _model_mmio, model.pic)
    vcpu, ended = run_user_loop(source, loop, engine)
    return irq_facts(ended, vcpu, model)


WITHHELD["irq"] = (("kvm.interrupts", "UserspacePic", "before_run"),)


def irq_cases(cases, run_irq_loop):
    """irq_run of cases["runs"] on each engine and irq_script of each of cases["scripts"], vmkit as on
    disk, vmkit's own handshakes withheld (the lab's grader's and the KVM machine's)."""
    with withheld_devices("irq"), on_disk(__name__) as fresh, fresh.withheld_devices("irq"), \
            withheld(fresh, "_handshake"):
        scripts = fresh.each(cases["scripts"], lambda script: fresh.irq_script(script, run_irq_loop))
        runs = fresh.on_each_engine(cases["runs"], lambda source, engine: fresh.irq_run(source, run_irq_loop, engine),
                                    IRQ_FEATURES)
        return {"runs": runs, "scripts": scripts}


# --- the device side of a virtqueue (part 5) ----------------------------------------------------
# A ring the grader builds in a memory of its own: the driver's side is played here, round by round
# (chains posted, avail.idx moved, used_event or the NO_INTERRUPT flag set), the device's side is the
# student's serve_transmitq, called once a round.
RING_MEMORY = 0x10000
DESC, AVAIL, USED, BUFFERS = 0x1000, 0x2000, 0x3000, 0x4000


class RingMemory:
    """Guest-physical memory for a ring case (read, write), which posts `late` chains the first time the
    device writes avail_event: a driver that made requests available while the device was taking the
    others, before it could see the new avail_event."""

    def __init__(self, driver):
        self.data, self.driver, self.watch = bytearray(RING_MEMORY), driver, None

    def read(self, address, size):
        if address < 0 or address + size > len(self.data):
            raise ValueError(f"{address:#x} (+{size}) is outside the guest's RAM")
        return bytes(self.data[address:address + size])

    def write(self, address, data):
        self.read(address, len(data))
        self.data[address:address + len(data)] = bytes(data)
        if self.watch is not None and address == self.watch[0]:
            late, self.watch = self.watch[1], None
            self.driver.post(late)


class RingDriver:
    """The driver's side of one split virtqueue of `num` entries in a RingMemory, its indices starting at
    `start` (to cross 65535). Descriptors are handed out from a free list in a scrambled order, so a
    chain's head is not its position in the available ring."""

    def __init__(self, num, start=0, event_idx=True):
        from ..machine.virtio import Virtqueue  # here, not at the top: called under on_disk, this is vmkit as installed
        self.num, self.event_idx = num, event_idx
        self.memory = RingMemory(self)
        self.queue = Virtqueue()
        q = self.queue
        q.num, q.ready, q.desc, q.driver, q.device = num, 1, DESC, AVAIL, USED
        q.last_avail = q.used_idx = start
        self.avail_idx = start
        self.free = [(5 * i + 3) % num for i in range(num)]         # num is a power of 2: a permutation
        self.buffer = BUFFERS
        self.u16(AVAIL + 2, start)
        self.u16(USED + 2, start)

    def u16(self, address, value=None):
        if value is None:
            return struct.unpack("<H", self.memory.read(address, 2))[0]
        self.memory.write(address, struct.pack("<H", value & 0xFFFF))
        return value

    def post(self, chains):
        """Each chain ([[text, writable], ...], or a head index to post again: a loop) into the ring."""
        for chain in chains:
            if isinstance(chain, int):
                head = chain
            else:
                indices = [self.free.pop(0) for _ in chain]
                self.free += indices
                for n, ((text, writable), index) in enumerate(zip(chain, indices)):
                    data = text.encode("latin-1")
                    self.memory.write(self.buffer, data)
                    nxt = indices[n + 1] if n + 1 < len(indices) else 0
                    flags = (1 if n + 1 < len(indices) else 0) | (2 if writable else 0)
                    self.memory.write(DESC + 16 * index, struct.pack("<QIHH", self.buffer, len(data), flags, nxt))
                    self.buffer += len(data) + 8
                head = indices[0]
            self.u16(AVAIL + 4 + 2 * (self.avail_idx % self.num), head)
            self.avail_idx = self.u16(AVAIL + 2, self.avail_idx + 1)

    def loop_back(self, head):
        """Make the last descriptor of the chain at `head` point back to `head` with NEXT: a loop."""
        index, seen = head, 0
        while True:
            addr, length, flags, nxt = struct.unpack("<QIHH", self.memory.read(DESC + 16 * index, 16))
            if not flags & 1 or seen > self.num:
                break
            index, seen = nxt, seen + 1
        self.memory.write(DESC + 16 * index, struct.pack("<QIHH", addr, length, flags | 1, head))

    def used(self, old, new):
        """The used elements from index `old` up to `new`, as [id, len]."""
        return [list(struct.unpack("<II", self.memory.read(USED + 4 + 8 * (i % self.num), 8)))
                for i in range(old, old + ((new - old) & 0xFFFF))]


def ring_rounds(case, serve):
    """`serve(memory, queue, event_idx, output)` once a round of `case` ({"num", "start", "event_idx",
    "rounds": [{"post": [chain, ...], "late": [chain, ...], "used_event": n, "no_interrupt": bool,
    "loop": True}]}): for each round what it returned, what it sent to the console, the used elements
    it wrote, used.idx and avail_event in memory, and the queue's indices after it; raised(error)
    for a round it raised on (the rest are not played)."""
    driver = RingDriver(case["num"], case.get("start", 0), case.get("event_idx", True))
    q, rounds = driver.queue, []
    for spec in case["rounds"]:
        driver.post(spec.get("post", []))
        if spec.get("loop"):
            driver.loop_back(driver.u16(AVAIL + 4 + 2 * ((driver.avail_idx - 1) % driver.num)))
        if "used_event" in spec:
            driver.u16(AVAIL + 4 + 2 * driver.num, spec["used_event"])
        driver.u16(AVAIL, 1 if spec.get("no_interrupt") else 0)
        if spec.get("late"):
            driver.memory.watch = (USED + 4 + 8 * driver.num, spec["late"])
        old, output = driver.u16(USED + 2), []
        try:
            returned = serve(driver.memory, q, bool(case.get("event_idx", True)),
                             lambda data: output.append(bytes(data).decode("latin-1")))
        except Exception as error:              # the student's code: its error is its answer
            rounds.append(raised(error))
            break
        driver.memory.watch = None
        new = driver.u16(USED + 2)
        rounds.append({"returned": plain(returned), "output": "".join(output), "used": driver.used(old, new),
                       "used_idx": new, "avail_event": driver.u16(USED + 4 + 8 * driver.num),
                       "last_avail": q.last_avail, "queue_used_idx": q.used_idx})
    return rounds


def serve_rounds(serve, case, what):
    """ring_rounds of `case` with a lab's serve, in the notebook: AssertionError naming the round where
    it raised."""
    rounds = ring_rounds(case, serve)
    for number, outcome in enumerate(rounds, 1):
        check(RAISED not in outcome, f"{what}, round {number}: serve_transmitq returns",
              got=outcome.get(RAISED), hint="the spec's rules; memory.read(address, size) gives bytes")
    return rounds


def reference_serve(memory, queue, event_idx, output):
    """vmkit's device side of the ring (vmkit.machine.virtio.serve_queue), as a lab's serve is called."""
    from ..machine.virtio import serve_queue  # here, not at the top: called under on_disk, this is vmkit as installed
    return serve_queue(memory, queue, event_idx, output)


def virtio_run(source, serve, engine="hardware-assist"):
    """The virtio console guest behind the lab's loop (run_handlers, injecting from the device model's
    PIC), its device taking the rings with `serve` (None: vmkit's own): loop_facts, the device's counts
    and each injection."""
    from ..kvm.devices import DeviceModel  # here, not at the top: called under on_disk, this is vmkit as installed
    model = DeviceModel()
    if serve is not None:
        model.virtio.serve = lambda memory, q, event_idx, output, counts: serve(memory, q, event_idx, output)
    vcpu, ended = run_handlers(source, lambda e: _model_io(model, e), lambda e: _model_mmio(model, e), engine,
                               devices=model)
    return {**irq_facts(ended, vcpu, model), "interrupts": model.virtio.counts["interrupts"]}


def ring_cases(cases, serve):
    """ring_rounds of each of cases["rings"] and virtio_run of cases["runs"] on each engine, with a
    student's serve_transmitq, vmkit as on disk and vmkit's own serve_queue withheld."""
    with on_disk(__name__) as fresh:
        virtio = importlib.import_module("vmkit.machine.virtio")
        with withheld(virtio, "serve_queue"):
            rings = fresh.each(cases["rings"], lambda case: fresh.ring_rounds(case, serve))
            runs = fresh.on_each_engine(cases["runs"], lambda source, engine: fresh.virtio_run(source, serve, engine),
                                        IRQ_FEATURES)
        return {"rings": rings, "runs": runs}


RING_HINTS = {
    "returned": "whether the driver is to be interrupted: only when something was used, and then by "
                "vring_need_event(used_event, new used.idx, old) with EVENT_IDX, else by avail.flags' "
                "VRING_AVAIL_F_NO_INTERRUPT (spec 2.7.7)",
    "output": "the bytes of each device-readable buffer, chain by chain in avail.ring order, descriptor by "
              "descriptor along NEXT; a device-writable buffer is not sent (spec 2.7.5)",
    "used": "one used element per chain, {id: the chain's head, len: 0 bytes written}, at used.ring[idx % num] "
            "(spec 2.7.8)",
    "used_idx": "used.idx after the round: one more per chain, in 16 bits",
    "avail_event": "with EVENT_IDX, avail_event (after used.ring[num]) is the next avail index the device "
                   "will take, and the device looks at avail.idx once more after writing it (spec 2.7.10)",
    "last_avail": "queue.last_avail: the next avail.ring entry to take, in 16 bits",
    "queue_used_idx": "queue.used_idx: the device's used index, in 16 bits",
}
RING_FIELDS = ("output", "used", "used_idx", "last_avail", "queue_used_idx", "avail_event", "returned")


def check_ring_rounds(got, expected, what):
    """ring_rounds of a student's serve against the reference's, round by round."""
    check(isinstance(got, list), f"{what}: one outcome per round", got=got)
    for number, (g, e) in enumerate(zip(got, expected), 1):
        check(isinstance(g, dict) and RAISED not in g, f"{what}, round {number}: your serve_transmitq returns",
              got=g)
        check_facts(g, e, f"{what}, round {number}", hints=RING_HINTS, fields=RING_FIELDS, unit="element")
    check(len(got) == len(expected), f"{what}: every round played", expected=len(expected), got=len(got))
