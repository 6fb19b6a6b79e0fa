"""Checks for graded labs: failure messages that teach, guests run on a budget, and reference facts
that student code cannot tamper with.

A test cell in a lab reads like the idea it checks:

    from vmkit.grading import check, check_equal, run_guest, visible_checks_passed
    check_equal(decode_selector(0x2b), (5, 0, 3), what="decode_selector(0x2b)",
                hint="the RPL is the low two bits; the index starts at bit 3")
    visible_checks_passed("selectors")

Every failure is an AssertionError (so nbgrader scores the cell 0) whose message says what was
expected, what happened and where to look. A passing cell never claims more than it checked: the
visible checks say so, and leave the verdict to the hidden ones that run when the lab is graded.

Reference facts (which instructions trap in ring 3, what a guest printed, which frames the CPU
pushed) come from `reference(...)`: it computes them in a fresh Python interpreter, so whatever a
notebook did to the vmkit it imported (replacing vmkit.run, editing a result, patching a decoder)
cannot reach them.
"""
import json
import os
import subprocess
import sys
from contextlib import contextmanager

from .errors import AsmError, GuestError, GuestTimeout
from .machine.x86 import vector_name

# Budgets for a student's guest: generous for any lab program, short enough that a guest stuck in
# `jmp $` ends in well under a second of a grader's time.
MAX_INSTRUCTIONS = 2_000_000
TIMEOUT = 5.0


# --- failure messages that teach ---------------------------------------------------------------------
def check(condition, what, expected=None, got=None, hint=None):
    """Assert `condition`; if it fails, say what was checked, what was expected, what happened, and
    where to look."""
    if condition:
        return
    lines = [f"Check failed: {what}"]
    if expected is not None:
        lines.append(f"  expected: {_show(expected)}")
    if got is not None:
        lines.append(f"  got:      {_show(got)}")
    if hint:
        lines.append(f"  where to look: {hint}")
    raise AssertionError("\n".join(lines))


def check_equal(got, expected, what, hint=None):
    check(got == expected, what, expected=expected, got=got, hint=hint)


def check_cases(function, cases, what, hint=None, show=3):
    """Call `function(*args)` for each (args, expected) in `cases`; fail listing the first few cases
    it gets wrong (and how many in all), so the student sees a pattern, not just one miss."""
    wrong = []
    for args, expected in cases:
        args = args if isinstance(args, tuple) else (args,)
        try:
            got = function(*args)
        except Exception as error:                  # the student's code raised: report it as the answer
            got = f"{type(error).__name__}: {error}"
        if got != expected:
            wrong.append((args, expected, got))
    if not wrong:
        return
    call = getattr(function, "__name__", "your function")
    lines = [f"Check failed: {what}: {len(wrong)} of {len(cases)} cases wrong"]
    for args, expected, got in wrong[:show]:
        shown = ", ".join(_show(a) for a in args)
        lines.append(f"  {call}({shown})\n      expected: {_show(expected)}\n      got:      {_show(got)}")
    if len(wrong) > show:
        lines.append(f"  ... and {len(wrong) - show} more")
    if hint:
        lines.append(f"  where to look: {hint}")
    raise AssertionError("\n".join(lines))


def visible_checks_passed(subject):
    """What a passing cell of visible checks may honestly say."""
    print(f"Visible checks for {subject} passed; hidden checks run when the lab is graded.")


def _show(value):
    """repr, with numbers above 9 in hex (addresses, selectors and descriptors read best that way)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return repr(value)
    if isinstance(value, int):
        return f"{value:#x}" if value > 9 else str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_show(k)}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(map(_show, value))
        return f"({inner}{',' if len(value) == 1 else ''})" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)


# --- a student's guest on a budget ------------------------------------------------------------------
def run_guest(source, what="your guest", max_instructions=MAX_INSTRUCTIONS, timeout=TIMEOUT):
    """vmkit.run with a budget, every way a guest can go wrong turned into a message that names it."""
    import vmkit                                    # late: the caller's vmkit, as the student sees it
    with explained(what, max_instructions, timeout,
                   look="a loop that never ends (`jmp $`, a `loop` whose ECX never reaches 0) or a "
                        "handler that never reaches `out 0xf4, al`"):
        return vmkit.run(source, max_instructions=max_instructions, timeout=timeout)


@contextmanager
def explained(what, max_instructions, timeout, look, ends="finish", shown="serial output so far", last=None,
              astray=lambda error: f"did something the machine cannot run: {error}", errors=GuestError):
    """Every way a graded run can go wrong, turned into a message that names `what` went wrong: a
    guest that does not assemble (the line), one that runs out of budget (what it printed, and
    `look`: where to look), one that goes astray (`astray(error)`)."""
    try:
        yield
    except AsmError as error:
        raise AssertionError(f"{what} does not assemble: NASM stops at line {error.line} "
                             f"({error.text.strip()!r}): {error.message}") from None
    except GuestTimeout as error:
        serial = error.result.serial if error.result is not None else ""
        raise AssertionError(
            f"{what} did not {ends} within {max_instructions:,} instructions or {timeout:g} s.\n"
            f"  {shown}: {(serial[-last:] if last else serial)!r}\n"
            f"  where to look: {look}") from None
    except errors as error:
        raise AssertionError(f"{what} {astray(error)}") from None


def guest_error_message(error):
    """One line for a guest that failed to assemble or run, for cells that report rather than assert."""
    if isinstance(error, AsmError):
        return f"line {error.line} ({error.text.strip()!r}): {error.message}"
    return str(error)


# --- reference facts, from a fresh interpreter ------------------------------------------------------
def reference(fact, *args, timeout=60):
    """Compute `fact(*args)` (one of the functions below) in a new Python process and return it.

    The new process imports vmkit from disk; nothing a notebook changed in its own vmkit (or in
    this module) exists there. Arguments and results travel as JSON."""
    if fact not in FACTS:
        raise ValueError(f"unknown reference fact {fact!r}; known: {', '.join(FACTS)}")
    # -I: isolated mode, so neither the notebook's folder nor PYTHON* variables it may have set can
    # put another vmkit first; the folder this vmkit came from is the fallback if none is installed.
    home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    program = (f"import sys; sys.path.append({home!r})\n"
               "import json, vmkit.grading as g\n"
               "fact, args = json.load(sys.stdin)\n"
               "json.dump(g.FACTS[fact](*args), sys.stdout)\n")
    done = subprocess.run([sys.executable, "-I", "-c", program], input=json.dumps([fact, list(args)]),
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the reference computation {fact!r} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def outcome_in_ring3(template, instruction):
    """What the CPU does with `instruction` in ring 3, inside `template` (a test kernel whose
    `{instruction}` slot runs in ring 3 and is followed by `int 0x80`): "runs" when the int 0x80
    after it is reached, else the exception it raised ("#GP", "#UD", ...)."""
    import vmkit
    result = vmkit.run(template.format(instruction=instruction), max_instructions=100_000, timeout=5)
    for event in result.events:
        if event.kind == "ring-transition" and event.detail.get("from_ring") == 3:
            if event.detail["cause"] == "int 0x80":
                return "runs"
            return vector_name(event.detail["vector"])
    return "no transition from ring 3"


def census(template, instructions):
    """outcome_in_ring3 for each instruction: {instruction: outcome}."""
    return {instruction: outcome_in_ring3(template, instruction) for instruction in instructions}


def ending(result):
    """How a run ended and what it printed, as plain data."""
    return {"serial": result.serial, "exit_code": result.exit_code, "halted": result.halted,
            "shutdown": result.shutdown}


def trace(source, max_instructions=MAX_INSTRUCTIONS, timeout=TIMEOUT):
    """How a guest ends and the ring transitions it made, as plain data."""
    import vmkit
    try:
        result = vmkit.run(source, max_instructions=max_instructions, timeout=timeout)
    except vmkit.VmkitError as error:
        return {"error": f"{type(error).__name__}: {guest_error_message(error)}"}
    transitions = [{"cause": e.detail["cause"], "vector": e.detail.get("vector"),
                    "from_ring": e.detail["from_ring"], "to_ring": e.detail["to_ring"],
                    "stack_switch": e.detail.get("stack_switch"), "esp": e.detail.get("esp"),
                    "ss": e.detail.get("ss"), "eip": e.eip}
                   for e in result.events if e.kind == "ring-transition"]
    return {**ending(result), "transitions": transitions}


def interrupt_frames(source, tss=None):
    """Every interrupt, exception and int n the guest takes, with the registers just before the CPU
    took it and the frame it pushed: [{"cpu", "event", "tss", "esp", "frame"}].

    The guest runs twice: once to find the events, once more to stop in front of each of them. An
    IRQ is found by its instruction count (it arrives between two instructions); an int n or a
    fault by the address of the instruction that raised it."""
    import vmkit
    from .machine.x86 import TSS_ESP, TSS_SS
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
    from .asm import disassemble
    code = bytes(machine.uc.mem_read(eip, 16))
    return disassemble(code, eip, count=1)[0].size


def _tss_base(machine):
    """The base of the TSS the guest loaded with ltr, or None before it loaded one."""
    from unicorn import x86_const as X
    _, base, _, _ = machine.uc.reg_read(X.UC_X86_REG_TR)
    return base or None


def selectors(values):
    """vmkit's decoding of each selector: [[index, ti, rpl], ...]."""
    from .machine.x86 import decode_selector
    return [[s.index, s.ti, s.rpl] for s in map(decode_selector, values)]


DESCRIPTOR_FIELDS = ("base", "limit", "type", "s", "dpl", "present")


def descriptors(raws):
    """vmkit's decoding of each 64-bit descriptor: [{base, limit, type, s, dpl, present}, ...]."""
    from .machine.x86 import decode_descriptor
    return [{name: getattr(decode_descriptor(raw), name) for name in DESCRIPTOR_FIELDS} for raw in raws]


# --- a guest under a trap-and-emulate VMM whose emulation table a student wrote -----------------------
VMM_MAX_INSTRUCTIONS = 2_000_000
VMM_TIMEOUT = 3.0                                   # a trap costs tens of µs: a guest that traps in a loop
                                                    # is stopped by the clock before the instruction budget


def run_vmm(source, emulators, what="the guest under your VMM", max_instructions=VMM_MAX_INSTRUCTIONS,
            timeout=VMM_TIMEOUT):
    """TrapAndEmulate(image, emulators=emulators) run to its end: (vmm, result). A guest that does not
    assemble, runs out of budget or asks for what the machine cannot do fails with a message that
    names it; an exception raised by a handler reaches the caller as it is."""
    import vmkit                                    # late: the caller's vmkit, as the student sees it
    from .vmm import TrapAndEmulate
    with explained(what, max_instructions, timeout,
                   look="a guest waiting for something your handlers never do (a timer interrupt that never "
                        "comes because the virtual IF stays 0, a device status read that never gives the bit "
                        "it polls for)",
                   astray=lambda error: f"stopped: {error}"):
        vmm = TrapAndEmulate(vmkit.assemble(source), emulators=emulators, max_instructions=max_instructions,
                             timeout=timeout)
        return vmm, vmm.run()


VCPU_FIELDS = ("interrupt_flag", "cr0", "cr2", "cr3", "cr4", "gdtr", "idtr", "tr")


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


def vmm_run(source):
    """The guest natively and under vmkit's own trap-and-emulate VMM: {"native": how it ended and
    what it printed, "vmm": vmm_facts}."""
    import vmkit
    from .vmm import TrapAndEmulate
    native = vmkit.run(source, max_instructions=VMM_MAX_INSTRUCTIONS, timeout=30)
    vmm = TrapAndEmulate(vmkit.assemble(source), max_instructions=VMM_MAX_INSTRUCTIONS, timeout=30)
    result = vmm.run()
    return {"native": ending(native), "vmm": vmm_facts(vmm, result)}


def vmm_runs(sources):
    """vmm_run for each guest, in one process: [{"native", "vmm"}, ...]."""
    return [vmm_run(source) for source in sources]


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


def check_vmm_facts(got, expected, what):
    """Compare vmm_facts of a student's VMM with the reference VMM's, field by field."""
    for field in expected:
        if got.get(field) != expected[field]:
            g, e = got.get(field), expected[field]
            if isinstance(e, list) and isinstance(g, list):
                first = next((i for i, (a, b) in enumerate(zip(g, e)) if a != b), min(len(g), len(e)))
                g, e = (g[first] if first < len(g) else "(nothing)"), (e[first] if first < len(e) else "(nothing)")
                field = f"{field}, item {first} (of {len(expected[field])} expected)"
            elif isinstance(e, dict) and isinstance(g, dict):
                keys = [k for k in e if g.get(k) != e[k]]
                g, e = {k: g.get(k) for k in keys}, {k: e[k] for k in keys}
            check(False, f"{what}: {field}", expected=e, got=g, hint=VMM_HINTS.get(field.split(",")[0]))


def census_rows(names=None):
    """vmkit.vmm.census, measured now: each row's measurements and the classes it derives from them."""
    from .vmm.census import census as measure
    return [{"mnemonic": r.mnemonic, "faults": {str(ring): v for ring, v in r.faults.items()},
             "trapped_under_vmm": r.trapped_under_vmm, "same_under_vmm": r.same_under_vmm,
             "privileged": r.privileged, "sensitive": r.sensitive, "hole": r.hole} for r in measure(names)]


def census_and_classes(measurements):
    """census_rows() and census_classes(measurements), in one process: {"rows", "made_up"}."""
    return {"rows": census_rows(), "made_up": census_classes(measurements)}


def census_classes(measurements):
    """What the census's own definitions make of made-up measurements (faults by ring, trapped under
    the VMM, same under the VMM): {"privileged", "sensitive", "hole"} for each."""
    from .vmm.census import CensusRow
    rows = [CensusRow(m["mnemonic"], "", {int(k): v for k, v in m["faults"].items()}, m["trapped_under_vmm"],
                      m["same_under_vmm"]) for m in measurements]
    return [{"privileged": r.privileged, "sensitive": r.sensitive, "hole": r.hole} for r in rows]


# --- a guest under binary translation with rewrite rules and a chain rule a student wrote (lab 3) -------
BT_MAX_INSTRUCTIONS = 3_000_000
BT_TIMEOUT = 3.0                                    # a guest that never ends is stopped within this
REWRITTEN = ("cli", "sti", "pushfd", "popfd")       # the instructions a translator rewrites, never traps


def run_bt(source, rules=None, chain=None, what="the guest under your translator",
           max_instructions=BT_MAX_INSTRUCTIONS, timeout=BT_TIMEOUT):
    """BinaryTranslation(image, rules=rules, chain=chain) run to its end: (machine, result). A guest
    that does not assemble, runs out of budget or goes astray fails with a message that names it,
    and so does a rule or chain rule that raises."""
    import vmkit                                    # late: the caller's vmkit, as the student sees it
    from .vmm import BinaryTranslation
    if rules is not None:
        rules = {name: _named_rule(rule, name) for name, rule in rules.items()}
    if chain is not None:
        chain = _named_chain(chain)
    with explained(what, max_instructions, timeout,
                   look="translated code that spins (a chained exit that jumps to itself, or to the wrong "
                        "place), or a guest waiting for a timer tick that never comes because the virtual IF "
                        "stays 0",
                   astray=lambda error: f"went astray: {error}\n  where to look: the bytes your rules and "
                                        f"your chain rule emit (decode them with vmkit.asm.disassemble)"):
        machine = BinaryTranslation(vmkit.assemble(source), rules=rules, chain=chain,
                                    max_instructions=max_instructions, timeout=timeout)
        return machine, machine.run()


def _named_rule(rule, name):
    """`rule`, with an exception it raises turned into a message that names the rule and the guest
    instruction it was translating."""
    def translating(u, insn):
        try:
            return rule(u, insn)
        except Exception as error:
            text = f"{insn.mnemonic} {insn.op_str}".strip()
            raise AssertionError(f"your rule for {name!r} raised {type(error).__name__}: {error}\n"
                                 f"  while translating `{text}` at {insn.address:#x}\n"
                                 f"  where to look: the rule runs once, at translation time, and hands the "
                                 f"translation its code with u.emit(bytes)") from error
    return translating


def _named_chain(chain):
    """`chain`, with an exception it raises turned into a message that names the exit it was chaining."""
    def chaining(site, target):
        try:
            return chain(site, target)
        except Exception as error:
            way = "backwards" if target < site else "forwards"
            raise AssertionError(f"your chain rule raised {type(error).__name__}: {error}\n"
                                 f"  while chaining the exit at {site:#x} to {target:#x} (a jump {way})\n"
                                 f"  where to look: the displacement is a signed 32-bit number") from error
    return chaining


def rewritten_traps(result):
    """The kernel's cli, sti, pushfd and popfd that trapped: [[instruction, eip], ...]. User code's
    own cli (a #GP in ring 3) is the guest's business, not the translator's."""
    return [[e.detail["instruction"], e.eip] for e in result.of_kind("trap")
            if e.cpl != 3 and e.detail.get("instruction", "").split(" ")[0] in REWRITTEN]


def bt_facts(machine, result):
    """What a run under binary translation did, as plain data: how it ended, what it printed, the
    rewritten instructions that trapped anyway, and what the translation cost."""
    facts = {**ending(result), "rewritten_traps": rewritten_traps(result),
             "traps": result.stats.get("traps", 0), "cache_misses": result.stats.get("cache_misses", 0),
             "blocks_translated": result.stats.get("blocks_translated", 0)}
    return json.loads(json.dumps(facts))


def bt_run(source):
    """The guest natively and under vmkit's own binary translator: {"native", "bt"}."""
    import vmkit
    from .vmm import BinaryTranslation
    native = vmkit.run(source, max_instructions=BT_MAX_INSTRUCTIONS, timeout=30)
    machine = BinaryTranslation(vmkit.assemble(source), max_instructions=BT_MAX_INSTRUCTIONS, timeout=30)
    result = machine.run()
    return {"native": ending(native), "bt": bt_facts(machine, result)}


def bt_runs(sources):
    """bt_run for each guest, in one process: [{"native", "bt"}, ...]."""
    return [bt_run(source) for source in sources]


def chain_bytes(cases):
    """vmkit's own chain rule for each [site, target]: the bytes, as a list of numbers."""
    from .vmm.translator import chain
    return [list(chain(site, target)) for site, target in cases]


def check_like_native(got, native, what, hint=None):
    """A run under a student's translator against the bare machine's: the same serial output (the
    first line that differs is shown, with `hint`), the same ending, and no rewritten instruction
    trapped."""
    if got["serial"] != native["serial"]:
        mine, theirs = got["serial"].split("\n"), native["serial"].split("\n")
        line = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
        check(False, f"{what}: serial output, line {line + 1}, against the bare machine",
              expected=theirs[line] if line < len(theirs) else "(no more output)",
              got=mine[line] if line < len(mine) else "(no more output)",
              hint=hint or "the guest prints what it observes: compare with what your rules make the translated "
                           "code do to the flags, the stack and the virtual IF")
    ending = ("exit_code", "halted", "shutdown")
    check_equal({k: got[k] for k in ending}, {k: native[k] for k in ending}, what=f"{what}: how the guest ended",
                hint="an exit code comes from `out 0xf4, al`; a shutdown is a triple fault")
    check_equal(got["rewritten_traps"], [], what=f"{what}: kernel cli/sti/pushfd/popfd that trapped (instruction, eip)",
                hint="a rewrite rule must emit in-cache code; u.callout(...) or no rule at all is a trap")


# --- sVirt (lab 7): MCS levels, libvirt's category pairs and policy decisions, from vmkit.isolation -----
def mcs_levels(texts, pairs):
    """Each level parsed as [sensitivity, sorted categories], and whether a dominates b for each pair."""
    from .isolation import Level
    return {"levels": [[level.sensitivity, sorted(level.categories)] for level in map(Level.parse, texts)],
            "dominates": [Level.parse(a).dominates(Level.parse(b)) for a, b in pairs]}


def mcs_allocations(runs):
    """For each run [seed, count, first, last, reserved]: the labels a fresh allocator with those pairs
    reserved hands out, in order, ending with "RuntimeError" where every pair is in use."""
    from .isolation import McsAllocator
    results = []
    for seed, count, first, last, reserved in runs:
        allocator = McsAllocator(seed, first, last)
        for level in reserved:
            allocator.reserve(level)
        labels = []
        for _ in range(count):
            try:
                labels.append(str(allocator.allocate()))
            except RuntimeError:
                labels.append("RuntimeError")
                break
        results.append(labels)
    return results


def svirt_decisions(cases):
    """vmkit.isolation.decide for each [scontext, tcontext, tclass, perms]: {perm: allowed | te | mcs}."""
    from .isolation import decide
    return [decide(s, t, tclass, perms) for s, t, tclass, perms in cases]


FACTS = {"selectors": selectors, "descriptors": descriptors, "census": census, "trace": trace,
         "interrupt_frames": interrupt_frames, "vmm_run": vmm_run, "vmm_runs": vmm_runs,
         "census_rows": census_rows, "census_classes": census_classes, "census_and_classes": census_and_classes,
         "bt_run": bt_run, "bt_runs": bt_runs, "chain_bytes": chain_bytes,
         "mcs_levels": mcs_levels, "mcs_allocations": mcs_allocations, "svirt_decisions": svirt_decisions}


# --- a paravirtual guest on hypercall handlers a student wrote (lab 4) ------------------------------------
PV_MAX_INSTRUCTIONS = 3_000_000
PV_TIMEOUT = 3.0
PV_STATS = ("hypercalls", "traps", "upcalls", "bounces", "multicall_entries")


def run_pv(source, hypercalls=None, modules=(), what="the guest under your hypervisor",
           max_instructions=PV_MAX_INSTRUCTIONS, timeout=PV_TIMEOUT):
    """Paravirt(image, hypercalls=hypercalls, modules=modules) run until dom0 shuts down: (dom0,
    result). A guest that does not assemble or runs out of budget fails with a message that names it,
    and so does a handler that raises or returns no value for EAX."""
    import vmkit                                    # late: the caller's vmkit, as the student sees it
    from .vmm import Paravirt
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
    from .vmm import xen_abi as xen
    from .vmm.hypercalls import BadAddress

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


def pv_run(source, modules=()):
    """The guest under vmkit's own hypervisor and hypercalls: pv_facts."""
    from .vmm import Paravirt
    from .asm import assemble
    dom0 = Paravirt(assemble(source), modules=modules, max_instructions=PV_MAX_INSTRUCTIONS, timeout=30)
    return pv_facts(dom0.run())


def pv_runs(cases):
    """pv_run for each [source, modules], in one process."""
    return [pv_run(source, modules) for source, modules in cases]


PV_HINTS = {
    "serial": "what the domains wrote to the console: console_io copies `count` bytes from `buffer`",
    "exit_code": "the exit code is the reason dom0 gave SCHEDOP_shutdown; a crash gives 3",
    "shutdown": "True when a domain crashed (a fault with no handler in its trap table)",
    "stats": "hypercalls and traps into Xen, events delivered (upcalls), traps bounced to the guest, "
             "multicall entries run",
    "hypercalls": "each hypercall as [domain, name, the value returned in EAX]: 0 on success, a negative "
                  "errno (-22 EINVAL, -38 ENOSYS, -14 EFAULT) on failure",
}


def check_pv_facts(got, expected, what, hints=None):
    """Compare pv_facts of a run on a student's handlers (or routines) with the reference run's,
    field by field; a list is shown at its first difference, the serial output at its first line
    that differs. `hints` adds to or replaces PV_HINTS for this comparison."""
    hints = dict(PV_HINTS, **(hints or {}))
    for field in expected:
        g, e = got.get(field), expected[field]
        if g == e:
            continue
        shown = field
        if isinstance(e, list) and isinstance(g, list):
            first = next((i for i, (a, b) in enumerate(zip(g, e)) if a != b), min(len(g), len(e)))
            g, e = (g[first] if first < len(g) else "(nothing)"), (e[first] if first < len(e) else "(nothing)")
            shown = f"{field}, item {first} (of {len(expected[field])} expected)"
        elif isinstance(e, dict) and isinstance(g, dict):
            keys = [k for k in e if g.get(k) != e[k]]
            g, e = {k: g.get(k) for k in keys}, {k: e[k] for k in keys}
        elif isinstance(e, str) and isinstance(g, str):
            mine, theirs = g.split("\n"), e.split("\n")
            line = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
            g = mine[line] if line < len(mine) else "(no more output)"
            e = theirs[line] if line < len(theirs) else "(no more output)"
            shown = f"{field}, line {line + 1}"
        check(False, f"{what}: {shown}", expected=e, got=g, hint=hints.get(field))


FACTS.update(pv_run=pv_run, pv_runs=pv_runs)


# --- a user-space run loop a student wrote, on the hardware-assist model and on KVM (lab 5) -----------
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
    from .kvm.probe import probe
    return probe().why_not("protected-mode")


def lab_devices():
    """A lab's device state: what COM1 printed, the exit code, the MMIO device's three registers."""
    from types import SimpleNamespace
    return SimpleNamespace(serial=bytearray(), exit_code=None, scratch=0, ticks=0, rings=0)


def run_user_loop(source, loop, engine="hardware-assist", what="the guest"):
    """`loop(vcpu)` on a fresh vmkit.kvm.userspace.user_vcpu(source, engine) until it returns: (vcpu, what it
    returned), the vCPU closed. A guest that never ends and a broken rule of the KVM API (a read left
    unanswered, a halted vCPU run again) fail with a message that names them; an exception the loop
    raises reaches the caller as it is."""
    from .kvm.userspace import RunLoopError, user_vcpu
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


def handler_loop(vcpu, on_io, on_mmio):
    """vmkit's run loop around two handlers (each takes the exit and returns a read's value), so that a
    lab can check one handler at a time. Returns how the run ended."""
    while True:
        exit = vcpu.run()
        if exit.reason in ("IO", "MMIO"):
            try:
                value = (on_io if exit.reason == "IO" else on_mmio)(exit)
            except Exception as error:              # the student's handler: say which exit it failed on
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
    from .kvm.userspace import exit_record
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


def user_space_run(source):
    """The guest on vmkit's hardware-assist model with the model's own devices, as loop_facts: the exits
    are the model's vmexit events that reach user space (KVM answers CPUID inside the kernel)."""
    import vmkit
    from .kvm.userspace import UserExit, exit_record
    from .vmm.hardware_assist import KERNEL_HANDLED
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
    from .kvm.devices import DeviceModel
    devices = DeviceModel()
    answers = [(devices.port_access if reason == "IO" else devices.mmio_access)(where, size, value, direction)
               for reason, where, size, direction, value in script]
    return {"answers": answers, "serial": bytes(devices.serial.output).decode("latin-1"),
            "exit_code": devices.debug_exit.exit_code,
            "mmio": {name: getattr(devices.mmio, name) for name in MMIO_REGISTERS}}


def check_handler(handler, script, expected, what, hint=None, show=3):
    """handler(devices, exit) for each access of `script` in order, on one fresh lab_devices(): the value
    of every read, then the devices' state, against `expected` (device_answers of the same script)."""
    from .kvm.userspace import UserExit
    devices = lab_devices()
    wrong = []
    for (reason, where, size, direction, value), want in zip(script, expected["answers"]):
        exit = UserExit(reason, {"port" if reason == "IO" else "address": where, "size": size,
                                 "direction": direction, "value": value})
        try:
            got = handler(devices, exit)
        except Exception as error:                  # the student's code raised: report it as the answer
            wrong.append((exit, want if exit.reads else "no error", f"{type(error).__name__}: {error}"))
            continue
        if exit.reads and got != want:
            wrong.append((exit, want, got))
    if wrong:
        lines = [f"Check failed: {what}: {len(wrong)} of {len(script)} accesses wrong"]
        for exit, want, got in wrong[:show]:
            lines.append(f"  {exit}\n      expected: {_show(want)}\n      got:      {_show(got)}")
        if len(wrong) > show:
            lines.append(f"  ... and {len(wrong) - show} more")
        if hint:
            lines.append(f"  where to look: {hint}")
        raise AssertionError("\n".join(lines))
    state = loop_facts(None, None, devices)
    for field in ("serial", "exit_code", "mmio"):
        check_equal(state[field], expected[field], what=f"{what}: devices.{field} after the accesses",
                    hint=LOOP_HINTS[field])


def check_loop_facts(got, expected, what):
    """loop_facts of a student's run against user_space_run's (the fields `expected` has), the first
    difference explained."""
    for field in (f for f in LOOP_FIELDS if f in expected):
        g, e = got.get(field), expected[field]
        if g == e:
            continue
        name = field
        if isinstance(e, list) and isinstance(g, list):
            first, g, e = first_difference(g, e, "(no more exits)")
            where = got.get("instructions") or []
            name = f"{field}, item {first} (of {len(expected[field])} expected)" + (
                where[first] if first < len(where) else "")
        check(False, f"{what}: {name}", expected=e, got=g, hint=LOOP_HINTS[field])


def first_difference(got, expected, past_the_end):
    """Where two lists first differ, and the two items there (`past_the_end` for a list that ended)."""
    first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    return (first, got[first] if first < len(got) else past_the_end,
            expected[first] if first < len(expected) else past_the_end)


FACTS.update({"user_space_runs": user_space_runs, "device_answers": device_answers})


# --- a pre-copy loop a student wrote (lab 6) ------------------------------------------------------------
MIGRATION_WARMUP = 0.002                            # guest seconds before the migration and after it
MIGRATION_MAX_ROUNDS = 40                           # past Xen's 30: a loop that never stops ends here
MIGRATION_MAX_SECONDS = 0.25                        # guest seconds on the link; the lab's loops need under 0.1
MIGRATION_FIELDS = ("rounds", "stop_reason", "downtime", "pages_sent", "memory_verified", "output_continuous")
MIGRATION_HINTS = {
    "rounds": "each round as [pages sent, pages skipped, pages dirty at its end, Mbit/s]: the first difference is "
              "the round where your loop and the reference part (which pages it sent, or whether it went on at all)",
    "stop_reason": "the name of the condition that ended the pre-copy, passed to m.stop_and_copy(pages, stop_reason=...)",
    "downtime": "the stop-and-copy sends what is still dirty, and the vCPU and device state, at the link's full rate",
    "pages_sent": "every round and the stop-and-copy: a page sent twice in a round, or a round that sends pages "
                  "nobody dirtied, shows here",
    "memory_verified": "the destination's memory must equal the source's at the switch-over: the stop-and-copy "
                       "sends m.dirty_pages() (called once: it clears the log)",
    "output_continuous": "the peer must see seq 1, 2, 3, ... with no gap or repeat across the switch-over",
}


class MigrationBudget(AssertionError):
    """A student's pre-copy loop went on past the rounds or the guest time any reference loop needs."""


def migration_guest(case):
    """The NASM source of a lab case {"workload": name, "params": {...}}."""
    from .migration import workload
    return workload(case["workload"], **case.get("params", {}))


def round_budget(what="your loop"):
    """An on_round for a Migration: a loop that never stops fails with a message instead of running on."""
    def budget(record):
        spent = record.start + record.seconds
        if record.number > MIGRATION_MAX_ROUNDS or spent > MIGRATION_MAX_SECONDS:
            raise MigrationBudget(
                f"{what} was still sending rounds after {record.number} rounds and {spent * 1000:.0f} ms on the "
                f"link (no reference loop needs more than 29 rounds).\n  where to look: the stop conditions; a "
                f"loop must stop even when the guest never converges")
    return budget


def new_migration(case, what="your loop"):
    """A Migration for a lab case {"workload", "params", "link": Link's arguments, "dies_at"}, on the model,
    on a round_budget."""
    from .migration import Link, Migration
    return Migration(migration_guest(case), "model", Link(**case.get("link", {})), MIGRATION_WARMUP,
                     destination_dies_at=case.get("dies_at"), on_round=round_budget(what))


def migration_facts(result, after=MIGRATION_WARMUP):
    """What a migration did, as plain data, once the destination ran `after` guest seconds more: each round
    as round_facts, the stop reason, the downtime, the pages sent, and whether
    memory and the peer's output arrived whole."""
    from .migration import sequence
    result.destination.run_for(after)
    transcript = sequence(result.source.output + result.destination.output)
    return json.loads(json.dumps({
        "rounds": round_facts(result.rounds),
        "stop_reason": result.stop_reason, "downtime": result.downtime, "pages_sent": result.pages_sent,
        "memory_verified": result.memory_verified,
        "output_continuous": transcript == list(range(1, len(transcript) + 1)),
        "switch_seq": result.switch_seq, "lines": len(transcript)}))


def round_facts(rounds):
    """Each Round as [pages sent, pages skipped, pages dirty at its end, Mbit/s]."""
    return [[r.pages_sent, r.pages_skipped, r.pages_dirtied, round(r.mbit, 6)] for r in rounds]


def run_precopy(loop, case, *args, what="your loop"):
    """loop(m, *args) on a new_migration(case): (m, the MigrationResult it returned). A loop that runs
    past the budget, returns something else or calls the building blocks wrongly fails with a message;
    MigrationAborted reaches the caller."""
    from .errors import VmkitError
    from .migration import MigrationAborted, MigrationResult
    m = new_migration(case, what)
    try:
        result = loop(m, *args)
    except MigrationAborted:
        raise
    except VmkitError as error:
        raise AssertionError(f"{what} used the migration's building blocks wrongly: {type(error).__name__}: "
                             f"{error}") from None
    check(isinstance(result, MigrationResult), f"{what} returns what m.stop_and_copy(...) returned",
          expected="a MigrationResult", got=type(result).__name__,
          hint="end with `return m.stop_and_copy(pages, stop_reason=...)`")
    return m, result


def check_migration_facts(got, expected, what, fields=MIGRATION_FIELDS):
    """migration_facts of a student's loop against the reference's, the first difference explained."""
    for field in fields:
        g, e = got.get(field), expected[field]
        if field == "downtime" and isinstance(g, float) and abs(g - e) <= 1e-9 * max(1.0, abs(e)):
            continue
        if g == e:
            continue
        name = field
        if isinstance(e, list) and isinstance(g, list):
            first, g, e = first_difference(g, e, "(no more rounds)")
            name = f"{field}, round {first + 1} (of {len(expected[field])} expected)"
        check(False, f"{what}: {name}", expected=e, got=g, hint=MIGRATION_HINTS[field])


def stop_and_copy_seconds(m, pages):
    """What pausing now and sending `pages` and the vCPU and device state costs: the downtime, exactly as
    m.stop_and_copy(pages) will take it (at the link's full rate: the guest is paused)."""
    state = len(m.source.cpu_state()) + len(m.source.device_state())
    return m.link.seconds(len(pages), m.link.mbit, extra_bytes=state)


def precopy_to_target(m, target, estimate=stop_and_copy_seconds, max_rounds=29):
    """Pre-copy until the downtime fits `target` seconds: after each round, stop for "target met" (the
    estimate fits), "no progress" (it did not shrink since the round before) or "max rounds"."""
    m.send(m.all_pages())
    before = None
    while True:
        pages = m.dirty_pages()
        now = estimate(m, pages)
        if now <= target:
            reason = "target met"
        elif before is not None and now >= before:
            reason = "no progress"
        elif len(m.rounds) >= max_rounds:
            reason = "max rounds"
        else:
            reason = None
        if reason is not None:
            return m.stop_and_copy(pages, stop_reason=reason)
        before = now
        m.send(pages)


def xen_migrations(cases):
    """migrate() with Xen's stop conditions for each case: migration_facts, or {"aborted": why}."""
    from .migration import XEN, MigrationAborted
    facts = []
    for case in cases:
        m = new_migration(case, "the reference loop")
        try:
            m.send(m.all_pages())
            while True:
                reason = XEN.reason(m.rounds, m.sent_total, m.memory_pages, m.link)
                pages = m.dirty_pages()
                if reason is not None:
                    facts.append(migration_facts(m.stop_and_copy(pages, stop_reason=reason)))
                    break
                m.send(pages)
        except MigrationAborted as error:
            facts.append({"aborted": str(error), "rounds": round_facts(m.rounds)})
    return facts


def target_migrations(cases):
    """precopy_to_target for each [case, target]: migration_facts."""
    return [migration_facts(precopy_to_target(new_migration(case, "the reference loop"), target))
            for case, target in cases]


def after_rounds(case, rounds, new=new_migration):
    """A Migration of `case` that has sent the full copy and rounds - 1 rounds of dirty pages: (m, the
    pages dirtied since), the state in which a loop decides whether to stop."""
    m = new(case)
    m.send(m.all_pages())
    for _ in range(rounds - 1):
        m.send(m.dirty_pages())
    return m, m.dirty_pages()


def downtime_estimates(cases):
    """For each [case, rounds]: [stop_and_copy_seconds of no page, of the dirty pages, and the downtime
    m.stop_and_copy(those pages) then took], after_rounds(case, rounds)."""
    facts = []
    for case, rounds in cases:
        m, pages = after_rounds(case, rounds)
        facts.append([stop_and_copy_seconds(m, []), stop_and_copy_seconds(m, pages), m.stop_and_copy(pages).downtime])
    return facts


def xen_stops(histories):
    """Xen's stop condition for each made-up history {"rounds": [[number, sent, dirtied, seconds, mbit, start,
    skipped]], "sent_total", "memory_pages", "link": Link's arguments}: the reason, or None."""
    from .migration import XEN, Link, Round
    return [XEN.reason([Round(*r) for r in h["rounds"]], h["sent_total"], h["memory_pages"], Link(**h["link"]))
            for h in histories]


FACTS.update({"xen_migrations": xen_migrations, "target_migrations": target_migrations, "xen_stops": xen_stops,
              "downtime_estimates": downtime_estimates})
