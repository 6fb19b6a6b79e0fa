"""Lab 2 (trap-and-emulate): guests natively and under vmkit's own trap-and-emulate VMM, and the
instruction census with the classes its definitions give."""
import vmkit
from vmkit.grading.lab2 import VMM_MAX_INSTRUCTIONS, vmm_facts
from vmkit.grading.runs import ending
from vmkit.vmm import TrapAndEmulate
from vmkit.census import CensusRow, census


def vmm_run(source):
    """The guest natively and under vmkit's own trap-and-emulate VMM: {"native": how it ended and
    what it printed, "vmm": vmm_facts}."""
    native = vmkit.run(source, max_instructions=VMM_MAX_INSTRUCTIONS, timeout=30)
    vmm = TrapAndEmulate(vmkit.assemble(source), max_instructions=VMM_MAX_INSTRUCTIONS, timeout=30)
    result = vmm.run()
    return {"native": ending(native), "vmm": vmm_facts(vmm, result)}


def vmm_runs(sources):
    """vmm_run for each guest, in one process: [{"native", "vmm"}, ...]."""
    return [vmm_run(source) for source in sources]


def census_rows(names=None):
    """vmkit's instruction census, measured now: each row's measurements and the classes it derives
    from them."""
    return [{"mnemonic": r.mnemonic, "faults": {str(ring): v for ring, v in r.faults.items()},
             "trapped_under_vmm": r.trapped_under_vmm, "same_under_vmm": r.same_under_vmm,
             "privileged": r.privileged, "sensitive": r.sensitive, "hole": r.hole} for r in census(names)]


def census_classes(measurements):
    """What the census's own definitions make of made-up measurements (faults by ring, trapped under
    the VMM, same under the VMM): {"privileged", "sensitive", "hole"} for each."""
    rows = [CensusRow(m["mnemonic"], "", {int(k): v for k, v in m["faults"].items()}, m["trapped_under_vmm"],
                      m["same_under_vmm"]) for m in measurements]
    return [{"privileged": r.privileged, "sensitive": r.sensitive, "hole": r.hole} for r in rows]


def census_and_classes(measurements):
    """census_rows() and census_classes(measurements), in one process: {"rows", "made_up"}."""
    return {"rows": census_rows(), "made_up": census_classes(measurements)}


FACTS = {f.__name__: f for f in (vmm_run, vmm_runs, census_rows, census_classes, census_and_classes)}


def popf_critical_count(source):
    """The updates popf_critical lost under vmkit's trap-and-emulate VMM, as the guest itself counts
    and prints them."""
    serial = vmkit.run(vmkit.assemble(source), "trap-and-emulate").serial
    return int(serial.split("lost updates:")[1].split()[0])


# --- the probes: each graded cell's cases, asked of the student's kernel and decided here -------------
import itertools

from vmkit.grading.checks import check, check_equal, check_facts, fail_cases
from vmkit.grading.lab2 import VMM_HINTS, handler_runs, run_facts
from .probing import Probe, lab_setup, same_answers

SETUP = lab_setup("lab2_trap_emulate")          # GUEST (through guest()) and address_of: the grader's own
guest, address_of = SETUP["guest"], SETUP["address_of"]
REFERENCE_TIMEOUT = 30                          # vmkit's own VMM, in this process: never stopped by a busy machine
FACT_FIELDS = tuple(VMM_HINTS)                  # what a hidden check compares with vmkit's own VMM


def handlers_asked(names):
    """The ask for a part's handlers: each guest under vmkit's VMM with the student's handlers (never
    vmkit's own) in place of vmkit's."""
    table = ", ".join(f"{name!r}: vmkit.grading.yours({python}, {python!r})"
                      for name, python in ((name, "in_" if name == "in" else name) for name in names))
    return f"vmkit.grading.lab2.vmm_cases(cases, {{{table}}})"


def reference_runs(sources):
    """run_facts of each guest under vmkit's own VMM, in this process."""
    return handler_runs(sources, {}, timeout=REFERENCE_TIMEOUT)


def ran(facts, what):
    check(isinstance(facts, dict) and "error" not in facts, f"{what} runs to its end",
          got=facts.get("error") if isinstance(facts, dict) else facts)


def against_vmkit(names):
    """A judge: each guest's run under the student's handlers against vmkit's own VMM, the first difference explained."""
    def judge(answers, expected, sources):
        check(isinstance(answers, list) and len(answers) == len(expected), "one run per guest", got=answers)
        for what, got, want in zip(names, answers, expected):
            ran(got, f"the guest ({what})")
            check_facts(got, want, f"the guest ({what})", hints=VMM_HINTS, fields=FACT_FIELDS)
    return judge


# Part 1: cli, sti, hlt
PART1_VISIBLE = [guest("sti\ncli\nhlt"), guest("call start_timer\n.wait:\nsti\ncmp dword [ticks], 3\njb .wait\ncli"),
                 guest("cli\ncall start_timer\nmov ecx, 3000\n.spin: loop .spin\nsti\nnop\nnop\ncli"),
                 guest("cli\ncli\nsti\nsti\ncli\nhlt"), guest("call start_timer\nsti\nhlt\nnop\nnop\ncli\nmov ebx, [ticks]")]


def part1_expected(sources):
    return {"after_sti": address_of(vmkit.assemble(sources[2]), "sti") + 1}


def part1_visible(answers, expected, sources):
    check(isinstance(answers, list) and len(answers) == len(sources), "one run per guest", got=answers)
    first, ticks, waiting, again, sleep = answers
    ran(first, "sti, cli, hlt")
    check_equal(first["emulated_instructions"][-3:], ["sti", "cli", "hlt"], what="the last three instructions emulated",
                hint="each handler returns a string (None declines)")
    check(first["halted"] and not first["vcpu"]["interrupt_flag"], "after sti, cli, hlt the virtual CPU has stopped",
          expected="halted=True, interrupt_flag=False",
          got=f"halted={first['halted']}, interrupt_flag={first['vcpu']['interrupt_flag']}",
          hint="the part's spec: what cli does to the virtual CPU, and what hlt asks of the VMM (SDM vol. 2A, CLI and HLT)")
    check(first["real_if"], "the real IF is still on (it belongs to the VMM)",
          hint="a handler changes the virtual CPU only: the real IF is the VMM's")
    ran(ticks, "a guest that waits for three timer ticks")
    check_equal(ticks["ticks"], 3, what="timer ticks the guest counted",
                hint="the VMM injects IRQ0 only while the virtual IF is set (SDM vol. 2B, STI)")
    check_equal(ticks["exit_code"], 1, what="the exit code")
    ran(waiting, "an IRQ waiting when sti runs")
    check_equal([eip for cause, eip in waiting["irqs"]][:1], [expected["after_sti"] + 1],
                what="where the waiting IRQ landed (the interrupted EIP)",
                hint="the interrupt shadow: the instruction after sti runs first (SDM vol. 2B, STI)")
    ran(again, "cli, cli, sti, sti, cli, hlt")
    check(again["halted"] and not again["vcpu"]["interrupt_flag"], "cli and sti set the virtual IF whatever it was before",
          expected="halted=True, interrupt_flag=False",
          got=f"halted={again['halted']}, interrupt_flag={again['vcpu']['interrupt_flag']}, "
              f"trapped: {again['trapped'][-6:]}", hint="the part's first rule")
    ran(sleep, "sti, then hlt until the timer's interrupt")
    check_equal([sleep["regs"]["ebx"], sleep["exit_code"]], [1, 1],
                what="(EBX, the exit code) after sti; hlt; nop; nop; cli; mov ebx, [ticks]",
                hint="the part's third rule: hlt with the virtual IF 1 sleeps until the next interrupt (SDM vol. 2A, HLT)")


PART1_HIDDEN = {
    "an IRQ held through cli, then sti; nop": "call start_timer\nmov ecx, 3000\n.spin: loop .spin\nsti\nnop\nnop\ncli",
    "sti; hlt to wait for three ticks": "call start_timer\nmov ecx, 3000\n.spin: loop .spin\n.wait:\nsti\nhlt\n"
                                        "cmp dword [ticks], 3\njb .wait\ncli\nhlt",
    "cli after an interrupt, then hlt": "call start_timer\nsti\nhlt\ncli\nmov ecx, 4000\n.spin: loop .spin\nhlt",
    "sti, sti, cli, sti, hlt": "call start_timer\nsti\nsti\ncli\nsti\nhlt\nmov eax, [ticks]\nmov ebx, [last_eip]",
}

# Part 2: mov crN, lgdt, lidt
PART2_VISIBLE = [
    guest("mov eax, cr0\nmov edi, eax\nmov ebx, eax\nor ebx, 8\nmov cr0, ebx\nmov ecx, 0x200000\nmov cr3, ecx"),
    guest("mov eax, cr0\nor eax, 0x80000000\nmov cr0, eax"),
    guest("mov ebx, new_gdtr - 2\nlgdt [ebx + 2]\njmp 0x08:.reload\n.reload:\nmov ax, 0x10\nmov ds, ax",
          data="align 8\nnew_gdt: dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF\nnew_gdtr: dw 23\n dd new_gdt")]


def part2_expected(sources):
    image = vmkit.assemble(sources[2])
    return {"new_gdt": image.symbols["new_gdt"], "idt": image.symbols["idt"]}


def refused_paging(facts):
    check(isinstance(facts, dict) and "paging" in facts.get("error", ""), "a write of CR0 with PG set stops the run",
          expected="an error that names paging", got=facts.get("error", "the guest ran on") if isinstance(facts, dict) else facts,
          hint="the part's spec: this VMM leaves paging out, and says so through the VMM")


def part2_visible(answers, symbols, sources):
    check(isinstance(answers, list) and len(answers) == 3, "three runs", got=answers)
    crs, paging, tables = answers
    ran(crs, "mov to and from CR0, mov to CR3")
    check_equal(crs["regs"]["edi"], 0x11, what="EAX after `mov eax, cr0` at boot (kept in EDI)",
                hint="mov r32, crN reads the virtual CPU's register (SDM vol. 2B, MOV—Move to/from Control Registers)")
    check_equal([crs["vcpu"]["cr0"], crs["vcpu"]["cr3"]], [0x19, 0x200000], what="the virtual (CR0, CR3)",
                hint="mov crN, r32 writes the virtual CPU's register, never the real one")
    check_equal(crs["real_cr0"], 0x11, what="the real CR0 after the guest wrote its CR0",
                hint="the part's second rule: the real control registers are the VMM's")
    refused_paging(paging)
    ran(tables, "lgdt [ebx + 2], then a far jump")
    check_equal(tables["vcpu"]["gdtr"], [symbols["new_gdt"], 23], what="the virtual GDTR (base, limit)",
                hint="the pseudo-descriptor is a 16-bit limit, then a 32-bit base (SDM vol. 2A, LGDT/LIDT)")
    check_equal(tables["vcpu"]["idtr"], [symbols["idt"], 0x7FF], what="the virtual IDTR after lidt [idt_descriptor]")
    check_equal(tables["exit_code"], 1, what="the exit code", hint="after lgdt the guest reloads CS and DS from its new GDT")


PART2_DATA = ("align 8\nnew_gdt: dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0x00CFFA000000FFFF\n"
              "pad: dw 0\nnew_gdtr: dw 31\n dd new_gdt\nother_idt: times 64 dq 0")
PART2_HIDDEN = {
    "CR0 written, then read into another register": "mov eax, cr0\nor eax, 0x8\nmov cr0, eax\nxor eax, eax\n"
                                                    "mov esi, cr0\nand esi, ~0x8\nmov cr0, esi\nmov edi, cr0",
    "CR2, CR3 and CR4 through several registers": "mov edx, 0x1234\nmov cr2, edx\nmov ecx, 0x345000\nmov cr3, ecx\n"
                                                  "mov ebp, 0x10\nmov cr4, ebp\nmov ebx, cr2\nmov esi, cr3\nmov edi, cr4",
    "lgdt [ebx + 2] and lidt [esp]": "mov ebx, pad\nlgdt [ebx + 2]\njmp 0x08:.r\n.r:\nmov ax, 0x10\nmov ss, ax\n"
                                     "sub esp, 8\nmov word [esp], 64 * 8 - 1\nmov dword [esp + 2], other_idt\n"
                                     "lidt [esp]\nadd esp, 8",
    "lidt [esi * 2 + ...] and lgdt [new_gdtr]": "mov esi, 4\nlidt [esi * 2 + idt_descriptor - 8]\nlgdt [new_gdtr]",
}
PART2_PAGING = guest("mov eax, 0x80000011\nmov cr0, eax")


def part2_hidden(answers, expected, sources):
    check(isinstance(answers, list) and len(answers) == len(sources), "one run per guest", got=answers)
    against_vmkit(list(PART2_HIDDEN))(answers[:-1], expected[:-1], sources[:-1])
    refused_paging(answers[-1])


# Part 3: out, in
PART3_VISIBLE = [guest("mov dx, COM1\nmov al, 'o'\nout dx, al\nmov al, 'k'\nout dx, al\n"
                       "mov al, 0xFB\nout 0x21, al\nin al, 0x21\nmov bl, al\nmov dx, COM1 + 5\nin al, dx\nmov cl, al"),
                 guest("mov dx, COM1\nmov ax, 0x6968\nout dx, ax\nmov eax, 0xCAFE0000\nmov al, 0xFE\nout 0x21, al\n"
                       "mov dx, 0x21\nin ax, dx\nmov esi, eax")]


def part3_visible(answers, expected, sources):
    check(isinstance(answers, list) and len(answers) == 2, "two runs", got=answers)
    facts, wide = answers
    ran(facts, "out and in with byte operands")
    check_equal(facts["serial"], "ok", what="the serial output",
                hint="out hands the device model the port, the access's size and the value")
    check_equal(facts["io"][-6:], [["out", 0x3f8, 1, 0x6f], ["out", 0x3f8, 1, 0x6b], ["out", 0x21, 1, 0xfb],
                                   ["in", 0x21, 1, 0xfb], ["in", 0x3fd, 1, 0x60], ["out", 0xf4, 1, 0]],
                what="the port accesses (direction, port, size, value)",
                hint="out port, acc has the port first; in acc, port has it second (SDM vol. 2A, IN and OUT)")
    check_equal([facts["regs"]["ebx"] & 0xFF, facts["regs"]["ecx"] & 0xFF], [0xFB, 0x60],
                what="(BL, CL): what `in` read from the PIC's mask and the serial status",
                hint="in writes what the port gave into its register operand")
    check_equal(facts["exit_code"], 1, what="the exit code", hint="the guest ends with out DEBUG_EXIT, al")
    ran(wide, "16-bit out and in")
    check_equal(wide["io"][:1], [["out", 0x3f8, 2, 0x6968]], what="the access of out dx, ax (direction, port, size, value)",
                hint="the part's second rule (SDM vol. 2B, OUT)")
    check_equal(wide["regs"]["esi"], 0xCAFE00FE, what="EAX after in ax, dx from the PIC's mask (0xFE; port 0x22 reads 0)",
                hint="the part's third rule: in writes its accumulator's bytes only (SDM vol. 2A, IN)")


PART3_HIDDEN = {
    "out dx, ax and out dx, eax": "mov dx, COM1\nmov ax, 0x4948\nout dx, ax\nmov eax, 0x0a216948\nout dx, eax\n"
                                  "mov dx, 0x80\nout dx, ax\nout 0x80, eax",
    "in al, dx polling the serial status": "mov esi, 3\n.next:\nmov dx, COM1 + 5\n.wait:\nin al, dx\ntest al, 0x20\n"
                                           "jz .wait\nmov dx, COM1\nmov al, '0'\nadd eax, esi\nout dx, al\ndec esi\njnz .next",
    "in ax, dx and in eax, imm8 from ports nobody answers": "mov eax, 0x12345678\nmov dx, 0x300\nin ax, dx\nmov ebx, eax\n"
                                                           "in eax, 0x80\nmov ecx, eax\nmov eax, 0xAABBCCDD\nin al, 0x80",
    "in ax, dx from the PIC": "mov eax, 0xCAFE0000\nmov al, 0xFE\nout 0x21, al\nmov dx, 0x21\nin ax, dx",
}

# Part 4: iretd under ring compression (the open part)
YOUR_TABLE = ("cli", "sti", "hlt", "mov", "lgdt", "lidt", "out", "in", "iretd")
IF_BIT, GUEST_OWNED_FLAGS = 0x200, 0x244DD5     # the flags a guest owns: not IF, IOPL, VM, RF (as vmkit's translator)


def reference_iretd(vmm, insn):
    """The grader's own iretd: the guest kernel's return through a frame it built for ring 0 (which
    #GPs in ring 1 only because of ring compression) carried out as the bare machine would (SDM vol.
    2A, IRET: PROTECTED-MODE-RETURN, RETURN-TO-SAME-PRIVILEGE-LEVEL), its IF and IOPL into the
    virtual CPU; any other frame left to the CPU's own fault, or given the fault the bare machine
    raises where ring compression changed it. After vmkit's binary translator's _far_return_to."""
    from vmkit.machine.cpu import Fault
    from vmkit.vmm.emulate import guest_descriptor
    cpu = vmm.cpu
    raw = cpu.read(cpu.segment_base(cpu["ss"]) + cpu["esp"], 12)
    eip, cs, eflags = (int.from_bytes(raw[i:i + 4], "little") for i in (0, 4, 8))
    cs &= 0xFFFF
    if cs & 3 or cs & ~3 == 0:
        return None
    d = guest_descriptor(vmm, cs)
    if d is None or not d.is_code or (d.conforming and d.dpl > 0) or (not d.conforming and d.dpl != 0):
        return None
    if not d.present:
        raise Fault(11, cs & ~3)
    vmm.vcpu.interrupt_flag, vmm.vcpu.iopl = bool(eflags & IF_BIT), (eflags >> 12) & 3
    cpu["esp"] = (cpu["esp"] + 12) & 0xFFFFFFFF
    cpu["eflags"] = (eflags & GUEST_OWNED_FLAGS) | IF_BIT | 2
    cpu["cs"], cpu["eip"] = cs | 1, eip
    return f"iretd to {cs:#x}:{eip:#x}"


def iret_reference_runs(sources):
    """run_facts of each guest under vmkit's own VMM with the grader's iretd added, in this process."""
    return handler_runs(sources, {"iretd": reference_iretd}, timeout=REFERENCE_TIMEOUT)


def native_facts(sources):
    """Each guest on the bare machine: how it ended, what it printed, its registers at the end."""
    facts = []
    for source in sources:
        result = vmkit.run(source, max_instructions=VMM_MAX_INSTRUCTIONS, timeout=30)
        facts.append({**ending(result), "regs": {name: result.regs[name] for name in
                                                ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp")}})
    return facts


def native_and_reference(sources):
    return [{"native": n, "vmm": v} for n, v in zip(native_facts(sources), iret_reference_runs(sources))]


BARE_FIELDS = ("shutdown", "serial", "exit_code", "halted", "regs")
BARE_HINTS = {"shutdown": "a frame your handler left to fault that the bare machine returns through, or one it "
                          "returned through that the bare machine refuses",
              "serial": "what the guest printed", "exit_code": "how the guest ended (port 0xf4)",
              "halted": "hlt with the IF the frame gave: the bare machine stops when it is 0",
              "regs": "the registers at the end: the return address, the flags the frame held (CF, ZF, SF, OF, "
                      "DF), ESP past the frame, and each fault's vector and error code as the bare machine "
                      "gives them (SDM vol. 2A, IRET, its Protected Mode Exceptions)"}
STATE_FIELDS = ("traps", "trapped", "irqs", "vcpu")
STATE_HINTS = {"traps": "one trap for each iretd the CPU refused, and none more: a frame your handler fixed must "
                        "not trap again, and a return the CPU can carry out never reaches it",
               "trapped": VMM_HINTS["trapped"],
               "irqs": "where each timer interrupt landed: an interrupt the frame's IF lets in is taken after the "
                       "iretd, at the return address",
               "vcpu": "the virtual CPU: its IF and IOPL are the frame's after a return to the kernel"}


def iret_judge(names):
    """A judge: each guest under the student's iretd against the bare machine (what the guest sees) and
    vmkit's VMM with the grader's iretd (the VMM's state: traps, IRQs, the virtual CPU)."""
    def judge(answers, expected, sources):
        check(isinstance(answers, list) and len(answers) == len(expected), "one run per guest", got=answers)
        for what, got, want in zip(names, answers, expected):
            ran(got, f"the guest ({what})")
            check_facts(got, want["native"], f"the guest ({what}) against the bare machine", hints=BARE_HINTS,
                        fields=BARE_FIELDS)
            check_facts(got, want["vmm"], f"the guest ({what}): the VMM's state", hints=STATE_HINTS,
                        fields=STATE_FIELDS)
    return judge


IRET_FRAME = "push dword {flags}\npush dword {cs}\npush dword {to}\niretd\n{to}:\n"
PART4_VISIBLE = [guest("call start_timer\nmov ecx, 3000\n.spin: loop .spin\n" +
                       IRET_FRAME.format(flags="0x8C3 | 0x200", cs="0x08", to=".back") +
                       "setc bl\nseto bh\n.wait:\ncmp dword [ticks], 1\njb .wait\nmov eax, [last_eip]"),
                 guest(IRET_FRAME.format(flags="0x202", cs="0", to=".x"))]
PART4_VISIBLE_NAMES = ["an iretd into the kernel with IF and CF, OF set in its frame",
                       "an iretd through a null CS (this guest has no #GP handler: it shuts down)"]


def fault_frames(frames, data=""):
    """A guest that returns through each (EFLAGS, CS) frame in turn, with handlers for #GP and #NP that
    record the vector and error code ((vector << 20) | error code, in `faults`) and carry on."""
    body = ["".join(f"    mov eax, {handler}\n    mov [idt + {vector} * 8], ax\n    mov word [idt + {vector} * 8 + 2], 0x08\n"
                    f"    mov word [idt + {vector} * 8 + 4], 0x8E00\n    shr eax, 16\n    mov [idt + {vector} * 8 + 6], ax\n"
                    for vector, handler in ((13, "fault_gp"), (11, "fault_np"))),
            "lgdt [new_gdtr]\njmp 0x08:.reload\n.reload:\nmov [saved_esp], esp\n"]
    for i, (flags, cs) in enumerate(frames):
        body.append(f"mov dword [resume], .r{i}\n" + IRET_FRAME.format(flags=flags, cs=cs, to=f".r{i}"))
    body.append("mov eax, [faults]\nmov ebx, [faults + 4]\nmov ecx, [faults + 8]\nmov edx, [faults + 12]\n"
                "mov edi, [faults + 16]\nmov esi, [nfaults]")
    return guest("\n".join(body), data=FAULT_DATA + data)


FAULT_DATA = r"""
fault_gp:
    pop eax
    or eax, 13 << 20
    jmp fault_common
fault_np:
    pop eax
    or eax, 11 << 20
fault_common:
    mov ebx, [nfaults]
    mov [faults + ebx * 4], eax
    inc dword [nfaults]
    mov esp, [saved_esp]
    jmp [resume]
saved_esp: dd 0
resume: dd 0
nfaults: dd 0
faults: times 8 dd 0
align 8
new_gdt: dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0x00CF1A000000FFFF, 0x00CFFA000000FFFF, 0x00CF9E000000FFFF
new_gdtr: dw 47
 dd new_gdt
"""
PART4_HIDDEN = {
    "three returns into the kernel with IF set, each then waiting in hlt":
        guest("call start_timer\nmov ebx, 3\n.again:\n" + IRET_FRAME.format(flags="0x202", cs="0x08", to=".on")
              + "hlt\ncli\ndec ebx\njnz .again\nmov eax, [ticks]"),
    "flags and IOPL from the frame, then IF off and hlt":
        guest("sti\n" + IRET_FRAME.format(flags="0x3CD5 & ~0x200", cs="0x08", to=".x") + "setc bl\nseto bh\nsetz cl\n"
              "sets ch\npushfd\npop edx\nand edx, 0xCD5\ncall start_timer\nmov ecx, 3000\n.spin: loop .spin\nhlt"),
    "an IRQ waiting when the frame turns IF on":
        guest("call start_timer\nmov ecx, 3000\n.spin: loop .spin\n" + IRET_FRAME.format(flags="0x246", cs="0x08",
              to=".in") + "mov eax, [last_eip]\nmov ebx, [ticks]\ncli\nhlt"),
    "frames the bare machine refuses: a null CS, a data segment, a code segment not present, one of DPL 3":
        fault_frames([("0x202", "0"), ("0x202", "0x10"), ("0x202", "0x18"), ("0x202", "0x20")]),
    "a return into a conforming code segment of DPL 0 with IF off, then into the kernel's own":
        fault_frames([("0x002", "0x28"), ("0x202", "0x08")]),
}


def native_and_vmkit(sources):
    """Each kernel natively (its serial output and exit code) and under vmkit's own VMM."""
    return [{"native": [r["native"]["serial"], r["native"]["exit_code"]], "vmm": facts}
            for r, facts in zip(vmm_runs(sources), reference_runs(sources))]


PART4_DEVICES = guest(r"""
    mov ebx, new_gdtr - 4
    lgdt [ebx + 4]
    jmp 0x08:.r
.r:
    mov eax, cr0
    or eax, 0x8
    mov cr0, eax
    call start_timer
    mov esi, text
.char:
    mov dx, COM1 + 5
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    mov dx, COM1
    lodsw
    test al, al
    jz .done
    out dx, ax
    jmp .char
.done:
    sti
    hlt
    cli
    mov eax, cr0
    mov edx, eax
    and edx, ~0x8
    mov cr0, edx
    mov ax, 0x0A21
    out dx, ax
""", data="text: dw 'v', 'm', 'm', 0\nalign 8\nnew_gdt: dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF\n"
          "new_gdtr: dw 23\n dd new_gdt", divisor=120)
PART4_WAITING = guest("call start_timer\nmov ecx, 3000\n.spin: loop .spin\n.again:\nsti\nhlt\nmov dx, COM1\n"
                      "mov eax, [ticks]\nadd al, 'a'\nout dx, al\ncmp dword [ticks], 5\njb .again\ncli\nin ax, 0x21\n"
                      "mov ebx, cr0", divisor=200)
PART4_KERNELS = {"the rings kernel (into ring 3 and back)": vmkit.guests.source("rings"),
                 "a kernel that raises int 0x80 in ring 0 and returns through the CPU's frame":
                     vmkit.guests.source("same_ring"),
                 "a kernel that polls and prints words": PART4_DEVICES,
                 "a kernel that sleeps between ticks": PART4_WAITING}


def part4_kernels(answers, expected, sources):
    check(isinstance(answers, list) and len(answers) == len(expected), "one run per kernel", got=answers)
    for what, got, want in zip(PART4_KERNELS, answers, expected):
        ran(got, what)
        check_equal([got["serial"], got["exit_code"]], want["native"],
                    what=f"{what}: serial output and exit code, against the bare machine")
        check_facts(got, want["vmm"], what, hints=VMM_HINTS, fields=FACT_FIELDS)


def part4_visible(answers, expected, sources):
    iret_judge(PART4_VISIBLE_NAMES)(answers, expected, sources)


# Part 5: classify
MEASUREMENT_KEYS = ("mnemonic", "faults", "trapped_under_vmm", "same_under_vmm")
CLASSIFY_ASKED = "vmkit.grading.answer_cases(classify, [[m] for m in vmkit.grading.lab2.measurements(cases)])"


def label(classes):
    """The census's own class of a row, in classify's words."""
    return ("hole" if classes["hole"] else "privileged" if classes["privileged"] else
            "trapped" if classes["sensitive"] else "innocuous")


def census_cases(names=None):
    return [{key: row[key] for key in MEASUREMENT_KEYS} for row in census_rows(names)]


MADE_UP = [{"mnemonic": f"made-up {i}", "faults": {"0": f0, "1": f1, "3": f3}, "trapped_under_vmm": t, "same_under_vmm": s}
           for i, (f0, f1, f3, t, s) in enumerate(itertools.product((None, 13), (None, 13, 6), (None, 13, 0x80),
                                                                    (False, True), (False, True)))]


def classes_of(cases):
    return [label(c) for c in census_classes(cases)]


def classify_judge(what, hint):
    return same_answers(what, hint=hint, describe=lambda m: f"classify({m['mnemonic']!r}: faults by ring {m['faults']}, "
                        f"trapped under the VMM {m['trapped_under_vmm']}, same under the VMM {m['same_under_vmm']})")


# Part 6: lost_updates
LOST_ASKED = "vmkit.grading.lab2.lost_update_answers(cases, lost_updates)"


def popf_cases(variants, techniques):
    cases = []
    for rounds, work, divisor in variants:
        source = (vmkit.guests.source("popf_critical", ROUNDS=rounds, WORK=work, PIT_DIVISOR=divisor)
                  if rounds else vmkit.guests.source("popf_critical"))
        image = vmkit.assemble(source)
        for technique in techniques:
            cases.append({"source": source, "technique": technique, "what": f"ROUNDS={rounds}, a section of {work} "
                          f"loop(s), timer divisor {divisor}, {technique}" if rounds else technique,
                          "read_at": address_of(image, "mov eax, [shared]"),
                          "write_at": address_of(image, "mov [shared], eax")})
    return cases


def popf_counts(cases):
    counts = []
    for case in cases:
        serial = vmkit.run(vmkit.assemble(case["source"]), case["technique"]).serial
        counts.append(int(serial.split("lost updates:")[1].split()[0]))
    return counts


def lost_judge(what, hint):
    return same_answers(what, hint=hint, describe=lambda case: f"lost_updates on popf_critical ({case['what']})")


PROBES = {
    "part1_visible": Probe(handlers_asked(("cli", "sti", "hlt")), PART1_VISIBLE, part1_expected, part1_visible),
    "part1_hidden": Probe(handlers_asked(("cli", "sti", "hlt")), [guest(body) for body in PART1_HIDDEN.values()],
                          reference_runs, against_vmkit(list(PART1_HIDDEN))),
    "part2_visible": Probe(handlers_asked(("mov", "lgdt", "lidt")), PART2_VISIBLE, part2_expected, part2_visible),
    "part2_hidden": Probe(handlers_asked(("mov", "lgdt", "lidt")),
                          [guest(body, data=PART2_DATA) for body in PART2_HIDDEN.values()] + [PART2_PAGING],
                          lambda sources: reference_runs(sources[:-1]) + [None], part2_hidden),
    "part3_visible": Probe(handlers_asked(("out", "in")), PART3_VISIBLE, lambda sources: None, part3_visible),
    "part3_hidden": Probe(handlers_asked(("out", "in")), [guest(body) for body in PART3_HIDDEN.values()],
                          reference_runs, against_vmkit(list(PART3_HIDDEN))),
    "part4_visible": Probe(handlers_asked(("iretd",)), PART4_VISIBLE, native_and_reference, part4_visible),
    "part4_hidden": Probe(handlers_asked(("iretd",)), list(PART4_HIDDEN.values()), native_and_reference,
                          iret_judge(list(PART4_HIDDEN))),
    "part4_kernels_hidden": Probe(handlers_asked(YOUR_TABLE), list(PART4_KERNELS.values()), native_and_vmkit, part4_kernels),
    "part5_visible": Probe(CLASSIFY_ASKED, lambda: census_cases(["cli", "lgdt", "sgdt", "pushf", "nop"]) + [
                               {"mnemonic": "made up: faults everywhere, trapped, not the same", "faults": {"0": 13, "1": 13,
                                "3": 13}, "trapped_under_vmm": True, "same_under_vmm": False}], classes_of,
                           classify_judge("classify on five census rows", "Popek and Goldberg's definitions, as the "
                                          "part's spec gives them: privileged first, then sensitive")),
    "part5_hidden": Probe(CLASSIFY_ASKED, lambda: census_cases() + MADE_UP, classes_of,
                          classify_judge("classify on the census and on made-up measurements",
                                         "an instruction that faults in ring 0 too is not privileged")),
    "part6_visible": Probe(LOST_ASKED, lambda: popf_cases([(None, None, None)], ("trap-and-emulate", "native")),
                           popf_counts, lost_judge("lost_updates on the course's popf_critical",
                                                   "an update is lost when an interrupt lands between the section's "
                                                   "read and its write (lesson 02)")),
    "part6_hidden": Probe(LOST_ASKED, lambda: popf_cases(((3000, 1, 20), (3000, 2, 25), (1500, 5, 30), (600, 40, 300)),
                                                         ("trap-and-emulate",)),
                          popf_counts, lost_judge("lost_updates on popf_critical with other section lengths, timer "
                                                  "rates and round counts",
                                                  "only the interrupts inside the section count, and both of its "
                                                  "ends matter"), timeout=120),
}

# vmkit's own handlers for what parts 1-4 ask, withheld while the kernel answers: a student's handler
# that calls one (through EMULATORS or by name) earns nothing. Not `mov`'s: the lab lets a student's
# mov hand the forms it does not ask for (to SS, to a debug register) to vmkit's.
HANDLERS_WITHHELD = {"vmkit.vmm.emulate": ["emulate_cli", "emulate_sti", "emulate_hlt", "emulate_lgdt", "emulate_lidt",
                                           "emulate_out", "emulate_in"]}
for _grade_id, _probe in PROBES.items():
    if _grade_id.startswith(("part1", "part2", "part3", "part4")):
        _probe.withhold = HANDLERS_WITHHELD
