"""Lab 4 (paravirtualization): guests under vmkit's own hypervisor and hypercalls, the paravirtualized
log_append of part 3 as the reference writes it, and part 4's console scripts, judged by their rules."""
from vmkit.asm import assemble
from vmkit.grading.lab4 import PV_MAX_INSTRUCTIONS, pv_facts
from vmkit.xen import Paravirt

# Part 3: log_append with the mask byte for cli and sti, and the pending check after the copy.
PV_LOG_APPEND = r"""
log_append:
    pushad
    mov ebx, [shared_info]
    mov byte [ebx + UPCALL_MASK], 1
    mov edx, [log_head]
.copy:
    lodsb
    mov [log + edx], al
    inc edx
    and edx, LOG_SIZE - 1
    loop .copy
    mov [log_head], edx
    inc dword [records]
    mov byte [ebx + UPCALL_MASK], 0
    cmp byte [ebx + UPCALL_PENDING], 0
    je .done
    xor ebx, ebx
    hypercall __HYPERVISOR_xen_version
.done:
    popad
    ret
"""


def pv_run(source, modules=()):
    """The guest under vmkit's own hypervisor and hypercalls: pv_facts."""
    dom0 = Paravirt(assemble(source), modules=modules, max_instructions=PV_MAX_INSTRUCTIONS, timeout=30)
    return pv_facts(dom0.run())


def pv_runs(cases):
    """pv_run for each [source, modules], in one process."""
    return [pv_run(source, modules) for source, modules in cases]


FACTS = {f.__name__: f for f in (pv_run, pv_runs)}


# --- the probes: each graded cell's cases, asked of the student's kernel and decided here -------------
import vmkit.guests
from vmkit.grading.checks import check, check_equal, check_facts
from vmkit.grading.lab4 import PV_HINTS, ROUTINES, YOURS, check_console, run_facts
from .probing import Probe, lab_setup

SETUP = lab_setup("lab4_paravirt")              # GUEST (through guest() and console_guest()): the grader's own
guest, console_guest = SETUP["guest"], SETUP["console_guest"]
REFERENCE_TIMEOUT = 30                          # vmkit's own hypervisor, in this process: never stopped by a busy machine
HANDLERS_MODULE = "vmkit.xen.hypercalls"


def handlers_asked(*names):
    """The ask for a part's handlers: each run on vmkit's hypercalls with the student's (never vmkit's
    own) in their numbers' places."""
    numbers = {"console_io": 18, "multicall": 13}
    table = ", ".join(f"{numbers[name]}: vmkit.grading.yours({name}, {name!r})" for name in names)
    return f"vmkit.grading.lab4.hypercall_cases(cases, {{{table}}})"


def withhold(*numbers):
    """vmkit's own handlers for `numbers`, withheld while the kernel answers."""
    return {HANDLERS_MODULE: [YOURS[number] for number in numbers]}


def on_xen(cases):
    """run_facts of each [source, modules] on vmkit's own hypervisor and hypercalls, in this process."""
    return [run_facts(source, None, modules, timeout=REFERENCE_TIMEOUT) for source, modules in cases]


def with_routine(routine):
    """expect() for a guest with ROUTINES in it: each run with the reference's routine put there."""
    return lambda sources: [run_facts(source.replace(ROUTINES, routine), timeout=REFERENCE_TIMEOUT)
                            for source in sources]


def ran(facts, what):
    check(isinstance(facts, dict) and "error" not in facts, f"{what} runs to its end",
          got=facts.get("error") if isinstance(facts, dict) else facts)


def against_xen(whats, hints=None):
    """A judge: each run against the same run on vmkit's own code, the first difference explained."""
    def judge(answers, expected, cases):
        check(isinstance(answers, list) and len(answers) == len(expected), "one run per guest", got=answers)
        for what, got, want in zip(whats, answers, expected):
            ran(got, what)
            check_facts(got, want, what, hints=dict(PV_HINTS, **(hints or {})))
    return judge



def runs_of(answers, count):
    check(isinstance(answers, list) and len(answers) == count, f"{count} runs", got=answers)
    return answers


# Part 1: console_io
RESULTS = guest("".join(f"mov ebx, {cmd}\nmov ecx, {count}\nmov edx, text\nhypercall __HYPERVISOR_console_io\n"
                        "call print_hex\nsay 10\n" for cmd, count in
                        (("CONSOLEIO_write", 5), ("CONSOLEIO_write", 0), ("CONSOLEIO_write", -16),
                         ("CONSOLEIO_read", 8), (5, 3))), data='text: db "hello", 10')
PART1_VISIBLE = [[vmkit.guests.source("pv_hello"), []], [RESULTS, []]]


def part1_visible(answers, expected, cases):
    hello, results = runs_of(answers, 2)
    ran(hello, "pv_hello on your console_io")
    check_equal(hello["serial"], expected[0]["serial"], what="what pv_hello printed",
                hint="CONSOLEIO_write: the guest's `count` bytes at `buffer`, on the console "
                     "(Xen's do_console_io, xen/drivers/char/console.c)")
    ran(results, "writes of 5, 0 and -16 bytes, a read, command 5")
    check_equal(results["serial"], expected[1]["serial"], what="what each console_io returned, in hex, after what it wrote",
                hint="the part's spec, a rule for each line: a write succeeds with 0; a negative count is a bad argument "
                     "(EINVAL, ffffffea) and writes nothing; a read succeeds; a command Xen does not have is ENOSYS "
                     "(ffffffda)")


CONSOLE_TEXT = 'text: db "vmkit ", 0xe9, "t", 0xe9, " ", 0xff, 0x00, "xen-3.0-x86_32 console", 10\ntext_len equ $ - text'
WRITE = "mov ebx, CONSOLEIO_write\nmov ecx, {}\nmov edx, {}\nhypercall __HYPERVISOR_console_io\n"
PART1_HIDDEN = {
    "writes of 0, 1 and 40 bytes, some above 0x7f": WRITE.format(0, "text") + WRITE.format(1, "text")
                                                     + WRITE.format("text_len", "text"),
    "CONSOLEIO_read, and a command Xen does not have": "mov ebx, CONSOLEIO_read\nmov ecx, 16\nmov edx, text\n"
                                                       "hypercall __HYPERVISOR_console_io\nmov ebx, 7\nmov ecx, 4\n"
                                                       "mov edx, text\nhypercall __HYPERVISOR_console_io\n"
                                                       + WRITE.format(4, "text"),
    "pointers Xen cannot follow, and counts that are negative ints": WRITE.format(4, 0) + WRITE.format(0x100, 0x3fff80)
                                                                     + WRITE.format(0x80000000, "text")
                                                                     + WRITE.format(-1, "text") + WRITE.format(3, "text + 4"),
}

# Part 2: multicall
VISIBLE_BATCHES = r"""
align 4
mixed:                                  ; multicall_entry: op, result, args[6]
    dd __HYPERVISOR_xen_version, 0x55555555, XENVER_version, 0, 0, 0, 0, 0
    dd 77, 0x55555555, 0, 0, 0, 0, 0, 0
    dd __HYPERVISOR_multicall, 0x55555555, mixed, 1, 0, 0, 0, 0
    dd __HYPERVISOR_console_io, 0x55555555, CONSOLEIO_write, 3, hi, 0, 0, 0
ending:
    dd __HYPERVISOR_sched_op, 0x55555555, SCHEDOP_shutdown, reason, 0, 0, 0, 0
    dd __HYPERVISOR_console_io, 0x55555555, CONSOLEIO_write, 3, hi, 0, 0, 0
reason: dd 4
hi: db "hi", 10"""
VISIBLE_BODY = ("mov ebx, mixed\nmov ecx, 4\nhypercall __HYPERVISOR_multicall\ncall print_hex\nsay 10\n"
                + "".join(f"mov eax, [mixed + {32 * i + 4}]\ncall print_hex\nsay 10\n" for i in range(4))
                + "mov ebx, ending\nmov ecx, 2\nhypercall __HYPERVISOR_multicall\nsay \"not reached\", 10")
PART2_VISIBLE = [[vmkit.guests.source("pv_events"), []], [guest(VISIBLE_BODY, data=VISIBLE_BATCHES), []]]


def part2_visible(answers, expected, cases):
    events, batches = runs_of(answers, 2)
    ran(events, "pv_events on your multicall")
    check_equal(events["serial"], expected[0]["serial"], what="what pv_events printed",
                hint="each entry's hypercall runs through the domain's table, in order (Xen's do_multicall, "
                     "xen/common/multicall.c)")
    check_equal(events["stats"]["multicall_entries"], 3, what="multicall entries counted",
                hint="the part's spec: every entry run is counted in the domain's stats")
    ran(batches, "two batches on your multicall")
    check_equal(batches["serial"], expected[1]["serial"],
                what="what the multicall returned, then each entry's result field, in hex",
                hint="the part's spec, a rule for each line: the multicall returns 0; each entry's result in its own "
                     "field (ffffffda is -ENOSYS, ffffffea -EINVAL: no nesting); no entry after a shutdown")
    check_equal((batches["exit_code"], batches["stats"]["multicall_entries"]),
                (expected[1]["exit_code"], expected[1]["stats"]["multicall_entries"]),
                what="the exit code, and the entries counted", hint="the second batch shuts the domain down in its "
                                                                     "first entry: its second is not run, nor counted")


BATCHES = r"""
align 4
batch:                                  ; multicall_entry: op, result, args[6]
    dd __HYPERVISOR_console_io, 0x55555555, CONSOLEIO_write, 3, word_a, 0, 0, 0
    dd 99, 0x55555555, 1, 2, 3, 4, 5, 0
    dd __HYPERVISOR_xen_version, 0x55555555, XENVER_version, 0, 0, 0, 0, 0
    dd __HYPERVISOR_console_io, 0x55555555, CONSOLEIO_write, 4, 0, 0, 0, 0
nested:
    dd __HYPERVISOR_multicall, 0x55555555, batch, 1, 0, 0, 0, 0
    dd __HYPERVISOR_console_io, 0x55555555, CONSOLEIO_write, 3, word_b, 0, 0, 0
stopping:
    dd __HYPERVISOR_console_io, 0x55555555, CONSOLEIO_write, 7, before, 0, 0, 0
    dd __HYPERVISOR_sched_op, 0x55555555, SCHEDOP_shutdown, reason, 0, 0, 0, 0
    dd __HYPERVISOR_console_io, 0x55555555, CONSOLEIO_write, 6, after, 0, 0, 0
yielding:
    dd __HYPERVISOR_console_io, 0x55555555, CONSOLEIO_write, 3, word_a, 0, 0, 0
    dd __HYPERVISOR_sched_op, 0x55555555, 0, 0, 0, 0, 0, 0     ; SCHEDOP_yield
    dd __HYPERVISOR_console_io, 0x55555555, CONSOLEIO_write, 3, word_b, 0, 0, 0
reason: dd 5
word_a: db "ab", 10
word_b: db "cd", 10
before: db "before", 10
after:  db "after", 10
"""


def entry_results(label, n):
    """Guest code that prints the result field of the first `n` entries at `label`, in hex."""
    return "".join(f"mov eax, [{label} + {i * 32 + 4}]\ncall print_hex\nsay 10\n" for i in range(n))


PART2_HIDDEN = {
    "every entry's result written back into it": "mov ebx, batch\nmov ecx, 4\nhypercall __HYPERVISOR_multicall\n"
                                                 "call print_hex\nsay 10\n" + entry_results("batch", 4),
    "a multicall inside a multicall": "mov ebx, nested\nmov ecx, 2\nhypercall __HYPERVISOR_multicall\n"
                                      + entry_results("nested", 2) + entry_results("batch", 1),
    "a batch that shuts the domain down in its second entry": "mov ebx, stopping\nmov ecx, 3\n"
                                                              "hypercall __HYPERVISOR_multicall\nsay \"not reached\", 10",
    "a batch that yields half-way, and carries on": "mov ebx, yielding\nmov ecx, 3\nhypercall __HYPERVISOR_multicall\n"
                                                    "call print_hex\nsay 10\n" + entry_results("yielding", 3),
    "an empty batch, and a list Xen cannot read": "mov ebx, batch\nxor ecx, ecx\nhypercall __HYPERVISOR_multicall\n"
                                                  "call print_hex\nsay 10\nmov ebx, 0x10\nmov ecx, 2\n"
                                                  "hypercall __HYPERVISOR_multicall\ncall print_hex\nsay 10\n"
                                                  + entry_results("batch", 1),
}
PART2_HINTS = {"serial": "the guest prints what your multicall returned and each entry's result field, in hex "
                         "(ffffffea is -22, -EINVAL); 55555555 is a field nobody wrote"}

# Part 3: log_append, NASM run in the kernel
LOG_APPEND_ASKED = "vmkit.grading.lab4.routine_cases(cases, LOG_APPEND)"
PART3_VISIBLE = [guest('append "first record"\nappend "second"\ncall report', routines=ROUTINES, period=1000000),
                 guest(f'mov ebp, 600\n.again:\nappend "{"x" * 200}"\ndec ebp\njnz .again\ncall report',
                       routines=ROUTINES, period=1000000),
                 guest("mov eax, 0x11111111\nmov ebx, 0x22222222\nmov edx, 0x44444444\nmov edi, 0x55555555\n"
                       "mov ebp, 0x66666666\nmov esi, text\nmov ecx, 3\ncall log_append\nsub esi, text\n"
                       "call show_registers", data='text: db "abc"', routines=ROUTINES)]


def report_numbers(serial):
    """records, ticks, head and expected head from the kernel's last `report` line."""
    line = [line for line in serial.split("\n") if line.startswith("log: ")][-1]
    words = line.replace(",", "").split()
    return {"records": int(words[1]), "ticks": int(words[3]), "head": int(words[7]), "expected": int(words[9])}


def part3_visible(answers, expected, sources):
    two, many, registers = runs_of(answers, 3)
    ran(two, "two appends with your log_append")
    check_equal(two["serial"], "log: 2 records, 0 ticks, head at 18, expected 18\n", what="the report after two appends",
                hint="the copy itself is the native one: only cli and sti change")
    check_equal(two["stats"]["traps"], 0, what="traps into Xen", hint="cli and sti fault in ring 1: write the mask byte")
    check_equal(two["upcall_mask"], 0, what="the mask byte at the end", hint="log_append turns events back on, as sti did")
    ran(many, "600 appends of 200 bytes, the timer at 1 ms")
    check("log: " in many["serial"], "the kernel reported its log", got=many["serial"][-300:])
    numbers = report_numbers(many["serial"])
    check(numbers["records"] == 600 and numbers["ticks"] >= 1, "600 records and at least one tick",
          got=numbers, hint="events must be delivered once the mask byte is 0 again")
    check_equal(numbers["head"], numbers["expected"], what="the log's head, against the bytes appended and the ticks",
                hint="a tick inside the copy: the timer's '|' is overwritten and log_head goes back. The mask byte is 1 "
                     "during the copy?")
    check(numbers["ticks"] >= 5, "a tick delivered when the copy it arrived in ends",
          expected="5 ticks or more (the kernel runs for about 6 ms)", got=numbers["ticks"],
          hint="an event that arrived during the copy is delivered before log_append returns, not at the next hypercall")
    versions = sum(name == "xen_version" for _, name, _ in many["hypercalls"])
    check(versions <= many["stats"]["upcalls"], "xen_version hypercalls, only for an event that arrived",
          expected=f"at most {many['stats']['upcalls']} (the events delivered)", got=versions,
          hint="when no event arrived, log_append makes no hypercall")
    ran(registers, "a call with every register set")
    check_equal(registers["serial"], "11111111 22222222 00000003 44444444 00000000 55555555 66666666\n",
                what="EAX EBX ECX EDX, ESI less the message's address, EDI EBP after the call",
                hint="log_append keeps every register")


PART3_CASES = {
    "600 appends of 200 bytes, the timer at 1 ms": (f'mov ebp, 600\n.again:\nappend "{"x" * 200}"\ndec ebp\njnz .again\n'
                                                    "call report", 1000000),
    "800 appends of 3 to 250 bytes, the timer at 2 ms": ("mov ebp, 800\n.again:\nmov ecx, ebp\nand ecx, 0xff\ncmp ecx, 3\n"
                                                         "jae .long_enough\nmov ecx, 3\n.long_enough:\ncmp ecx, 250\n"
                                                         "jbe .short_enough\nmov ecx, 250\n.short_enough:\n"
                                                         "add [appended], ecx\nmov esi, text\ncall log_append\ndec ebp\n"
                                                         "jnz .again\ncall report", 2000000),
    "short messages, ticks mostly outside the copy": ('mov ebp, 20000\n.again:\nappend "ab"\nmov ecx, 30\n.spin: loop .spin\n'
                                                      "dec ebp\njnz .again\ncall report", 1000000),
    "every register after a call, with a tick in the copy": (f'mov ebp, 2000\n.again:\nappend "{"y" * 100}"\ndec ebp\n'
                                                             "jnz .again\nmov eax, 0x11111111\nmov ebx, 0x22222222\n"
                                                             "mov ecx, 250\nmov edx, 0x44444444\nmov esi, text\n"
                                                             "mov edi, 0x55555555\nmov ebp, 0x66666666\ncall log_append\n"
                                                             "add dword [appended], 250\nsub esi, text\n"
                                                             "call show_registers\ncall report",
                                                             1000000),
    "every register after every call, ticks in some copies": ("mov ebp, 1500\n.again:\nmov eax, 0x11111111\n"
                                                              "mov ebx, 0x22222222\nmov ecx, 200\nmov edx, 0x44444444\n"
                                                              "mov esi, text\nmov edi, 0x55555555\npush ebp\n"
                                                              "mov ebp, 0x66666666\ncall log_append\n"
                                                              "add dword [appended], 200\n"
                                                              + "".join(f"cmp {r}, {v}\njne .changed\n" for r, v in
                                                                        (("eax", "0x11111111"), ("ebx", "0x22222222"),
                                                                         ("ecx", "200"), ("edx", "0x44444444"),
                                                                         ("esi", "text"), ("edi", "0x55555555"),
                                                                         ("ebp", "0x66666666")))
                                                              + "jmp .kept\n.changed:\ninc dword [changed]\n.kept:\n"
                                                                "pop ebp\ndec ebp\njnz .again\nmov eax, [changed]\n"
                                                                'say "calls that changed a register: "\n'
                                                                "call print_decimal\nsay 10\ncall report", 700000),
}
PART3_HIDDEN = [guest(body, "text: times 256 db 't'\nchanged: dd 0", routines=ROUTINES, period=period)
                for body, period in PART3_CASES.values()]
PART3_HINTS = {"serial": "the report: ticks counted by the timer's callback, and the log's head against what was put in. "
                         "Fewer ticks than expected: events that stayed pending after the copy (the pending check)",
               "hypercalls": "after the copy: a xen_version hypercall when an event is pending, and none otherwise",
               "stats": "upcalls are the events delivered; traps must stay 0",
               "upcall_mask": "log_append turns events back on, as sti did"}

TICKS_WITHIN = (0.75, 1.33)     # the timer ticks in guest instructions: a routine longer or shorter than the
                                # reference's sees a few more or fewer ticks in the same run, never far fewer


def part3_hidden(answers, expected, sources):
    """Each run against the reference routine's, on what does not depend on the routine's length: the
    records and the log's head (nothing lost), the registers after a call, ticks delivered about as
    often (events pending after the copy are delivered then, not at the next hypercall), no trap, the
    mask byte 0 at the end, and a xen_version only for an event that was pending."""
    check(isinstance(answers, list) and len(answers) == len(expected), "one run per guest", got=answers)
    for what, got, want in zip(PART3_CASES, answers, expected):
        what = f"your log_append ({what})"
        ran(got, what)
        check("log: " in got["serial"], f"{what}: the kernel reported its log", got=got["serial"][-300:])
        mine, theirs = report_numbers(got["serial"]), report_numbers(want["serial"])
        check_equal(mine["records"], theirs["records"], what=f"{what}: records in the log")
        check_equal(mine["head"], mine["expected"], what=f"{what}: the log's head, against the bytes appended and "
                                                         f"the ticks", hint="the mask byte is 1 during the copy?")
        registers = [line for line in want["serial"].split("\n") if line and not line.startswith("log: ")]
        check_equal([line for line in got["serial"].split("\n") if line and not line.startswith("log: ")], registers,
                    what=f"{what}: the registers after the call (EAX EBX ECX EDX ESI EDI EBP; ESI less the "
                         f"message's address)", hint="log_append keeps every register")
        low, high = (round(theirs["ticks"] * bound) for bound in TICKS_WITHIN)
        check(low <= mine["ticks"] <= max(high, theirs["ticks"] + 1), f"{what}: timer ticks delivered",
              expected=f"about {theirs['ticks']} (from {low} to {high}), as with the reference's log_append",
              got=mine["ticks"], hint=PART3_HINTS["serial"])
        check_equal(got["stats"]["traps"], 0, what=f"{what}: traps into Xen", hint=PART3_HINTS["stats"])
        check_equal(got["upcall_mask"], 0, what=f"{what}: the mask byte at the end", hint=PART3_HINTS["upcall_mask"])
        versions = sum(name == "xen_version" for _, name, _ in got["hypercalls"])
        check(versions <= got["stats"]["upcalls"], f"{what}: xen_version hypercalls, one for each event pending",
              expected=f"at most {got['stats']['upcalls']} (the events delivered)", got=versions,
              hint=PART3_HINTS["hypercalls"])


# Part 4: the console driver, an open part: NASM run in the kernel, each run judged by the part's rules
CONSOLE_ASKED = "vmkit.grading.lab4.console_cases(cases, CONSOLE_DRIVER)"
EXAMPLE = ([["write", f"boot: step {n}\n"] for n in range(1, 12)]
           + [["reuse", "irq 1\n"], ["reuse", "irq 14\n"], ["reuse", "x\n"], ["write", "\x00 a NUL, 256 bytes: " + "y" * 234 + "\n"],
              ["flush"], ["flush"], ["registers", 7]]
           + [["write", f"shutting down {n}\n"] for n in range(3)])
CONSOLE_SCRIPTS = {
    "120 short messages, one flush at the end": [["write", f"[{n:3}] " + "ok " * (n % 5) + "\n"] for n in range(120)],
    "30 long messages in one reused buffer": [["reuse", chr(65 + n % 26) * (200 + n * 7 % 56) + "\n"] for n in range(30)],
    "runs of 1 to 17 messages, each ended by a flush (twice, now and then)":
        [step for run in range(1, 18) for step in
         [["write", f"run {run}, message {n}: \xff\x00{'.' * (run * n % 40)}\n"] for n in range(run)]
         + [["flush"]] * (1 + (run % 3 == 0))],
    "registers after a call that flushes, one that buffers, and messages of 1 and 256 bytes":
        [["write", f"w{n}\n"] for n in range(7)] + [["registers", 100]] + [["write", "z"]] * 8 + [["registers", 1]]
        + [["reuse", "q" * 255 + "\n"], ["registers", 256], ["write", "end\n"]],
}
def console_judge(scripts):
    def judge(answers, expected, cases):
        check(isinstance(answers, list) and len(answers) == len(scripts), "one run per script", got=answers)
        for (what, script), facts in zip(scripts.items(), answers):
            check_console(script, facts, what=f"your console driver ({what})")
    return judge


PROBES = {
    "part1_visible": Probe(handlers_asked("console_io"), PART1_VISIBLE, on_xen, part1_visible, withhold=withhold(18)),
    "part1_hidden": Probe(handlers_asked("console_io"), [[guest(body, CONSOLE_TEXT), []] for body in PART1_HIDDEN.values()],
                          on_xen, against_xen([f"the guest ({what})" for what in PART1_HIDDEN]), withhold=withhold(18)),
    "part2_visible": Probe(handlers_asked("multicall"), PART2_VISIBLE, on_xen, part2_visible, withhold=withhold(13)),
    "part2_hidden": Probe(handlers_asked("multicall"), [[guest(body, BATCHES), []] for body in PART2_HIDDEN.values()],
                          on_xen, against_xen([f"the guest ({what})" for what in PART2_HIDDEN], PART2_HINTS),
                          withhold=withhold(13)),
    "part3_visible": Probe(LOG_APPEND_ASKED, PART3_VISIBLE, lambda sources: None, part3_visible, clean=("LOG_APPEND",)),
    "part3_hidden": Probe(LOG_APPEND_ASKED, PART3_HIDDEN, with_routine(PV_LOG_APPEND), part3_hidden,
                          clean=("LOG_APPEND",)),
    "part4_visible": Probe(CONSOLE_ASKED, [console_guest(EXAMPLE, ROUTINES)], lambda sources: None,
                           console_judge({"the example script": EXAMPLE}), clean=("CONSOLE_DRIVER",)),
    "part4_hidden": Probe(CONSOLE_ASKED, [console_guest(script, ROUTINES) for script in CONSOLE_SCRIPTS.values()],
                          lambda sources: None, console_judge(CONSOLE_SCRIPTS), clean=("CONSOLE_DRIVER",)),
}
