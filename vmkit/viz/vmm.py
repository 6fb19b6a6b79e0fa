"""Pictures of a trap-and-emulate VMM at work, drawn from what a run recorded.

    vmm_loop(result)        the loop trap -> decode -> emulate -> resume, with the run's own counts
    shadow_tables(machine)  the guest's GDT and the VMM's shadow GDT side by side, real vs virtual registers

Used by lesson 02.
"""
from collections import Counter

from unicorn import x86_const as X

from ..machine.x86 import decode_descriptor
from .diagram import Diagram, table_label


def vmm_loop(result):
    """The VMM's loop as a graph whose edges carry how often this run took them."""
    traps = result.of_kind("trap")
    emulated = result.of_kind("emulate")
    reflected = len(traps) - len(emulated)          # a trap is either emulated or reflected
    injections = [e for e in result.of_kind("ring-transition")
                  if e.detail.get("reflected") and str(e.detail.get("cause", "")).startswith("IRQ")]
    injected = len(injections)
    in_user = sum(1 for e in injections if e.detail.get("from_ring") == 3)
    kinds = Counter(e.detail["instruction"].split()[0] for e in emulated)
    top = ", ".join(f"{name} ×{n}" for name, n in kinds.most_common(4))
    g = Diagram("vmm_loop", caption=f"the VMM loop in one run of the guest: {len(traps)} traps, "
                f"{len(emulated)} emulated, {reflected} reflected into the guest",
                text=_loop_text(result, traps, emulated, reflected, injected, in_user, kinds))
    g.attr(rankdir="LR", fontname="Helvetica", nodesep="0.4", ranksep="0.45")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="12")
    g.attr("edge", fontname="Helvetica", fontsize="11")
    g.node("guest", "guest kernel runs\nin ring 1\n(at full speed)", fillcolor="#f6e7d2")
    g.node("trap", "trap: #GP (or int n,\nan exception, an I/O access)\nring 1 → VMM in ring 0", fillcolor="#f4d6d6")
    g.node("decode", "decode the instruction\nat the saved EIP", fillcolor="#eeeeee")
    g.node("emulate", "emulate it on the\nvirtual CPU / device model\n" + (top or ""), fillcolor="#e3f2fd")
    g.node("resume", "resume the guest\nafter the instruction", fillcolor="#e8f5e9")
    g.node("reflect", "reflect it into the guest's\nown handler (its IDT,\nshadowed, one ring out)", fillcolor="#fff8e1")
    g.edge("guest", "trap", label=f" {len(traps)} ")
    g.edge("trap", "decode")
    g.edge("decode", "emulate", label=f" {len(emulated)} ")
    g.edge("emulate", "resume")
    g.edge("resume", "guest", constraint="false")
    g.edge("decode", "reflect", label=f" {reflected} ", style="dashed")
    g.edge("reflect", "guest", style="dashed", constraint="false")
    if injected:
        g.node("timer", "the VMM's timer fires:\ninject IRQ0 if the guest is\nin ring 3 or its virtual IF is 1",
               fillcolor="#eeeeee")
        g.edge("timer", "reflect", label=f" {injected} ", style="dashed")
    return g


def _loop_text(result, traps, emulated, reflected, injected, in_user, kinds):
    lines = [f"The guest ran {result.stats.get('instructions', '?')} instructions; the VMM took "
             f"{len(traps)} traps.",
             f"{len(emulated)} were emulated on the virtual CPU and the guest resumed after them: "
             + (", ".join(f"{k} {n}" for k, n in kinds.most_common()) or "none") + ".",
             f"{reflected} were reflected into the guest's own handlers (int n, exceptions it must see).",
             f"{injected} timer interrupts were injected through the guest's IDT: {in_user} while its user "
             f"program ran in ring 3, {injected - in_user} while its kernel ran with the virtual IF set."]
    if in_user:
        lines.append(USER_IF_NOTE)
    return "\n".join(lines)


# Why the virtual IF can read 0 while the guest's user program is interrupted by the timer.
USER_IF_NOTE = ("This VMM lets interrupts into ring 3 whatever the virtual IF holds: user code always runs with "
                "interrupts on, and the kernel's iretd into ring 3 (which pops the user program's EFLAGS) does "
                "not trap, so the VMM never learns the IF in them; the virtual IF keeps the kernel's last value.")


def shadow_tables(machine):
    """Ring compression on a live TrapAndEmulate machine: each guest descriptor beside its shadow."""
    cpu, vcpu = machine.cpu, machine.vcpu
    (guest_base, guest_limit), (idt_base, idt_limit) = vcpu.gdtr, vcpu.idtr
    _, real_gdt, real_limit, _ = machine.uc.reg_read(X.UC_X86_REG_GDTR)
    _, real_idt, real_idt_limit, _ = machine.uc.reg_read(X.UC_X86_REG_IDTR)
    real_tr = machine.uc.reg_read(X.UC_X86_REG_TR)[0]
    rows = []
    for selector in range(8, min(guest_limit + 1, 16 * 8), 8):
        guest = decode_descriptor(cpu.read(guest_base + selector, 8))
        shadow = decode_descriptor(cpu.read(real_gdt + selector, 8))
        if guest.present:
            rows.append((selector, guest, shadow))
    registers = [("GDTR base", guest_base, real_gdt), ("GDTR limit", guest_limit, real_limit),
                 ("IDTR base", idt_base, real_idt), ("IDTR limit", idt_limit, real_idt_limit),
                 ("TR", vcpu.tr, real_tr), ("LDTR", vcpu.ldtr, machine.uc.reg_read(X.UC_X86_REG_LDTR)[0]),
                 ("CR0", vcpu.cr0, cpu["cr0"]), ("IF", int(vcpu.interrupt_flag), cpu["eflags"] >> 9 & 1)]
    in_user = cpu.cpl == 3
    g = Diagram("shadow", caption="ring compression: the guest's tables and registers (left) and what "
                "the real CPU uses (right)" + ("; the guest is in ring 3, where this VMM lets interrupts in "
                                               "whatever the virtual IF says" if in_user else ""),
                text=_shadow_text(rows, registers, in_user))
    g.attr(rankdir="LR", fontname="Helvetica", nodesep="0.3", ranksep="0.8")
    g.attr("node", shape="plaintext", fontname="Helvetica", fontsize="11")
    g.attr("edge", fontname="Helvetica")

    g.node("vregs", table_label("virtual CPU (the guest's view)",
                                [(f"r{i}", f"{name} {value:#x}") for i, (name, value, _) in enumerate(registers)],
                                "#f6e7d2"))
    g.node("rregs", table_label("real CPU (owned by the VMM)",
                                [(f"r{i}", f"{name} {value:#x}") for i, (name, _, value) in enumerate(registers)],
                                "#f4d6d6"))
    g.node("ggdt", table_label(f"guest's GDT at {guest_base:#x}",
                               [(f"s{s}", f"{s:#06x} {g_.kind}, DPL {g_.dpl}") for s, g_, _ in rows], "#e3f2fd"))
    g.node("sgdt", table_label(f"shadow GDT at {real_gdt:#x}",
                               [(f"s{s}", f"{s:#06x} {sh.kind}, DPL {sh.dpl}") for s, _, sh in rows], "#e8f5e9"))
    for i, (_, guest, real) in enumerate(registers):
        if guest != real:
            g.edge(f"vregs:r{i}:e", f"rregs:r{i}:w", color="#c62828", arrowhead="none", style="dashed")
    for s, guest, shadow in rows:
        g.edge(f"ggdt:s{s}:e", f"sgdt:s{s}:w", color="#c62828" if guest.dpl != shadow.dpl else "#888888",
               label="DPL 0→1" if guest.dpl != shadow.dpl else "", fontsize="9", fontcolor="#c62828")
    g.edge("vregs:r0:e", "ggdt", style="invis")
    return g


def _shadow_text(rows, registers, in_user=False):
    lines = ["register     guest (virtual)   real CPU"]
    lines += [f"{name:<12} {guest:<#17x} {real:#x}" + ("   differs" if guest != real else "")
              for name, guest, real in registers]
    if in_user:
        lines.append("The guest is in ring 3. " + USER_IF_NOTE)
    lines.append("selector  guest's GDT            shadow GDT")
    lines += [f"{s:#06x}    {g.kind:<12} DPL {g.dpl}   {sh.kind:<12} DPL {sh.dpl}" for s, g, sh in rows]
    return "\n".join(lines)
