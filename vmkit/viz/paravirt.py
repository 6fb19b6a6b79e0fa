"""Pictures of paravirtualization, drawn from what a run under "paravirt" recorded.

    xen_structure(machine)            Xen in ring 0, dom0 and the domUs' kernels in ring 1, their user
                                      programs in ring 3, and what passed between them in the run
    hypercall_table(result)           every hypercall the run made: how often, by which domain, an example
    HypercallStepper(image)           the stepper, with the shared_info bytes and hypercalls as their story
    virtual_if(te_machine, pv_machine, start)   one round of a critical section under trap-and-emulate
                                      beside the same round under paravirt: traps against memory writes
    multicall_table(curve), multicall_plot(curve)   the cost of a hypercall one by one and in batches
    record_ring(machine, domid, address), RingAnimation(states)   a split driver's ring, frame by frame
    paper_table(), technique_table(measured)    Barham et al.'s figures (SOSP 2003) and ours

Nothing here simulates: the hypervisor (vmkit.xen.paravirt, domains, hypercalls) records events and
keeps the domains' memory; these functions read them. record_ring and virtual_if drive a machine
forward as a stepper does and look at it between events.

Used by lesson 04.
"""
import html

import ipywidgets as w

from ..asm import disassemble
from ..xen import abi as xen
from ..xen.io_ring import read_ring
from .diagram import Diagram, Table
from .rings import ring_diagram
from .stepper import Stepper, log_html, log_line, status_html

XEN, GUEST, USER, HARDWARE, LINK = "#f4d6d6", "#f6e7d2", "#dbeaf7", "#eeeeee", "#e8f5e9"
PV_RINGS = {0: "Xen (the hypervisor)", 1: "guest kernels: dom0, domUs", 2: "unused", 3: "guest user programs"}
PLAIN_DETAIL = {"name", "number", "args", "result", "domain"}


def _domain_name(domid):
    return "dom0" if domid == 0 else f"domU d{domid}"


# --- one hypercall as a line ------------------------------------------------------------------------
def describe(event):
    """A hypercall event as a line: name, what the handler said it did, and the result."""
    d = event.detail
    notes = ", ".join(f"{k}={_short(v)}" for k, v in d.items() if k not in PLAIN_DETAIL)
    result = d["result"]
    shown = f"-{xen.ERRNO_NAMES.get(-result, -result)}" if result < 0 else f"{result}"
    return f"{d['name']}({notes}) -> {shown}"


def _short(value):
    if isinstance(value, int) and value > 0xFFFF:
        return hex(value)
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "...'"


def pv_log_line(e):
    """A log line that tells a paravirtual run's story: hypercalls, upcalls and bounces."""
    d = e.detail
    who = _domain_name(d.get("domain", 0))
    if e.kind == "hypercall":
        return f"{'hypercall':<15} {who:<9} eip={e.eip:#010x}  int 0x82: {describe(e)}"
    if e.kind == "interrupt" and d.get("source") == "event channel":
        return f"{'event':<15} {who:<9} pending on port(s) {', '.join(map(str, d.get('ports', [])))}: Xen upcalls"
    if e.kind == "ring-transition" and d.get("gate") == "event callback":
        return f"{'upcall':<15} {who:<9} Xen enters the event callback at {d['handler']:#x}, events masked"
    if e.kind == "ring-transition" and d.get("bounced"):
        return (f"{'bounce':<15} {who:<9} {d['cause']} from ring {d['from_ring']}: Xen enters the guest's "
                f"handler at {d['handler']:#x} (trap table)")
    if e.kind == "trap":
        return f"{'trap':<15} {who:<9} eip={e.eip:#010x}  {d.get('instruction', '?')} -> Xen ({d.get('cause', '?')})"
    return log_line(e)


# --- Xen's structure, from a run -------------------------------------------------------------------
def _roles(events):
    """What each domain did in the run, read from its hypercalls: {domid: set of roles}, and the
    split-driver links (backend domid, frontend domid)."""
    roles, links = {}, set()
    for e in events:
        if e.kind != "hypercall":
            continue
        d, me = e.detail, e.detail["domain"]
        if d["name"] == "domctl" and d["result"] == 0:
            roles.setdefault(me, set()).add("manages domains (domctl)")
        if d["name"] == "update_va_mapping_otherdomain" and d["result"] == 0:
            roles.setdefault(me, set()).add("builds a domU in its frames")
        if d.get("op") == "map_grant_ref" and d["result"] == 0 and d.get("dom", me) != me:
            roles.setdefault(me, set()).add("backend: maps the frontend's pages")
            roles.setdefault(d["dom"], set()).add("frontend: grants its ring")
            links.add((me, d["dom"]))
    return roles, links


def xen_structure(machine):
    """Xen's structure as this run had it: the hypervisor alone in ring 0 on the hardware, every
    domain's kernel in ring 1 (dom0 privileged), user programs in ring 3 where a domain ran any,
    and the split drivers between domains. A Diagram (with .text)."""
    events = machine.events
    domains = machine.xen.every_domain
    roles, links = _roles(events)
    calls = {d.domid: 0 for d in domains}
    user = set()
    for e in events:
        domid = e.detail.get("domain", 0)
        if e.kind == "hypercall":
            calls[domid] = calls.get(domid, 0) + 1
        if e.kind == "ring-transition" and e.detail.get("to_ring") == 3:
            user.add(domid)
    stats = machine.result().stats

    def cell(text, colour, span=1, port=""):
        lines = "<br/>".join(html.escape(line) for line in text.split("\n"))
        at = f' port="{port}"' if port else ""
        return f'<td bgcolor="{colour}" colspan="{span}" cellpadding="6"{at}>{lines}</td>'

    def note(text):
        if not text:
            return '<td border="0"> </td>'
        return f'<td border="0" cellpadding="6"><font color="#555555"><i>{html.escape(text)}</i></font></td>'

    n = len(domains)
    top = "".join(cell(f"{_domain_name(d.domid)}: user programs" if d.domid in user else
                       f"{_domain_name(d.domid)}: no user program\nin this run", USER if d.domid in user else "#ffffff")
                  for d in domains)
    kernels = []
    for d in domains:
        title = "dom0 kernel, privileged" if d.domid == 0 else f"domU d{d.domid} kernel, unprivileged"
        said = sorted(roles.get(d.domid, ()))
        kernels.append(cell("\n".join([title] + said + [f"{calls.get(d.domid, 0)} hypercalls"]), GUEST,
                            port=f"d{d.domid}"))
    xen_text = (f"Xen: {stats.get('hypercalls', 0)} hypercalls, {stats.get('upcalls', 0)} event upcalls, "
                f"{stats.get('bounces', 0)} traps bounced, {stats.get('domain_switches', 0)} domain switches")
    index = {d.domid: k for k, d in enumerate(domains)}
    split = ""
    for backend, frontend in sorted(links):
        span = abs(index[backend] - index[frontend]) + 1
        before = min(index[backend], index[frontend])
        split += ("<tr>" + "".join('<td border="0"> </td>' for _ in range(before))
                  + cell(f"split driver: {_domain_name(frontend)}'s frontend ⇄ {_domain_name(backend)}'s backend\n"
                         f"a shared ring in a granted page, and an event channel, both through Xen", LINK, span)
                  + "".join('<td border="0"> </td>' for _ in range(n - before - span)) + note("") + "</tr>")
    label = (f'<<table border="0" cellborder="1" cellspacing="3">'
             f'<tr>{top}{note("ring 3")}</tr><tr>{"".join(kernels)}{note("ring 1")}</tr>{split}'
             f'<tr>{cell(xen_text, XEN, n)}{note("ring 0")}</tr>'
             f'<tr>{cell("hardware: CPU, memory, devices (the disk belongs to dom0)", HARDWARE, n)}'
             f'{note("")}</tr></table>>')
    links_text = [f"split driver: {_domain_name(f)}'s frontend and {_domain_name(b)}'s backend share a ring "
                  f"(a granted page) and an event channel" for b, f in sorted(links)]
    caption = f"Xen's structure in this run: {n} domain{'s' if n != 1 else ''}" + (
        "; " + "; ".join(links_text) if links_text else "")
    g = Diagram("xen", caption=caption, text=_structure_text(domains, calls, roles, user, xen_text, links_text))
    g.attr(fontname="Helvetica")
    g.attr("node", fontname="Helvetica", fontsize="11")
    g.node("stack", label=label, shape="plaintext")
    return g


def _structure_text(domains, calls, roles, user, xen_text, links_text):
    lines = ["From the bottom up: the hardware; on it, alone in ring 0, " + xen_text + "."]
    for d in domains:
        what = "privileged" if d.domid == 0 else "unprivileged"
        said = "; ".join(sorted(roles.get(d.domid, ())))
        lines.append(f"Ring 1: {_domain_name(d.domid)}'s kernel, {what}, {calls.get(d.domid, 0)} hypercalls"
                     + (f" ({said})" if said else "") + "; its user programs in ring 3: "
                     + ("yes" if d.domid in user else "none in this run") + ".")
    return "\n".join(lines + [s[0].upper() + s[1:] + "." for s in links_text])


# --- the hypercalls of a run --------------------------------------------------------------------------
def hypercall_table(result):
    """Every hypercall the run made, most frequent first: its number, how often each domain made it,
    and the first call as an example."""
    events = result.of_kind("hypercall")
    domids = sorted({e.detail["domain"] for e in events})
    seen = {}
    for e in events:
        row = seen.setdefault(e.detail["name"], {"number": e.detail["number"], "first": e, "counts": {}})
        row["counts"][e.detail["domain"]] = row["counts"].get(e.detail["domain"], 0) + 1
    ordered = sorted(seen.items(), key=lambda kv: (-sum(kv[1]["counts"].values()), kv[1]["number"]))
    rows = [[name, str(row["number"])] + [str(row["counts"].get(d, "")) for d in domids] + [describe(row["first"])]
            for name, row in ordered]
    header = ["hypercall", "number"] + [_domain_name(d) for d in domids] + ["the first call (what it did -> EAX)"]
    return Table(header, rows, f"{len(events)} hypercalls (int 0x82, number in EAX) in this run, by domain")


# --- the stepper ----------------------------------------------------------------------------------------
class HypercallStepper(Stepper):
    """Stepper for a paravirtual guest: its status line shows the shared_info bytes that replace the
    interrupt flag (evtchn_upcall_mask, evtchn_upcall_pending), and its log tells hypercalls, event
    upcalls and bounced traps as what they are."""

    MAX_STEPS = 20_000            # instructions "mask byte changes" may run before it gives up

    def __init__(self, guest, **options):
        super().__init__(guest, technique="paravirt", **options)

    def next_mask_change(self):
        """Run one instruction at a time until evtchn_upcall_mask changes: the guest's cli or sti,
        or Xen masking events as it enters the callback."""
        def action():
            m = self.machine
            before = m.upcall_mask
            for _ in range(self.MAX_STEPS):
                m.step()
                if m.finished or m.upcall_mask != before:
                    return
            self.message = f"the mask byte did not change in {self.MAX_STEPS:,} instructions"
        self._act(action)

    def _build_widgets(self, show_io):
        super()._build_widgets(show_io)
        self._add_button("mask byte changes", "flag", self.next_mask_change,
                         "run until evtchn_upcall_mask, the virtual interrupt flag, changes", after="next event")
        console = self.widget.children[-1].children[0]         # a PV guest has no COM1: Xen's console
        console.value = "<b style='font-size:13px'>Xen's console (console_io hypercalls)</b>"

    def _rings(self, m):
        return ring_diagram(m, occupants=PV_RINGS)

    def render(self):
        super().render()
        m = self.machine
        self.status.value = status_html(m, self.message, self.stopped) + shared_info_html(m)
        self.log.value = _log_html(m.events, self.last_events, self.LOG_LINES)
        self.buttons["mask byte changes"].disabled = m.finished or self.stopped


def shared_info_html(m):
    mask, pending = m.upcall_mask, m.upcall_pending
    s = m.stats
    return (f"<div style='font-family:monospace'>shared_info: evtchn_upcall_mask <b>{mask}</b> "
            f"(virtual IF {1 - mask if mask in (0, 1) else '?'}) · evtchn_upcall_pending <b>{pending}</b> · "
            f"{s['hypercalls']} hypercalls · {s['upcalls']} upcalls · {s['bounces']} bounces</div>")


def _log_html(events, last, lines):
    return log_html(events, last, True, lines, line=pv_log_line)


# --- the virtual IF beside the trap it replaces ---------------------------------------------------------
def _instruction(m, eip):
    found = disassemble(m.cpu.peek(eip, 16) or b"", eip, 1)
    return found[0].text if found else "?"


def _interrupt_flag(m):
    """The interrupt flag the guest kernel believes in: the vCPU's under a VMM, the mask byte
    (inverted) under paravirt, the real one natively."""
    if hasattr(m, "upcall_mask"):
        return f"mask byte {m.upcall_mask} (IF {1 - m.upcall_mask})"
    vcpu = getattr(m, "vcpu", None)
    if vcpu is not None:
        return f"virtual IF {int(vcpu.interrupt_flag)}"
    return f"IF {(m.cpu['eflags'] >> 9) & 1}"


def trace_round(machine, start, max_steps=200):
    """Run `machine` to `start`, then one instruction at a time until it is back at `start`:
    [(eip, instruction, events it caused, interrupt flag after)] for that one round."""
    machine.run_until(eip=start)
    rows = []
    for _ in range(max_steps):
        eip = machine.cpu["eip"]
        text = _instruction(machine, eip)
        new = machine.step()
        rows.append((eip, text, new, _interrupt_flag(machine)))
        if machine.finished or machine.cpu["eip"] == start:
            break
    return rows


class IfComparison:
    """Two traced rounds side by side (HTML in Jupyter, `text` elsewhere)."""

    def __init__(self, columns):
        self.columns = columns               # [(title, rows)]

    @staticmethod
    def _event_text(e):
        d = e.detail
        if e.kind == "trap":
            return f"trap into the VMM ({d.get('cause', '?')})"
        if e.kind == "emulate":
            return f"VMM emulates: {d.get('effect', '')}"
        if e.kind == "hypercall":
            return f"hypercall {describe(e)}"
        return pv_log_line(e)

    def summary(self, rows):
        events = sum(len(new) for _, _, new, _ in rows)
        traps = sum(1 for _, _, new, _ in rows for e in new if e.kind in ("trap", "hypercall"))
        return f"{len(rows)} instructions, {traps} entries into the hypervisor, {events} events"

    @property
    def text(self):
        out = []
        for title, rows in self.columns:
            out.append(f"{title}: {self.summary(rows)}")
            for eip, text, new, flag in rows:
                out.append(f"  {eip:#010x}  {text:<32} {flag}")
                out += [f"{'':14}-> {self._event_text(e)}" for e in new]
        return "\n".join(out)

    def _column_html(self, title, rows):
        body = []
        for eip, text, new, flag in rows:
            trapped = any(e.kind in ("trap", "hypercall") for e in new)
            writes_mask = "+ 1]" in text and text.startswith("mov byte")
            colour = "#f8d7da" if trapped else "#fff3b0" if writes_mask else "#ffffff"
            what = "<br>".join(html.escape(self._event_text(e)) for e in new) or (
                "a store to shared_info: no trap, no event" if writes_mask else "")
            td = "<td style='text-align:left;padding:1px 8px'>{}</td>".format
            body.append(f"<tr style='background:{colour}'>{td(f'{eip:#x}')}{td(html.escape(text))}"
                        f"{td(html.escape(flag))}{td(what)}</tr>")
        head = "".join(f"<th style='text-align:left;padding:1px 8px'>{h}</th>"
                       for h in ("eip", "instruction", "interrupt flag after", "what happened"))
        return (f"<div style='margin-right:16px'><b>{html.escape(title)}</b><div style='color:#555'>"
                f"{html.escape(self.summary(rows))}</div><table style='border-collapse:collapse;font-family:monospace;"
                f"font-size:12px;color:#24292e'><tr>{head}</tr>{''.join(body)}</table></div>")

    def _repr_html_(self):
        return ("<div style='display:flex;flex-wrap:wrap;background:#fcfcfc;color:#24292e;padding:4px'>"
                + "".join(self._column_html(t, r) for t, r in self.columns) + "</div>")

    def __repr__(self):
        return self.text


def virtual_if(te_machine, pv_machine, start):
    """One round of the loop at `start` under trap-and-emulate beside the same round under paravirt
    (the two machines run the same kernel; its pv_ops pick cli/sti or the mask byte)."""
    return IfComparison([("trap-and-emulate: cli and sti trap", trace_round(te_machine, start)),
                         ("paravirt: the mask byte in shared_info", trace_round(pv_machine, start))])


# --- multicalls ------------------------------------------------------------------------------------------
def multicall_table(curve):
    """`curve`: [(batch size or 0 for one by one, entries into Xen, µs a hypercall)], measured."""
    alone = next(us for size, _, us in curve if size == 0)
    rows = [["one by one" if size == 0 else str(size), f"{entries:,}", f"{us:.1f}", f"{alone / us:.1f}×"]
            for size, entries, us in curve]
    return Table(["batch", "entries into Xen", "µs a hypercall", "vs one by one"], rows,
                 "measured on this machine, in vmkit (best of a few runs): the same null hypercalls, batched")


def multicall_plot(curve, calls):
    """µs per hypercall against the batch size, log-scaled, with one by one as a line. Every measured
    point stays in view (a batch of one costs more than one by one)."""
    import matplotlib.pyplot as plt          # matplotlib only when the plot is drawn: it is slow to load
    alone = next(us for size, _, us in curve if size == 0)
    batched = [(size, us) for size, _, us in curve if size]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot([s for s, _ in batched], [us for _, us in batched], "o-", color="#1565c0", label="in multicalls")
    ax.axhline(alone, color="#c62828", linestyle="--", label=f"one int 0x82 each ({alone:.1f} µs)")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, max([alone] + [us for _, us in batched]) * 1.15)
    ax.set_xlabel("hypercalls per multicall (batch size)")
    ax.set_ylabel("µs per hypercall")
    ax.set_title(f"{calls:,} null hypercalls (xen_version), measured on this machine", fontsize=11)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.close(fig)                   # shown once, where the cell returns it
    return fig


# --- direct paging: what the guest asked Xen to do to its page tables, and what Xen refused ------------------
MMU_CALLS = ("mmu_update", "update_va_mapping", "mmuext_op")


def _errno(result):
    return f"-{xen.ERRNO_NAMES[-result]}" if result < 0 and -result in xen.ERRNO_NAMES else str(result)


def _request(e):
    d = e.detail
    if d["name"] == "update_va_mapping":
        flush = f", flush {d['flush']}" if d.get("flush") else ""
        return f"PTE for {d['va']:#x} := {d['val']:#010x}{flush}"
    if d["name"] == "mmu_update":
        if d["count"] == 1 and d.get("requests"):
            ptr, val = d["requests"][0]
            return f"the entry at machine {ptr:#x} := {val:#010x}"
        return f"{d['count']} requests {{ptr, val}}, {d['done']} done"
    return ", ".join(d.get("ops", [])) + f" ({d['done']} done)"


def page_table_requests(result):
    """Every mmu_update, update_va_mapping and mmuext_op of a run (a multicall's entries too): what
    it asked, what came back in EAX, and the rule Xen refused it by (Xen's reason, as its MEM_LOG
    would say it)."""
    rows = []
    for e in result.of_kind("hypercall"):
        calls = [e] if e.detail["name"] in MMU_CALLS else []
        for inner in e.detail.get("calls", []):
            if inner["name"] in MMU_CALLS:
                calls.append(type(e)(kind="hypercall", eip=e.eip, cpl=e.cpl, detail=inner, icount=e.icount))
        for call in calls:
            rows.append([call.detail["name"], _request(call), _errno(call.detail["result"]),
                         call.detail.get("refused", "")])
    return Table(["hypercall", "what it asked", "EAX", "refused because"], rows,
                 "each request Xen validated; a refused one changed nothing, and ended its batch")


def batching_table(rows):
    """`rows`: [(how the updates were made, entries into Xen, µs a page-table update)], measured."""
    alone = rows[0][2]
    return Table(["how", "entries into Xen", "µs an update", "vs the first row"],
                 [[how, f"{entries:,}", f"{us:.1f}", f"{alone / us:.1f}×"] for how, entries, us in rows],
                 "measured on this machine, in vmkit (best of a few runs): the same page-table updates, "
                 "each validated by Xen")


# --- the split driver's ring, frame by frame -----------------------------------------------------------------
class RingState:
    """The ring after one event of a run: `ring` (vmkit.xen.io_ring.SharedRing), the `event` after
    which it was read, and a `caption` saying what changed."""

    def __init__(self, index, ring, event, caption):
        self.index, self.ring, self.event, self.caption = index, ring, event, caption


def _change(old, new):
    said = []
    if old is None and not (new.req_prod or new.req_event or new.rsp_prod or new.rsp_event):
        return ["the frontend's ring page before it set the ring up: every index 0"]
    if old is None or new.req_event != old.req_event or new.rsp_event != old.rsp_event:
        said.append(f"notify me at: req_event {new.req_event}, rsp_event {new.rsp_event}")
    if old is not None and new.req_prod != old.req_prod:
        for r in new.requests(since=old.req_prod):
            said.append(f"the frontend put request id {r.id} ({r.operation} sector {r.sector}, data in grant "
                        f"{r.gref}) in slot {r.slot}; req_prod {old.req_prod} → {new.req_prod}")
    if old is not None and new.rsp_prod != old.rsp_prod:
        for r in new.responses(since=old.rsp_prod):
            said.append(f"the backend put the response to id {r.id} ({r.operation}, status {r.status}) in slot "
                        f"{r.slot}; rsp_prod {old.rsp_prod} → {new.rsp_prod}")
    return said


def _nudge(e, domid):
    """Events that move a split driver along: sends on a channel, upcalls, grant maps."""
    d = e.detail
    if e.kind == "hypercall" and d.get("op") == "send":
        return f"{_domain_name(d['domain'])} notifies its peer: event_channel_op send on port {d.get('port')}"
    if e.kind == "interrupt" and d.get("source") == "event channel":
        return f"Xen delivers the event to {_domain_name(d['domain'])} (upcall, port {', '.join(map(str, d['ports']))})"
    if e.kind == "hypercall" and d.get("op") in ("map_grant_ref", "unmap_grant_ref") and d["result"] == 0:
        what = f"grant {d['ref']} of d{d['dom']}" if "ref" in d else f"handle {d.get('handle')}"
        return f"{_domain_name(d['domain'])} {d['op'].split('_')[0]}s {what}"
    if e.kind == "exit" and d.get("domain") == domid:
        return f"{_domain_name(domid)} shuts down"
    return None


def record_ring(machine, domid, address, max_events=10_000):
    """Run `machine` (dom0 of a split-driver system) event by event to its end and keep a frame
    whenever domain `domid`'s ring at `address` changed or a domain nudged the other."""
    states, last = [], None
    for _ in range(max_events):
        if machine.finished:
            break
        for e in machine.next_event():
            domain = next((d for d in machine.xen.every_domain if d.domid == domid), None)
            if domain is None:
                continue
            ring = read_ring(domain, address)
            header = None if last is None else (last.req_prod, last.req_event, last.rsp_prod, last.rsp_event)
            changed = header != (ring.req_prod, ring.req_event, ring.rsp_prod, ring.rsp_event)
            said = _change(last, ring) if changed else []
            nudge = _nudge(e, domid)
            if said or nudge:
                states.append(RingState(len(states), ring, e, "; ".join(said + ([nudge] if nudge else []))))
                last = ring
    return states


def ring_html(state, slots=6):
    """The ring's first `slots` slots with the four indices pointing at them."""
    r = state.ring
    cells = []
    answered = {x.slot: x for x in r.responses()}
    waiting = {x.slot: x for x in r.requests()}
    for slot in range(slots):
        marks = [name for name, index in (("req_prod", r.req_prod), ("rsp_prod", r.rsp_prod))
                 if index % xen.BLKIF_RING_SIZE == slot]
        if slot in waiting:
            q = waiting[slot]
            body, colour = f"request id {q.id}<br>{q.operation} sector {q.sector}<br>data: grant {q.gref}", "#fff3b0"
        elif slot in answered:
            a = answered[slot]
            body, colour = f"response id {a.id}<br>{a.operation}, status {a.status}", "#d4edda"
        else:
            body, colour = "empty", "#ffffff"
        arrows = "".join(f"<div style='color:#b71c1c;font-weight:bold'>▲ {m}</div>" for m in marks)
        cells.append(f"<td style='vertical-align:top;padding:0 2px'><div style='border:1px solid #555;"
                     f"background:{colour};width:130px;height:62px;padding:3px;font-size:11px'>"
                     f"<b>slot {slot}</b><br>{body}</div>{arrows}</td>")
    head = (f"req_prod {r.req_prod} · req_event {r.req_event} · rsp_prod {r.rsp_prod} · rsp_event {r.rsp_event}"
            f" · {xen.BLKIF_RING_SIZE} slots (first {slots} shown); a producer index points at the next free slot")
    return (f"<div style='background:#fcfcfc;color:#24292e;padding:6px;font-family:monospace'>"
            f"<div><b>frame {state.index + 1}</b>: {html.escape(state.caption)}</div>"
            f"<div style='font-size:12px;color:#555;margin:4px 0'>{head}</div>"
            f"<table style='border-collapse:collapse'><tr>{''.join(cells)}</tr></table></div>")


def ring_text(state):
    r = state.ring
    return (f"frame {state.index + 1}: {state.caption}\n  req_prod {r.req_prod}, req_event {r.req_event}, "
            f"rsp_prod {r.rsp_prod}, rsp_event {r.rsp_event}; waiting requests "
            f"{[(q.slot, q.id, q.operation) for q in r.requests()]}; responses "
            f"{[(a.slot, a.id, a.status) for a in r.responses()]}")


class RingAnimation:
    """A Play button and a slider over the recorded frames; the panel shows the ring at that frame."""

    def __init__(self, states, interval=900):
        if not states:
            raise ValueError("no ring states to show: record_ring found no ring at that address "
                             "(is it the frontend's domain and its ring page?)")
        self.states = states
        self.play = w.Play(min=0, max=len(states) - 1, value=0, interval=interval, description="play")
        self.slider = w.IntSlider(min=0, max=len(states) - 1, value=0, description="frame",
                                  continuous_update=True, layout=w.Layout(width="420px"))
        w.jslink((self.play, "value"), (self.slider, "value"))
        self.panel = w.HTML()
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        self.widget = w.VBox([w.HBox([self.play, self.slider]), self.panel])
        self.widget.add_class("vmkit-ring-animation")
        self.show(0)

    def show(self, index):
        self.slider.value = index
        self.panel.value = ring_html(self.states[index])

    @property
    def text(self):
        return "\n".join(ring_text(s) for s in self.states)

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.text
        return bundle


# --- the paper's figures, and ours ----------------------------------------------------------------------------
# Barham et al., "Xen and the Art of Virtualization", SOSP 2003, Figure 3: native Linux (L),
# XenoLinux (X), VMware Workstation 3.2 (V) and User-Mode Linux (U), the absolute figures on the bars.
BARHAM = [
    ("SPEC INT2000", "score, higher is better", 567, 567, 554, 550, True),
    ("Linux build", "seconds, lower is better", 263, 271, 334, 535, False),
    ("OSDB-IR", "tuples/s, higher is better", 172, 158, 80, 65, True),
    ("OSDB-OLTP", "tuples/s, higher is better", 1714, 1633, 199, 306, True),
    ("dbench", "score, higher is better", 418, 400, 310, 111, True),
    ("SPEC WEB99", "score, higher is better", 518, 514, 150, 172, True),
]


def paper_table():
    """Barham et al.'s macrobenchmarks (SOSP 2003, Figure 3), with each as a fraction of native."""
    rows = []
    for name, unit, native, xeno, vmware, uml, higher in BARHAM:
        # performance as a fraction of native: for a time, lower is better
        shares = [(v, v / native if higher else native / v) for v in (xeno, vmware, uml)]
        rows.append([name, unit, f"{native:,}"] + [f"{v:,} ({share:.0%})" for v, share in shares])
    return Table(["benchmark", "unit", "native Linux", "XenoLinux", "VMware WS 3.2", "User-Mode Linux"], rows,
                 "from Barham et al., SOSP 2003, Figure 3 (not measured here); (%): performance relative to native. "
                 "Porting Linux to Xen changed or added 2,995 lines, 1.36% of its x86 code, the virtual network "
                 "and block drivers included (their Table 2).")


def technique_table(measured):
    """`measured` maps a technique to the RunResult of one kernel run under it: traps, hypercalls,
    instructions and time, with the time relative to native."""
    base = measured.get("native")
    rows = []
    for technique, r in measured.items():
        ms = f"{r.seconds * 1e3:,.1f}"
        if base is not None and technique != "native" and base.seconds > 0:
            ms += f" ({r.seconds / base.seconds:.2f}×)"
        rows.append([technique, f"{r.stats.get('traps', 0):,}", f"{r.stats.get('hypercalls', 0):,}",
                     f"{r.stats.get('instructions', 0):,}", ms])
    return Table(["technique", "traps", "hypercalls", "instructions", "ms"], rows,
                 "measured on this machine, in vmkit (best of a few runs); (×): time as a multiple of native")
