"""Lab 2 (trap-and-emulate): a guest under a trap-and-emulate VMM whose emulation table a student wrote,
and what the run did as plain data."""
import json

import vmkit
from ..vmm import TrapAndEmulate
from .checks import check_facts
from .runs import ending, explained
from . import answers
from .answers import plain, raised, yours

VMM_MAX_INSTRUCTIONS = 2_000_000
VMM_TIMEOUT = 3.0                                   # a trap costs tens of µs: a guest that traps in a loop
                                                    # is stopped by the clock before the instruction budget
VCPU_FIELDS = ("interrupt_flag", "iopl", "cr0", "cr2", "cr3", "cr4", "gdtr", "idtr", "tr")
VMM_HINTS = {
    "serial": "what the guest printed: your out handler (port, size, value) and your in handler (the value "
              "read goes into the right part of the register)",
    "exit_code": "the exit code comes from an out to port 0xf4",
    "halted": "hlt: vmm.halt() ends the run only while the virtual IF is 0",
    "traps": "a handler that returns None declines, and the guest gets a #GP (another trap)",
    "trapped": "the instructions that trapped, in order",
    "emulated": "every handler that did its work returns a string",
    "io": "each access as (direction, port, size, value): the size comes from the register operand "
          "(al 1, ax 2, eax 4), the port from an imm8 or from dx",
    "irqs": "where each timer interrupt landed: after a sti that sets IF from 0, the next instruction runs first "
            "(SDM vol. 2B, STI)",
    "vcpu": "the virtual CPU: IF, IOPL, CR0-CR4, GDTR and IDTR as (base, limit), TR",
    "real_cr0": "the real CR0 belongs to the VMM: write the virtual one (vmm.vcpu.cr0) only",
    "regs": "the guest's registers at the end: mov from a control register and in write a register",
}


def run_vmm(source, emulators, what="the guest under your VMM", max_instructions=VMM_MAX_INSTRUCTIONS,
            timeout=VMM_TIMEOUT):
    """TrapAndEmulate(image, emulators=emulators) run to its end: (vmm, result). A guest that does not
    assemble, runs out of budget or asks for what the machine cannot do fails with a message that
    names it; an exception raised by a handler reaches the caller as it is."""
    with explained(what, max_instructions, timeout,
                   look="a guest waiting for something your handlers never do (a timer interrupt that never "
                        "comes because the virtual IF stays 0, a device status read that never gives the bit "
                        "it polls for)",
                   astray=lambda error: f"stopped: {error}"):
        vmm = TrapAndEmulate(vmkit.assemble(source), emulators=emulators, max_instructions=max_instructions,
                             timeout=timeout)
        return vmm, vmm.run()


def vmm_facts(vmm, result):
    """What a run under a trap-and-emulate VMM did, as plain data: how it ended, what it printed,
    which instructions trapped, every port access, where each IRQ landed, the virtual CPU at the
    end and the real CR0 (which belongs to the VMM and must not change)."""
    facts = {**ending(result), "traps": result.stats.get("traps", 0),
             "trapped": [e.detail["instruction"] for e in result.of_kind("trap")],
             "emulated": len(result.of_kind("emulate")),
             "io": [[e.detail["direction"], e.detail["port"], e.detail["size"], e.detail["value"]]
                    for e in result.of_kind("io")],
             "irqs": [[e.detail["cause"], e.eip] for e in result.of_kind("ring-transition")
                      if e.detail["cause"].startswith("IRQ")],
             "vcpu": {name: getattr(vmm.vcpu, name) for name in VCPU_FIELDS},
             "real_cr0": vmm.cpu["cr0"],
             "regs": {name: result.regs[name] for name in ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp")}}
    return json.loads(json.dumps(facts))            # tuples become lists, as in a reference fact


def check_vmm_facts(got, expected, what):
    """vmm_facts of a student's VMM against the reference VMM's, the first difference explained."""
    check_facts(got, expected, what, hints=VMM_HINTS)


# --- the kernel's side of the grader's questions (graders/lab2.py asks them) ------------------------
# Each runs the guests under vmkit as it is on disk (on_disk), so a notebook that patched the VMM or
# the runner in its own vmkit (every VMM forced onto vmkit's handlers, say) answers with its own code.
YOURS = ("cli", "sti", "hlt", "mov", "lgdt", "lidt", "out", "in")


def on_disk():
    """This module as imported afresh from disk, for the time of the with block (answers.on_disk)."""
    return answers.on_disk(__name__)


def run_facts(source, table, timeout=VMM_TIMEOUT):
    """vmm_facts of one run of `source` under TrapAndEmulate with `table`, and what a visible check
    looks at besides (the instructions emulated, the real IF, the guest's `ticks`); {"error": ...}
    if the run could not end (the message names why) or a handler raised."""
    try:
        vmm, result = run_vmm(source, table, timeout=timeout)
        if any(vmm.emulators.get(name) is not handler for name, handler in table.items()):
            return {"error": "the VMM did not run with the table it was given"}
        facts = vmm_facts(vmm, result)
    except Exception as error:                  # the student's handlers: their error is their answer
        return {"error": f"{type(error).__name__}: {error}"}
    ticks = vmm.image.symbols.get("ticks")
    return {**facts, "emulated_instructions": [e.detail["instruction"] for e in result.of_kind("emulate")],
            "real_if": bool(vmm.cpu["eflags"] & 0x200),
            "ticks": int.from_bytes(vmm.cpu.read(ticks, 4), "little") if ticks is not None else None}


def handler_runs(sources, handlers, timeout=VMM_TIMEOUT):
    """run_facts of each guest under vmkit's table with `handlers` ({mnemonic: handler}) in place of
    vmkit's own."""
    from ..vmm import EMULATORS  # here, not at the top: called under on_disk, this is vmkit as installed
    return [run_facts(source, dict(EMULATORS, **handlers), timeout) for source in sources]


def vmm_cases(sources, handlers):
    """handler_runs under vmkit as on disk: a student's handlers, each guest's facts as plain data."""
    with on_disk() as fresh:
        return fresh.handler_runs(sources, handlers)


def table_cases(sources, table):
    """run_facts of each guest under a student's whole table (vmkit as on disk); {"error": ...} for
    each if `table` is not a dict with a handler, the student's own, for each of YOURS."""
    try:
        if not isinstance(table, dict) or not all(name in table for name in YOURS):
            raise ValueError(f"TABLE must be a dict with a handler for each of {YOURS}")
        yours({name: table[name] for name in YOURS}, "TABLE")
        table = dict(table)
    except Exception as error:
        return [{"error": f"{type(error).__name__}: {error}"}] * len(sources)
    with on_disk() as fresh:
        return [fresh.run_facts(source, table) for source in sources]


def measurements(cases):
    """Census measurements as the lab hands them to classify: JSON's text keys of faults back to rings."""
    return [dict(m, faults={int(ring): vector for ring, vector in m["faults"].items()}) for m in cases]


def lost_update_answers(cases, lost_updates):
    """A student's lost_updates on runs of popf_critical: each case {"source", "technique", "read_at",
    "write_at"} run (vmkit as on disk), the count it returns for that run, or raised(error). The run
    handed over has no serial output: the count must come from its events, not from what the guest printed."""
    answers = []
    with on_disk() as fresh:
        for case in cases:
            try:
                result = fresh.vmkit.run(fresh.vmkit.assemble(case["source"]), case["technique"])
                result.serial_bytes = b""
                answers.append(plain(lost_updates(result, case["read_at"], case["write_at"])))
            except Exception as error:
                answers.append(raised(error))
    return answers
