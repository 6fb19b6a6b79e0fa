"""The descriptor tables as the CPU sees them: GDTR -> GDT, IDTR -> IDT, TR -> TSS, and the
selectors that point from one into another.

An interrupt from ring 3 uses all three: the IDT gate names the handler and its code segment
(a GDT entry), the code segment's DPL says which ring the handler runs in, and the TSS says which
stack that ring uses. The diagram is read from the live machine's memory and registers.

Used by lesson 01.
"""
from unicorn import x86_const as X

from ..machine.x86 import EXCEPTIONS, decode_descriptor, decode_gate
from .diagram import Diagram, table_label as table

MAX_GDT_ROWS = 16


def _symbol_names(image):
    return {address: name for name, address in image.symbols.items()}


def _where(address, names):
    return f"{address:#x}" + (f" ({names[address]})" if address in names else "")


def _segment_text(d):
    if d.s:
        size = "4 GiB" if d.limit == 0xFFFFFFFF else f"limit {d.limit:#x}"
        return f"{d.kind}, DPL {d.dpl}, base {d.base:#x}, {size}"
    return f"{d.kind}, DPL {d.dpl}, base {d.base:#x}"


def read_tables(machine):
    """What the CPU's table registers point at now: (gdt, idt, tss) as plain lists and dicts."""
    cpu, names = machine.cpu, _symbol_names(machine.image)
    _, gdt_base, gdt_limit, _ = machine.uc.reg_read(X.UC_X86_REG_GDTR)
    idt_base, idt_limit = cpu.idt()
    tr, tss_base, tss_limit = cpu.tss()
    gdt = []
    for index in range(min((gdt_limit + 1) // 8, MAX_GDT_ROWS)):
        raw = int.from_bytes(cpu.read(gdt_base + 8 * index, 8), "little")
        gdt.append((index * 8, decode_descriptor(raw) if raw and index else None))   # entry 0 is never used
    idt = []
    for vector in range((idt_limit + 1) // 8):
        gate = decode_gate(cpu.read(idt_base + 8 * vector, 8))
        if gate.present:
            idt.append((vector, gate, names.get(gate.offset, "")))
    tss = None
    if tr & ~3:
        tss = {"selector": tr, "base": tss_base, "limit": tss_limit,
               "esp0": cpu.u32(tss_base + 4), "ss0": cpu.u32(tss_base + 8) & 0xFFFF}
    return {"gdtr": (gdt_base, gdt_limit), "gdt": gdt, "idtr": (idt_base, idt_limit), "idt": idt,
            "tss": tss, "names": names}


def _vector_name(vector):
    return EXCEPTIONS[vector][0] if vector in EXCEPTIONS else f"{vector:#04x}"


def tables_diagram(machine):
    """GDT, IDT and TSS of a machine, with arrows from every selector to the entry it names."""
    t = read_tables(machine)
    names = t["names"]
    g = Diagram("tables", caption="the descriptor tables, read from the guest's memory",
                text=tables_text(t))
    g.attr(rankdir="LR", fontname="Helvetica", nodesep="0.3", ranksep="0.5", size="9.5,8")
    g.attr("node", shape="plaintext", fontname="Helvetica", fontsize="11")
    g.attr("edge", color="#555555", arrowsize="0.7")

    base, limit = t["gdtr"]
    g.node("regs", table("registers", [("gdtr", f"GDTR base {base:#x} limit {limit:#x}"),
                                       ("idtr", f"IDTR base {t['idtr'][0]:#x} limit {t['idtr'][1]:#x}"),
                                       ("tr", f"TR {t['tss']['selector']:#06x}" if t["tss"] else "TR (none)")],
                               "#eeeeee"))
    g.node("gdt", table("GDT", [(f"s{sel}", f"{sel:#06x}  " + (_segment_text(d) if d else "null descriptor"))
                                for sel, d in t["gdt"]], "#e3f2fd"))
    idt_rows = [(f"v{v}", f"{v:#04x} {_vector_name(v) if v in EXCEPTIONS else ''}  DPL {gate.dpl} → "
                 f"{gate.selector:#04x}:{label or hex(gate.offset)}") for v, gate, label in t["idt"]]
    g.node("idt", table("IDT: present gates", idt_rows or [("none", "no gate present")], "#fff8e1"))
    g.edge("regs:gdtr", "gdt")
    g.edge("regs:idtr", "idt")
    known = {sel for sel, _ in t["gdt"]}
    for v, gate, _ in t["idt"]:
        if gate.selector & ~3 in known:
            g.edge(f"idt:v{v}:e", f"gdt:s{gate.selector & ~3}:w", color="#b8860b")
    tss = t["tss"]
    if tss:
        with g.subgraph() as column:            # the TSS beside the IDT keeps the picture narrow
            column.attr(rank="same")
            column.node("idt")
            column.node("tss")
        g.node("tss", table("TSS", [("esp0", f"ESP0 {_where(tss['esp0'], names)}"),
                                    ("ss0", f"SS0 {tss['ss0']:#06x}")], "#e8f5e9"))
        if tss["selector"] & ~3 in known:
            g.edge("regs:tr:e", f"gdt:s{tss['selector'] & ~3}:w")
            g.edge(f"gdt:s{tss['selector'] & ~3}:w", "tss:e", label="base", fontsize="10", constraint="false")
        if tss["ss0"] & ~3 in known:
            g.edge("tss:ss0:e", f"gdt:s{tss['ss0'] & ~3}:w", style="dashed", constraint="false")
    return g


def tables_text(t):
    lines = [f"GDT at {t['gdtr'][0]:#x}:"]
    lines += [f"  {sel:#06x}  " + (_segment_text(d) if d else "null descriptor") for sel, d in t["gdt"]]
    lines.append(f"IDT at {t['idtr'][0]:#x}, present gates:")
    lines += [f"  vector {v:#04x}{' ' + _vector_name(v) if v in EXCEPTIONS else ''}: {gate.kind}, DPL {gate.dpl}, handler "
              f"{gate.selector:#06x}:{gate.offset:#x} {label}".rstrip() for v, gate, label in t["idt"]]
    tss = t["tss"]
    lines.append(f"TSS (TR={tss['selector']:#06x}) at {tss['base']:#x}: ESP0 {_where(tss['esp0'], t['names'])}, "
                 f"SS0 {tss['ss0']:#06x}" if tss else "TSS: none loaded (TR is null)")
    return "\n".join(lines)
