"""Lab 1 (rings): what the machine does with each instruction in ring 3 (part 2's answer), how a
guest ends and which ring transitions it made, and vmkit's decoding of selectors and descriptors."""
import vmkit
import vmkit.guests
from vmkit.grading.lab1 import DESCRIPTOR_FIELDS, guest_trace, interrupt_frames
from vmkit.machine.x86 import decode_descriptor, decode_selector, vector_name


def outcome_in_ring3(template, instruction):
    """What the CPU does with `instruction` in ring 3, inside `template` (a test kernel whose
    `{instruction}` slot runs in ring 3 and is followed by `int 0x80`): "runs" when the int 0x80
    after it is reached, else the exception it raised ("#GP", "#UD", ...)."""
    result = vmkit.run(template.format(instruction=instruction), max_instructions=100_000, timeout=5)
    for event in result.events:
        if event.kind == "ring-transition" and event.detail.get("from_ring") == 3:
            if event.detail["cause"] == "int 0x80":
                return "runs"
            return vector_name(event.detail["vector"])
    return "no transition from ring 3"


def ring3_census(template, instructions):
    """outcome_in_ring3 for each instruction: {instruction: outcome}."""
    return {instruction: outcome_in_ring3(template, instruction) for instruction in instructions}


def selector_fields(values):
    """vmkit's decoding of each selector: [[index, ti, rpl], ...]."""
    return [[s.index, s.ti, s.rpl] for s in map(decode_selector, values)]


def descriptor_fields(raws):
    """vmkit's decoding of each 64-bit descriptor: [{base, limit, type, s, dpl, present}, ...]."""
    return [{name: getattr(decode_descriptor(raw), name) for name in DESCRIPTOR_FIELDS} for raw in raws]


FACTS = {f.__name__: f for f in (selector_fields, descriptor_fields, ring3_census, guest_trace, interrupt_frames)}


# --- the probes: each graded cell's cases, asked of the student's kernel and decided here -------------
import random

from .probing import Probe, all_of, lab_setup, same_answers

SETUP = lab_setup("lab1_rings")         # RING3_TEST, SYSCALL_KERNEL: the grader's own copies

_rng = random.Random(1)
HIDDEN_SELECTORS = [0, 3, 4, 7, 0xFFFF, 0xFFF8, 0x8000] + [_rng.getrandbits(16) for _ in range(200)]
HIDDEN_DESCRIPTORS = [0xFF00_0000_0000_0000, 0x00C0_9A00_0000_0000, 0x0080_9200_0000_FFFF, 0x00CF_9A12_3456_FFFF,
                      0xC0CF_F200_0000_FFFF, 0x000F_1000_0000_0000] + [_rng.getrandbits(64) for _ in range(300)]
LESSON_SELECTORS = [0x08, 0x10, 0x1b, 0x23, 0x28, 0x2b, 0x0f]
LESSON_DESCRIPTORS = [0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0x00CFFA000000FFFF, 0x00CFF2000000FFFF,
                      0x0000891013100067, 0]
CENSUS = ["sti", "lgdt [esp]", "lidt [esp]", "sgdt [esp-8]", "sidt [esp-8]", "sldt ax", "str ax", "smsw ax",
          "lmsw ax", "mov eax, cr0", "mov cr3, eax", "mov eax, dr7", "clts", "wbinvd", "rdmsr", "wrmsr", "rdtsc",
          "pushfd", "popfd", "in al, 0x60", "out 0x80, al", "ud2", "int3", "lar eax, eax", "lsl eax, eax",
          "verr ax", "mov ax, cs", "ltr ax", "lldt ax", "invlpg [esp]"]
# The machine's own decoders are withheld while the student's run: calling them earns nothing.
DECODERS = {"vmkit.machine.x86": ["decode_selector", "decode_descriptor"]}
SELECTORS_ASKED = "vmkit.grading.answer_cases(vmkit.grading.yours(decode_selector, 'decode_selector'), [[v] for v in cases])"
DESCRIPTORS_ASKED = ("vmkit.grading.answer_cases(vmkit.grading.yours(decode_descriptor, 'decode_descriptor'), "
                     "[[raw] for raw in cases], shape=lambda d: {k: d.get(k) for k in vmkit.grading.DESCRIPTOR_FIELDS})")


def selectors_judge(what):
    return same_answers(what, call="decode_selector", hint="a selector's fields, from bit 0 up: RPL (2 bits), "
                        "TI (1 bit), index (the other 13)", describe=lambda value: f"decode_selector({value:#x})")


def descriptors_judge(what):
    return same_answers(what, describe=lambda raw: f"decode_descriptor({raw:#018x})",
                        hint="the SDM's figure 3-8: every field, including base bits 31..24 and the limit "
                             "with G = 0 and G = 1")


def syscall_judge(answers, expected, values):
    """Part 3: for each VALUE the guest prints 2 * VALUE, exits with 1, and goes ring 0 -> 3, then twice
    through int 0x80 onto the TSS's stack (five dwords pushed), with an iretd between."""
    from vmkit.grading.checks import check, check_equal
    check(isinstance(answers, list) and len(answers) == len(values), "one run per VALUE", got=answers)
    syscall = ["int 0x80", 3, 0, 0x80, True, 0x10, 0x3F0000 - 20]
    for value, trace in zip(values, answers):
        check(isinstance(trace, dict) and "error" not in trace, f"the guest with VALUE = {value:#x} runs",
              got=trace.get("error") if isinstance(trace, dict) else trace)
        check_equal(trace.get("serial"), f"{2 * value & 0xFFFFFFFF:08x}", what=f"the serial output with VALUE = {value:#x}",
                    hint="SYS_DOUBLE's answer travels back in EAX; use the symbol VALUE; the result wraps at 32 bits")
        check_equal(trace.get("exit_code"), 1, what=f"the exit code with VALUE = {value:#x}",
                    hint="SYS_REPORT ends the run through exit_guest")
        path = [[t["cause"], t["from_ring"], t["to_ring"]] + ([t["vector"], t["stack_switch"], t["ss"], t["esp"]]
                if t["cause"] != "iret" else []) for t in trace.get("transitions", [])]
        check_equal(path, [["iret", 0, 3], syscall, ["iret", 0, 3], syscall],
                    what=f"the ring transitions with VALUE = {value:#x} (cause, from, to, and for int 0x80: vector, "
                         f"stack switch, SS, ESP after the pushes)",
                    hint="two system calls from ring 3, the first returning with iretd")


def frames_expected(cases):
    return [[c["esp"], c["frame"]] for c in cases]


FRAME_ASKED = ("vmkit.grading.answer_cases(interrupt_frame, [[c['cpu'], c['event'], c['tss']] for c in cases], "
               "shape=lambda r: [r[0], [list(p) for p in r[1]]])")


def frames_judge(what):
    return same_answers(what, hint="the stack switches only when the handler is more privileged than the code it "
                                   "interrupts; which EIP is saved depends on the cause",
                        describe=lambda c: f"{c['event']['cause']} at eip={c['cpu']['eip']:#x}, cs={c['cpu']['cs']:#x}")


PILL_VERDICTS = {"native": 0, "hardware-assist": 0, "trap-and-emulate": 1, "binary-translation": 1}
PILL_ASKED = f"vmkit.grading.lab1.pill_traces({SETUP['PILL_KERNEL']!r}, cases, PILL)"


def pill_judge(answers, expected, cases):
    """Part 5: under each technique the pill reports the verdict (1 where a VMM deprivileged the
    kernel, 0 on the bare machine and under hardware assist), ends through SYS_REPORT, and leaves ring
    3 only through that int 0x80: no exception."""
    from vmkit.grading.checks import check, check_equal
    check(isinstance(answers, list) and len(answers) == len(cases), "one run per case", got=answers)
    for (gdt_at, technique), trace in zip(cases, answers):
        case = f"under {technique}, the GDT at {gdt_at:#x}"
        check(isinstance(trace, dict) and "error" not in trace, f"the pill runs {case}",
              got=trace.get("error") if isinstance(trace, dict) else trace)
        left = [[t["cause"], t["from_ring"]] for t in trace.get("transitions", []) if t["from_ring"] == 3]
        check_equal(left, [["int 0x80", 3]], what=f"how the pill leaves ring 3 {case}",
                    hint="once, through SYS_REPORT's int 0x80: an exception means the pill crashed the program")
        check_equal(trace.get("serial"), f"{PILL_VERDICTS[technique]:08x}", what=f"what the pill reports {case}",
                    hint="1 where a VMM runs the guest's kernel deprivileged on tables of its own, 0 where the CPU "
                         "holds the guest's own; the kernel's GDT is somewhere else in every run")
        check_equal(trace.get("exit_code"), 1, what=f"the exit code {case}", hint="end with SYS_REPORT")


PROBES = {
    "part1_selectors": Probe(SELECTORS_ASKED, LESSON_SELECTORS, selector_fields,
                             selectors_judge("decode_selector on the lesson kernel's selectors"), withhold=DECODERS),
    "part1_descriptors": Probe(DESCRIPTORS_ASKED, LESSON_DESCRIPTORS, descriptor_fields,
                               descriptors_judge("decode_descriptor on the lesson kernel's GDT"), withhold=DECODERS),
    "part1_hidden": Probe(
        {"selectors": SELECTORS_ASKED, "descriptors": DESCRIPTORS_ASKED},
        {"selectors": HIDDEN_SELECTORS, "descriptors": HIDDEN_DESCRIPTORS},
        {"selectors": selector_fields, "descriptors": descriptor_fields},
        all_of(selectors=selectors_judge("decode_selector on random selectors"),
               descriptors=descriptors_judge("decode_descriptor on random descriptors")), withhold=DECODERS),
    "part2_visible": Probe("vmkit.grading.answer_cases(outcome_in_ring3, [[i] for i in cases])",
                           ["nop", "cli", "cpuid", "hlt"],
                           lambda cases: list(ring3_census(SETUP["RING3_TEST"], cases).values()),
                           same_answers("outcome_in_ring3 on four instructions", call="outcome_in_ring3")),
    "part2_hidden": Probe("vmkit.grading.answer_cases(outcome_in_ring3, [[i] for i in cases])", CENSUS,
                          lambda cases: list(ring3_census(SETUP["RING3_TEST"], cases).values()),
                          same_answers("outcome_in_ring3 on the census", call="outcome_in_ring3",
                                       hint="an exception other than #GP must be named as the machine names it"),
                          timeout=60),
    "part3_visible": Probe(f"vmkit.grading.lab1.syscall_traces({SETUP['SYSCALL_KERNEL']!r}, cases, USER_PROGRAM, "
                           f"SYSCALL_HANDLER)", [0x15], lambda values: None, syscall_judge,
                           clean=("USER_PROGRAM", "SYSCALL_HANDLER")),
    "part3_hidden": Probe(f"vmkit.grading.lab1.syscall_traces({SETUP['SYSCALL_KERNEL']!r}, cases, USER_PROGRAM, "
                          f"SYSCALL_HANDLER)", [0, 1, 0x7FFFFFFF, 0x80000001, 0x12345678], lambda values: None,
                          syscall_judge, clean=("USER_PROGRAM", "SYSCALL_HANDLER")),
    "part4_visible": Probe(FRAME_ASKED, lambda: interrupt_frames(vmkit.guests.source("rings"))[:1], frames_expected,
                           frames_judge("interrupt_frame on the first int 0x80 of the lesson's kernel")),
    "part5_visible": Probe(PILL_ASKED, [[0x200000, "native"], [0x200000, "trap-and-emulate"]], lambda cases: None,
                           pill_judge, clean=("PILL",)),
    "part5_hidden": Probe(PILL_ASKED, [[at, technique] for at in (0x12340, 0x2A0010, 0x3A0008) for technique in PILL_VERDICTS],
                          lambda cases: None, pill_judge, timeout=60, clean=("PILL",)),
    "part4_hidden": Probe(FRAME_ASKED, lambda: (interrupt_frames(vmkit.guests.source("rings")) +
                                                interrupt_frames(vmkit.guests.source("same_ring"))),
                          frames_expected, frames_judge("interrupt_frame on IRQs, faults and int n")),
}
