"""Lab 4 (paravirtualization): a paravirtual guest on hypercall handlers (or routines) a student wrote,
and what the run did as plain data."""
import json

import vmkit
from ..xen import BadAddress, Paravirt
from ..xen import abi as xen
from .checks import check, check_equal, check_facts
from .runs import explained
from .answers import on_disk, withheld, yours

PV_MAX_INSTRUCTIONS = 3_000_000
PV_TIMEOUT = 3.0
PV_STATS = ("hypercalls", "traps", "upcalls", "bounces", "multicall_entries")
PV_HINTS = {
    "serial": "what the domains wrote to the console: console_io copies `count` bytes from `buffer`",
    "exit_code": "the exit code is the reason dom0 gave SCHEDOP_shutdown; a crash gives 3",
    "shutdown": "True when a domain crashed (a fault with no handler in its trap table)",
    "stats": "hypercalls and traps into Xen, events delivered (upcalls), traps bounced to the guest, "
             "multicall entries run",
    "hypercalls": "each hypercall as [domain, name, the value returned in EAX]: 0 on success, a negative "
                  "errno (-22 EINVAL, -38 ENOSYS, -14 EFAULT) on failure",
}


def run_pv(source, hypercalls=None, modules=(), what="the guest under your hypervisor",
           max_instructions=PV_MAX_INSTRUCTIONS, timeout=PV_TIMEOUT):
    """Paravirt(image, hypercalls=hypercalls, modules=modules) run until dom0 shuts down: (dom0,
    result). A guest that does not assemble or runs out of budget fails with a message that names it,
    and so does a handler that raises or returns no value for EAX."""
    if hypercalls is not None:
        hypercalls = {number: _named_handler(handler, number) for number, handler in hypercalls.items()}
    with explained(what, max_instructions, timeout, ends="shut down", shown="the console's last lines", last=300,
                   look="a loop that never ends in the guest, or a hypercall that never does what the guest "
                        "waits for (a shutdown that never happens, an event that is never delivered)",
                   astray=lambda error: f"stopped: {error}", errors=vmkit.VmkitError):
        dom0 = Paravirt(vmkit.assemble(source), hypercalls=hypercalls, modules=modules,
                        max_instructions=max_instructions, timeout=timeout)
        return dom0, dom0.run()


def _named_handler(handler, number):
    """`handler`, with an exception it raises turned into a message that names the hypercall. A bad
    guest pointer (BadAddress) passes through: the hypervisor turns it into -EFAULT."""
    def hypercall(domain, *args):
        try:
            return handler(domain, *args)
        except (BadAddress, AssertionError):
            raise
        except Exception as error:
            shown = ", ".join(f"{a:#x}" for a in args)
            raise AssertionError(f"your handler for hypercall {number} ({xen.hypercall_name(number)}) raised "
                                 f"{type(error).__name__}: {error}\n  called with the guest's EBX..EDI: {shown}") from error
    hypercall.__name__ = getattr(handler, "__name__", "handler")
    return hypercall


def pv_facts(result):
    """What a paravirtual run did, as plain data: how it ended, what it printed, the counters of
    hypercalls, traps, upcalls, bounces and multicall entries, and every hypercall as [domain, name,
    result] in order."""
    facts = {"serial": result.serial, "exit_code": result.exit_code, "shutdown": result.shutdown,
             "stats": {key: result.stats.get(key, 0) for key in PV_STATS},
             "hypercalls": [[e.detail["domain"], e.detail["name"], e.detail["result"]]
                            for e in result.of_kind("hypercall")]}
    return json.loads(json.dumps(facts))


def check_pv_facts(got, expected, what, hints=None):
    """pv_facts of a run on a student's handlers (or routines) against the reference run's, the first
    difference explained. `hints` adds to or replaces PV_HINTS for this comparison."""
    check_facts(got, expected, what, hints=dict(PV_HINTS, **(hints or {})))


# --- the kernel's side of the grader's questions (graders/lab4.py asks them) ------------------------
# Each runs the guests under vmkit as it is on disk (answers.on_disk), so a notebook that patched the
# hypervisor in its own vmkit (every domain forced onto vmkit's hypercalls, say) answers with its own code.
ROUTINES = ";@ the routines under test @"     # where a grader's guest takes the student's NASM routine
YOURS = {18: "do_console_io", 13: "do_multicall"}  # the handlers the lab asks for, by number: vmkit's own names


def run_facts(source, hypercalls=None, modules=(), timeout=PV_TIMEOUT):
    """pv_facts of one run (on `hypercalls`, None: vmkit's own), with the mask byte at the end;
    {"error": ...} if the run could not end (the message names why) or a handler raised."""
    try:
        dom0, result = run_pv(source, hypercalls, modules, timeout=timeout)
        return {**pv_facts(result), "upcall_mask": dom0.upcall_mask}
    except Exception as error:                  # the student's code: its error is its answer
        return {"error": f"{type(error).__name__}: {error}"}


def handler_runs(cases, handlers, timeout=PV_TIMEOUT):
    """run_facts of each [source, modules] on vmkit's hypercalls with `handlers` ({number: handler}) in
    place of vmkit's own, which are withheld meanwhile (a handler that calls them earns nothing)."""
    from ..xen import hypercalls  # here, not at the top: called under on_disk, this is vmkit as installed
    table = {**hypercalls.HYPERCALLS, **{int(number): handler for number, handler in handlers.items()}}
    with withheld(hypercalls, *(YOURS[int(number)] for number in handlers if int(number) in YOURS)):
        return [run_facts(source, table, modules, timeout) for source, modules in cases]


def hypercall_cases(cases, handlers):
    """handler_runs under vmkit as on disk: a student's handlers, each run's facts as plain data."""
    with on_disk(__name__) as fresh:
        return fresh.handler_runs(cases, handlers)


def table_cases(cases, table):
    """hypercall_cases with a student's whole table; {"error": ...} for each run if `table` is not a
    dict with the student's own console_io under 18 and multicall under 13."""
    try:
        if not isinstance(table, dict) or not all(number in table for number in YOURS):
            raise ValueError("TABLE must be a dict with a handler under 18 (console_io) and 13 (multicall)")
        yours({str(number): table[number] for number in YOURS}, "TABLE")
        table = dict(table)
    except Exception as error:
        return [{"error": f"{type(error).__name__}: {error}"}] * len(cases)
    return hypercall_cases(cases, table)


def routine_runs(sources, routine, timeout=PV_TIMEOUT):
    """run_facts of each guest (a source with ROUTINES where its routines go) with `routine`, NASM
    text, put there, on vmkit's own hypercalls."""
    if not isinstance(routine, str):
        return [{"error": f"the routine is a {type(routine).__name__}, not a string of NASM"}] * len(sources)
    return [run_facts(source.replace(ROUTINES, routine), timeout=timeout) for source in sources]


def routine_cases(sources, routine):
    """routine_runs under vmkit as on disk: the student's routine assembled and run here, in the kernel."""
    with on_disk(__name__) as fresh:
        return fresh.routine_runs(sources, routine)


# --- the open part: a console driver that batches (the kernel's side, and how a run is judged) -----------
# A grader's kernel for the console driver is a script of steps (console_guest in the notebook builds
# it): ["write", text] and ["reuse", text] call console_write, ["flush"] calls console_flush,
# ["registers", n] calls both with every register set and prints them. The kernel executes a cpuid, a
# trap into Xen that makes no hypercall, right after each call returns: the run's events then say what
# the console held at that moment. The routines sit between the labels YOURS_BEGIN and YOURS_END.
MAX_WAITING = 8                 # messages written that may wait, not yet on the console, when console_write returns
MAX_MESSAGE = 256               # bytes in a message, at most (1 at least)
YOURS_BEGIN, YOURS_END = "your_routines", "your_routines_end"


def console_marks(result):
    """Bytes on the console at each cpuid (a call of the script returned), from the run's events: the
    text of every console_io, alone or in a multicall, up to that moment."""
    written, marks = 0, []
    for event in result.events:
        detail = event.detail
        if event.kind == "hypercall":
            calls = detail.get("calls", []) if detail.get("name") == "multicall" else [detail]
            written += sum(len(call.get("text", "")) for call in calls if call.get("name") == "console_io")
        elif event.kind == "trap" and detail.get("cause") == "cpuid":
            marks.append(written)
    return marks


def console_run(source, timeout=PV_TIMEOUT):
    """run_facts of a console script's kernel on vmkit's own hypercalls, with `marks` (console_marks)
    and `yours`: the hypercalls made from the routines' own code (between YOURS_BEGIN and YOURS_END),
    as [name, result]."""
    try:
        image = vmkit.assemble(source)
        begin, end = image.symbols[YOURS_BEGIN], image.symbols[YOURS_END]
        dom0, result = run_pv(source, None, (), timeout=timeout)
        facts = {**pv_facts(result), "upcall_mask": dom0.upcall_mask, "marks": console_marks(result),
                 "yours": [[e.detail["name"], e.detail["result"]] for e in result.of_kind("hypercall")
                           if begin <= e.eip < end]}
        return json.loads(json.dumps(facts))
    except Exception as error:                  # the student's code: its error is its answer
        return {"error": f"{type(error).__name__}: {error}"}


def console_runs(sources, routines, timeout=PV_TIMEOUT):
    """console_run of each kernel (a source with ROUTINES where the routines go) with `routines` there."""
    if not isinstance(routines, str):
        return [{"error": f"the routines are a {type(routines).__name__}, not a string of NASM"}] * len(sources)
    return [console_run(source.replace(ROUTINES, routines), timeout) for source in sources]


def console_cases(sources, routines):
    """console_runs under vmkit as on disk: the student's routines assembled and run here, in the kernel."""
    with on_disk(__name__) as fresh:
        return fresh.console_runs(sources, routines)


def registers_line(length):
    """What a ["registers", length] step prints: EAX EBX ECX EDX, ESI less the message's address, EDI EBP."""
    return " ".join(f"{v:08x}" for v in (0x11111111, 0x22222222, length, 0x44444444, 0, 0x55555555, 0x66666666)) + "\n"


def console_expected(script):
    """What a script's kernel must do, from its steps alone (the kernel calls console_flush once more
    before it shuts down): {"serial": the console at the end, exactly as with one console_io per
    message; "marks": for each call, [bytes that must be on the console when it returns, the call];
    "bound": the most hypercalls console_write and console_flush may make, ceil(m / MAX_WAITING) for
    each run of m messages that ends at a console_flush; "messages"; "ends": where each message ends
    on the console}."""
    serial, ends, marks, bound, run = b"", [], [], 0, 0
    for step in [*script, ["flush"]]:
        if step[0] in ("write", "reuse", "registers"):
            serial += step[1].encode("latin-1") if step[0] != "registers" else b"r" * step[1]
            ends.append(len(serial))
            run += 1
            late = len(ends) - MAX_WAITING      # a message is out before MAX_WAITING more are written
            marks.append([ends[late - 1] if late > 0 else 0, f"console_write of message {len(ends)}"])
        if step[0] in ("flush", "registers"):
            bound += -(-run // MAX_WAITING)
            run = 0
            marks.append([len(serial), f"console_flush after message {len(ends)}"])
            if step[0] == "registers":
                serial += registers_line(step[1]).encode()
    return {"serial": serial.decode("utf-8", errors="replace"), "marks": marks, "bound": bound,
            "messages": len(ends), "ends": ends}


def check_console(script, facts, what="the kernel"):
    """A run of a console script's kernel (console_run's facts), judged: it ended as the script's
    kernel ends, with the console exactly as with one console_io per message; no trap but the script's
    own cpuids; after each console_write returned at most MAX_WAITING messages waited, after each
    console_flush none; and the routines made at most the bound's hypercalls."""
    check_facts_ran(facts, what)
    expected = console_expected(script)
    check_facts({"serial": facts["serial"], "exit_code": facts["exit_code"], "shutdown": bool(facts["shutdown"])},
                {"serial": expected["serial"], "exit_code": 0, "shutdown": False}, what,
                hints={"serial": "the console at the end must be exactly what one console_io per message "
                                 "writes: every byte of every message, in order, once (the caller may reuse a "
                                 "message's memory as soon as console_write returns)",
                       "exit_code": "the kernel ends with reason 0; 3 is a crash (a fault in your routines?)",
                       "shutdown": "a crash: a fault with no handler (an in, an out, a bad address?)"})
    marks = facts["marks"]
    check_equal(len(marks), len(expected["marks"]), what=f"{what}: cpuids (one after each call of the script)",
                hint="the kernel executes a cpuid after each call returns: your routines must not")
    ends = expected["ends"]
    for (need, call), got in zip(expected["marks"], marks):
        if got < need:
            written = int(call.split()[-1])
            waiting = written - sum(end <= got for end in ends[:written])
            limit = 0 if call.startswith("console_flush") else MAX_WAITING
            check(False, f"{what}: at most {limit} message(s) waiting when {call} returned",
                  expected=f"at least {need} bytes on the console", got=f"{got} bytes: {waiting} messages waiting",
                  hint="the delay rule: a message may wait while at most "
                       f"{MAX_WAITING} messages are waiting when console_write returns, none when console_flush "
                       "returns")
    check_equal(facts["stats"]["traps"], len(expected["marks"]), what=f"{what}: traps into Xen",
                hint="only the kernel's own cpuids trap: no in, no out, no cli in your routines")
    made = len(facts["yours"])
    check(made <= expected["bound"], f"{what}: hypercalls made by console_write and console_flush",
          expected=f"at most {expected['bound']} for {expected['messages']} messages (ceil(m / {MAX_WAITING}) for "
                   f"each run of m messages up to a console_flush)", got=f"{made}",
          hint="the bound: the console is written once for each run of messages that may wait together")
    failed = [call for call in facts["yours"] if call[1] != 0]
    check(not failed, f"{what}: every hypercall of your routines succeeded", got=failed,
          hint="console_io returns 0, or a negative errno for a bad argument (part 1's rules)")
    return {"hypercalls": made, "bound": expected["bound"], "messages": expected["messages"]}


def check_facts_ran(facts, what):
    check(isinstance(facts, dict) and "error" not in facts, f"{what} runs to its end",
          got=facts.get("error") if isinstance(facts, dict) else facts)
