"""Lab 5 (a KVM VMM's run loop): a student's device handlers and run loop on vmkit's model of VT-x and
on the real KVM, with budgets, and what the run did as plain data."""
import importlib
import json
from types import SimpleNamespace

from ..errors import GuestError, GuestTimeout
from ..kvm.probe import probe
from ..kvm.userspace import RunLoopError, UserExit, exit_record, user_vcpu
from .answers import on_disk, plain, raised, refusal
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


def _engines():
    """The engines a run is asked on here: the model, and the real KVM where it runs the lab's guests."""
    why = kvm_why_not()
    return {"hardware-assist": None, "kvm": why}


def on_each_engine(sources, run):
    """run(source, engine) for each guest, on the model and (where it runs) on KVM: {engine: [what it
    returned, or {"error": ...} where it raised, ...]}, or {"kvm": why it was not asked}."""
    runs = {}
    for engine, why in _engines().items():
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
