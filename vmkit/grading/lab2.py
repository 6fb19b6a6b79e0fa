"""Lab 2 (trap-and-emulate): a guest under a trap-and-emulate VMM whose emulation table a student wrote,
and what the run did as plain data."""
import json

import vmkit
from ..vmm import TrapAndEmulate
from .checks import check_facts
from .runs import ending, explained

VMM_MAX_INSTRUCTIONS = 2_000_000
VMM_TIMEOUT = 3.0                                   # a trap costs tens of µs: a guest that traps in a loop
                                                    # is stopped by the clock before the instruction budget
VCPU_FIELDS = ("interrupt_flag", "cr0", "cr2", "cr3", "cr4", "gdtr", "idtr", "tr")
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
    "irqs": "where each timer interrupt landed: after sti, one more instruction runs first (vmm.interrupt_shadow())",
    "vcpu": "the virtual CPU: IF, CR0-CR4, GDTR and IDTR as (base, limit), TR",
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
