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
