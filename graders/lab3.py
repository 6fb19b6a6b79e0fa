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
from vmkit.grading.checks import check, check_equal, check_facts
from vmkit.grading.lab3 import check_like_native
from .probing import Probe, all_of, lab_setup, same_answers

SETUP = lab_setup("lab3_binary_translation")    # GUEST (through guest()): the grader's own
guest = SETUP["guest"]
WAITING = SETUP["WAITING"]                      # starts the timer; IRQ0 then waits for the IF


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
# what -> (hint, source): each rule of the part's spec has a visible case; the hints name the rule
FLAGS_AFTER = "lahf\nseto al\nand eax, 0xFFFF\n"       # AH: SF, ZF, AF, PF, CF; AL: OF
PART1_VISIBLE = {
    "3 rounds of cli; sti": (None, guest("mov ecx, 3\n.again:\ncli\nsti\nloop .again\ncli\nreport 'ecx', ecx")),
    "1000 rounds of cli; sti": (None, guest("mov ecx, 1000\n.again:\ncli\nsti\nloop .again\ncli\nreport 'ecx', ecx")),
    "pushf after cli and after sti": (None, guest(
        "cli\npushf\npop ebx\nsti\npushf\npop esi\ncli\nand ebx, 0x200\nand esi, 0x200\n"
        "report 'IF after cli', ebx\nreport 'IF after sti', esi")),
    "a kernel that waits for three timer ticks": (None, guest(
        "call start_timer\n.wait:\nsti\ncmp dword [ticks], 3\njb .wait\ncli\nreport 'ticks', dword [ticks]", divisor=24)),
    "the flags after cmp, then cli": (
        "CLI changes no flag but IF (SDM vol. 2A, CLI): your cli runs between the guest's cmp and what reads "
        "its flags, so every real flag must come out of it as it went in",
        guest("mov eax, 1\ncmp eax, 2\ncli\n" + FLAGS_AFTER + "report 'cmp 1, 2; cli; lahf, seto', eax\n"
              "mov eax, 0x80000000\ncmp eax, 1\ncli\n" + FLAGS_AFTER + "report 'cmp 0x80000000, 1; cli; lahf, seto', eax")),
    "IOPL 3 kept across cli": (
        "cli changes the virtual IF only: every other field of the data page (VIOPL beside VIF holds the guest's "
        "IOPL) stays as it was",
        guest("push 0x3202\npopf\ncli\npushf\npop eax\nand eax, 0x3200\n"
              "report 'IOPL and IF after popf 0x3202; cli', eax")),
    "sti while the timer's interrupt waits": (
        "STI (SDM vol. 2B): with IF 0 before it, a waiting interrupt is taken after the instruction that follows "
        "sti, neither before that instruction nor later; u.interrupt_window says where the test goes",
        guest(WAITING + "sti\nmov ebx, [ticks]\nmov esi, [ticks]\ncli\n"
              "report 'ticks right after sti', ebx\nreport 'ticks one instruction later', esi")),
}


def part1_visible(answers, expected, sources):
    runs_judge(list(PART1_VISIBLE), {what: hint for what, (hint, _) in PART1_VISIBLE.items() if hint})(
        answers, expected, sources)
    check(answers[1]["traps"] == answers[0]["traps"], "1000 rounds of cli; sti cost the VMM no more traps than 3 rounds",
          expected=f"{answers[0]['traps']} traps (lidt and the out instructions)", got=f"{answers[1]['traps']} traps",
          hint="a rule emits in-cache code; a call-out is a trap")


PART1_HIDDEN = {
        "cmp, then cli or sti, then a branch": ("CLI and STI change no flag but IF (SDM vol. 2A, CLI; vol. 2B, STI): "
                                                "the guest branches on flags set before them", """
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
        "IOPL 1 kept across sti and cli": ("cli and sti change the virtual IF only; VIOPL beside it holds the guest's "
                                           "IOPL", """
            push 0x1002
            popf
            sti
            cli
            sti
            pushf
            pop eax
            and eax, 0x3200
            report "IOPL and IF after popf 0x1002; sti; cli; sti", eax
            cli
            pushf
            pop eax
            and eax, 0x3200
            report "then cli", eax"""),
        "sti, then a jump, while the timer's interrupt waits": ("STI (SDM vol. 2B): with IF 0 before it, a waiting "
                                                               "interrupt is taken after the next instruction, even "
                                                               "when that instruction is a jump", WAITING + """
            sti
            jmp .on
            nop
        .on:
            mov esi, [ticks]
            cli
            report "ticks after sti; jmp", esi
            mov eax, [first_eip]
            sub eax, start
            report "the interrupt came at start +", eax"""),
        "sti; cli while the timer's interrupt waits": ("STI (SDM vol. 2B): no interrupt can be recognized if CLI "
                                                       "immediately follows STI", WAITING + """
            sti
            cli
            mov ebx, [ticks]
            sti
            nop
            cli
            mov esi, [ticks]
            report "ticks after sti; cli", ebx
            report "ticks after sti; nop; cli", esi"""),
}

# Part 2: pushfd, popfd
PART2_VISIBLE = {
    "pushf after cli and after sti": (None, guest(
        "mov eax, 1\ncmp eax, 2\ncli\npushf\npop ebx\nsti\nxor eax, eax\npushf\npop esi\ncli\nand ebx, 0x0ED5\n"
        "and esi, 0x0ED5\nreport 'cmp 1, 2; cli; pushf', ebx\nreport 'xor; sti; pushf', esi")),
    "popf with IF off, then on": (None, guest(
        "mov edi, esp\npush 0x2\npopf\npushf\npop ebx\npush 0x202\npopf\npushf\npop esi\ncli\nand ebx, 0x200\n"
        "and esi, 0x200\nsub edi, esp\nreport 'IF after popf 0x2', ebx\nreport 'IF after popf 0x202', esi\n"
        "report 'esp moved by', edi")),
    "IOPL through popf, then pushf": (
        "PUSHF pushes EFLAGS as the guest's own machine holds them (SDM vol. 2B, PUSHF), with the guest's IOPL and "
        "IF; a popfd at the guest's CPL 0 sets both from the word (SDM vol. 2B, POPF)",
        guest("push 0x3202\npopf\npushf\npop eax\nand eax, 0x3200\nreport 'pushf after popf 0x3202: IOPL and IF', eax\n"
              "push 0x2\npopf\npushf\npop eax\nand eax, 0x3200\nreport 'pushf after popf 0x2: IOPL and IF', eax")),
    "the arithmetic flags through popf": (
        "a popfd at CPL 0 sets every flag but RF, VIP, VIF and VM from the word (SDM vol. 2B, POPF): CF, PF, AF, "
        "ZF, SF and OF included",
        guest("xor eax, eax\npush 0x8D7\npopf\n" + FLAGS_AFTER + "report 'popf 0x8d7; lahf, seto', eax\n"
              "mov eax, -1\npush 0x2\npopf\n" + FLAGS_AFTER + "report 'popf 0x2; lahf, seto', eax")),
}
PART2_HIDDEN = {
        "IOPL through popf and pushf": ("PUSHF shows the guest's IOPL and IF; a popfd at CPL 0 sets both from the "
                                        "word (SDM vol. 2B, PUSHF and POPF)", """
            push 0x1202
            popf
            pushf
            pop eax
            and eax, 0x3200
            report "pushf after popf 0x1202: IOPL and IF", eax
            push 0x2002
            popf
            cli
            pushf
            pop eax
            and eax, 0x3200
            report "pushf after popf 0x2002; cli: IOPL and IF", eax"""),
        "the arithmetic flags through popf": ("a popfd at CPL 0 sets the arithmetic flags from the word (SDM vol. 2B, "
                                              "POPF)", """
            xor eax, eax
            push 0x893
            popf
            setc bl
            setz bh
            sets cl
            seto ch
            report "after popf 0x893: CF, ZF", ebx
            report "after popf 0x893: SF, OF", ecx
            pushf
            pop eax
            and eax, 0xFD5
            report "pushf after popf 0x893", eax
            mov eax, 1
            cmp eax, 1
            push 0x202
            popf
            jz .zero
            report "popf 0x202 cleared ZF", eax
        .zero:
            cli"""),
        "the flags after pushf": ("PUSHF changes no flag (SDM vol. 2B, PUSHF): the guest may branch after it on "
                                  "flags set before it", """
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
        "registers and the stack across pushf and popf": ("pushfd and popfd change no register but ESP, which moves "
                                                          "by 4, down for pushfd and up for popfd", """
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
        "popf turns interrupts on while the timer's interrupt waits": ("a popfd that sets IF lets a waiting interrupt "
                                                                       "in as soon as it is done: the delay of one "
                                                                       "instruction is STI's (SDM vol. 2B, STI), "
                                                                       "POPF has none", WAITING + """
            push 0x202
            popf
            mov ebx, [ticks]
            mov esi, [ticks]
            cli
            report "ticks right after popf 0x202", ebx
            report "ticks one instruction later", esi"""),
}
POPF_VARIANTS = ((3000, 1, 40), (1500, 5, 60), (600, 40, 300))
POPF_HIDDEN = [f"popf_critical with ROUNDS={r}, a section of {w} loop(s), timer divisor {d}" for r, w, d in POPF_VARIANTS]

# Part 3: chain
CHAIN_ASKED = {"bytes": "vmkit.grading.lab3.chain_cases(chain, cases)",
               "runs": "vmkit.grading.lab3.bt_cases(cases, {}, vmkit.grading.yours(chain, 'chain'))"}
CHAIN_VISIBLE = [[0xFFD00100, 0xFFD00180], [0xFFD00000, 0xFFD00005], [0xFFD01234, 0xFFD40000],
                 [0xFFD00200, 0xFFD00100], [0xFFD2F000, 0xFFD00010], [0xFFD00777, 0xFFD00777]]
CHAIN_HIDDEN = [[0xFFD00200, 0xFFD00100], [0xFFD00040, 0xFFD00040 - 0x25], [0xFFD2F000, 0xFFD00010],
                [0xFFD00010, 0xFFFFF000], [0xFFEFFFF0, 0xFFD00000], [0xFFD00100, 0xFFD00105], [0xFFD00777, 0xFFD00777]]
FORWARDS = guest("mov eax, 3\njmp .a\n.b:\nadd eax, eax\njmp .c\n.a:\nadd eax, 4\njmp .b\n.c:\nout DEBUG_EXIT, al")
BACKWARDS = guest("xor eax, eax\nmov ecx, 50\n.again:\nadd eax, ecx\nloop .again\nreport 'sum', eax")


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
                 hint="the part's spec: JMP rel32 in the SDM (vol. 2A, JMP): where the displacement counts from, "
                      "how it is stored, and what a target before the site makes of it")(
        [decoded(code, site) for code, (site, _) in zip(answers["bytes"], cases["bytes"])],
        expected["bytes"], cases["bytes"])
    check(isinstance(answers["runs"], list) and len(answers["runs"]) == 2, "two runs", got=answers["runs"])
    forwards, backwards = answers["runs"]
    ran(forwards, "a kernel that jumps forwards")
    check_equal(forwards["exit_code"], expected["runs"][0]["native"]["exit_code"],
                what="a kernel that jumps forwards: the exit code, against the bare machine")
    check(forwards["chained_exits"] >= 3, "its exits were chained", expected="3 or more chained exits",
          got=forwards["chained_exits"])
    like_native(backwards, expected["runs"][1], "a loop whose back edge is chained", misses=True)


# Part 4: adaptive translation (the open part)
HOT_AFTER_VISIBLE = 4
ADAPT_VISIBLE = guest("""
        cli                        ; boot: each of these runs once (cold)
        pushf
        pop ebx
        push ebx
        popf
        mov ecx, 200
    .round:                        ; a hot loop: local_irq_save, work, local_irq_restore
        pushf
        cli
        add eax, ecx
        popf
        loop .round
        sti
        report "sum", eax
        cli""")
ADAPT_HIDDEN = {
    "the same mnemonic hot in a loop and cold after it": (3, """
        mov ecx, 100
    .round:
        cli
        inc eax
        sti
        loop .round
        cli                        ; the same mnemonics at other sites: each runs once
        pushf
        pop ebx
        sti
        cli
        and ebx, 0x200
        report "IF in the flags after the loop", ebx
        report "rounds", eax"""),
    "a hot site reached through two translations": (2, """
        mov ecx, 60
        xor eax, eax
        jmp .middle                ; the first round enters the loop in its middle: two units hold the sites
    .top:
        inc eax
    .middle:
        pushf
        cli
        add eax, 2
        popf
        loop .top
        report "eax", eax"""),
    "every rule hot, IOPL and the arithmetic flags kept": (5, """
        push 0x3002
        popf
        mov ecx, 80
        xor esi, esi
    .round:
        cmp ecx, 40                ; CF while ecx < 40
        pushf
        cli
        pop ebx
        push ebx
        popf
        sti
        adc esi, 0
        loop .round
        and ebx, 0x3200
        report "IOPL and IF saved in the last round", ebx
        report "carries", esi
        cli"""),
    "sites that stay cold": (7, """
        mov ecx, 6                 ; six rounds, fewer than it takes to get hot
    .round:
        cli
        pushf
        popf
        sti
        loop .round
        report "ecx", ecx
        cli"""),
}
ADAPT_ASKED = "vmkit.grading.lab3.adaptive_cases(cases, vmkit.grading.yours(adaptive, 'adaptive')"


def callouts_expected(cases):
    """Each guest on the bare machine, and its cli, sti, pushfd and popfd counted by site under vmkit's translator
    with no rule at all (each one a call-out every time it runs): {"native", "ran"}."""
    from vmkit.grading.lab3 import site_counts
    facts = []
    for source in cases["guests"]:
        native = vmkit.run(source, max_instructions=BT_MAX_INSTRUCTIONS, timeout=30)
        machine = BinaryTranslation(vmkit.assemble(source), rules={}, max_instructions=BT_MAX_INSTRUCTIONS, timeout=30)
        facts.append({"native": ending(native), "ran": site_counts(machine.run())})
    return facts


def adapted(whats):
    """A judge: each guest like the bare machine, and each site's call-outs min(times it ran, hot_after)."""
    def judge(answers, expected, cases):
        check(isinstance(answers, list) and len(answers) == len(expected), "one run per guest", got=answers)
        hot_after = cases["hot_after"] if isinstance(cases, dict) else None
        for what, got, want, after in zip(whats, answers, expected, hot_after if isinstance(hot_after, list)
                                           else [hot_after] * len(whats)):
            ran(got, what)
            check_facts(got, want["native"], f"{what}, against the bare machine",
                        fields=("serial", "exit_code", "halted", "shutdown"),
                        hints={"serial": "a call-out and its retranslation must do what the instruction does on the "
                                         "bare machine"})
            wanted = {site: min(times, after) for site, times in want["ran"].items()}
            got_counts = got.get("callouts", {})
            wrong = {site: [got_counts.get(site, 0), wanted[site], want["ran"][site]] for site in wanted
                     if got_counts.get(site, 0) != wanted[site]}
            wrong.update({site: [n, 0, 0] for site, n in got_counts.items() if site not in wanted})
            check(not wrong, f"{what}, hot_after={after}: each site's call-outs",
                  expected="min(times it ran, hot_after) call-outs for each site",
                  got="; ".join(f"{site}: {n} call-outs, expected {w} (it ran {r} times)"
                                for site, (n, w, r) in list(wrong.items())[:4]),
                  hint="the policy is per site (a guest address): every site calls out until it has called out "
                       "hot_after times, then never again, however many translations hold it; a site that called "
                       "out fewer times is left as it was")
    return judge


def adapt_cases(pairs):
    return {"hot_after": [after for after, _ in pairs], "guests": [guest(body) for _, body in pairs]}


PROBES_PART4 = {
    "part4_visible": Probe(ADAPT_ASKED + ")", {"hot_after": HOT_AFTER_VISIBLE, "guests": [ADAPT_VISIBLE]},
                           callouts_expected, adapted(["the visible kernel"])),
    "part4_hidden": Probe(ADAPT_ASKED + ", vmkit.grading.yours(chain, 'chain'))", adapt_cases(list(ADAPT_HIDDEN.values())),
                          callouts_expected, adapted(list(ADAPT_HIDDEN)), timeout=120),
}


def popf_sources(variants):
    return [vmkit.guests.source("popf_critical", ROUNDS=r, WORK=w, PIT_DIVISOR=d) for r, w, d in variants]


PROBES = {
    "part1_visible": Probe(rules_asked(("cli", "sti")), [source for _, source in PART1_VISIBLE.values()], natively,
                           part1_visible),
    "part1_hidden": Probe(rules_asked(("cli", "sti")), [guest(body) for _, body in PART1_HIDDEN.values()], natively,
                          runs_judge(list(PART1_HIDDEN), {what: hint for what, (hint, _) in PART1_HIDDEN.items()})),
    "part2_visible": Probe(rules_asked(("pushfd", "popfd")),
                           [source for _, source in PART2_VISIBLE.values()] + [vmkit.guests.source("popf_critical")],
                           lambda sources: natively(sources[:-1]),
                           runs_judge(list(PART2_VISIBLE), {what: hint for what, (hint, _) in PART2_VISIBLE.items() if hint},
                                      popf=["popf_critical under your rules"])),
    "part2_hidden": Probe(rules_asked(("pushfd", "popfd")),
                          [guest(body) for _, body in PART2_HIDDEN.values()] + popf_sources(POPF_VARIANTS),
                          lambda sources: natively(sources[:len(PART2_HIDDEN)]),
                          runs_judge(list(PART2_HIDDEN), {what: hint for what, (hint, _) in PART2_HIDDEN.items()},
                                     popf=POPF_HIDDEN), timeout=120),
    "part3_visible": Probe(CHAIN_ASKED, {"bytes": CHAIN_VISIBLE, "runs": [FORWARDS, BACKWARDS]},
                           {"bytes": lambda cases: [["jmp", 5, target] for _, target in cases], "runs": natively},
                           chain_visible),
    **PROBES_PART4,
}

# vmkit's own rewrite rules and chain, withheld while the kernel answers: a student's rule that
# calls one (through RULES or by name) earns nothing.
RULES_WITHHELD = {"vmkit.vmm.translator": ["rewrite_cli", "rewrite_sti", "rewrite_pushfd", "rewrite_popfd", "chain_jump"]}
for _probe in PROBES.values():
    _probe.withhold = RULES_WITHHELD
