"""Lab 3 (binary translation): guests natively and under vmkit's own binary translator, and vmkit's
own chain rule (part 3's answer)."""
import vmkit
from vmkit.grading.lab3 import BT_MAX_INSTRUCTIONS, bt_facts
from vmkit.grading.runs import ending
from vmkit.vmm import BinaryTranslation
from vmkit.vmm.translator import chain_jump


def bt_run(source):
    """The guest natively and under vmkit's own binary translator: {"native", "bt"}."""
    native = vmkit.run(source, max_instructions=BT_MAX_INSTRUCTIONS, timeout=30)
    machine = BinaryTranslation(vmkit.assemble(source), max_instructions=BT_MAX_INSTRUCTIONS, timeout=30)
    result = machine.run()
    return {"native": ending(native), "bt": bt_facts(machine, result)}


def bt_runs(sources):
    """bt_run for each guest, in one process: [{"native", "bt"}, ...]."""
    return [bt_run(source) for source in sources]


def chain_bytes(cases):
    """vmkit's own chain rule for each [site, target]: the bytes, as a list of numbers."""
    return [list(chain_jump(site, target)) for site, target in cases]


FACTS = {f.__name__: f for f in (bt_run, bt_runs, chain_bytes)}


# --- the probes: each graded cell's cases, asked of the student's kernel and decided here -------------
from vmkit.asm import disassemble
from vmkit.grading.checks import check, check_equal
from vmkit.grading.lab3 import check_like_native
from .probing import Probe, all_of, lab_setup, same_answers

SETUP = lab_setup("lab3_binary_translation")    # GUEST (through guest()): the grader's own
guest = SETUP["guest"]
WAITING = "call start_timer\nmov ecx, 20000\n.spin: loop .spin\n"       # IRQ0 waits for the IF


def rules_asked(names, chain=False):
    """The ask for a part's rules: each guest under vmkit's translator with the student's rules (never
    vmkit's own) in place of vmkit's, and the student's chain rule if `chain`."""
    table = ", ".join(f"{name!r}: vmkit.grading.yours({name}, {name!r})" for name in names)
    return (f"vmkit.grading.lab3.bt_cases(cases, {{{table}}}"
            + (", vmkit.grading.yours(chain, 'chain'))" if chain else ")"))


def natively(sources):
    """How each guest ends on the bare machine, and under vmkit's own translator: bt_runs."""
    return bt_runs(sources)


def ran(facts, what):
    check(isinstance(facts, dict) and "error" not in facts, f"{what} runs to its end",
          got=facts.get("error") if isinstance(facts, dict) else facts)


def like_native(got, want, what, hint=None, misses=False):
    ran(got, what)
    check_like_native(got, want["native"], what, hint=hint)
    if misses:
        check(got["cache_misses"] <= want["bt"]["cache_misses"], f"{what}: cache misses",
              expected=f"at most {want['bt']['cache_misses']}, as with vmkit's chain rule", got=got["cache_misses"],
              hint="a chained exit must jump into the target's translation, not back to its own call-out")


def popf_critical_kept(got, what, hint=None):
    """popf_critical under a student's rules: no update lost, the counter right, no rewritten instruction trapped."""
    ran(got, what)
    counts = {line.split(":")[0]: line.split(":")[1].strip() for line in got["serial"].splitlines() if ":" in line}
    check_equal([counts.get("lost updates"), counts.get("shared counter") == counts.get("expected")], ["0", True],
                what=f"{what}: (lost updates, shared counter == expected)",
                hint=hint or "popf with IF clear must keep the timer out of the section")
    check_equal(got["rewritten_traps"], [], what=f"{what}: kernel cli/sti/pushfd/popfd that trapped")


def runs_judge(whats, hints=None, misses=False, popf=()):
    """A judge: each run like the bare machine (`whats` names them), then the popf_critical runs."""
    hints = hints or {}
    def judge(answers, expected, sources):
        check(isinstance(answers, list) and len(answers) == len(sources), "one run per guest", got=answers)
        for what, got, want in zip(whats, answers, expected):
            like_native(got, want, what, hints.get(what), misses)
        for what, got in zip(popf, answers[len(whats):]):
            popf_critical_kept(got, what)
    return judge


# Part 1: cli, sti
PART1_VISIBLE = {
    "3 rounds of cli; sti": guest("mov ecx, 3\n.again:\ncli\nsti\nloop .again\ncli\nreport 'ecx', ecx"),
    "1000 rounds of cli; sti": guest("mov ecx, 1000\n.again:\ncli\nsti\nloop .again\ncli\nreport 'ecx', ecx"),
    "pushf after cli and after sti": guest("cli\npushf\npop ebx\nsti\npushf\npop esi\ncli\nand ebx, 0x200\n"
                                           "and esi, 0x200\nreport 'IF after cli', ebx\nreport 'IF after sti', esi"),
    "a kernel that waits for three timer ticks": guest("call start_timer\n.wait:\nsti\ncmp dword [ticks], 3\njb .wait\n"
                                                       "cli\nreport 'ticks', dword [ticks]", divisor=24)}


def part1_visible(answers, expected, sources):
    runs_judge(list(PART1_VISIBLE))(answers, expected, sources)
    check(answers[1]["traps"] == answers[0]["traps"], "1000 rounds of cli; sti cost the VMM no more traps than 3 rounds",
          expected=f"{answers[0]['traps']} traps (lidt and the out instructions)", got=f"{answers[1]['traps']} traps",
          hint="a rule emits in-cache code; a call-out is a trap")


PART1_HIDDEN = {
        "cmp, then cli or sti, then a branch": ("cli and sti must leave the guest's flags alone: a mov to the data page "
                                                "does, and, or, btr and bts do not", """
            mov eax, 1
            cmp eax, 2
            cli
            setc bl
            sets bh
            setz cl
            setp ch
            report "after cmp 1, 2; cli: CF, SF", ebx
            report "after cmp 1, 2; cli: ZF, PF", ecx
            mov eax, 7
            cmp eax, 7
            sti
            jz .equal
            report "jz after sti not taken", eax
        .equal:
            xor ecx, ecx
            cmp ecx, 1
            cli
            jb .below
            report "jb after cli not taken", ecx
        .below:
            mov edx, 0x7fffffff
            add edx, 1
            sti
            jo .overflow
            report "jo after sti not taken", edx
        .overflow:
            cli"""),
        "IOPL 3 kept across cli and sti": ("cli and sti change the virtual IF only; VIOPL beside it holds the guest's IOPL", """
            push 0x3002
            popf
            cli
            sti
            cli
            pushf
            pop eax
            and eax, 0x3200
            report "IOPL and IF after popf 0x3002; cli; sti; cli", eax
            sti
            pushf
            pop eax
            and eax, 0x3200
            report "then sti", eax
            cli"""),
        "sti while the timer's interrupt waits": ("after sti, u.interrupt_window(): the waiting interrupt comes right after the "
                                                  "next instruction, not at the VMM's next timer tick", WAITING + """
            sti
            mov ebx, [ticks]
            mov esi, [ticks]
            cli
            report "ticks right after sti", ebx
            report "ticks one instruction later", esi
            mov eax, [first_eip]
            sub eax, start
            report "the interrupt came at start +", eax"""),
}

# Part 2: pushfd, popfd
PART2_VISIBLE = {
    "pushf after cli and after sti": guest("mov eax, 1\ncmp eax, 2\ncli\npushf\npop ebx\nsti\nxor eax, eax\npushf\n"
                                           "pop esi\ncli\nand ebx, 0x0ED5\nand esi, 0x0ED5\n"
                                           "report 'cmp 1, 2; cli; pushf', ebx\nreport 'xor; sti; pushf', esi"),
    "popf with IF off, then on": guest("mov edi, esp\npush 0x2\npopf\npushf\npop ebx\npush 0x202\npopf\npushf\n"
                                       "pop esi\ncli\nand ebx, 0x200\nand esi, 0x200\nsub edi, esp\n"
                                       "report 'IF after popf 0x2', ebx\nreport 'IF after popf 0x202', esi\n"
                                       "report 'esp moved by', edi")}
PART2_HIDDEN = {
        "IOPL through popf and pushf": ("popf puts the word's IOPL bits in VIOPL; pushf puts VIOPL into the pushed word", """
            push 0x3202
            popf
            pushf
            pop eax
            and eax, 0x3200
            report "pushf after popf 0x3202: IOPL and IF", eax
            push 0x1002
            popf
            pushf
            pop eax
            and eax, 0x3200
            report "pushf after popf 0x1002: IOPL and IF", eax"""),
        "the arithmetic flags through popf": ("popf must set the real arithmetic flags from the word: a real popfd does", """
            xor eax, eax
            push 0x8D7
            popf
            setc bl
            setz bh
            sets cl
            seto ch
            report "after popf 0x8d7: CF, ZF", ebx
            report "after popf 0x8d7: SF, OF", ecx
            pushf
            pop eax
            and eax, 0xFD5
            report "pushf after popf 0x8d7", eax
            mov eax, 1
            push 0x202
            popf
            jz .zero
            report "popf 0x202 cleared ZF", eax
        .zero:
            cli"""),
        "the flags after pushf": ("the real flags after pushf must be those before it: keep them around the and/or", """
            mov eax, 1
            cmp eax, 2
            pushf
            setc bl
            sets bh
            setz cl
            report "after cmp 1, 2; pushf: CF, SF", ebx
            report "after cmp 1, 2; pushf: ZF", ecx
            popf
            xor eax, eax
            pushf
            jnz .nonzero
            report "after xor; pushf: jnz not taken", eax
        .nonzero:
            popf"""),
        "registers and the stack across pushf and popf": ("keep EAX in SAVED_EAX while you use it; pushf moves ESP down by 4, "
                                                          "popf up by 4, no more", """
            mov eax, 0x12345678
            mov ebx, esp
            cli
            pushf
            pushf
            sti
            popf
            popf
            report "eax after pushf, pushf, popf, popf", eax
            sub ebx, esp
            report "esp moved by", ebx
            mov eax, 0xCAFEF00D
            pushf
            pop ecx
            report "eax after pushf", eax
            push ecx
            popf
            report "eax after popf", eax
            cli"""),
        "popf turns interrupts on while the timer's interrupt waits": ("a popf that turns the IF on calls u.interrupt_window(), "
                                                                       "as sti does", WAITING + """
            push 0x202
            popf
            nop
            nop
            mov esi, [ticks]
            cli
            report "ticks two instructions after popf 0x202", esi"""),
}
POPF_VARIANTS = ((3000, 1, 40), (1500, 5, 60), (600, 40, 300))
POPF_HIDDEN = [f"popf_critical with ROUNDS={r}, a section of {w} loop(s), timer divisor {d}" for r, w, d in POPF_VARIANTS]

# Part 3: chain
CHAIN_ASKED = {"bytes": "vmkit.grading.answer_cases(chain, cases, shape=lambda code: list(bytes(code)))",
               "runs": "vmkit.grading.lab3.bt_cases(cases, {}, vmkit.grading.yours(chain, 'chain'))"}
CHAIN_VISIBLE = [[0xFFD00100, 0xFFD00180], [0xFFD00000, 0xFFD00005], [0xFFD01234, 0xFFD40000]]
CHAIN_HIDDEN = [[0xFFD00200, 0xFFD00100], [0xFFD00040, 0xFFD00040 - 0x25], [0xFFD2F000, 0xFFD00010],
                [0xFFD00010, 0xFFFFF000], [0xFFEFFFF0, 0xFFD00000], [0xFFD00100, 0xFFD00105], [0xFFD00777, 0xFFD00777]]
FORWARDS = guest("mov eax, 3\njmp .a\n.b:\nadd eax, eax\njmp .c\n.a:\nadd eax, 4\njmp .b\n.c:\nout DEBUG_EXIT, al")


def decoded(code, site):
    """What the CPU makes of `code` at `site`: [mnemonic, size, where it lands]."""
    if not isinstance(code, list):
        return code
    insns = disassemble(bytes(code), site)
    if len(insns) != 1 or insns[0].mnemonic != "jmp":
        return f"not one jmp: {bytes(code).hex(' ')}"
    return ["jmp", len(code), int(insns[0].op_str, 16)]


def chain_visible(answers, expected, cases):
    same_answers("chain(site, target) decoded at site", describe=lambda c: f"chain({c[0]:#x}, {c[1]:#x})",
                 hint="the part's spec: JMP rel32 in the SDM (vol. 2A): the displacement counts from the next "
                      "instruction")([decoded(code, site) for code, (site, _) in zip(answers["bytes"], cases["bytes"])],
                                    expected["bytes"], cases["bytes"])
    check(isinstance(answers["runs"], list) and len(answers["runs"]) == 1, "one run", got=answers["runs"])
    got, = answers["runs"]
    ran(got, "a kernel that jumps forwards")
    check_equal(got["exit_code"], expected["runs"][0]["native"]["exit_code"], what="the exit code, against the bare machine")
    check(got["chained_exits"] >= 3, "its exits were chained", expected="3 or more chained exits", got=got["chained_exits"])


PART3_HIDDEN = {
        "nested loops": ("a loop's back edge is a jump backwards in the cache", """
            xor eax, eax
            mov ebx, 20
        .outer:
            mov ecx, 30
        .inner:
            add eax, ecx
            loop .inner
            dec ebx
            jnz .outer
            report "sum", eax"""),
        "a sieve of Eratosthenes": ("every exit, forwards or backwards, must land on the first byte of its target's "
                                    "translation", """
            mov edi, sieve
            mov ecx, 1000
            xor eax, eax
            rep stosb
            mov ebx, 2
            xor esi, esi
        .next:
            cmp byte [sieve + ebx], 0
            jne .composite
            inc esi
            mov edx, ebx
            add edx, ebx
        .mark:
            cmp edx, 1000
            jae .composite
            mov byte [sieve + edx], 1
            add edx, ebx
            jmp .mark
        .composite:
            inc ebx
            cmp ebx, 1000
            jb .next
            report "primes below 1000", esi"""),
        "calls in a loop": ("a call is an exit too: it pushes the guest's return address, then jumps", """
            mov ecx, 200
            xor eax, eax
        .again:
            call .twice
            test ecx, 1
            jz .even
            inc eax
        .even:
            loop .again
            report "result", eax
            jmp .done
        .twice:
            add eax, eax
            and eax, 0xFFFF
            ret
        .done:"""),
}


def chain_hidden(answers, expected, cases):
    same_answers("chain(site, target)", describe=lambda c: f"chain({c[0]:#x}, {c[1]:#x})",
                 hint="a jump backwards has a negative displacement: 32-bit two's complement")(
        answers["bytes"], expected["bytes"], cases["bytes"])
    runs_judge(list(PART3_HIDDEN), {what: hint for what, (hint, _) in PART3_HIDDEN.items()}, misses=True)(
        answers["runs"], expected["runs"], cases["runs"])


# Part 4: the whole table
IRQSAVE = guest("""
        call start_timer
        mov ecx, 20000
    .spin:
        loop .spin                 ; the timer's interrupt now waits for the IF
        mov ebx, 1
        sti                        ; it comes after the next instruction
        nop
        mov esi, [ticks]
        report "ticks after sti; nop", esi
        cmp ebx, 2                 ; CF 1, ZF 0, SF 1
        pushf                      ; local_irq_save with IF 1
        cli
        je .wrong                  ; the flags of the cmp survive the rewritten pushf and cli
        jnc .wrong
        pop edx
        and edx, 0x32C1
        report "the saved IOPL, IF, SF, ZF, CF", edx
        mov ecx, 20000
    .spin2:
        loop .spin2                ; another interrupt waits
        push 0x202                 ; local_irq_restore: IF 1 again
        popf
        nop
        nop
        mov esi, [ticks]
        report "ticks after the restore", esi
        push 0x3002                ; IOPL 3, interrupts off
        popf
        sti
        cli
        pushf
        pop eax
        and eax, 0x3200
        report "IOPL and IF after popf 0x3002; sti; cli", eax
        push 0x8C3                 ; the arithmetic flags through popf
        popf
        setc al
        setz ah
        report "CF, ZF after popf 0x8c3", eax
        jmp .done
    .wrong:
        report "a branch after pushf and cli went the wrong way", ebx
    .done:
        cli
    """)
PART4_VISIBLE = {"the holes kernel": vmkit.guests.source("holes"), "the rings kernel": vmkit.guests.source("rings")}
PART4_HIDDEN = {"the holes kernel": vmkit.guests.source("holes"), "the rings kernel": vmkit.guests.source("rings"),
                "the same_ring kernel": vmkit.guests.source("same_ring"),
                "the trap_density kernel": vmkit.guests.source("trap_density"),
                "a kernel that saves and restores its flags around critical sections": IRQSAVE}
PART4_HINTS = {"a kernel that saves and restores its flags around critical sections":
               "each line is one of your rules at work: the ticks are the interrupt windows of sti and popf, the branch "
               "is pushf and cli leaving the flags alone, IOPL and IF are the virtual flags, CF and ZF a popf's "
               "arithmetic flags"}


def popf_sources(variants):
    return [vmkit.guests.source("popf_critical", ROUNDS=r, WORK=w, PIT_DIVISOR=d) for r, w, d in variants]


PROBES = {
    "part1_visible": Probe(rules_asked(("cli", "sti")), list(PART1_VISIBLE.values()), natively, part1_visible),
    "part1_hidden": Probe(rules_asked(("cli", "sti")), [guest(body) for _, body in PART1_HIDDEN.values()], natively,
                          runs_judge(list(PART1_HIDDEN), {what: hint for what, (hint, _) in PART1_HIDDEN.items()})),
    "part2_visible": Probe(rules_asked(("pushfd", "popfd")),
                           list(PART2_VISIBLE.values()) + [vmkit.guests.source("popf_critical")],
                           lambda sources: natively(sources[:-1]),
                           runs_judge(list(PART2_VISIBLE), popf=["popf_critical under your rules"])),
    "part2_hidden": Probe(rules_asked(("pushfd", "popfd")),
                          [guest(body) for _, body in PART2_HIDDEN.values()] + popf_sources(POPF_VARIANTS),
                          lambda sources: natively(sources[:len(PART2_HIDDEN)]),
                          runs_judge(list(PART2_HIDDEN), {what: hint for what, (hint, _) in PART2_HIDDEN.items()},
                                     popf=POPF_HIDDEN), timeout=120),
    "part3_visible": Probe(CHAIN_ASKED, {"bytes": CHAIN_VISIBLE, "runs": [FORWARDS]},
                           {"bytes": lambda cases: [["jmp", 5, target] for _, target in cases], "runs": natively},
                           chain_visible),
    "part3_hidden": Probe(CHAIN_ASKED, {"bytes": CHAIN_HIDDEN,
                                        "runs": [guest(body, data="sieve: times 1000 db 0")
                                                 for _, body in PART3_HIDDEN.values()]},
                          {"bytes": chain_bytes, "runs": natively}, chain_hidden),
    "part4_visible": Probe("vmkit.grading.lab3.table_cases(cases, RULES)", list(PART4_VISIBLE.values()), natively,
                           runs_judge(list(PART4_VISIBLE))),
    "part4_hidden": Probe("vmkit.grading.lab3.table_cases(cases, RULES, vmkit.grading.yours(chain, 'chain'))",
                          list(PART4_HIDDEN.values()) + [vmkit.guests.source("popf_critical")],
                          lambda sources: natively(sources[:-1]),
                          runs_judge(list(PART4_HIDDEN), PART4_HINTS, misses=True, popf=["popf_critical"]),
                          timeout=120),
}

# vmkit's own rewrite rules and chain, withheld while the kernel answers: a student's rule that
# calls one (through RULES or by name) earns nothing.
RULES_WITHHELD = {"vmkit.vmm.translator": ["rewrite_cli", "rewrite_sti", "rewrite_pushfd", "rewrite_popfd", "chain_jump"]}
for _probe in PROBES.values():
    _probe.withhold = RULES_WITHHELD
