"""Pictures of 32-bit paging and of shadow page tables, drawn from a live machine's memory and from
the events a run recorded.

    walk(machine, linear, write=, user=, cr3=)   the page walk for one access, read from the guest's
                                                 tables (Walk: its steps, a Diagram, a text form)
    WalkStepper(machine, linear, spaces=)        the walk one step at a time: CR3, PDE, PTE, frame
    shadow_beside_guest(machine, ...)            the guest's PTEs beside the shadow PTEs the VMM made
                                                 of them, and why each differs
    ShadowStepper(guest, technique)              step from shadow-paging event to shadow-paging event
    event_line(event), page_story(events, page)  those events as sentences
    store_table(result)                          each page-table store: a trace fault or a call-out
    cost_table(runs, rounds), paper_table()      per-round counts measured here; Adams & Agesen's cycles
    paging_counts(result), paging_exits(runs)    the paging work that entered the VMM: traps, call-outs
                                                 or VM exits (CR_ACCESS, INVLPG, EXCEPTION, EPT_VIOLATION)
    two_d_walk(machine, linear)                  a TLB miss under EPT: the EPT's four references for each
                                                 guest-physical address the guest's walk reads, numbered
    frame_check(machine, event=)                 Xen's answer: how Xen checked one page-table request it
                                                 refused, with the frame table's types and references
    p2m_table(domains, pfns=)                    each PV domain's pseudo-physical frames and the machine
                                                 frames its mfn_list says they are, and the M2P's way back
    per_unit(runs)                               per page-table update or page fault: what entered the
                                                 hypervisor (traps, VM exits, hypercalls), what Xen validated

Nothing here pages or shadows: the guest's tables are read from its memory (guest-physical addresses
are machine addresses on the vmkit PC), the shadow's through the machine's shadow MMU
(vmkit.vmm.shadow_paging), and reading changes nothing, no accessed or dirty bit included. Under
"paravirt" the guest's tables hold machine frames and the CPU walks them as they are, so `walk` reads
them the same way; Xen's frame table is read from vmkit.xen.mm, which follows Xen's mm.c. `walk`
applies the rules of the Intel SDM, vol. 3, 4.3 and 4.6, as vmkit.machine.cpu.Cpu.translate does;
tests/test_viz_paging.py checks the two agree.

Used by lesson 06.

Long because: one picture per idea of lesson 06 (the walk and its stepper, the shadow beside the
guest's tables, the stepper over the shadow MMU's events, the costs, the exits of first-generation VT-x,
EPT's two-dimensional walk, and Xen's validated updates and phys-to-machine map), and all of them read the
same entries with the same rules; apart, they would share most of this module's helpers.
"""
import html
import re
from collections import Counter

import ipywidgets as w

from ..asm import assemble, disassemble
from ..machine.cpu import CR0_PG, CR0_WP, CR4_PSE, PDE_PS, PTE_A, PTE_D, PTE_P, PTE_RW, PTE_US
from ..run import machine as new_machine
from ..xen import abi as xen
from ..xen.layout import START_INFO
from .diagram import Diagram, Table
from .stepper import Walker, button, titled

FRAME = 0xFFFFF000
PF_P, PF_W, PF_U = 1, 2, 4
VMM_TOP = 0xFFC00000                  # the top 4 MiB: the VMM's own memory in every shadow root
SHADOW_KINDS = ("hidden-fault", "shadow-fill", "true-fault", "trace")
ACCESSES = {"kernel read": (False, False), "kernel write": (True, False),
            "user read": (False, True), "user write": (True, True)}
# row colours: the step or row in focus, a fault, a difference the VMM made on purpose, no difference
FOCUS, FAULT, CHANGED, SAME, EMPTY = "#ffe066", "#f8d7da", "#fde2c8", "#e8f5e9", "#eeeeee"


# --- reading the guest ----------------------------------------------------------------------------------
def guest_registers(m):
    """The guest's own CR0, CR3 and CR4: its virtual CPU's under a VMM, the CPU's natively."""
    vcpu = getattr(m, "vcpu", None)
    if vcpu is not None and getattr(m, "shadow", None) is not None:
        return {"cr0": vcpu.cr0, "cr3": vcpu.cr3, "cr4": vcpu.cr4}
    return {name: m.cpu[name] for name in ("cr0", "cr3", "cr4")}


def _u32(m, physical):
    return int.from_bytes(bytes(m.uc.mem_read(physical, 4)), "little")


def bits(value, level="PTE"):
    """The flags of an entry as the SDM names them, a dot for each clear one: 'P RW US A D'."""
    names = [("P", PTE_P), ("RW", PTE_RW), ("US", PTE_US), ("A", PTE_A)]
    names.append(("PS", PDE_PS) if level == "PDE" else ("D", PTE_D))
    shown = [name if value & bit else "·" * len(name) for name, bit in names]
    if level == "PDE" and not value & PDE_PS:
        shown = shown[:-1]
    return " ".join(shown)


def error_text(code):
    """A #PF error code in words (SDM vol. 3, 4.7)."""
    return (f"{code:#x}: P={code & 1} ({'a protection violation' if code & 1 else 'a page not present'}), "
            f"W={code >> 1 & 1} ({'a write' if code & 2 else 'a read'}), "
            f"U={code >> 2 & 1} ({'from ring 3' if code & 4 else 'by the kernel'})")


# --- the page walk --------------------------------------------------------------------------------------
class Entry:
    """One paging-structure entry the walk read: `level` PDE or PTE, its `index`, its guest-physical
    `address` and the `value` it held."""

    def __init__(self, level, index, address, value):
        self.level, self.index, self.address, self.value = level, index, address, value

    def __repr__(self):
        return f"{self.level}[{self.index}] @ {self.address:#x} = {self.value:#010x} ({bits(self.value, self.level)})"


class Walk:
    """The walk of 32-bit paging for one access: `cr3`, the `entries` read, and either `physical`
    or a page fault's `error_code`; `why` says which, in a sentence."""

    def __init__(self, linear, write, user, cr3, paging, entries, physical, error_code, why, large=False):
        self.linear, self.write, self.user, self.cr3, self.paging = linear, write, user, cr3, paging
        self.entries, self.physical, self.error_code, self.why, self.large = entries, physical, error_code, why, large

    @property
    def access(self):
        return f"{'user' if self.user else 'kernel'} {'write' if self.write else 'read'}"

    @property
    def allowed(self):
        return self.physical is not None

    def entry(self, level):
        return next((e for e in self.entries if e.level == level), None)

    def steps(self):
        """The walk as (title, sentence) in the order the CPU takes them."""
        if not self.paging:
            return [("paging off", f"CR0.PG = 0: linear {self.linear:#x} is the physical address.")]
        d, t, o = self.linear >> 22, (self.linear >> 12) & 0x3FF, self.linear & 0xFFF
        out = [("CR3", f"CR3 holds {self.cr3:#010x}: the page directory is the 4 KiB frame at {self.cr3 & FRAME:#x}.")]
        pde = self.entry("PDE")
        text = (f"Bits 31:22 of {self.linear:#010x} are {d:#x} ({d}): the PDE is at {self.cr3 & FRAME:#x} + {d} × 4 = "
                f"{pde.address:#x}. It holds {pde.value:#010x} ({bits(pde.value, 'PDE')})")
        if not pde.value & PTE_P:
            text += ": not present."
        elif self.large:
            text += f": PS = 1 with CR4.PSE on, so it maps a 4 MiB page at {pde.value & 0xFFC00000:#x}."
        else:
            text += f": the page table is at {pde.value & FRAME:#x}."
        out.append(("PDE", text))
        pte = self.entry("PTE")
        if pte is not None:
            text = (f"Bits 21:12 are {t:#x} ({t}): the PTE is at {pde.value & FRAME:#x} + {t} × 4 = {pte.address:#x}. "
                    f"It holds {pte.value:#010x} ({bits(pte.value)})")
            text += f": the frame is {pte.value & FRAME:#x}." if pte.value & PTE_P else ": not present."
            out.append(("PTE", text))
        if self.allowed:
            out.append(("frame", f"{self.why} Physical address = frame + bits 11:0 ({o:#x}) = {self.physical:#010x}."))
        else:
            out.append(("#PF", f"{self.why} The CPU raises #PF with CR2 = {self.linear:#010x} and error code "
                               f"{error_text(self.error_code)}."))
        return out

    @property
    def text(self):
        return "\n".join([f"{self.access} of linear {self.linear:#010x}:"] +
                         [f"{n}. {title}: {sentence}" for n, (title, sentence) in enumerate(self.steps(), 1)])

    def diagram(self, upto=None):
        """The walk as a picture, the first `upto` steps of steps() (all of them by default)."""
        return _walk_diagram(self, len(self.steps()) if upto is None else upto)

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        return self.diagram()._repr_mimebundle_(include, exclude, **kwargs)

    def __repr__(self):
        return self.text


def walk(m, linear, write=False, user=False, cr3=None):
    """The page walk for a `user`/kernel `write`/read of `linear`, on the guest's own tables (or on
    the page directory at `cr3`): the CR3, PDE and PTE it reads and what comes of them. It reads as
    the CPU would (SDM vol. 3, 4.3; rights 4.6.1; the error code 4.7) but sets no accessed bit."""
    regs = guest_registers(m)
    cr3 = regs["cr3"] if cr3 is None else cr3
    linear &= 0xFFFFFFFF
    if not regs["cr0"] & CR0_PG:
        return Walk(linear, write, user, cr3, False, [], linear, None, "Paging is off.")
    code = (PF_W if write else 0) | (PF_U if user else 0)

    def fault(entries, extra, why, large=False):
        return Walk(linear, write, user, cr3, True, entries, None, code | extra, why, large)

    pde = Entry("PDE", linear >> 22, (cr3 & FRAME) + ((linear >> 22) << 2), 0)
    pde.value = _u32(m, pde.address)
    entries = [pde]
    if not pde.value & PTE_P:
        return fault(entries, 0, "The PDE is not present (P = 0).")
    large = bool(pde.value & PDE_PS and regs["cr4"] & CR4_PSE)
    if large:
        physical = (pde.value & 0xFFC00000) | (linear & 0x3FFFFF)
        rights = pde.value
    else:
        index = (linear >> 12) & 0x3FF
        pte = Entry("PTE", index, (pde.value & FRAME) + (index << 2), 0)
        pte.value = _u32(m, pte.address)
        entries.append(pte)
        if not pte.value & PTE_P:
            return fault(entries, 0, "The PTE is not present (P = 0).")
        physical = (pte.value & FRAME) | (linear & 0xFFF)
        rights = pde.value & pte.value
    if user and not rights & PTE_US:
        return fault(entries, PF_P, "A user access, but U/S = 0 in the PDE or the PTE: a supervisor page.", large)
    if user and write and not rights & PTE_RW:
        return fault(entries, PF_P, "A user write, but R/W = 0 in the PDE or the PTE: a read-only page.", large)
    if write and not user and regs["cr0"] & CR0_WP and not rights & PTE_RW:
        return fault(entries, PF_P, "A kernel write to a read-only page, and CR0.WP = 1 makes the kernel respect it.",
                     large)
    need = "P" + (", U/S = 1" if user else "") + (", R/W = 1" if write and (user or regs["cr0"] & CR0_WP) else "")
    why = (f"Allowed: a {'user' if user else 'kernel'} {'write' if write else 'read'} needs {need} in "
           f"{'the PDE' if large else 'both entries'}.")
    return Walk(linear, write, user, cr3, True, entries, physical, None, why, large)


def _row_label(title, rows, colour):
    """A graphviz HTML label: a bold title (port "top") over rows of (port, text, background)."""
    # a little room after each text: a browser's sans-serif may run wider than the font dot measured with
    cells = "".join(f'<TR><TD PORT="{port}" ALIGN="LEFT" BALIGN="LEFT" BGCOLOR="{bg}">{html.escape(text)}'
                    f'&#160;&#160;&#160;</TD></TR>' for port, text, bg in rows)
    return (f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4" BGCOLOR="{colour}">'
            f'<TR><TD PORT="top"><B>{html.escape(title)}</B></TD></TR>{cells}</TABLE>>')


def _walk_diagram(wk, upto):
    """The address on top, its three fields pointing down at what each one indexes: CR3, the page
    directory, the page table and the frame (or the #PF) in a row, left to right, as the walk goes."""
    steps = wk.steps()
    titles = [title for title, _ in steps[:upto]]
    caption = (f"the page walk for a {wk.access} of {wk.linear:#010x}: "
               + (f"step {upto} of {len(steps)}" if upto < len(steps) else
                  f"physical {wk.physical:#010x}" if wk.allowed else f"#PF, error code {wk.error_code:#x}"))
    g = Diagram("walk", caption=caption, text="\n".join(wk.text.splitlines()[:upto + 1]))
    g.attr(rankdir="TB", fontname="Helvetica", nodesep="0.45", ranksep="0.5")
    g.attr("node", shape="plaintext", fontname="Helvetica", fontsize="11")
    g.attr("edge", fontname="Helvetica", fontsize="10")
    d, t, o = wk.linear >> 22, (wk.linear >> 12) & 0x3FF, wk.linear & 0xFFF
    g.node("addr", f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="5" BGCOLOR="#f6e7d2">'
                   f'<TR><TD COLSPAN="3"><B>linear {wk.linear:#010x} ({html.escape(wk.access)})</B></TD></TR>'
                   f'<TR><TD PORT="dir">bits 31:22<BR/>directory {d:#x} ({d})</TD>'
                   f'<TD PORT="tab">bits 21:12<BR/>table {t:#x} ({t})</TD>'
                   f'<TD PORT="off">bits 11:0<BR/>offset {o:#x}</TD></TR></TABLE>>')
    if not wk.paging:
        g.node("phys", _row_label("paging is off", [("val", f"physical {wk.linear:#010x}", SAME)], "#dbeaf7"))
        g.edge("addr", "phys:val")
        return g
    pde, pte = wk.entry("PDE"), wk.entry("PTE")

    def entry_cell(title, entry, focus):
        bg = FOCUS if focus else (FAULT if not entry.value & PTE_P else "white")
        return _row_label(title, [("entry", f"{entry.level} {entry.index} at {entry.address:#x}", bg),
                                  ("value", f"{entry.value:#010x}", bg),
                                  ("flags", bits(entry.value, entry.level), bg)], "#e3f2fd")

    row = g.subgraph(name="walk_row")
    with row as r:
        r.attr(rank="same")
        r.node("cr3", _row_label("CR3", [("val", f"{wk.cr3:#010x}", FOCUS if titles[-1] == "CR3" else "white")],
                                 "#eeeeee"))
        if "PDE" in titles:
            r.node("pd", entry_cell(f"page directory at {wk.cr3 & FRAME:#x}", pde, titles[-1] == "PDE"))
        if "PTE" in titles:
            r.node("pt", entry_cell(f"page table at {pde.value & FRAME:#x}", pte, titles[-1] == "PTE"))
        if titles[-1] == "frame":
            size = "4 MiB page" if wk.large else "4 KiB frame"
            r.node("end", _row_label(f"{size} at {wk.physical & (0xFFC00000 if wk.large else FRAME):#x}",
                                     [("val", f"physical {wk.physical:#010x}", FOCUS)], "#dbeaf7"))
        elif titles[-1] == "#PF":
            r.node("end", _row_label("#PF", [("val", f"CR2 = {wk.linear:#010x}", FAULT),
                                             ("code", f"error code {wk.error_code:#x}", FAULT)], FAULT))
    if "PDE" in titles:
        g.edge("cr3:val:e", "pd:top:w", label=" its frame ")
        g.edge("addr:dir:s", "pd:top:n", label=" × 4 ", color="#1f4e79")
    if "PTE" in titles:
        g.edge("pd:value:e", "pt:top:w", label=" its frame ")
        g.edge("addr:tab:s", "pt:top:n", label=" × 4 ", color="#1f4e79")
    if titles[-1] in ("frame", "#PF"):
        last = "pt:value:e" if pte is not None else "pd:value:e"
        g.edge(last, "end:val:w", color="#c62828" if not wk.allowed else "black")
        if wk.allowed:
            g.edge("addr:off:s", "end:top:n", label=" + ", color="#1f4e79")
    return g


class WalkStepper:
    """The walk for one access, a step at a time, on a live machine's tables (nothing runs). `spaces`
    names page directories to choose from ({"process A": 0x382000, ...}); the default is the guest's CR3."""

    def __init__(self, machine, linear, access="kernel read", spaces=None):
        self.machine = machine
        current = guest_registers(machine)["cr3"] & FRAME
        self.spaces = dict(spaces) if spaces else {f"the guest's CR3 ({current:#x})": current}
        self.address = w.Text(value=f"{linear:#010x}", description="linear", continuous_update=False,
                              layout=w.Layout(width="220px"))
        self.access = w.Dropdown(options=list(ACCESSES), value=access, description="access",
                                 layout=w.Layout(width="220px"))
        self.space = w.Dropdown(options=list(self.spaces), description="CR3", layout=w.Layout(width="300px"))
        self.buttons = {"step": button("next step", "step-forward", self.step, "read the next entry", "vmkit-walk-step"),
                        "all": button("whole walk", "fast-forward", self.whole, "every step at once", "vmkit-walk-all"),
                        "reset": button("reset", "undo", self.reset, "start the walk again", "vmkit-walk-reset")}
        for field in (self.address, self.access, self.space):
            field.observe(lambda _: self.reset(), names="value")
        self.picture, self.words = w.HTML(), w.HTML()
        self.widget = w.VBox([w.HBox([self.address, self.access, self.space], layout=w.Layout(flex_flow="row wrap")),
                              w.HBox(list(self.buttons.values())), self.picture, titled("the steps so far", self.words)])
        self.widget.add_class("vmkit-walk-stepper")
        self.reset()

    @property
    def walk(self):
        write, user = ACCESSES[self.access.value]
        try:
            linear = int(self.address.value.strip(), 0)
        except ValueError:
            linear = 0
        return walk(self.machine, linear, write, user, cr3=self.spaces[self.space.value])

    def reset(self):
        self.shown = 1
        self.render()

    def step(self):
        self.shown = min(self.shown + 1, len(self.walk.steps()))
        self.render()

    def whole(self):
        self.shown = len(self.walk.steps())
        self.render()

    def render(self):
        wk = self.walk
        steps = wk.steps()
        self.picture.value = wk.diagram(self.shown).pane_html(stretch=False)
        rows = [f"<li>{'<b>' if n == self.shown else ''}{html.escape(title)}: {html.escape(text)}"
                f"{'</b>' if n == self.shown else ''}</li>" for n, (title, text) in enumerate(steps[:self.shown], 1)]
        self.words.value = f"<ol style='margin:0;font-size:13px'>{''.join(rows)}</ol>"
        self.buttons["step"].disabled = self.buttons["all"].disabled = self.shown >= len(steps)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


# --- the shadow beside the guest's tables ------------------------------------------------------------------
class ShadowRow:
    """One linear page: the guest's entry for it and the shadow PTE the VMM made (or has not made)."""

    def __init__(self, linear, guest, shadow, source, why, kind):
        self.linear, self.guest, self.shadow, self.source, self.why, self.kind = linear, guest, shadow, source, why, kind

    @property
    def guest_entry(self):
        """(address, value) of the guest entry that maps the page (its PTE, or a 4 MiB page's PDE), or None."""
        entry = self.guest.entries[-1] if self.guest.entries else None
        return None if entry is None else (entry.address, entry.value)


def _compare(m, wk, shadow):
    """Why the shadow PTE for one page is what it is: (sentence, kind) where kind is same, traced,
    dirty, missing, refused or stale."""
    mapped = wk.allowed
    if shadow is None or not shadow[1] & PTE_P:
        if mapped:
            return "not in the shadow yet: the next access to it is a hidden fault", "missing"
        return "the guest maps nothing usable here: an access is a true fault", "refused"
    if not mapped:
        return "the shadow still maps a page the guest's tables no longer allow", "stale"
    value = shadow[1]
    rights = wk.entries[0].value & wk.entries[-1].value
    if value & FRAME != wk.physical & FRAME:
        return f"another frame than the guest's ({wk.physical & FRAME:#x})", "stale"
    if rights & PTE_RW and not value & PTE_RW:
        if m.shadow.traced_frame(wk.physical):
            return "read-only: the frame holds a guest page table, so a store to it is a trace fault", "traced"
        if not wk.entries[-1].value & PTE_D:
            return "read-only until the guest's D bit is set: the first write is a hidden fault that sets it", "dirty"
    if value & PTE_RW and not rights & PTE_RW:
        return "writable for the kernel, which the guest's CR0.WP = 0 allows (a supervisor page)", "same"
    if bool(value & PTE_US) != bool(rights & PTE_US):
        return "U/S differs from the guest's", "stale"
    return "the guest's frame and rights", "same"


# kind -> (row colour, arrow colour, arrow style, what the picture says)
KIND_STYLE = {"same": (SAME, "#888888", "solid", "the guest's frame and rights"),
              "traced": (CHANGED, "#c62828", "solid", "read-only: it holds a guest page table, so stores trace"),
              "dirty": (CHANGED, "#ef6c00", "solid", "read-only until the guest's D bit is set"),
              "missing": (EMPTY, "#888888", "dashed", "not filled yet: a hidden fault comes next"),
              "refused": (EMPTY, "#888888", "dotted", "the guest maps nothing: a true fault"),
              "stale": (FAULT, "#c62828", "bold", "out of step with the guest's entry")}


def shadow_rows(m, linears=(), around=None, max_rows=16):
    """The pages of the active shadow root, each as a ShadowRow, with the pages of `linears` added
    (mapped in the shadow or not); with `around`, the `max_rows` pages nearest to that address."""
    mmu = m.shadow
    pages = {}
    if mmu.active is not None:
        for index, (table, _) in mmu.active.tables.items():
            data = bytes(m.uc.mem_read(table, 0x1000))
            for i in range(1024):
                value = int.from_bytes(data[4 * i:4 * i + 4], "little")
                if value:
                    pages[(index << 22) | (i << 12)] = (table + 4 * i, value)
    for linear in linears:
        page = linear & FRAME
        if page not in pages:
            pages[page] = mmu.shadow_entry(page)
    rows = []
    for page in pages:
        wk = walk(m, page)
        shadow = pages[page]
        why, kind = _compare(m, wk, shadow)
        source = mmu.source.get(shadow[0]) if shadow is not None else None
        rows.append(ShadowRow(page, wk, shadow, source, why, kind))
    if around is not None:            # the pages nearest to `around`
        rows.sort(key=lambda r: (abs(r.linear - (around & FRAME)), r.linear))
    else:                             # the pages where the shadow differs from the guest first
        rows.sort(key=lambda r: (r.kind == "same", r.linear))
    return sorted(rows[:max_rows], key=lambda r: r.linear), len(pages)


def shadow_beside_guest(m, linears=(), around=None, max_rows=16):
    """The guest's page-table entries (left) and the shadow PTEs made from them (right), for the pages
    the active shadow root maps and those in `linears`; each pair joined by what the VMM changed and
    why. Read from the machine's memory and its shadow MMU (m.shadow) as they are now."""
    mmu = m.shadow
    regs = guest_registers(m)
    if mmu.active is None:
        g = Diagram("shadow", caption="no shadow page tables: the guest has not turned paging on",
                    text="The guest runs with paging off, so the CPU translates nothing and the VMM keeps no shadow.")
        g.node("none", "paging off", shape="box")
        g.rows = []
        return g
    rows, total = shadow_rows(m, linears, around, max_rows)
    kinds = {kind: sum(1 for r in rows if r.kind == kind) for kind in KIND_STYLE}
    root = mmu.active
    caption = (f"guest CR3 {regs['cr3']:#x} beside its shadow root {root.directory:#x} (the real CR3), {len(rows)} of "
               f"{total} pages: {kinds['traced']} read-only as page tables, {kinds['dirty']} read-only until written, "
               f"{kinds['missing']} not filled yet")
    text = [f"guest CR3 {regs['cr3']:#x}; the real CR3 is the shadow root {root.directory:#x} (VMM memory); "
            f"PDE 1023 of every shadow root maps the VMM's own memory at {VMM_TOP:#x}-0xffffffff."]
    for r in rows:
        g_entry = r.guest_entry
        guest = f"{g_entry[1]:#010x} ({bits(g_entry[1], r.guest.entries[-1].level)})" if g_entry else "no entry"
        shadow = f"{r.shadow[1]:#010x} ({bits(r.shadow[1])})" if r.shadow and r.shadow[1] else "none"
        text.append(f"{r.linear:#010x}: guest {guest}, shadow {shadow}: {r.why}")
    g = Diagram("shadow", caption=caption, text="\n".join(text))
    g.attr(rankdir="LR", fontname="Helvetica", nodesep="0.2", ranksep="0.5")
    g.attr("node", shape="plaintext", fontname="Helvetica", fontsize="10")
    left, right, why = [], [], []
    for i, r in enumerate(rows):
        fill = KIND_STYLE[r.kind][0]
        entry = r.guest.entries[-1] if r.guest.entries else None
        left.append((f"r{i}", f"{r.linear:#010x}   " + (f"{entry.level} {entry.address:#x} = {entry.value:#010x}   "
                                                        f"{bits(entry.value, entry.level)}" if entry else "no PDE"), fill))
        if r.shadow is None or not r.shadow[1]:
            right.append((f"r{i}", "(empty)" if r.shadow else "(no shadow page table here)", fill))
        else:
            right.append((f"r{i}", f"PTE {r.shadow[0]:#x} = {r.shadow[1]:#010x}   {bits(r.shadow[1])}", fill))
        why.append((f"r{i}", KIND_STYLE[r.kind][3], fill))
    # one more row each: the top 4 MiB, which the guest leaves empty and every shadow root maps
    left.append(("vmm", f"{VMM_TOP:#010x}   (the guest maps nothing here)", "#dddddd"))
    right.append(("vmm", f"PDE 1023: the VMM's own 4 MiB", "#dddddd"))
    why.append(("vmm", "the VMM's GDT, IDT, TSS: in every root", "#dddddd"))
    g.node("guest", _row_label(f"the guest's tables: its CR3 {regs['cr3']:#x}", left, "#f6e7d2"))
    g.node("shadow", _row_label(f"the shadow, in VMM memory: the real CR3 {root.directory:#x}", right, "#e3f2fd"))
    g.node("why", _row_label("what the VMM did, and why", why, "#eeeeee"))
    for i, r in enumerate(rows):
        _, colour, style, _ = KIND_STYLE[r.kind]
        g.edge(f"guest:r{i}:e", f"shadow:r{i}:w", color=colour, style=style)
    g.edge("guest:vmm:e", "shadow:vmm:w", style="invis")
    g.edge("shadow:vmm:e", "why:vmm:w", style="invis")
    g.rows = rows
    return g


# --- shadow-paging events, as sentences --------------------------------------------------------------------
def is_shadow_event(e):
    """An event of the shadow MMU's work: a fault, a fill, a trace, or a CR3, CR0 or invlpg the VMM emulated."""
    if e.kind in SHADOW_KINDS:
        return True
    text = str(e.detail.get("instruction", ""))
    return e.kind == "emulate" and (text.startswith(("mov cr3", "mov cr0", "invlpg")))


def event_line(e):
    """One shadow-paging event as a sentence a student can follow."""
    d = e.detail
    where = f"ring {e.cpl}, eip {e.eip:#010x}: "
    if e.kind == "hidden-fault":
        shadow = ("the shadow's entry was read-only, as the guest's D bit was still clear: the VMM sets D in the "
                  "guest's PTE and makes the shadow entry writable" if d["error_code"] & PF_P and d["error_code"] & PF_W
                  else "the shadow's entry refused it" if d["error_code"] & PF_P
                  else "the shadow had no entry for the page yet: the VMM fills it")
        return (where + f"hidden fault at {d['linear']:#010x} (error code {d['error_code']:#x} on the shadow): the "
                f"guest's own tables allow this access; {shadow}, and the guest retries the instruction, never "
                "seeing a fault")
    if e.kind == "shadow-fill":
        return (where + f"shadow fill: the shadow PTE at {d['shadow_entry']:#x} for {d['linear']:#010x} becomes "
                f"{d['value']:#010x} ({bits(d['value'])}), made from the guest entry at {d['guest_entry']:#x}")
    if e.kind == "true-fault":
        return (where + f"true fault at {d['linear']:#010x}: the guest's own tables refuse it (error code "
                f"{error_text(d['error_code'])}); the VMM sets the guest's CR2 and reflects a #PF into its handler")
    if e.kind == "trace":
        at = f" to {d['linear']:#010x}" if "linear" in d else ""
        how = {"fault": f"a store{at} that faulted on the write-protected page",
               "call-out": f"a store{at} the translated code called out for, without a fault",
               "vmkit": "a store vmkit made for the guest"}.get(d["by"], d["by"])
        return (where + f"trace: the guest entry at {d['entry']:#x} changed from {d['old']:#010x} to {d['new']:#010x} "
                f"({how}); the shadow follows: {d['effect']}")
    if e.kind == "trap" and "page table" in str(d.get("cause", "")):
        return where + f"trap: {d.get('instruction', '?')} ({d['cause']})"
    if e.kind == "emulate":
        return where + f"{d.get('instruction', '?')}: {d.get('effect', '')}"
    return where + str(e)


def page_story(events, linear):
    """The events that brought the page of `linear` into the shadow the first time: from the first
    event that names the page (a fault or a fill at it) through the first fill that maps it
    writable, or through the first fill at all if none does. Returns a Table."""
    page = linear & FRAME
    names = (lambda e: e.kind in ("hidden-fault", "true-fault", "shadow-fill") and e.detail["linear"] & FRAME == page)
    first = next((i for i, e in enumerate(events) if names(e)), None)
    if first is None:
        return Table(["#", "event"], [], f"no event names the page {page:#x}")
    fills = [i for i, e in enumerate(events) if i >= first and e.kind == "shadow-fill" and names(e)]
    writable = [i for i in fills if events[i].detail["value"] & PTE_RW]
    last = (writable or fills or [len(events) - 1])[0]
    chosen = [(i, e) for i, e in enumerate(events[first:last + 1], first)
              if is_shadow_event(e) or (e.kind == "trap" and "page table" in str(e.detail.get("cause", "")))
              or (e.kind == "emulate" and str(e.detail.get("instruction", "")).endswith("cr2"))
              or (e.kind == "ring-transition" and (e.detail.get("vector") == 14 or e.detail.get("cause") == "iret"))]
    rows = [(i, e.kind, _ring_line(e) if e.kind == "ring-transition" else event_line(e).split(": ", 1)[1])
            for i, e in chosen]
    return Table(["#", "event", "what happened"], rows,
                 f"events {first} to {last} of the run: the page {page:#x} from its first fault to a writable shadow entry")


def _ring_line(e):
    d = e.detail
    if d.get("cause") == "iret":
        return f"the guest's iret: back to ring {d.get('to_ring')} at {d.get('return_eip', 0):#010x}, to retry"
    return f"the guest's #PF handler runs (ring {d.get('from_ring')} -> {d.get('to_ring')}, handler {d.get('handler', 0):#x})"


def store_table(result, first=8):
    """Each store to a traced page table the VMM saw, in the run's order (the first `first` of them):
    how it reached the VMM (a trace fault, or a call-out from translated code) and what came of it;
    then the run's totals. In cmp_ptemod every loop round is one such store."""
    rows = []
    for e in result.events:
        cause = str(e.detail.get("cause", ""))
        if e.kind == "trap" and cause == "write to a traced page table":
            rows.append([len(rows) + 1, f"{e.eip:#010x}", "trace fault", ""])
        elif e.kind == "trap" and cause.startswith("call-out: a store"):
            rows.append([len(rows) + 1, f"{e.eip:#010x}", "call-out, no fault", ""])
        elif rows and e.kind == "trace":
            rows[-1][3] = f"the entry at {e.detail['entry']:#x} becomes {e.detail['new']:#010x}: {e.detail['effect']}"
        elif e.kind == "translate" and "trace faults" in str(e.detail.get("why", "")):
            # adaptive translation acts on a trace fault: the row of its trap, or one of its own when the
            # VMM recorded no trap for it
            if not (rows and rows[-1][2] == "trace fault" and not rows[-1][3]):
                rows.append([len(rows) + 1, f"{e.eip:#010x}", "trace fault", ""])
            rows[-1][3] = f"not carried out: the unit is retranslated ({e.detail['why']}), and the store runs again"
    stats = result.stats
    total = (f"{stats.get('trace_faults', 0)} trace faults, {stats.get('trace_callouts', 0)} stores by call-out, "
             f"{stats.get('retranslations', 0)} retranslation{'' if stats.get('retranslations', 0) == 1 else 's'}")
    shown = rows[:first] + ([["…", "", f"{len(rows) - first} more", ""]] if len(rows) > first else [])
    return Table(["store", "guest eip", "how it reached the VMM", "what came of it"], shown,
                 f"{result.technique}: {total} in the whole run")


# --- the stepper over shadow-paging events -------------------------------------------------------------------
class ShadowStepper(Walker):
    """Step a guest under trap-and-emulate or binary translation from one shadow-paging event to the
    next: what the VMM did and why, the guest's entry beside the shadow's for the page concerned, and
    the log of the shadow MMU's work. `options` go to vmkit.machine (adaptive=, shadow_handlers=)."""

    LOG_LINES = 12
    STOPPED_BY = "The VMM stopped the guest"

    def __init__(self, guest, technique="trap-and-emulate", *, max_instructions=5_000_000, timeout=10.0, **options):
        self.image, self.technique, self.options = assemble(guest), technique, options
        self.max_instructions, self.timeout = max_instructions, timeout
        self.buttons = {key: button(text, icon, action, tip, "vmkit-shadow-stepper-" + key.replace(" ", "-"))
                        for key, (text, icon, action, tip) in {
                            "next": ("next shadow event", "step-forward", self.next_event,
                                     "run until the shadow MMU does something"),
                            "trace": ("next trace", "forward", self.next_trace, "run until a page-table store traces"),
                            "true": ("next true fault", "forward", self.next_true_fault,
                                     "run until the guest's own tables refuse an access"),
                            "run": ("run to the end", "fast-forward", self.run, "run until the guest finishes"),
                            "reset": ("reset", "undo", self.reset, "start the guest again")}.items()}
        pane = lambda: w.HTML(layout=w.Layout(width="100%"))
        self.status, self.what, self.page, self.picture, self.log, self.serial = (pane() for _ in range(6))
        self.widget = w.VBox([w.HBox(list(self.buttons.values()), layout=w.Layout(flex_flow="row wrap")), self.status,
                              titled("what the last button did", self.what),
                              titled("the page concerned: the guest's entries and the shadow's", self.page),
                              titled("the shadow beside the guest's tables, near that page", self.picture),
                              titled("the shadow MMU's log (newest last; bold: from the last button)", self.log),
                              titled("serial output (COM1)", self.serial)])
        self.widget.add_class("vmkit-shadow-stepper")
        for name in ("status", "what", "page", "picture", "log", "serial"):
            getattr(self, name).add_class(f"vmkit-shadow-stepper-{name}")
        self.reset()

    # --- what the buttons do ---------------------------------------------------------------------------
    def reset(self):
        self.machine = new_machine(self.image, self.technique, max_instructions=self.max_instructions,
                                   timeout=self.timeout, **self.options)
        self.last_events, self.message, self.stopped = [], "", False
        self.render()

    def next_event(self):
        self._act(lambda: self.machine.run_until(event=is_shadow_event))

    def next_trace(self):
        self._act(lambda: self.machine.run_until(event="trace"))

    def next_true_fault(self):
        self._act(lambda: self.machine.run_until(event="true-fault"))

    def run(self):
        self._act(lambda: self.machine.run_until())

    # --- rendering -----------------------------------------------------------------------------------------
    @property
    def focus(self):
        """The last shadow event of the last button, the one the panels explain."""
        return next((e for e in reversed(self.last_events) if is_shadow_event(e)), None)

    @property
    def focus_eip(self):
        """Where the guest was for the focus event: for a trace, the store that caused it (the trace
        itself is recorded once the store has run, at the next instruction)."""
        focus = self.focus
        if focus is not None and focus.kind == "trace":
            stores = [e for e in self.last_events[:self.last_events.index(focus)]
                      if e.kind == "trap" and "page table" in str(e.detail.get("cause", ""))]
            if stores:
                return stores[-1].eip
        return focus.eip if focus is not None else self.machine.cpu["eip"]

    def render(self):
        m = self.machine
        regs = guest_registers(m)
        stats = m.stats
        counts = " · ".join(f"{name} {stats.get(key, 0)}" for name, key in (
            ("hidden faults", "hidden_faults"), ("true faults", "true_faults"), ("trace faults", "trace_faults"),
            ("shadow fills", "shadow_fills"), ("shadow roots", "shadow_roots")))
        if "trace_callouts" in stats:
            counts += f" · store call-outs {stats['trace_callouts']}"
        state = (f"<b style='color:#1b5e20'>the guest finished: exit code {m.result().exit_code}.</b> "
                 if m.finished else "")
        real_cr3 = m.cpu["cr3"]
        self.status.value = (f"<div style='font-family:monospace'>{state}{html.escape(self.technique)} · ring "
                             f"{m.cpu.cpl} · guest CR3 {regs['cr3']:#x} · real CR3 {real_cr3:#x}"
                             f"{' (a shadow root)' if m.shadow.on else ''}<br>{counts}</div>"
                             + (f"<div style='color:{'#b71c1c' if self.stopped else '#555'};font-weight:bold'>"
                                f"{html.escape(self.message)}</div>" if self.message else ""))
        fresh = [e for e in self.last_events if is_shadow_event(e)]
        if fresh:
            items = "".join(f"<li>{html.escape(event_line(e))}</li>" for e in fresh[-6:])
            if len(fresh) > 6:
                items = f"<li><i>{len(fresh) - 6} earlier ones: see the log below</i></li>" + items
            self.what.value = (f"<ul style='margin:0;font-size:13px'>{items}</ul>"
                               f"<div style='font-size:12px;color:#555'>the guest instruction: "
                               f"{html.escape(code_text(m, self.focus_eip))}</div>")
        else:
            self.what.value = "<i>nothing yet: press <b>next shadow event</b></i>"
        self.page.value = page_html(m, self.focus)
        linear = _focus_linear(self.focus)
        self.picture.value = (shadow_beside_guest(m, linears=[linear] if linear is not None else (),
                                                  around=linear, max_rows=8).pane_html(stretch=False)
                              if m.shadow.on else "<i>the guest's paging is off: no shadow yet</i>")
        events = [e for e in m.events if is_shadow_event(e)]
        ids = {id(e) for e in fresh}
        shown = events[-self.LOG_LINES:]
        rows = [(f"<b>{html.escape(event_line(e))}</b>" if id(e) in ids else html.escape(event_line(e))) for e in shown]
        more = f"… {len(events) - len(shown)} earlier\n" if len(events) > len(shown) else ""
        self.log.value = (f"<pre style='margin:0;font-size:11px;white-space:pre-wrap;word-break:normal'>{more}"
                          f"{chr(10).join(rows) or '(none yet)'}</pre>")
        text = bytes(m.serial.output).decode("utf-8", errors="replace")
        self.serial.value = (f"<pre style='margin:0;background:#222;color:#eee;padding:4px'>"
                             f"{html.escape(text) or ' '}</pre>")
        for key in ("next", "trace", "true", "run"):
            self.buttons[key].disabled = m.finished or self.stopped


def _focus_linear(e):
    if e is None:
        return None
    return e.detail.get("linear")


def code_text(m, eip):
    """The guest instruction at `eip` (a guest address), with the nearest label before it."""
    code = m.cpu.peek(eip, 15)
    insn = disassemble(code, eip, 1) if code else []
    labels = [(a, n) for n, a in m.image.symbols.items() if a <= eip and not n.startswith("..")]
    label = max(labels)[1] if labels else None
    where = f"{eip:#010x}" + (f" ({label}+{eip - max(labels)[0]:#x})" if label else "")
    return f"{where}: {insn[0].text}" if insn else where


def page_html(m, e):
    """The guest's walk and the shadow entry for the page the event `e` concerned, as a small table;
    for a trace, the guest entry that changed and the shadow entries now made from it."""
    if e is None or not m.shadow.on and e.kind != "trace":
        return "<i>no page yet</i>"
    d = e.detail
    rows = []
    if e.kind == "trace":
        rows.append(("guest entry changed", f"{d['entry']:#x}: {d['old']:#010x} ({bits(d['old'])}) → "
                                            f"{d['new']:#010x} ({bits(d['new'])})"))
        made = m.shadow.shadows_of(d["entry"])
        rows.append(("shadow entries made from it now",
                     ", ".join(f"{a:#x} ({kind})" for a, kind in made) or "none: the next access that needs it is a hidden fault"))
    elif "linear" in d:
        linear = d["linear"]
        wk = walk(m, linear)
        for entry in wk.entries:
            rows.append((f"guest {entry.level} {entry.index}", f"@ {entry.address:#x} = {entry.value:#010x} "
                                                              f"({bits(entry.value, entry.level)})"))
        shadow = m.shadow.shadow_entry(linear)
        rows.append(("shadow PTE", f"@ {shadow[0]:#x} = {shadow[1]:#010x} ({bits(shadow[1])})"
                     if shadow and shadow[1] else "none"))
        rows.append(("so", _compare(m, wk, shadow)[0]))
    else:
        return f"<i>{html.escape(event_line(e))}</i>"
    cells = "".join(f"<tr><td style='padding:1px 8px;text-align:left;color:#555'>{html.escape(k)}</td>"
                    f"<td style='padding:1px 8px;text-align:left;font-family:monospace'>{html.escape(v)}</td></tr>"
                    for k, v in rows)
    return f"<table style='border-collapse:collapse;font-size:12px;background:#fcfcfc;color:#24292e'>{cells}</table>"


# --- what it costs --------------------------------------------------------------------------------------------
COST_COLUMNS = (("trace faults", "trace_faults"), ("store call-outs", "trace_callouts"),
                ("hidden faults", "hidden_faults"), ("true faults", "true_faults"), ("traps", "traps"),
                ("instructions", "instructions"))


def cost_table(runs, rounds):
    """`runs` maps a setup's name to (a short run, a long run) of the same guest, the long one
    `rounds` loop rounds longer: per round, each count (exact) and the time (measured here), so that
    the boot and the printing drop out."""
    base = None
    rows = []
    for name, (short, long) in runs.items():
        per = {key: (long.stats.get(key, 0) - short.stats.get(key, 0)) / rounds for _, key in COST_COLUMNS}
        us = (long.seconds - short.seconds) / rounds * 1e6
        base = us if base is None else base
        time = f"{us:,.0f}" if us >= 0.5 else "≈ 0"
        if base >= 0.5 and us >= 0.5:
            time += f" ({us / base:.1f}×)"
        rows.append([name] + [f"{per[key]:.1f}" for _, key in COST_COLUMNS] + [time])
    return Table(["setup"] + [label for label, _ in COST_COLUMNS] + ["µs per round"], rows,
                 f"per loop round, from two runs {rounds} rounds apart; counts are exact, µs measured on this machine "
                 f"(×: against the first row), and they change from run to run")


def paper_table():
    """Adams & Agesen's pgfault and ptemod (ASPLOS 2006, Figure 4 and the text that discusses it), in CPU cycles."""
    from .compare import paper_cycles       # here, not at the top: viz.compare loads matplotlib
    pgfault, ptemod = paper_cycles("pgfault"), paper_cycles("ptemod")
    fmt = lambda c: f"{c:,.0f}" if c is not None else "—"
    rows = [("pgfault", "a true page fault, taken by the guest and handled", *map(fmt, pgfault)),
            ("ptemod", "a store to a page-table entry the VMM traces", "one store", *map(fmt, ptemod[1:]))]
    return Table(["nanobenchmark", "what it does", "native", "software VMM (binary translation)",
                  "hardware VMM (first VT-x, shadow page tables)"], rows,
                 "CPU cycles on the paper's Pentium 4, not measured here (Adams & Agesen, ASPLOS 2006, Figure 4 and "
                 "its text); for ptemod, native is a single store, for which the paper gives no cycle count")


# --- the hardware's answers: first-generation VT-x, and EPT's two-dimensional walk ------------------------------
# one row per kind of paging work; each technique hears of it by a trap, a call-out or a VM exit, or not at all
PAGING_ROWS = (("cr_load", "mov to CR0, CR3 or CR4"), ("cr_read", "mov from CR0, CR2 or CR3"), ("invlpg", "invlpg"),
               ("hidden", "hidden faults"), ("true", "true faults (the guest's own #PF)"),
               ("stores", "page-table stores (trace faults, call-outs)"),
               ("ept", "a guest frame's first touch (EPT violation)"), ("total", "in all"),
               ("guest_pf", "#PFs the guest's own handler ran"), ("tlb_misses", "TLB misses"),
               ("walk_references", "references of their 2-D walks"))
EXIT_NAMES = {"cr_load": "CR_ACCESS", "cr_read": "CR_ACCESS", "invlpg": "INVLPG", "hidden": "EXCEPTION",
              "true": "EXCEPTION", "stores": "EXCEPTION", "ept": "EPT_VIOLATION"}
_CR_LOAD, _CR_READ = re.compile(r"mov cr\d, "), re.compile(r"mov \w+, cr\d")


def paging_counts(result):
    """How often a run's paging work entered the VMM, counted from its events and stats: control-register
    moves, invlpg, hidden and true faults, stores to page tables (trace faults and call-outs), EPT
    violations, and their sum ("total"); beside them the #PFs the guest's own handler ran (the same
    under every technique) and, under EPT filled on demand, the TLB misses and their walks' references.
    "unit" says what one entry into the VMM is: a trap, or a VM exit."""
    s = result.stats
    c = dict.fromkeys(("cr_load", "cr_read", "invlpg", "hidden", "true", "stores", "ept"), 0)
    exits = "vmexits" in s and result.technique == "hardware-assist"
    for e in result.events:
        d = e.detail
        if exits and e.kind == "vmexit" and d.get("reason") == "CR_ACCESS":
            c["cr_load" if d.get("access") == "mov to cr" else "cr_read"] += 1
        elif exits and e.kind == "vmexit" and d.get("reason") == "INVLPG":
            c["invlpg"] += 1
        elif not exits and e.kind == "trap":
            text = str(d.get("instruction", ""))
            if _CR_LOAD.match(text):
                c["cr_load"] += 1
            elif _CR_READ.match(text):
                c["cr_read"] += 1
            elif text.startswith("invlpg"):
                c["invlpg"] += 1
    c.update(hidden=s.get("hidden_faults", 0), true=s.get("true_faults", 0),
             stores=s.get("trace_faults", 0) + s.get("trace_callouts", 0), ept=s.get("vmexit_EPT_VIOLATION", 0))
    c["total"] = sum(c.values())
    c["guest_pf"] = sum(1 for e in result.events if e.kind == "ring-transition" and e.detail.get("vector") == 14)
    c["tlb_misses"], c["walk_references"] = s.get("tlb_misses"), s.get("walk_references")
    c["unit"] = "VM exits" if exits else "traps" if result.technique != "native" else "no VMM"
    return c


def paging_exits(runs):
    """`runs` maps a setup's name to one run of the same guest: for each kind of paging work, how many
    times it entered the VMM under each setup (a trap, a call-out or a VM exit, with the exit's reason
    under VT-x), and the #PFs the guest's own handler ran. Rows that are empty for every setup are left
    out. Counted from each run's events (paging_counts)."""
    counts = {name: paging_counts(run) for name, run in runs.items()}

    def cell(name, key):
        c, run = counts[name], runs[name]
        value = c[key]
        if value is None:
            return "—"
        if key == "stores" and run.stats.get("trace_callouts"):
            return f"{value} ({run.stats.get('trace_faults', 0)} faults, {run.stats['trace_callouts']} call-outs)"
        if c["unit"] == "VM exits" and value and key in EXIT_NAMES:
            return f"{value} {EXIT_NAMES[key]}"
        return f"{value:,}"

    rows = [[label] + [cell(name, key) for name in runs] for key, label in PAGING_ROWS
            if any(counts[name][key] for name in runs)]
    header = ["the guest's paging work"] + [f"{name} ({counts[name]['unit']})" for name in runs]
    return Table(header, rows, "one run of the same guest under each setup, counted from its events: how often each "
                               "kind of paging work entered the VMM (exact, the same on every machine); the guest's "
                               "output is the same under all")


EPT_ENTRIES = {4: ("EPT PML4E", 39), 3: ("EPT PDPTE", 30), 2: ("EPT PDE", 21), 1: ("EPT PTE", 12)}
EPT_COLOUR, GUEST_COLOUR = "#e8eaf6", "#f6e7d2"


def _ref_label(number, title, lines, colour, bold=False):
    rows = "".join(f'<TR><TD ALIGN="LEFT" BALIGN="LEFT">{html.escape(line)}&#160;</TD></TR>' for line in lines)
    title = f"<B>{html.escape(title)}</B>" if bold else html.escape(title)
    badge = f'<TD ROWSPAN="{len(lines) + 1}" BGCOLOR="#1f4e79"><FONT COLOR="white"><B>{number}</B></FONT></TD>' \
        if number else ""
    return (f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4" BGCOLOR="{colour}">'
            f'<TR>{badge}<TD ALIGN="LEFT">{title}&#160;</TD></TR>{rows}</TABLE>>')


def two_d_walk(m, linear):
    """The two-dimensional walk a TLB miss on `linear` makes under EPT, drawn from the machine's own list
    (m.two_dimensional_walk, a VT-x model run with VmcsControls(ept_on_demand=True)): each guest-physical
    address the guest's walk reads (its PDE, its PTE) is first translated by the EPT's four levels, then
    read; the page's own address takes the EPT's four more. One column per guest-physical address, the
    EPT's levels top to bottom (each with the index it takes from that address, SDM vol. 3C, "The Extended
    Page Table Mechanism"), the guest's entry at the foot of its column with the value it holds, each
    reference numbered in the CPU's order; the native walk's count in the caption. `refs` holds (number,
    what, guest-physical address); `native` the native walk's count."""
    refs = m.two_dimensional_walk(linear)
    wk = walk(m, linear)
    regs = guest_registers(m)
    native = len(wk.entries) if wk.paging else 0
    columns = []                                  # (what, gpa, [(number, EPT level or None for the guest's entry)])
    for n, (what, gpa) in enumerate(refs, 1):
        ept = what.startswith("EPT level")
        target = what.split(" for ", 1)[1] if ept else what
        if not columns or columns[-1][0] != target or columns[-1][2][-1][1] is None:
            columns.append((target, gpa, []))
        columns[-1][2].append((n, int(what.split()[2]) if ept else None))
    ended = bool(columns) and columns[-1][0] == "the page"
    caption = (f"the two-dimensional walk of a TLB miss on {linear:#010x} under EPT: {len(refs)} memory references, "
               f"in the order numbered (blue: the EPT, the hypervisor's; tan: the guest's own tables); natively {native}")
    text = [f"A TLB miss on linear {linear:#010x} under EPT (guest CR3 {regs['cr3']:#x}), reference by reference:"]
    g = Diagram("two_d_walk", caption=caption)
    g.attr(rankdir="TB", fontname="Helvetica", nodesep="0.5", ranksep="0.22")
    g.attr("node", shape="plaintext", fontname="Helvetica", fontsize="10")
    g.attr("edge", fontname="Helvetica", fontsize="9", color="#555555", arrowsize="0.6")
    entries = {e.address: e for e in wk.entries}
    with g.subgraph(name="heads") as heads:
        heads.attr(rank="same")
        for c, (target, gpa, _) in enumerate(columns):
            if target == "the page":
                lines = [f"gPA {gpa:#010x}", "paging is off: the linear address" if not wk.paging else
                         f"from the {'PTE' if wk.entry('PTE') else 'PDE'}'s frame"]
            else:
                entry = entries.get(gpa)
                pde = target.endswith("PDE")
                base = regs["cr3"] & FRAME if pde else wk.entry("PDE").value & FRAME
                lines = [f"gPA {gpa:#010x}",
                         f"= {'CR3' if pde else 'its table'} {base:#x} + {entry.index if entry else '?'} × 4"]
            heads.node(f"h{c}", _ref_label(None, target, lines, "#ffffff", bold=True))
        for c in range(1, len(columns)):
            heads.edge(f"h{c - 1}", f"h{c}", style="invis")
    last = None
    for c, (target, gpa, cells) in enumerate(columns):
        names = [f"h{c}"]
        for n, level in cells:
            if level is not None:
                title, shift = EPT_ENTRIES[level]
                index = (gpa >> shift) & 0x1FF
                g.node(f"n{n}", _ref_label(n, f"{title} [{index}]", [f"bits {shift + 8}:{shift}"], EPT_COLOUR))
                text.append(f"{n}. {title} [{index}] (EPT level {level}, bits {shift + 8}:{shift}) for gPA {gpa:#010x}, "
                            f"{target}")
            else:
                value = _u32(m, gpa)
                name = "PDE" if target.endswith("PDE") else "PTE"
                then = ("not present: a #PF in the guest" if not value & PTE_P else
                        f"a 4 MiB page at {value & 0xFFC00000:#x}" if name == "PDE" and wk.large else
                        f"next: gPA {value & FRAME:#x}")
                g.node(f"n{n}", _ref_label(n, f"{target} at {gpa:#x}", [f"{value:#010x}  {bits(value, name)}", then],
                                           GUEST_COLOUR, True))
                text.append(f"{n}. {target} at gPA {gpa:#010x}: {value:#010x} ({bits(value, name)}); {then}")
            names.append(f"n{n}")
        if target == "the page":
            g.node("data", _ref_label(None, "the data", [f"host-physical {gpa:#010x}"], "#dbeaf7", True))
            names.append("data")
        for a, b in zip(names, names[1:]):
            g.edge(a, b)
        if last is not None:
            g.edge(last, f"h{c}", style="dashed", constraint="false", color="#1f4e79", label=" its frame ")
        last = names[-1]
    if not ended and columns:
        g.node("pf", _ref_label(None, "#PF in the guest", ["its own tables refuse:", "no exit under EPT"], FAULT, True))
        g.edge(last, "pf", color="#c62828")
    text.append((f"Then the data, at host-physical {columns[-1][1]:#010x} (vmkit's EPT maps each guest frame to the "
                 f"same address)." if ended else "The walk ends at a guest entry that is not present: a #PF in the "
                 "guest, with no exit.") + f" {len(refs)} references; natively {native}.")
    g.text = "\n".join(text)
    g.refs = [(n, what, gpa) for n, (what, gpa) in enumerate(refs, 1)]
    g.native = native
    return g


# --- Xen's answer: direct paging, validated ----------------------------------------------------------------------
# vmkit.xen.mm follows Xen's xen/arch/x86/mm.c (the non-PAE x86_32 tree of 2008) function by function; these
# pictures read its frame table (struct page_info: owner, count, type, type count) and the hypercalls' events.
PT_CALLS = ("mmu_update", "update_va_mapping", "mmuext_op")
XEN_TYPES = {"none": "no type", "l1_page_table": "an L1 page table", "l2_page_table": "a page directory (L2)",
             "writable_page": "mapped writable"}


def _owner(page, domain):
    owner = page.owner
    if owner is None or page.count == 0:
        return "free (nobody's)", False
    if not hasattr(owner, "domid"):
        return "Xen's own", False
    name = "dom0" if owner.domid == 0 else f"d{owner.domid}"
    return name + (", the caller's" if owner is domain else f", not the caller's (d{domain.domid})"), owner is domain


def frame_text(mm, mfn):
    """One frame-table entry in words: 'machine frame 0x1d: an L1 page table, 2 references of that type,
    4 in all, validated, pinned'."""
    if not mm.valid(mfn):
        return f"machine frame {mfn:#x}: not RAM"
    page = mm.pages[mfn]
    typed = page.type_count > 0
    what = XEN_TYPES.get(page.type, page.type) if typed else "no type"
    refs = (f", {page.type_count} reference{'s' if page.type_count != 1 else ''} of that type" if typed else "")
    flags = (", validated" if typed and page.validated and page.type != "writable_page" else "") + \
        (", pinned" if page.pinned else "")
    return f"machine frame {mfn:#x}: {what}{refs}, {page.count} in all{flags}"


def _last_refused(machine):
    for e in reversed(machine.events):
        if e.kind == "hypercall" and e.detail.get("name") in PT_CALLS and e.detail.get("result", 0) < 0 \
                and e.detail.get("domain", machine.domid) == machine.domid:
            return e
    raise ValueError("no refused mmu_update, update_va_mapping or mmuext_op in this machine's events yet: "
                     "run it until one (run_until(event=...))")


def frame_check(machine, event=None):
    """How Xen checked one page-table request it refused, step by step: the request, the frames it names
    and what Xen's frame table says of each (owner, type, references), the Xen function that looks at
    each, and Xen's answer with the reason it gave. `machine` is the PV domain that asked, stopped after
    the hypercall (a refused request changes nothing, so the frame table is as Xen saw it); `event` the
    hypercall's event (by default the domain's last refused mmu_update, update_va_mapping or mmuext_op).
    A Table, with `.rule` (the rule that refused it, in a sentence), `.frames` (the frames it names) and
    `.event`."""
    e = _last_refused(machine) if event is None else event
    d, mm = e.detail, machine.xen.mm
    rows, frames, rule = [], [], None

    def row(step, function, found):
        rows.append([step, function, found])

    def new_entry(val, level, self_frame):
        """The checks of a new L1 or L2 entry (get_page_from_l1e, get_page_from_l2e); the rule if one fails.
        `self_frame`: the table do_mmu_update holds a type reference on while it changes it, or None."""
        function = "get_page_from_l1e" if level == 1 else "get_page_from_l2e"
        if not val & PTE_P:
            row("the new entry", function, f"{val:#010x}: not present, so it takes no reference")
            return None
        bad = val & 0xFFF & (xen.L1_DISALLOW_MASK if level == 1 else xen.L2_DISALLOW_MASK)
        mfn = val >> 12
        row("the new entry", function, f"{val:#010x} ({bits(val, 'PTE' if level == 1 else 'PDE')}): maps machine "
                                       f"frame {mfn:#x}" + (f"; flags {bad:#x} are not the guest's to set" if bad else ""))
        if bad:
            return ("no 4 MiB pages for a PV guest: PS is among the flags Xen refuses in a page directory"
                    if level == 2 and bad & PDE_PS else "an entry may not set the flags Xen keeps for itself "
                    "(PAT, PCD, PWT, GLOBAL)")
        frames.append(mfn)
        if not mm.valid(mfn):
            row("the frame it maps", "get_page", f"machine frame {mfn:#x} is not RAM")
            return "an entry may map only RAM the domain owns"
        page = mm.pages[mfn]
        held = " (one more while do_mmu_update changes it)" if mfn == self_frame else ""
        owner, mine = _owner(page, machine)
        need = ("an l1_page_table reference: it must be, or validate as, an L1 table" if level == 2 else
                "a writable_page reference" if val & PTE_RW else "a plain reference: a read-only mapping of any "
                                                                 "frame the domain owns")
        row("the frame it maps", "get_page, get_page_type", f"{frame_text(mm, mfn)}{held}; {owner}; needs {need}")
        if not mine:
            return "an entry may map only frames the domain owns (get_page checks the owner)"
        if level == 1 and val & PTE_RW and page.type_count and page.type != "writable_page":
            return (f"a frame has one type at a time: this one is {XEN_TYPES[page.type]}, so it may not be mapped "
                    "writable (a writable mapping of a page table would let the guest change it unchecked)")
        if level == 2 and page.type == "l2_page_table" and page.type_count and val & PTE_RW:
            return ("a page directory may point at a page directory only read-only (a linear page table): writable, "
                    "it would let the guest change its tables unchecked")
        if level == 2 and page.type_count and page.type != "l1_page_table":
            return (f"a page-directory entry must point at an L1 table (or, read-only, at a page directory: a linear "
                    f"page table); this frame is {XEN_TYPES[page.type]}")
        return None

    if d["name"] == "mmu_update":
        ptr, val = d["requests"][d.get("at", 0)]
        cmd, address = ptr & 3, ptr & 0xFFFFFFFC
        row("the request", "do_mmu_update", f"request {d.get('at', 0)} of {d['count']}: {{ptr {ptr:#x}, val {val:#010x}}}; "
                                            f"ptr's low bits {cmd}" + (" (MMU_NORMAL_PT_UPDATE): write val into the entry "
                                            f"at machine address {address:#x}" if cmd == 0 else ""))
        table = address >> 12
        frames.append(table)
        page = mm.pages[table] if mm.valid(table) else None
        owner, mine = _owner(page, machine) if page else ("not RAM", False)
        level = {"l1_page_table": 1, "l2_page_table": 2}.get(page.type) if page and page.type_count else None
        index = (address & 0xFFF) // 4
        then = (f"so mod_l{level}_entry, entry {index}" if level else "not a page table: a plain write, which needs a "
                "writable_page reference")
        row("the frame of that entry", "get_page, its type", f"{frame_text(mm, table)}; {owner}; {then}")
        if not mine:
            rule = "the guest may change only its own frames (get_page checks the owner)"
        elif level == 2 and index >= xen.L2_PAGETABLE_FIRST_XEN_SLOT:
            row("the entry", "mod_l2_entry", f"entry {index} maps {index << 22:#x} and up: Xen's part of every "
                                             "address space (from HYPERVISOR_VIRT_START, 0xfc000000)")
            rule = "the guest may not change Xen's part of its page directory"
        elif level:
            rule = new_entry(val, level, table)
        elif page.type_count:
            rule = f"that frame is {XEN_TYPES[page.type]}: a plain write needs it writable"
    elif d["name"] == "update_va_mapping":
        va, val = d["va"], d["val"]
        row("the request", "do_update_va_mapping", f"the PTE that maps {va:#x} := {val:#010x}")
        if va >= xen.HYPERVISOR_VIRT_START:
            rule = "the guest may not change Xen's part of its address space"
        else:
            found = mm.guest_map_l1e(machine, va)
            if found is None:
                row("the PTE that maps it", "guest_map_l1e", f"PDE {va >> 22} of the page directory (machine frame "
                                                             f"{machine.guest_table:#x}) maps no L1 table")
                rule = "update_va_mapping needs an L1 table that covers the address"
            else:
                address, l1 = found
                frames.append(l1)
                row("the PTE that maps it", "guest_map_l1e", f"entry {(va >> 12) & 0x3FF} of an L1 table, at machine "
                                                             f"{address:#x}; {frame_text(mm, l1)}; so mod_l1_entry")
                rule = new_entry(val, 1, None)           # do_update_va_mapping holds no type reference on it
    elif d["name"] == "mmuext_op":
        at = d.get("at", 0)
        cmd, arg1, _ = machine.unpack(xen.MMUEXT_OP, d["args"][0] + at * xen.MMUEXT_OP.size)
        name = xen.MMUEXT_NAMES.get(cmd, str(cmd))
        row("the request", "do_mmuext_op", f"op {at} of {len(d.get('ops', []))}: {name.upper()} on machine frame {arg1:#x}")
        frames.append(arg1)
        page = mm.pages[arg1] if mm.valid(arg1) else None
        owner, mine = _owner(page, machine) if page else ("not RAM", False)
        if cmd in (xen.MMUEXT_PIN_L2_TABLE, xen.MMUEXT_NEW_BASEPTR, xen.MMUEXT_PIN_L1_TABLE):
            want = "l1_page_table" if cmd == xen.MMUEXT_PIN_L1_TABLE else "l2_page_table"
            function = "new_guest_cr3, get_page_and_type" if cmd == xen.MMUEXT_NEW_BASEPTR else "get_page_and_type"
            row("the frame", function, f"{frame_text(mm, arg1)}; {owner}; needs an {want} reference (validated "
                                       f"entry by entry if it has none)")
            if not mine:
                rule = "the guest may use only its own frames as page tables"
            elif page.type_count and page.type != want:
                rule = (f"a frame has one type at a time: this one is {XEN_TYPES[page.type]}, so it cannot become "
                        f"{XEN_TYPES[want]} until that type's references are gone")
            elif page.pinned and cmd != xen.MMUEXT_NEW_BASEPTR:
                rule = "a frame is pinned once"
            else:
                rule = "one of its entries does not validate"
        elif cmd == xen.MMUEXT_UNPIN_TABLE:
            row("the frame", "do_mmuext_op", f"{frame_text(mm, arg1)}; {owner}")
            rule = "only a pinned frame can be unpinned" if mine and not page.pinned else \
                "the guest may unpin only its own frames"
    errno = d["result"]
    name = xen.ERRNO_NAMES.get(-errno, str(-errno))
    now = ""
    if d["name"] == "mmu_update" and d.get("requests"):
        address = d["requests"][d.get("at", 0)][0] & 0xFFFFFFFC
        if mm.valid(address >> 12):
            now = f" The entry still holds {mm.u32(address):#010x}."
    elif d["name"] == "update_va_mapping":
        found = mm.guest_map_l1e(machine, d["va"]) if d["va"] < xen.HYPERVISOR_VIRT_START else None
        if found is not None:
            now = f" The PTE still holds {mm.u32(found[0]):#010x}."
    row("Xen's answer", "", f"-{name} ({errno}): {d.get('refused', '')}. Nothing changed.{now}")
    t = Table(["step", "Xen's function (xen/arch/x86/mm.c)", "what Xen found"], rows,
              f"one {d['name']} of d{machine.domid} that Xen refused, beside its frame table (vmkit.xen.mm) as Xen saw "
              f"it; the rule: {rule or 'see the reason'}")
    t.rule, t.frames, t.event = rule, list(dict.fromkeys(frames)), e
    return t


def p2m_table(domains, pfns=(0x5, 0x100, 0x101, 0x3FF)):
    """Where each domain's pseudo-physical frames really are: for each frame number in `pfns` (what the
    domain's kernel thinks of as physical address pfn << 12), the machine frame its mfn_list names (read
    from the domain's own memory, at start_info.mfn_list, through its own page tables), the frame number
    the machine-to-physical table at MACH2PHYS_VIRT_START gives back (read as the guest reads it), and
    the owner Xen's frame table records. `domains`: PV domains (vmkit.xen.Paravirt), or a machine, for
    every live domain of its hypervisor. A Table, with `.map` {domid: {pfn: mfn}}."""
    if hasattr(domains, "xen") and not isinstance(domains, (list, tuple)):
        domains = [d for d in domains.xen.every_domain if not d.dying]
    header, columns, found = ["pseudo-physical frame (the kernel's 'physical' address)"], [], {}
    for dom in domains:
        name = "dom0" if dom.domid == 0 else f"d{dom.domid}"
        mfn_list = dom.u32(START_INFO + xen.SI_MFN_LIST)          # a virtual address in the domain's own tables
        nr_pages = dom.u32(START_INFO + xen.SI_NR_PAGES)
        mapping = {}
        for pfn in pfns:
            if pfn < nr_pages:
                mapping[pfn] = dom.u32(mfn_list + 4 * pfn)
        found[dom.domid] = mapping
        header += [f"{name}: machine frame (mfn_list)", f"{name}: M2P gives back"]
        columns.append((dom, mapping))
    rows = []
    for pfn in pfns:
        row = [f"{pfn:#x} ({pfn << 12:#x})"]
        for dom, mapping in columns:
            mfn = mapping.get(pfn)
            if mfn is None:
                row += ["—", "—"]
                continue
            back = int.from_bytes(bytes(dom.cpu.read(xen.MACH2PHYS_VIRT_START + 4 * mfn, 4)), "little")
            owner = dom.xen.mm.pages[mfn].owner
            mine = "" if owner is dom else " (not its own!)"
            row += [f"{mfn:#x} ({mfn << 12:#x}){mine}", f"{back:#x}"]
        rows.append(row)
    spans = []
    for dom, mapping in columns:
        every = [dom.u32(dom.u32(START_INFO + xen.SI_MFN_LIST) + 4 * pfn)
                 for pfn in range(dom.u32(START_INFO + xen.SI_NR_PAGES))]
        order = ("one run upwards" if every == list(range(every[0], every[0] + len(every))) else
                 "from the top of machine memory down" if every == sorted(every, reverse=True) else "scattered")
        spans.append(f"{'dom0' if dom.domid == 0 else f'd{dom.domid}'}: {len(every)} frames, machine "
                     f"{min(every):#x}-{max(every):#x}, {order}")
    t = Table(header, rows, "read from each domain's own mfn_list (start_info.mfn_list) and from the "
                            "machine-to-physical table as the guest reads it, at " f"{xen.MACH2PHYS_VIRT_START:#x}; "
                            + "; ".join(spans))
    t.map = found
    return t


def _entries(result):
    """The run's entries into the hypervisor, counted by what they were: traps by cause (and, for a
    trap that is not a fault on memory, the instruction), VM exits by reason, hypercalls by name."""
    counts = Counter()
    for e in result.events:
        d = e.detail
        if e.kind == "trap":
            cause = str(d.get("cause", "?"))
            if cause == "write to a traced page table":
                what = "trace fault"
            elif cause.startswith("call-out: a store"):
                what = "call-out (a page-table store)"
            elif cause == "#PF":
                what = "#PF trap"
            else:
                instruction = str(d.get("instruction", "")).split(" ptr ")[0]
                what = f"{'call-out' if cause.startswith('call-out') else cause + ' trap'} ({instruction})"
        elif e.kind == "vmexit":
            what = f"{d.get('reason', '?')} exit"
        elif e.kind == "hypercall":
            what = f"{d.get('name', '?')} hypercall"
        else:
            continue
        counts[what] += 1
    return counts


def _per(value, units):
    """A count per unit, as a reader takes it in: 1, 2, 0.5, or 1/64 for one in every 64."""
    per = value / units
    if per == 0:
        return "0"
    if per < 0.5 and round(units / value) == units / value:
        return f"1/{units // value}"
    return f"{per:g}" if per == int(per) else f"{per:.2f}"


def per_unit(runs):
    """`runs` maps a setup's name to (guest, a short run, a long run, units): two runs of `guest` that
    differ by `units` units of one kind of paging work (a page-table entry changed, a page fault taken),
    so that what both runs share (the boot, the printing) drops out. Per unit, exact: the entries into the
    hypervisor and what they were (traps by cause, VM exits by reason, hypercalls by name), the page-table
    updates Xen validated (a column only when a run is under "paravirt"), and the #PFs the guest's own
    handler ran. Say which guest each row ran: the rows need not share one."""
    rows = []
    for name, (guest, short, long, units) in runs.items():
        a, b = _entries(short), _entries(long)
        what = {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0)}
        total = sum(what.values())
        said = ", ".join(f"{_per(n, units)} {k}" for k, n in sorted(what.items(), key=lambda kv: -kv[1])) or "none"
        validated = long.stats.get("pt_updates", 0) - short.stats.get("pt_updates", 0)
        pf = lambda r: sum(1 for e in r.events if e.kind == "ring-transition" and e.detail.get("vector") == 14)
        rows.append([name, guest, _per(total, units), said,
                     _per(validated, units) if long.technique == "paravirt" else "—", _per(pf(long) - pf(short), units)])
    header = ["setup", "guest", "entries into the hypervisor", "what they were", "updates Xen validated",
              "#PFs the guest's handler ran"]
    if not any(long.technique == "paravirt" for _, _, long, _ in runs.values()):
        header.pop(4)                                  # no Xen among them: nothing validated, no column
        rows = [row[:4] + row[5:] for row in rows]
    return Table(header, rows,
                 "per unit of the same paging work, from two runs of each guest that differ by whole units (exact "
                 "counts, the same on every machine)")
