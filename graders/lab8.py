"""Lab 8 (shadow page tables): what the vmkit PC's own page walk answers for the lab's accesses (part 1),
and guests natively and under vmkit's own shadow MMU, under trap-and-emulate and binary translation
(parts 2 to 4)."""
from types import SimpleNamespace

import vmkit
from vmkit.grading.lab8 import SHADOW_MAX_INSTRUCTIONS, TECHNIQUES, shadow_facts
from vmkit.grading.runs import ending
from vmkit.machine.cpu import PTE_A, Fault

_WALKER = "bits 32\norg 0x100000\nhlt\n"          # a machine only for its CPU's page walk


def cpu_walks(cases):
    """For each part 1 case (vmkit.grading.lab8.tables_case), the vmkit PC's walk of each access on those
    tables: ["true", the #PF error code] when they refuse it, ["hidden", physical address, [the guest
    entries it used]] when they allow it. The entries used are those the walk sets the accessed bit in,
    found on a copy of the tables with every accessed bit clear."""
    machine = vmkit.machine(_WALKER)
    cpu = machine.cpu
    answers = []
    for case in cases:
        cpu.guest_paging = SimpleNamespace(cr0=case["cr0"], cr3=case["cr3"], cr4=case["cr4"])
        machine.uc.mem_write(0, bytes(cpu.ram_size))
        found = []
        for linear, write, user in case["accesses"]:
            for address, value in case["memory"]:
                machine.uc.mem_write(address, (value & ~PTE_A).to_bytes(4, "little"))
            try:
                physical = cpu.translate(linear, write, user)
            except Fault as fault:
                found.append(["true", fault.error_code])
                continue
            pde = (case["cr3"] & ~0xFFF) + (linear >> 22) * 4
            used = sorted({address for address, _ in case["memory"]
                           if int.from_bytes(machine.uc.mem_read(address, 4), "little") & PTE_A},
                          key=lambda address: address != pde)
            found.append(["hidden", physical, used])
        answers.append(found)
    return answers


def shadow_run(source, technique="trap-and-emulate", adaptive=True):
    """The guest natively and under vmkit's own shadow MMU: {"native": how it ended and what it printed,
    "vmm": shadow_facts}."""
    native = vmkit.run(source, max_instructions=SHADOW_MAX_INSTRUCTIONS, timeout=30)
    options = {"adaptive": adaptive} if technique == "binary-translation" else {}
    machine = TECHNIQUES[technique](vmkit.assemble(source), max_instructions=SHADOW_MAX_INSTRUCTIONS, timeout=30,
                                    **options)
    result = machine.run()
    return {"native": ending(native), "vmm": shadow_facts(machine, result)}


def shadow_runs(cases):
    """shadow_run for each [source, technique, adaptive], in one process."""
    return [shadow_run(*case) for case in cases]


FACTS = {f.__name__: f for f in (cpu_walks, shadow_run, shadow_runs)}


# --- the probes: each graded cell's cases, asked of the student's kernel and decided here -------------
import vmkit.guests
from vmkit.grading.checks import check, fail_cases, shown
from vmkit.grading.lab8 import (SHADOW_FIELDS, check_prefetch, check_shadow_facts, check_shadow_native, lab_guest,
                                prefetch_reference, tables_case)
from .probing import Probe

P, RW, US, A, D, PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80
RELOAD = "mov eax, cr3\nmov cr3, eax"

# Part 1: the guest's own walk
PD, PT0, PT1 = 0x380000, 0x381000, 0x382000
PT2, PT3 = 0x383000, 0x384000
PAT = 0x1000                                        # a 4 MiB PDE's bit 12: a memory type, not an address bit
PART1_VISIBLE = {
    "one directory of 4 KiB pages": tables_case(
        [[PD, PT0 | P | RW | US], [PD + 4, PT1 | P | RW | US], [PT0 + 0x100 * 4, 0x100000 | P | RW],
         [PT0 + 0x101 * 4, 0x101000 | P], [PT1 + 1 * 4, 0x300000 | P | RW | US | A], [PT1 + 2 * 4, 0x301000 | P | US]],
        [[0x100abc, False, False], [0x101004, True, False], [0x100000, False, True], [0x401234, True, True],
         [0x402010, True, True], [0x402010, False, True], [0x403000, True, True], [0x800000, False, False],
         [0x402ffc, True, False]], cr3=PD),
    "4 MiB pages, and PDEs that take rights away": tables_case(
        [[PD + 8, 0x400000 | PS | P | RW | US], [PD + 12, 0xc00000 | PS | P], [PD + 16, PT2 | P | RW],
         [PD + 20, PT3 | P | US], [PT2 + 1 * 4, 0x201000 | P | RW | US], [PT3 + 2 * 4, 0x202000 | P | RW | US]],
        [[0x8abcde, False, True], [0xbff004, True, True], [0xc01234, False, True], [0xc01234, True, False],
         [0xc01234, False, False], [0x1001008, False, True], [0x1001008, True, False], [0x1402ffc, True, True],
         [0x1402ffc, False, True]], cr3=PD, pse=True),
    "a PDE with PS set while CR4.PSE is clear, and CR0.WP clear": tables_case(
        [[PD, PT0 | P | RW | US], [PD + 8, PT2 | PS | P | RW | US], [PT0 + 0x100 * 4, 0x100000 | P],
         [PT0 + 0x101 * 4, 0x101000 | P | US], [PT2 + 0x11 * 4, 0x311000 | P | RW | US]],
        [[0x811abc, True, True], [0x812000, False, True], [0x100010, True, False], [0x100010, False, True],
         [0x101020, True, True], [0x101020, True, False]], cr3=PD, pse=False, wp=False)}
_cr3, _t0, _t1, _t2, _t3 = 0x2ff000, 0x381000, 0x382000, 0x383000, 0x384000
PART1_HIDDEN = {
    "4 MiB pages and PDEs that take rights away": tables_case(
        [[_cr3, _t0 | P | RW | US], [_cr3 + 4, _t1 | P | US], [_cr3 + 8, 0x400000 | PAT | PS | P | RW | US],
         [_cr3 + 12, 0x800000 | PS | P | A | D], [_cr3 + 16, _t2 | P | RW], [_cr3 + 0x300 * 4, PS | P | RW],
         [_t0 + 0x100 * 4, 0x100000 | P | RW | US], [_t1 + 5 * 4, 0x305000 | P | RW | US],
         [_t1 + 6 * 4, 0x306000 | P | RW | US | A | D], [_t2 + 7 * 4, 0x307000 | P | RW | US]],
        [[0x100000, True, True], [0x802345, True, True], [0x405123, False, True], [0x405123, True, True], [0x405123, True, False],
         [0x406ffc, True, True], [0x8abcde, True, True], [0xbfffff, False, True], [0xc12345, False, False],
         [0xc12345, True, False], [0xc12345, False, True], [0x1007000, False, False], [0x1007000, False, True],
         [0x1007004, True, True], [0xc0123456, True, False], [0xc0123456, False, True],
         [0xc0400000, False, False], [0x1408000, True, True]], cr3=_cr3, pse=True),
    "a PDE with PS set while CR4.PSE is clear, and CR0.WP clear": tables_case(
        [[_cr3, _t0 | P | RW | US], [_cr3 + 8, _t2 | PS | P | RW | US], [_cr3 + 12, _t3 | P | RW | US],
         [_t0 + 0x100 * 4, 0x100000 | P], [_t0 + 0x101 * 4, 0x101000 | P | US],
         [_t0 + 0x102 * 4, 0x102000 | P | RW], [_t2 + 0x11 * 4, 0x311000 | P | RW | US],
         [_t3 + 0x3ff * 4, 0x3ff000 | P | US]],
        [[0x100010, True, False], [0x100010, True, True], [0x101020, True, False], [0x101020, True, True],
         [0x101020, False, True], [0x102030, True, False], [0x102030, False, True], [0x811abc, True, True],
         [0x811abc, False, False], [0x812000, False, False], [0x900000, True, True], [0xfff00c, True, False],
         [0xfff00c, True, True], [0xfff00c, False, True], [0x400000, True, False]], cr3=_cr3, pse=False, wp=False),
    # A directory elsewhere in memory, a user PDE over a supervisor PTE, and a read-only PDE over a
    # writable PTE under CR0.WP, with 4 MiB pages in the same directory
    "another directory, rights taken away by either level": tables_case(
        [[0x1f0000, 0x1f1000 | P | RW | US], [0x1f0000 + 4, 0x1f2000 | P | US], [0x1f0000 + 0x10 * 4, 0x4000000 | PAT | PS | P | US],
         [0x1f1000 + 0x20 * 4, 0x220000 | P | RW], [0x1f1000 + 0x21 * 4, 0x221000 | P | RW | US | A | D],
         [0x1f2000 + 0x30 * 4, 0x330000 | P | RW | US], [0x1f2000 + 0x31 * 4, 0x331000 | RW | US]],
        [[0x20123, False, True], [0x20123, True, False], [0x21fff, True, True], [0x430456, True, False],
         [0x430456, False, True], [0x431000, False, False], [0x4012345, True, False], [0x4012345, False, True],
         [0x4012345, True, True], [0x4412345, False, False]], cr3=0x1f0000, pse=True)}

WALK_ASKED = "vmkit.grading.lab8.walk_cases(vmkit.grading.yours(guest_walk, 'guest_walk'), cases)"


WALK_HINT = ("the walk of 32-bit paging and its checks: the Intel SDM, vol. 3, 4.3 (which entries, figure 4-2), "
             "4.6 (the rights; CR0.WP) and 4.7 (the error code)")
PART1_HINTS = {
    "4 MiB pages, and PDEs that take rights away":
        "with CR4.PSE set, a PDE with PS set maps a 4 MiB page by itself (SDM vol. 3, 4.3 and table 4-4: which "
        "address bits come from the PDE, which from the linear address); the PDE's rights count as much as the "
        "PTE's (4.6)",
    "a PDE with PS set while CR4.PSE is clear, and CR0.WP clear":
        "with CR4.PSE clear, the PS bit of a PDE is not looked at: the PDE names a page table (SDM vol. 3, 4.3); "
        "with CR0.WP clear the kernel may write read-only pages, ring 3 never (4.6)"}


def walks_judge(names, hint, hints=None):
    """A judge: the student's walk on each case's accesses against the CPU's, the first misses listed
    (`hints`: the hint of each case that has its own)."""
    def judge(answers, expected, cases):
        check(isinstance(answers, list) and len(answers) == len(cases), "one list of answers per set of tables",
              got=shown(answers)[:200])
        for what, case, want, got in zip(names, cases, expected, answers):
            check(isinstance(got, list) and len(got) == len(want), f"one answer per access on {what}",
                  got=shown(got)[:200])
            wrong = [(f"guest_walk(mmu, {linear:#x}, write={write}, user={user})", e, g)
                     for (linear, write, user), e, g in zip(case["accesses"], want, got) if g != e]
            fail_cases(f"guest_walk on {what}", wrong, len(want), "accesses", (hints or {}).get(what, hint))
    return judge


# Parts 2 to 4: the guests under the student's handlers, against the bare machine and vmkit's own VMM
def handlers_asked(kind, name, withheld):
    """The ask for one handler: each guest under vmkit's table with the student's `name` (never vmkit's
    own) for `kind`."""
    return (f"vmkit.grading.lab8.shadow_cases(cases, {{{kind!r}: vmkit.grading.yours({name}, {name!r})}}, "
            f"{list(withheld)!r})")




def ran(facts, what):
    check(isinstance(facts, dict) and "error" not in facts, f"{what} runs to its end",
          got=facts.get("error") if isinstance(facts, dict) else shown(facts)[:200])


def against_vmkit(names, fields=SHADOW_FIELDS):
    """A judge: each guest's run under the student's handlers against the bare machine (its serial output
    and exit code) and vmkit's own VMM (`fields` of shadow_facts), the first difference explained."""
    def judge(answers, expected, cases):
        check(isinstance(answers, list) and len(answers) == len(expected), "one run per guest",
              got=shown(answers)[:200])
        for what, got, want in zip(names, answers, expected):
            ran(got, what)
            check_shadow_native(got, want["native"], what=what)
            check_shadow_facts(got, want["vmm"], what=f"{what}, against vmkit's own VMM", fields=fields)
    return judge


def trap_and_emulate(guests):
    return [[source, "trap-and-emulate", True] for source in guests.values()]


PART2_VISIBLE = {
    "pages read, then written, by the kernel and by ring 3": lab_guest(
        setup="mov dword [PTE(0x401000)], DATA | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0x402000)], (DATA + 0x1000) | PG_P | PG_US\n"
              "mov dword [PTE(0x403000)], (DATA + 0x2000) | PG_P | PG_RW",
        kernel="rd 0x403000\nwr 0x403000\nrd 0x404000",
        user="rd 0x401000\nrd 0x401000\nwr 0x401000\nrd 0x402000\nwr 0x402000\nrd 0x403000",
        after="show 0x401000\nshow 0x402000\nshow 0x403000"),
    "a supervisor PDE over a user page, a read-only PDE over a writable one": lab_guest(
        setup="mov dword [PDE(0x800000)], (PT + 0x2000) | PG_P | PG_RW\n"
              "mov dword [PTE(0x801000)], (DATA + 0x3000) | PG_P | PG_RW | PG_US\n"
              "mov dword [PDE(0xc00000)], (PT + 0x3000) | PG_P | PG_US\n"
              "mov dword [PTE(0xc01000)], (DATA + 0x4000) | PG_P | PG_RW | PG_US",
        kernel="rd 0x801000\nwr 0x801000\nwr 0xc01000",
        user="rd 0x801000\nrd 0xc01000\nwr 0xc01000",
        after="showpde 0x800000\nshow 0x801000\nshowpde 0xc00000\nshow 0xc01000"),
    "4 MiB pages (CR4.PSE set)": lab_guest(
        setup="mov dword [PDE(0x800000)], 0 | PG_PS | PG_P | PG_RW | PG_US\n"
              "mov dword [PDE(0xc00000)], 0 | PG_PS | PG_P",
        kernel="rd 0xf03000\nwr 0xf03000",
        user="rd 0xb01000\nwr 0xb01000\nrd 0xb02000\nrd 0xf03000",
        after="showpde 0x800000\nshowpde 0xc00000", pse=True),
    "a PDE with PS set while CR4.PSE is clear, and CR0.WP clear": lab_guest(
        setup="mov dword [PDE(0x800000)], (PT + 0x2000) | PG_PS | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0x801000)], (DATA + 0x5000) | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0x401000)], DATA | PG_P | PG_US\n"
              "mov dword [PTE(0x403000)], (DATA + 0x2000) | PG_P",
        kernel="rd 0x403000\nwr 0x403000\nrd 0x403000",
        user="rd 0x801000\nwr 0x801000\nrd 0x401000\nwr 0x401000",
        after="showpde 0x800000\nshow 0x801000\nshow 0x401000\nshow 0x403000", wp=False)}
PART2_HIDDEN = {
    "a supervisor PDE over user pages, a read-only PDE over writable ones": lab_guest(
        setup="mov dword [PDE(0x800000)], (PT + 0x2000) | PG_P | PG_RW\n"
              "mov dword [PTE(0x801000)], (DATA + 0x3000) | PG_P | PG_RW | PG_US\n"
              "mov dword [PDE(0xc00000)], (PT + 0x3000) | PG_P | PG_US\n"
              "mov dword [PTE(0xc01000)], (DATA + 0x4000) | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0xc02000)], (DATA + 0x5000) | PG_P | PG_RW | PG_US",
        kernel="rd 0x801000\nwr 0x801000\nrd 0xc01000\nrd 0xc02000\nwr 0xc02000",
        user="rd 0x801000\nwr 0x801000\nrd 0xc01000\nwr 0xc01000\nrd 0xc02000",
        after="showpde 0x800000\nshow 0x801000\nshowpde 0xc00000\nshow 0xc01000\nshow 0xc02000"),
    "4 MiB pages, one with its PAT bit set": lab_guest(
        setup="mov dword [PDE(0x800000)], 0x1000 | PG_PS | PG_P | PG_RW | PG_US\n"
              "mov dword [PDE(0xc00000)], 0 | PG_PS | PG_P | PG_US",
        kernel="rd 0xb00000\nrd 0xf01000\nwr 0xf01000",
        user="rd 0xb02000\nwr 0xb02000\nrd 0xf03000\nwr 0xf03000",
        after="showpde 0x800000\nshowpde 0xc00000", pse=True),
    "CR0.WP clear: the kernel writes read-only pages": lab_guest(
        setup="mov dword [PTE(0x401000)], DATA | PG_P | PG_US\n"
              "mov dword [PTE(0x403000)], (DATA + 0x2000) | PG_P\n"
              "mov dword [PTE(0x404000)], (DATA + 0x3000) | PG_P | PG_RW | PG_US",
        kernel="rd 0x403000\nwr 0x403000\nrd 0x404000",
        user="rd 0x404000\nwr 0x404000\nrd 0x401000\nwr 0x401000",
        after="show 0x401000\nshow 0x403000\nshow 0x404000", wp=False),
    "pages read in one ring and written in the other": lab_guest(
        setup="mov dword [PTE(0x401000)], DATA | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0x402000)], (DATA + 0x1000) | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0x403000)], (DATA + 0x2000) | PG_P | PG_RW | PG_US",
        kernel="rd 0x401000\nrd 0x402000\nwr 0x402000\nrd 0x403000",
        user="wr 0x401000\nrd 0x402000\nrd 0x403000\nrd 0x403000\nwr 0x403000",
        after="showpde 0x400000\nshow 0x401000\nshow 0x402000\nshow 0x403000"),
}

PART3_VISIBLE = {
    "the kernel remaps one page and unmaps another": lab_guest(
        setup="mov dword [PTE(0x401000)], DATA | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0x402000)], (DATA + 0x1000) | PG_P | PG_RW | PG_US",
        kernel="rd 0x401000\nrd 0x402000\n"
               "mov dword [PTE(0x401000)], (DATA + 0x5000) | PG_P | PG_RW | PG_US\n"
               f"mov dword [PTE(0x402000)], 0\n{RELOAD}\nrd 0x401000\nrd 0x402000",
        user="rd 0x401000",
        after="show 0x401000\nshow 0x402000"),
    "the kernel sets a dirty bit, then clears the accessed and dirty bits": lab_guest(
        setup="mov dword [PTE(0x401000)], DATA | PG_P | PG_RW | PG_US",
        kernel=f"rd 0x401000\nor dword [PTE(0x401000)], PG_D\n{RELOAD}\nwr 0x401000\nshow 0x401000\n"
               f"and dword [PTE(0x401000)], ~(PG_A | PG_D)\n{RELOAD}\nwr 0x401000\nshow 0x401000",
        user="rd 0x401000",
        after="show 0x401000"),
    "a 4 MiB page's PDE pointed at a page table, a PDE pointed at another page table": lab_guest(
        setup="mov dword [PDE(0x800000)], 0 | PG_PS | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0xb00000)], (DATA + 0x5000) | PG_P | PG_RW | PG_US\n"
              "mov dword [PDE(0xc00000)], (PT + 0x3000) | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0xc01000)], (DATA + 0x8000) | PG_P | PG_RW | PG_US\n"
              "mov dword [SPARE + 4], (DATA + 0x9000) | PG_P | PG_RW | PG_US",
        kernel="rd 0xb00000\nrd 0xb01000\nrd 0xc01000\n"
               "mov dword [PDE(0x800000)], (PT + 0x2000) | PG_P | PG_RW | PG_US\n"
               f"mov dword [PDE(0xc00000)], SPARE | PG_P | PG_RW | PG_US\n{RELOAD}\n"
               "rd 0xb00000\nrd 0xb01000\nrd 0xc01000",
        after="showpde 0x800000\nshow 0xb00000\nshowpde 0xc00000", pse=True)}
PART3_HIDDEN = {
    "accessed and dirty bits cleared by the guest": lab_guest(
        setup="mov dword [PTE(0x401000)], DATA | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0x402000)], (DATA + 0x1000) | PG_P | PG_RW | PG_US",
        kernel=f"wr 0x401000\nrd 0x402000\nand dword [PTE(0x401000)], ~PG_D\nand dword [PTE(0x402000)], ~PG_A\n"
               f"{RELOAD}\nwr 0x401000\nshow 0x401000\nshow 0x402000\nrd 0x402000",
        user="wr 0x401000",
        after="show 0x401000\nshow 0x402000"),
    "accessed and dirty bits set by the guest": lab_guest(
        setup="mov dword [PTE(0x401000)], DATA | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0x402000)], (DATA + 0x1000) | PG_P | PG_RW | PG_US",
        kernel=f"rd 0x401000\nrd 0x402000\nor dword [PTE(0x401000)], PG_A | PG_D\nor dword [PTE(0x402000)], PG_A\n"
               f"{RELOAD}\nrd 0x401000\nwr 0x401000\nrd 0x402000",
        user="rd 0x402000\nwr 0x402000",
        after="show 0x401000\nshow 0x402000"),
    "a PDE pointed at another page table, then cleared": lab_guest(
        setup="mov dword [PDE(0x800000)], (PT + 0x2000) | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0x801000)], (DATA + 0x6000) | PG_P | PG_RW | PG_US\n"
              "mov dword [SPARE + 4], (DATA + 0x7000) | PG_P | PG_RW | PG_US",
        kernel=f"rd 0x801000\nwr 0x801000\nmov dword [PDE(0x800000)], SPARE | PG_P | PG_RW | PG_US\n{RELOAD}\n"
               "rd 0x801000",
        user="rd 0x801000\nwr 0x801000",
        after=f"mov dword [PDE(0x800000)], 0\n{RELOAD}\nrd 0x801000\nshowpde 0x800000"),
    "rights taken away, then given back": lab_guest(
        setup="mov dword [PTE(0x401000)], DATA | PG_P | PG_RW | PG_US\n"
              "mov dword [PTE(0x402000)], (DATA + 0x1000) | PG_P | PG_RW | PG_US",
        kernel=f"wr 0x401000\nrd 0x402000\nand dword [PTE(0x401000)], ~PG_RW\nand dword [PTE(0x402000)], ~PG_US\n"
               f"{RELOAD}",
        user="rd 0x401000\nwr 0x401000\nrd 0x402000",
        after=f"or dword [PTE(0x401000)], PG_RW\nor dword [PTE(0x402000)], PG_US\n{RELOAD}\nwr 0x401000\n"
              "show 0x401000\nshow 0x402000"),
}

# Part 4: a fill that prefetches, against the bare machine (output, exit code, the page tables at the end)
# and within a bound of vmkit's own fill's hidden faults: [source, technique, adaptive, ratio]
FLUSH = "mov eax, cr4\nxor eax, 0x10\nmov cr4, eax\nxor eax, 0x10\nmov cr4, eax"   # CR4.PSE off and on: the shadow goes


def pages(first, n, what, step=1):
    """`what` (a line with {a} for the address and {i} for the index) for n pages from `first`."""
    return "\n".join(what.format(a=f"{first + i * 0x1000:#x}", i=i) for i in range(0, n, step))


def mapped(first, n, flags, frame0=0):
    return pages(first, n, "mov dword [PTE({a})], (DATA + ((" + str(frame0) + " + {i}) % 16) * 0x1000) | " + flags)


PREFETCH_GUEST = lab_guest(
    setup="%assign i 0\n%rep 8\n"
          "    mov dword [PTE(0x410000 + i * 0x1000)], (DATA + i * 0x1000) | PG_P | PG_RW | PG_US | PG_A\n"
          "%assign i i + 1\n%endrep\n"
          "or dword [PTE(0x414000)], PG_D\nor dword [PTE(0x416000)], PG_D\n"
          "mov dword [PTE(0x418000)], (DATA + 0x8000) | PG_P | PG_RW | PG_US\n"
          "mov dword [PTE(0x419000)], (DATA + 0x9000) | PG_P | PG_RW | PG_US\n"
          "mov dword [PTE(0x41a000)], (DATA + 0xa000) | PG_P | PG_RW | PG_US",
    kernel="%assign i 0\n%rep 8\n    rd 0x410000 + i * 0x1000\n%assign i i + 1\n%endrep\n"
           "wr 0x410000\nwr 0x414000\nrd 0x418000",
    user="rd 0x419000\nwr 0x416000\nrd 0x411000",
    after="show 0x410000\nshow 0x411000\nshow 0x414000\nshow 0x416000\nshow 0x418000\nshow 0x419000\nshow 0x41a000")
PART4_VISIBLE = {
    "a kernel whose tables come with accessed bits set": [PREFETCH_GUEST, "trap-and-emulate", True, 0.6],
    "the paging kernel under binary translation": [vmkit.guests.source("paging_kernel"), "binary-translation", True, 1.0]}
PART4_HIDDEN = {
    "pages read, the shadow flushed (CR4.PSE off and on), read and written again":
        [lab_guest(setup=mapped(0x401000, 15, "PG_P | PG_RW | PG_US"),
                   kernel=pages(0x401000, 12, "rd {a}") + "\nwr 0x402000\nwr 0x405000\n" + FLUSH + "\n"
                          + pages(0x401000, 12, "rd {a}") + "\n" + pages(0x401000, 12, "wr {a}", 2),
                   user=pages(0x401000, 12, "rd {a}"), after=pages(0x401000, 15, "show {a}"), pse=True),
         "trap-and-emulate", True, 0.85],
    "accessed user PTEs under a supervisor PDE, and under a read-only one":
        [lab_guest(setup="mov dword [PDE(0x800000)], (PT + 0x2000) | PG_P | PG_RW\n"
                         + mapped(0x800000, 16, "PG_P | PG_RW | PG_US | PG_A")
                         + "\nmov dword [PDE(0xc00000)], (PT + 0x3000) | PG_P | PG_US\n"
                         + mapped(0xc00000, 16, "PG_P | PG_RW | PG_US | PG_A | PG_D", 3),
                   kernel=pages(0x800000, 16, "rd {a}", 2) + "\n" + pages(0xc00000, 16, "rd {a}", 2) + "\n"
                          + pages(0xc01000, 8, "wr {a}", 2),
                   user=pages(0x800000, 4, "rd {a}") + "\n" + pages(0xc00000, 16, "rd {a}") + "\n"
                        + pages(0xc00000, 4, "wr {a}"),
                   after=pages(0x800000, 16, "show {a}", 5) + "\n" + pages(0xc00000, 16, "show {a}", 5)),
         "binary-translation", True, 0.6],
    "accessed but clean pages, writable and read-only, written after they were prefetched":
        [lab_guest(setup=mapped(0x401000, 15, "PG_P | PG_RW | PG_US | PG_A") + "\n"
                         + mapped(0x440000, 16, "PG_P | PG_A", 4),
                   kernel="rd 0x401000\n" + pages(0x402000, 14, "wr {a}", 2) + "\nrd 0x440000\n"
                          + pages(0x441000, 8, "wr {a}", 2),
                   user="rd 0x440000\n" + pages(0x401000, 15, "rd {a}", 2) + "\n" + pages(0x403000, 12, "wr {a}", 3),
                   after=pages(0x401000, 15, "show {a}") + "\n" + pages(0x440000, 9, "show {a}"), wp=False),
         "trap-and-emulate", True, 0.85],
    "paged-out entries that keep their accessed and dirty bits":
        [lab_guest(setup=mapped(0x401000, 15, "PG_P | PG_RW | PG_US | PG_A | PG_D") + "\n"
                         + "\n".join(f"and dword [PTE({a:#x})], ~PG_P" for a in (0x402000, 0x405000, 0x406000, 0x40b000)),
                   kernel=pages(0x401000, 15, "rd {a}") + "\n" + pages(0x401000, 15, "wr {a}", 2),
                   user=pages(0x401000, 15, "rd {a}", 3), after=pages(0x401000, 15, "show {a}", 2)),
         "trap-and-emulate", True, 0.6],
    "a page-out daemon's pass: accessed and dirty bits cleared, the shadow flushed, a few pages touched":
        [lab_guest(setup=mapped(0x401000, 15, "PG_P | PG_RW | PG_US"),
                   kernel=pages(0x401000, 15, "rd {a}") + "\n" + pages(0x401000, 15, "wr {a}", 3) + "\n"
                          + pages(0x401000, 15, "and dword [PTE({a})], ~(PG_A | PG_D)", 2) + f"\n{RELOAD}\n{FLUSH}\n"
                          + "rd 0x402000\nwr 0x404000\nrd 0x407000\n" + pages(0x401000, 15, "show {a}") + "\n"
                          + pages(0x401000, 15, "rd {a}", 4),
                   user=pages(0x401000, 15, "rd {a}", 2), after=pages(0x401000, 15, "show {a}"), pse=True),
         "binary-translation", True, 1.0],
    "the paging kernel, 12 heap pages, 4 rounds, under trap-and-emulate":
        [vmkit.guests.source("paging_kernel", HEAP_PAGES=12, ROUNDS=4), "trap-and-emulate", True, 1.0],
    "the paging kernel under binary translation, adaptive translation off":
        [vmkit.guests.source("paging_kernel"), "binary-translation", False, 1.0],
}
PREFETCH_ASKED = "vmkit.grading.lab8.prefetch_cases([case[:3] for case in cases], SHADOW, fill_ahead, propagate)"


def prefetch_references(cases):
    """For each case, the bare machine's run and vmkit's own hidden faults (prefetch_reference)."""
    return [prefetch_reference(*case[:3]) for case in cases]


def within_bound(names):
    """A judge: each guest under the student's prefetching fill against the bare machine (output, exit code,
    page tables at the end) and its hidden faults within its bound of vmkit's own."""
    def judge(answers, expected, cases):
        check(isinstance(answers, list) and len(answers) == len(expected), "one run per guest",
              got=shown(answers)[:200])
        for what, got, want, case in zip(names, answers, expected, cases):
            check_prefetch(got, want["native"], want["vmkit_hidden"], case[3], what)
    return judge


# vmkit's own handlers, withheld while the kernel answers: a student's handler that calls one (through
# SHADOW_HANDLERS or by name) earns nothing; the part's other handler stays vmkit's.
FILL_WITHHELD, PROPAGATE_WITHHELD = ["shadow_fill"], ["shadow_propagate"]
HANDLERS = "vmkit.vmm.shadow_paging"

PROBES = {
    "part1_visible": Probe(WALK_ASKED, list(PART1_VISIBLE.values()), cpu_walks,
                           walks_judge(list(PART1_VISIBLE), WALK_HINT, PART1_HINTS)),
    "part1_hidden": Probe(WALK_ASKED, list(PART1_HIDDEN.values()), cpu_walks,
                          walks_judge(list(PART1_HIDDEN),
                                      "a 4 MiB page only with CR4.PSE (mmu.large_pages), its frame from the PDE as "
                                      "the SDM's table 4-4 gives it; the rights of the PDE and of the PTE both count; "
                                      "the kernel may write read-only pages while CR0.WP is clear, ring 3 never")),
    "part2_visible": Probe(handlers_asked("hidden-fault", "fill", FILL_WITHHELD), trap_and_emulate(PART2_VISIBLE),
                           shadow_runs, against_vmkit(list(PART2_VISIBLE), fields=("hidden", "fills")),
                           withhold={HANDLERS: FILL_WITHHELD}),
    "part2_hidden": Probe(handlers_asked("hidden-fault", "fill", FILL_WITHHELD), trap_and_emulate(PART2_HIDDEN),
                          shadow_runs, against_vmkit(list(PART2_HIDDEN)), withhold={HANDLERS: FILL_WITHHELD}),
    "part3_visible": Probe(handlers_asked("trace", "propagate", PROPAGATE_WITHHELD), trap_and_emulate(PART3_VISIBLE),
                           shadow_runs, against_vmkit(list(PART3_VISIBLE), fields=("hidden", "traces")),
                           withhold={HANDLERS: PROPAGATE_WITHHELD}),
    "part3_hidden": Probe(handlers_asked("trace", "propagate", PROPAGATE_WITHHELD), trap_and_emulate(PART3_HIDDEN),
                          shadow_runs, against_vmkit(list(PART3_HIDDEN)), withhold={HANDLERS: PROPAGATE_WITHHELD}),
    "part4_visible": Probe(PREFETCH_ASKED, list(PART4_VISIBLE.values()), prefetch_references,
                           within_bound(list(PART4_VISIBLE)), withhold={HANDLERS: FILL_WITHHELD + PROPAGATE_WITHHELD}),
    "part4_hidden": Probe(PREFETCH_ASKED, list(PART4_HIDDEN.values()), prefetch_references,
                          within_bound(list(PART4_HIDDEN)), withhold={HANDLERS: FILL_WITHHELD + PROPAGATE_WITHHELD}),
}
