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
