"""Lab 1 (rings): a student's guest run on a budget, and the frames the CPU pushed for each interrupt
of a guest, found by replaying it."""
from unicorn import x86_const as X

import vmkit
from ..asm import disassemble
from ..machine.x86 import TSS_ESP, TSS_SS
from .answers import on_disk
from .runs import ending, explained, guest_error_message

# Budgets for a student's guest: generous for any lab program, short enough that a guest stuck in
# `jmp $` ends in well under a second of a grader's time.
MAX_INSTRUCTIONS = 2_000_000
TIMEOUT = 5.0

DESCRIPTOR_FIELDS = ("base", "limit", "type", "s", "dpl", "present")     # what decode_descriptor returns


def run_guest(source, what="your guest", max_instructions=MAX_INSTRUCTIONS, timeout=TIMEOUT, technique="native"):
    """vmkit.run with a budget (under `technique`), every way a guest can go wrong turned into a
    message that names it."""
    with explained(what, max_instructions, timeout,
                   look="a loop that never ends (`jmp $`, a `loop` whose ECX never reaches 0) or a "
                        "handler that never reaches `out 0xf4, al`"):
        return vmkit.run(source, technique=technique, max_instructions=max_instructions, timeout=timeout)


def interrupt_frames(source):
    """Every interrupt, exception and int n the guest takes, with the registers just before the CPU
    took it and the frame it pushed: [{"cpu", "event", "tss", "esp", "frame"}].

    The guest runs twice: once to find the events, once more to stop in front of each of them. An
    IRQ is found by its instruction count (it arrives between two instructions); an int n or a
    fault by the address of the instruction that raised it."""
    events = [e for e in vmkit.run(source).events
              if e.kind == "ring-transition" and e.detail["cause"] != "iret" and "while" not in e.detail["cause"]]
    machine = vmkit.machine(source)
    cases = []
    for event in events:
        if event.detail["cause"].startswith("IRQ"):
            machine.run_until(instructions=event.icount - machine.instructions)
        else:
            machine.run_until(eip=event.eip)
        cpu = {r: machine.cpu[r] for r in ("eip", "cs", "eflags", "esp", "ss")}
        length = _instruction_length(machine, cpu["eip"])
        tr_base = _tss_base(machine)
        stack = ({"esp0": int.from_bytes(machine.uc.mem_read(tr_base + TSS_ESP[0], 4), "little"),
                  "ss0": int.from_bytes(machine.uc.mem_read(tr_base + TSS_SS[0], 2), "little")}
                 if tr_base is not None else None)
        taken = [e for e in machine.step() if e.kind == "ring-transition"]
        if not taken or taken[0].detail["frame"] != event.detail["frame"]:
            raise RuntimeError(f"replaying {event.detail['cause']} at {event.eip:#x} did not reproduce it")
        cases.append({"cpu": cpu,
                      "event": {"cause": event.detail["cause"], "length": length,
                                "error_code": event.detail.get("error_code")},
                      "tss": stack, "esp": event.detail["esp"],
                      "frame": [list(pair) for pair in event.detail["frame"]]})
    return cases


def _instruction_length(machine, eip):
    code = bytes(machine.uc.mem_read(eip, 16))
    return disassemble(code, eip, count=1)[0].size


def _tss_base(machine):
    """The base of the TSS the guest loaded with ltr, or None before it loaded one."""
    _, base, _, _ = machine.uc.reg_read(X.UC_X86_REG_TR)
    return base or None


def guest_trace(source, max_instructions=MAX_INSTRUCTIONS, timeout=TIMEOUT, technique="native"):
    """How a guest ends and the ring transitions it made, as plain data ({"error": ...} if it could not run)."""
    try:
        result = vmkit.run(source, technique=technique, max_instructions=max_instructions, timeout=timeout)
    except vmkit.VmkitError as error:
        return {"error": f"{type(error).__name__}: {guest_error_message(error)}"}
    transitions = [{"cause": e.detail["cause"], "vector": e.detail.get("vector"),
                    "from_ring": e.detail["from_ring"], "to_ring": e.detail["to_ring"],
                    "stack_switch": e.detail.get("stack_switch"), "esp": e.detail.get("esp"),
                    "ss": e.detail.get("ss"), "eip": e.eip}
                   for e in result.events if e.kind == "ring-transition"]
    return {**ending(result), "transitions": transitions}


def syscall_traces(kernel, values, user_program, syscall_handler):
    """Part 3's guest, `kernel` (a template with {value}, {user_program} and {syscall_handler} slots)
    around the student's two strings, run for each value: guest_trace of each."""
    if not isinstance(user_program, str) or not isinstance(syscall_handler, str):
        return [{"error": "USER_PROGRAM and SYSCALL_HANDLER must be strings of NASM"}] * len(values)
    with on_disk(__name__) as fresh:                # vmkit as installed, whatever the notebook replaced
        return [fresh.guest_trace(kernel.format(value=value, user_program=user_program,
                                                syscall_handler=syscall_handler)) for value in values]


def pill_traces(kernel, cases, pill):
    """Part 5's guest, `kernel` (a template with {gdt_at} and {pill} slots) around the student's red
    pill, for each case [gdt_at, technique]: guest_trace of each, run under that technique."""
    if not isinstance(pill, str):
        return [{"error": "PILL must be a string of NASM"}] * len(cases)
    with on_disk(__name__) as fresh:                # vmkit as installed, whatever the notebook replaced
        return [fresh.guest_trace(kernel.format(gdt_at=gdt_at, pill=pill), technique=technique)
                for gdt_at, technique in cases]
