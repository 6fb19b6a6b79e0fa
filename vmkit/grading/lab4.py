"""Lab 4 (paravirtualization): a paravirtual guest on hypercall handlers (or routines) a student wrote,
and what the run did as plain data."""
import json

import vmkit
from ..xen import BadAddress, Paravirt
from ..xen import abi as xen
from .checks import check_facts
from .runs import explained

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
    from ..xen import hypercalls
    from .answers import withheld
    table = {**hypercalls.HYPERCALLS, **{int(number): handler for number, handler in handlers.items()}}
    with withheld(hypercalls, *(YOURS[int(number)] for number in handlers if int(number) in YOURS)):
        return [run_facts(source, table, modules, timeout) for source, modules in cases]


def hypercall_cases(cases, handlers):
    """handler_runs under vmkit as on disk: a student's handlers, each run's facts as plain data."""
    from .answers import on_disk
    with on_disk(__name__) as fresh:
        return fresh.handler_runs(cases, handlers)


def table_cases(cases, table):
    """hypercall_cases with a student's whole table; {"error": ...} for each run if `table` is not a
    dict with the student's own console_io under 18 and multicall under 13."""
    from .answers import yours
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
    from .answers import on_disk
    with on_disk(__name__) as fresh:
        return fresh.routine_runs(sources, routine)
