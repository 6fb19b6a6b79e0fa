"""Pictures of a binary translator at work, drawn from the units and events a run recorded.

    side_by_side(machine, unit)    one translation unit: each guest instruction beside the cache
                                   code made of it, what changed highlighted (HTML, with .text)
    cache_graph(machine)           the translation cache as a graph: units with their guest address
                                   range, chained exits solid, exits that still lead to the VMM dashed
    translation_loop(machine)      where control goes under binary translation, with the run's counts
    TranslationStepper(image)      the stepper, showing the unit being run beside its guest code
    callout_sites(result)          the guest instructions that called out most often
    cost_table(measured)           traps, instructions and time per technique, as measured
    paper_table()                  Adams & Agesen's nanobenchmarks (ASPLOS 2006), in cycles

Nothing here translates or runs: the machine's translation cache (vmkit.vmm.translation_cache)
holds the units, and these functions only read them.

Used by lesson 03.
"""
import html
import re
from collections import Counter

import ipywidgets as w

from ..asm import disassemble
from ..vmm import translator as T
from .diagram import Diagram, Table
from .stepper import Stepper, code_html, log_html, log_line, status_html, titled

# what the translator did with a guest instruction: (label, row colour); white means "the same bytes"
HOW = {"copied": ("identical copy", "#ffffff"), "rewritten": ("rewritten", "#fff3b0"),
       "call-out": ("call-out to the VMM", "#f8d7da"), "exit": ("exit (branch)", "#dbeaf7"),
       "check": ("interrupt check", "#eeeeee")}
# the VMM's data page, reached through GS: what each offset holds (vmkit.vmm.translator)
DATA = {T.VIF: "the virtual IF", T.VIOPL: "the virtual IOPL", T.PENDING: "an interrupt is pending",
        T.VGS: "the guest's GS", T.SAVED_EAX: "scratch", T.SAVED_ECX: "scratch",
        T.TARGET: "lookup result", T.GUEST_TARGET: "lookup miss",
        T.ICOUNT: "the guest instructions counted"}
CALLOUTS = {"miss": "call-out on a miss: translate the target, chain the jmp above to it",
            "pending": "call-out: deliver the interrupt that waits for the virtual IF",
            "emulate": "call-out: the VMM emulates the instruction (a trap)",
            "int": "call-out: the VMM delivers the software interrupt",
            "iret": "call-out: the VMM checks the iret (to ring 3 it runs the copy below)",
            "retf": "call-out: the VMM checks the far return",
            "predict": "call-out, once: the ret's first target becomes its prediction (a nop after)"}

_PTR = re.compile(r"\b(byte|word|dword|qword|tbyte|xmmword) ptr ")
_SEGMENT = re.compile(r"\b([cdefgs]s):\[")
_GS_OFFSET = re.compile(r"\[gs:(0x[0-9a-f]+|\d+)\]")


def nasm(text):
    """capstone's Intel syntax as NASM writes it: `dword ptr gs:[0]` -> `dword [gs:0]`."""
    return _SEGMENT.sub(r"[\1:", _PTR.sub(r"\1 ", text))


def guest_ranges(spans, dash="-", between=", "):
    """A unit's guest bytes as text: one range, or several where it translated calls in line."""
    return between.join(f"{lo:#x}{dash}{hi:#x}" for lo, hi in spans) or "(no guest bytes)"


def _names(image):
    return {address: name for name, address in image.symbols.items()}


def _unit(machine, unit):
    if isinstance(unit, int):
        found = machine.cache.units.get(unit)
        if found is None:
            raise ValueError(f"no live translation unit starts at guest address {unit:#x}; translated units "
                             f"start at {', '.join(hex(g) for g in sorted(machine.cache.units)) or 'none yet'}")
        return found
    return unit


# --- one unit, guest beside cache -------------------------------------------------------------------
class UnitView:
    """A translation unit as rows: a guest instruction, what was done with it, and its cache code
    (each host instruction with a note). Shows as an HTML table in Jupyter, `text` elsewhere."""

    def __init__(self, rows, heading, current=None):
        self.rows, self.heading, self.current = rows, heading, current

    @property
    def text(self):
        lines = [self.heading]
        for piece, label, code in self.rows:
            guest = f"{piece.guest:#010x}  {nasm(piece.text):<26} {label:<19}"
            for k, (address, text, note) in enumerate(code or [(piece.cache, "(no code)", "")]):
                mark = ">" if address == self.current else " "
                left = guest if k == 0 else " " * len(guest)
                lines.append(f"{left} {mark}{address:#010x}  {text:<34}" + (f" ; {note}" if note else ""))
        return "\n".join(line.rstrip() for line in lines)

    def _repr_html_(self):
        # one table row per host instruction, the guest instruction spanning its rows, so that the
        # cache code lines up across units; every cell aligned left (JupyterLab right-aligns tables)
        def td(text, rows=1, wrap=False, extra=""):
            span = f" rowspan='{rows}'" if rows > 1 else ""
            space = "normal;min-width:16em" if wrap else "nowrap"
            return (f"<td{span} style='padding:1px 8px;text-align:left;vertical-align:top;"
                    f"white-space:{space};{extra}'>{text}</td>")

        rows = []
        for piece, label, code in self.rows:
            colour = HOW[piece.how][1]
            code = code or [(piece.cache, "(no code)", "")]
            guest = html.escape(nasm(piece.text))
            first = (td(f"<span style='color:#888'>{piece.guest:08x}</span>", len(code))
                     + td(f"<b>{guest}</b>" if piece.how != "copied" else guest, len(code))
                     + td(f"<i>{html.escape(label)}</i>", len(code)))
            for k, (address, text, note) in enumerate(code):
                here = address == self.current
                mark = "background:#ffd54f;font-weight:bold;" if here else ""
                border = "border-top:1px solid #ccc;" if k == 0 else ""
                rows.append(f"<tr style='background:{colour};{border}'>" + (first if k == 0 else "")
                            + td(f"{'▶' if here else ''} <span style='color:#888'>{address:08x}</span>", extra=mark)
                            + td(html.escape(text), extra=mark)
                            + td(f"<span style='color:#6a737d'>{html.escape(note)}</span>", wrap=True) + "</tr>")
        head = "".join(f"<th style='padding:2px 8px;text-align:left'>{h}</th>"
                       for h in ("guest", "guest instruction", "translator", "cache", "translation-cache code",
                                 "what it is for"))
        legend = " ".join(f"<span style='background:{c};border:1px solid #ccc;padding:0 6px'>{html.escape(n)}</span>"
                          for n, c in HOW.values())
        return (f"<div style='font-family:monospace;font-size:12px;background:#fcfcfc;color:#24292e;"
                f"padding:4px;overflow-x:auto'><div style='margin-bottom:4px;text-align:left'>"
                f"<b>{html.escape(self.heading)}</b></div>"
                f"<table style='border-collapse:collapse;font-family:monospace;font-size:12px;margin:0'><tr>{head}</tr>"
                f"{''.join(rows)}</table><div style='margin-top:4px;font-size:11px'>{legend}</div></div>")

    def __repr__(self):
        return self.text


def side_by_side(machine, unit, current=None):
    """The unit starting at guest address `unit` (or a Unit) of a binary-translation machine: each
    guest instruction beside the code the translator put in the cache for it, with what changed
    highlighted. The cache code is read from the cache as it is now, so chained exits show where
    they jump. `current` marks one cache address (the stepper's EIP)."""
    unit, cache = _unit(machine, unit), machine.cache
    exits = {way.site: way for way in unit.exits}
    rows = []
    for piece in unit.pieces:
        code = bytes(machine.uc.mem_read(piece.cache, len(piece.code))) if unit.alive else piece.code
        lines = [(i.address, nasm(i.text), _note(i, piece, cache, exits)) for i in disassemble(code, piece.cache)]
        if piece.how == "rewritten" and re.search(r"\bcs\b", piece.text) and lines and not lines[0][2]:
            lines[0] = lines[0][:2] + (f"the guest's own CS, {unit.vcs:#x}: not the ring-1 one",)
        rows.append((piece, HOW[piece.how][0], lines))
    counts = Counter(p.how for p in unit.pieces if p.size)
    made = ", ".join(f"{counts[how]} {how}" for how in ("copied", "rewritten", "call-out", "exit") if counts[how])
    heading = (f"unit {guest_ranges(unit.spans)} -> cache {unit.cache:#x}: {sum(counts.values())} guest "
               f"instructions ({made}), {sum(hi - lo for lo, hi in unit.spans)} guest bytes -> {unit.size} cache bytes"
               + ("" if unit.alive else "; invalidated: the guest wrote to its code"))
    return UnitView(rows, heading, current)


def _note(insn, piece, cache, exits):
    """What one host instruction of the cache is for, from the cache's own records."""
    if insn.address in cache.callouts:
        callout = cache.callouts[insn.address]
        return CALLOUTS.get(callout.kind, f"call-out: {callout.kind}")
    if insn.address in exits:
        way = exits[insn.address]
        if way.chained_to is not None:
            return f"exit to guest {way.target:#x}, chained to its translation"
        return f"exit to guest {way.target:#x}, not chained yet: into the call-out below"
    if insn.mnemonic == "jmp" and insn.op_str == hex(cache.base):
        return "to the lookup code: guest address in EAX -> cache address"
    if piece.text.startswith("call") and insn.bytes[0] == 0x68:
        return "the guest's return address" + ("; the unit goes on in the callee" if piece.how == "rewritten" else "")
    if piece.how == "rewritten" and piece.text.startswith("ret"):
        return "the ret, in line: pops the return address its call pushed; the unit goes on after the call"
    match = _GS_OFFSET.search(nasm(insn.text))
    if match:
        offset = int(match.group(1), 0)
        if offset in DATA:
            return DATA[offset] + " (VMM data page)"
    return ""


# --- the whole cache as a graph ----------------------------------------------------------------------
def cache_graph(machine, max_units=40):
    """The translation cache of a binary-translation machine: one node per live unit (its guest
    address range), a solid edge per chained exit, a dashed edge per exit not chained yet (it still
    calls out to the VMM when taken), a dotted red edge where a unit ends in a call-out and the VMM
    resumes the guest in the next unit, a dotted edge from units that end in ret or an indirect
    jump to the lookup code (a ret's solid or dashed edge is its prediction)."""
    cache, names = machine.cache, _names(machine.image)
    units = sorted(cache.units.values(), key=lambda u: u.guest)
    shown = units[:max_units]
    ids = {id(u): f"u{u.guest:x}" for u in shown}
    chained = sum(1 for u in shown for way in u.exits if way.chained_to is not None)
    waiting = sum(1 for u in shown for way in u.exits if way.chained_to is None)
    caption = (f"the translation cache: {len(units)} units, {cache.used:,} bytes; {chained} exits chained (solid), "
               f"{waiting} not chained yet (dashed); dotted red: through the VMM after a call-out" + (f"; the first {max_units} units shown" if len(units) > max_units else ""))
    g = Diagram("cache", caption=caption, text=_cache_text(cache, units, names))
    g.attr(rankdir="TB", fontname="Helvetica", nodesep="0.25", ranksep="0.35")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10", margin="0.08,0.04")
    g.attr("edge", arrowsize="0.7")
    ghosts, lookup = set(), False
    for u in shown:
        hows = {p.how for p in u.pieces}
        fill = "#f8d7da" if "call-out" in hows else "#fff3b0" if "rewritten" in hows else "#dbeaf7"
        name = names.get(u.guest)
        label = (f"{name}\n" if name else "") + guest_ranges(u.spans, "–", "\n+ ") + "\n" + \
                f"{sum(1 for p in u.pieces if p.size)} instr → {u.size} byte{'s' if u.size != 1 else ''}"
        g.node(ids[id(u)], label, fillcolor=fill)
    for u in shown:
        for way in u.exits:
            target = way.chained_to if way.chained_to is not None else cache.units.get(way.target)
            if target is not None and id(target) in ids:
                node = ids[id(target)]
            else:
                node = f"g{way.target:x}"
                if node not in ghosts:
                    ghosts.add(node)
                    g.node(node, f"{way.target:#x}\nnot translated", style="dashed", fillcolor="white")
            if way.chained_to is not None:
                g.edge(ids[id(u)], node, color="#1f4e79", penwidth="1.4")
            else:
                g.edge(ids[id(u)], node, style="dashed", color="#888888")
        if _ends_indirect(u):
            lookup = True
            g.edge(ids[id(u)], "lookup", style="dotted", color="#6f42c1")
        after = cache.units.get(u.pieces[-1].guest + u.pieces[-1].size) if _resumes_after(u, cache) else None
        if after is not None and id(after) in ids:
            g.edge(ids[id(u)], ids[id(after)], style="dotted", color="#c62828", arrowhead="vee")
    if lookup:
        g.node("lookup", "lookup code\nret, indirect jmp:\nguest → cache address", shape="box",
               style="filled", fillcolor="#eee6f7", fontsize="9")
    return g


RESUME_ELSEWHERE = ("int", "iret", "retf", "far", "undecodable")


def _resumes_after(unit, cache):
    """Whether the unit ends in a call-out after which the VMM resumes the guest at the next
    guest instruction (it emulated it), rather than somewhere else (int n, iret, far jumps)."""
    last = unit.pieces[-1] if unit.pieces else None
    if last is None or last.how != "call-out":
        return False
    callout = cache.callouts.get(last.cache)
    return callout is not None and callout.kind not in RESUME_ELSEWHERE


def _ends_indirect(unit):
    """Whether the unit ends in an indirect jump or a ret: through the lookup code (a ret only when
    its prediction, an exit of its own, misses)."""
    last = unit.pieces[-1] if unit.pieces else None
    return last is not None and last.how == "exit" and last.size and (not unit.exits or last.text.startswith("ret"))


def _cache_text(cache, units, names):
    lines = [f"{len(units)} units in the cache, {cache.used:,} bytes; {cache.flushes} flushes"]
    for u in units:
        name = f" ({names[u.guest]})" if u.guest in names else ""
        ways = [f"exit to {w.target:#x} " + ("chained" if w.chained_to is not None else "not chained")
                for w in u.exits] + (["ret/indirect jump: through the lookup code" + (" when the prediction misses" if u.exits else "")]
                   if _ends_indirect(u) else [])
        lines.append(f"{guest_ranges(u.spans)}{name} -> cache {u.cache:#x}, {u.size} bytes: "
                     + ("; ".join(ways) or "ends in a call-out"))
    return "\n".join(lines)


# --- the translator's loop, with one run's counts -------------------------------------------------------
def translation_loop(machine):
    """Where control goes under binary translation, each edge with how often this run took it."""
    result, cache = machine.result(), machine.cache
    translated = sum(1 for e in result.of_kind("translate") if not e.detail.get("invalidated"))
    invalidated = len(result.of_kind("translate")) - translated
    callouts = result.stats.get("traps", 0)
    misses = result.stats.get("cache_misses", 0)
    chained = sum(1 for u in cache.units.values() for way in u.exits if way.chained_to is not None)
    to_user = sum(1 for e in result.of_kind("ring-transition") if e.detail.get("to_ring") == 3)
    from_user = sum(1 for e in result.of_kind("ring-transition") if e.detail.get("from_ring") == 3)
    text = "\n".join([
        f"{translated} units translated ({invalidated} thrown away because the guest wrote to their code).",
        f"{misses} times the cache code asked the VMM where to go (an exit not chained yet, a ret not in the lookup table).",
        f"{chained} exits are chained: they jump straight to the next unit without the VMM.",
        f"{callouts} call-outs: the VMM emulated an instruction (or delivered an interrupt) and the guest resumed.",
        f"{to_user} returns to ring 3, where user code ran directly; {from_user} entries from ring 3 back to the kernel."
        if to_user or from_user else "The guest never entered ring 3: all of it ran as translated kernel code."])
    g = Diagram("bt_loop", caption=f"binary translation in one run: {translated} units translated, {chained} exits "
                f"chained, {callouts} call-outs", text=text)
    g.attr(rankdir="LR", fontname="Helvetica", nodesep="0.45", ranksep="0.5")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="11")
    g.attr("edge", fontname="Helvetica", fontsize="10")
    g.node("guest", "guest kernel code\n(at a guest address)", fillcolor="#f6e7d2")
    g.node("translate", "translator: decode a unit;\ncopy, rewrite, call out", fillcolor="#eeeeee")
    g.node("cache", "translated code runs\nin ring 1 from the cache\n(no VMM: cli, sti, pushf,\npopf on the virtual flags)",
           fillcolor="#e8f5e9")
    g.node("vmm", "VMM emulates it on the\nvirtual CPU / device model", fillcolor="#f4d6d6")
    g.edge("guest", "translate", label=f" {translated} units ")
    g.edge("translate", "cache")
    g.edge("cache", "cache", label=f" {chained} chained exits ", color="#1f4e79")
    g.edge("cache", "translate", label=f" {misses} misses ", style="dashed", constraint="false")
    g.edge("cache", "vmm", label=f" {callouts} call-outs ")
    g.edge("vmm", "cache", label=" resume ", constraint="false")
    if to_user or from_user:
        g.node("user", "guest user code (ring 3)\nruns directly, untranslated", fillcolor="#dbeaf7")
        g.edge("cache", "user", label=f" {to_user} iret ")
        g.edge("user", "guest", label=f" {from_user} int n, IRQ, fault ", style="dashed", constraint="false")
    return g


# --- a stepper that shows the translation being run --------------------------------------------------------
class TranslationStepper(Stepper):
    """Stepper for a guest under binary translation. Besides the stepper's panels it shows the unit
    the CPU is in: its guest instructions beside the cache code, the host instruction at EIP marked.
    `step` executes one host instruction; `guest instruction` runs on to the next guest one."""

    MAX_HOST_STEPS = 200          # host instructions one guest instruction may take (pushf: 13)

    def __init__(self, guest, **options):
        super().__init__(guest, technique="binary-translation", **options)

    def next_guest(self):
        """Run host instructions until the guest is between two of its own instructions again."""
        def action():
            m = self.machine
            for _ in range(self.MAX_HOST_STEPS):
                m.step()
                eip = m.cpu["eip"]
                if m.finished or eip not in m.cache or m.cache.guest_address(eip) is not None:
                    return
        self._act(action)

    def _build_widgets(self, show_io):
        super()._build_widgets(show_io)
        self._add_button("guest instruction", "step-forward", self.next_guest, "run on to the next guest instruction",
                         after="step")
        self.buttons["step"].tooltip = "execute one host instruction of the cache"
        self.unit = w.HTML(layout=w.Layout(width="100%", overflow="auto"))
        self.unit.add_class("vmkit-stepper-unit")
        right = w.VBox([w.HBox([self.cpl]), self.diagram])
        self.widget = w.VBox([self.controls, self.status,
                              titled("where the CPU is: the unit it runs, guest code beside cache code", self.unit),
                              w.HBox([titled("registers (real CPU)", self.registers), right],
                                     layout=w.Layout(flex_flow="row wrap")),
                              titled("events (newest last; bold: from the last button)", self.log),
                              titled("serial output (COM1)", self.serial)])
        self.widget.add_class("vmkit-stepper")

    def render(self):
        super().render()
        m = self.machine
        cache = m.cache
        units = len(cache.units)
        chained = sum(1 for u in cache.units.values() for way in u.exits if way.chained_to is not None)
        self.status.value = status_html(m, self.message, self.stopped) + (
            f"<div style='font-family:monospace'>translation cache: units {units} · chained exits {chained} · "
            f"cache misses {m.stats.get('cache_misses', 0)}</div>")
        self.unit.value = where_html(m)
        self.log.value = _log_html(m.events, self.last_events, self.show_io.value, self.LOG_LINES)
        self.buttons["guest instruction"].disabled = m.finished or self.stopped


def where_html(m):
    """What the CPU is running now, as the stepper's unit panel shows it."""
    cpu, cache = m.cpu, m.cache
    eip = cpu["eip"]

    def note(text):
        return f"<div style='margin:2px 0 4px 0'>{html.escape(text)}</div>"

    if m.finished:
        return note("The guest has finished.")
    if cpu.cpl == 3:
        return note("Ring 3: guest user code runs directly on the CPU, untranslated.") + code_html(m)
    if eip in cache:
        unit, piece = cache.locate(eip)
        if unit is None or piece is None:
            return note("The lookup code, shared by every ret and indirect jump: it finds the guest address "
                        "in EAX in its table and jumps to that translation, or calls out on a miss.") + code_html(m)
        return side_by_side(m, unit, current=eip)._repr_html_()
    unit = cache.lookup(eip, m.vcpu.cs)
    if unit is not None:
        return note(f"The guest kernel is at guest address {eip:#x} (after a call-out, an interrupt or a "
                    f"lookup). Its translation is entered next:") + side_by_side(m, unit)._repr_html_()
    return note(f"The guest kernel is at guest address {eip:#x}, which has no translation yet: "
                f"the next step translates the unit that starts here, then runs its first instruction.") + code_html(m)


def bt_log_line(e):
    """A log line in which translations read as what they did."""
    d = e.detail
    if e.kind == "translate" and d.get("invalidated"):
        return f"{'translate':<15} invalidated the unit at guest {d['guest']:#x}: the guest wrote to its code"
    if e.kind == "translate":
        flushed = "; the cache was full and was flushed first" if d.get("flushed") else ""
        n = d["instructions"]
        return (f"{'translate':<15} guest {guest_ranges(d.get('spans') or [(d['guest'], d['guest'] + d['guest_size'])])} "
                f"({n} instruction{'s' if n != 1 else ''}) -> cache {d['cache']:#x}, {d['size']} bytes{flushed}")
    return log_line(e)


def _log_html(events, last, show_io, lines):
    return log_html(events, last, show_io, lines, line=bt_log_line)


# --- measured here, and the paper's ------------------------------------------------------------------------
def callout_sites(result, top=6):
    """The guest instructions that called out to the VMM most often in a run: under binary
    translation the ones an adaptive translator would translate differently."""
    counts = Counter((e.eip, e.detail.get("instruction", "?")) for e in result.of_kind("trap")
                     if str(e.detail.get("cause", "")).startswith("call-out"))
    total = sum(counts.values())
    rows = [(f"{eip:#010x}", nasm(text), n, f"{n / total:.0%}") for (eip, text), n in counts.most_common(top)]
    return Table(["guest address", "instruction", "call-outs", "share"], rows,
                 f"{total} call-outs in all, at {len(counts)} guest instructions")


TECHNIQUE_NAMES = {"native": "native", "trap-and-emulate": "trap-and-emulate", "binary-translation": "binary translation"}


def cost_table(measured):
    """`measured` maps a workload's name to {technique: RunResult}. One row per workload: per
    technique the traps into the VMM, the instructions the CPU executed and the time (in vmkit,
    measured on this machine), with the time as a multiple of native where native ran."""
    techniques = [t for t in TECHNIQUE_NAMES if any(t in runs for runs in measured.values())]
    header, groups = ["workload"], [("", 1)]
    for t in techniques:
        header += ["traps", "instructions", "ms"]
        groups.append((TECHNIQUE_NAMES[t], 3))
    rows = []
    for name, runs in measured.items():
        row = [name]
        base = runs.get("native")
        for t in techniques:
            r = runs.get(t)
            if r is None:
                row += ["", "", ""]
                continue
            ms = f"{r.seconds * 1e3:,.1f}"
            if base is not None and t != "native" and base.seconds > 0:
                ms += f" ({r.seconds / base.seconds:.1f}×)"
            executed = r.stats.get("cpu_instructions", r.stats.get("instructions", 0))   # the cache's code too
            row += [f"{r.stats.get('traps', 0):,}", f"{executed:,}", ms]
        rows.append(row)
    return Table(header, rows, "measured on this machine, in vmkit (best of a few runs); (×): time as a multiple "
                 "of native", groups)


# Adams & Agesen, "A Comparison of Software and Hardware Techniques for x86 Virtualization",
# ASPLOS 2006, Figure 4 (its numbers from the text beside it): nanobenchmarks in cycles on a VT-x
# Pentium 4, native against VMware's software VMM
# (binary translation) and their hardware VMM (first-generation VT-x).
ADAMS_AGESEN = [
    ("in", "read an I/O port (natively: a chipset register)", "3,209", "≈214", "15,826"),
    ("call/ret", "call a subroutine and return", "11", "51", "11"),
    ("ptemod", "store to a page-table entry the VMM traces", "—", "391", "12,733"),
]


def paper_table():
    """Adams & Agesen's nanobenchmarks (ASPLOS 2006), in CPU cycles."""
    return Table(["nanobenchmark", "what it does", "native", "software VMM (BT)", "hardware VMM (VT-x)"],
                 ADAMS_AGESEN, "CPU cycles, from Adams & Agesen, ASPLOS 2006, Figure 4 (not measured here). For in, the "
                 "paper says the software VMM was fifteen times faster than native; for ptemod, native is a single store "
                 "and the hardware VMM about thirty times slower than the software VMM (12,733 / 391 = 33).")
