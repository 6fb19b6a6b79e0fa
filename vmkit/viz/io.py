"""Pictures of interrupt and I/O virtualization, drawn from what the model of VT-x recorded.

    engine_note(report)             what runs where: the model for every step, the real KVM where it can
    interrupt_moments(guest)        a timer tick's way into a guest that has interrupts masked, as the
                                    model's run recorded it: the INTR exit, the VM entry that asks for
                                    the interrupt window, the IRQ_WINDOW_OPEN exit, the injection
    interrupt_diagram(moments, k)   those moments as a chain, moment k marked
    InterruptStepper(guest)         step through the moments, the guest's code beside each
    irq_table(run)                  the interrupt events and interrupt exits of any run (the model, KVM)
    exits_per_request(rows)         exits per request from pairs of runs that differ only in requests
    ring_moments(requests)          the virtio console's split virtqueue as a request goes round: the
                                    descriptors written, the request made available, the device's
                                    answer in the used ring, each read from the device model's state
    ring_diagram(state, before)     the descriptor table, the available ring and the used ring
    RingStepper(requests)           step a request round the rings
    passthrough_diagram()           VFIO passthrough, the IOMMU's DMA and interrupt remapping, and
                                    posted interrupts: drawn from their documentation, not run here

The moments are read from live machines of the model ("hardware-assist"): their events, the
registers at each stop, the VMM's interrupt-window control (`interrupt_window`) and the virtio
device's rings (`VirtioConsole.ring_state`). Nothing here changes what a run does.

Used by lesson 07.
"""
import html
from dataclasses import dataclass, field

import ipywidgets as w

from ..asm import assemble
from ..guests import source as guest_source
from ..machine.virtio import DESC_F_NEXT, DESC_F_WRITE, RingState
from ..machine.x86 import IF
from ..run import machine
from ..vtx.hardware_assist import VmcsControls
from .diagram import Diagram, Plot, Table
from .kvm import Banner, code_html
from .stepper import Walker, button, titled

HOT, NEW, PLAIN = "#c62828", "#fff3b0", "#ffffff"
KVM_WITHOUT_IRQCHIP = VmcsControls(external_interrupt_exiting=True)


def engine_note(report, wanted=("protected-mode", "interrupts", "interrupt-window", "iret")):
    """What the lesson runs where: every step on the model of VT-x, and on the real KVM (`report`, from
    vmkit.kvm.probe) what it can run of `wanted`, with the probe's reason for the rest."""
    lines = ["The steps below run on vmkit's model of VT-x ('hardware-assist'), which stops between exits."]
    if not report.can("protected-mode"):
        lines.append(f"No real KVM to compare with here: {report.why_not('protected-mode')}")
        return Banner("\n".join(lines), False)
    can = [f for f in wanted if report.can(f)]
    cannot = [f for f in wanted if not report.can(f)]
    lines.append(f"Real KVM at {report.path} ({report.module or 'module unknown'}) runs {', '.join(can)}: the "
                 "lesson runs the same guests there where it can.")
    if cannot:
        lines.append(f"It cannot run {', '.join(cannot)}: {report.why_not(*cannot)}")
    return Banner("\n".join(lines), not cannot)


# --- one tick's way into a guest with interrupts masked -------------------------------------------------
@dataclass
class Moment:
    """One stop on an interrupt's way in: a short title, what happened, where the guest was, the event
    (None for a VM entry, which records none), the guest's IF and the VMM's interrupt-window control."""

    title: str
    what: str
    eip: int
    event: object = None
    if_flag: bool = False
    window: bool = False
    detail: dict = field(default_factory=dict)


def _exit(reason):
    return lambda e: e.kind == "vmexit" and e.detail["reason"] == reason


def _last(events, match):
    return next((e for e in reversed(events) if match(e)), None)


def interrupt_moments(guest, controls=KVM_WITHOUT_IRQCHIP):
    """The first tick that finds `guest` (a guest's name, NASM source or Image) with interrupts masked,
    as the model of VT-x with external-interrupt exiting (KVM without an in-kernel irqchip) takes
    it in: a list of Moment. The guest must mask interrupts where a tick can land (cli, popf)."""
    image = assemble(guest if "\n" in str(guest) or not isinstance(guest, str) else guest_source(guest))
    m = machine(image, "hardware-assist", controls=controls)
    moments = []
    while not m.finished:                       # the first tick that comes while IF = 0
        m.run_until(event=_exit("INTR"))
        intr = _last(m.events, _exit("INTR"))
        if intr is not None and not m.result().regs["eflags"] & IF:
            break
    else:
        raise ValueError("no timer tick came while the guest had interrupts masked")
    moments.append(Moment("1. the tick: an INTR exit",
                          f"The PIT ticked and the PIC raised IRQ {intr.detail['irq']} while the guest ran with "
                          "IF = 0. External-interrupt exiting makes the CPU leave the guest at once, whatever "
                          "IF says (VT-x basic exit reason 1); KVM hands user space KVM_EXIT_INTR.",
                          intr.eip, intr, False, m.interrupt_window, {"irq": intr.detail["irq"]}))
    m.step()                                    # the VM entry after the exit, and one guest instruction
    moments.append(Moment("2. VM entry: the window requested",
                          "Before it enters the guest again the VMM looks at IF. It is 0, so the vector cannot "
                          "be injected: the VMM sets interrupt-window exiting in the VMCS (QEMU: "
                          "kvm_run.request_interrupt_window = 1) and enters the guest without it.",
                          intr.eip, None, bool(m.result().regs["eflags"] & IF), m.interrupt_window))
    m.run_until(event=_exit("IRQ_WINDOW_OPEN"))
    window = _last(m.events, _exit("IRQ_WINDOW_OPEN"))
    between = [e for e in m.events if intr.icount < (e.icount or 0) < window.icount and e.kind == "vmexit"]
    moments.append(Moment("3. IRQ_WINDOW_OPEN",
                          f"The guest ran on for {window.icount - intr.icount:,} instructions "
                          f"({len(between)} other exits on the way) until sti and the instruction in sti's "
                          "shadow had run: now IF = 1 and nothing blocks, and the CPU exits at the start of "
                          "this instruction (VT-x basic exit reason 7; KVM_EXIT_IRQ_WINDOW_OPEN).",
                          window.eip, window, True, True, {"instructions": window.icount - intr.icount,
                                                          "exits between": len(between)}))
    if _last(m.events, lambda e: e.kind == "interrupt" and e.icount == window.icount) is None:
        m.run_until(event="interrupt")
    inject = next(e for e in m.events if e.kind == "interrupt" and e.icount == window.icount)
    gate = next((e for e in m.events if e.kind == "ring-transition" and e.icount == inject.icount), None)
    info = inject.detail.get("entry_interruption_info", 0)
    moments.append(Moment("4. VM entry: the injection",
                          f"The VMM acknowledges the PIC and writes {info:#010x} into the VM-entry "
                          f"interruption-information field (valid bit 31, type 0 external interrupt, vector "
                          f"{inject.detail['vector']:#x}); VM entry delivers it through the guest's IDT"
                          + (f" to its handler at {gate.detail['handler']:#x}" if gate else "")
                          + ", before the instruction at the window runs. QEMU: KVM_INTERRUPT.",
                          inject.eip, inject, True, m.interrupt_window, {"entry_interruption_info": info}))
    return image, moments


def interrupt_diagram(moments, current=None):
    """The moments as a chain from the tick to the guest's handler; moment `current` (an index) in red."""
    d = Diagram("irq_path", caption="one timer tick into a guest with IF = 0: the model's run, exit by exit",
                text="\n".join(f"{'>' if k == current else ' '} {m.title} at eip {m.eip:#x}: IF={int(m.if_flag)}, "
                               f"interrupt-window exiting={'on' if m.window else 'off'}" for k, m in enumerate(moments)))
    d.attr(rankdir="TB", fontname="Helvetica", ranksep="0.3")
    d.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="12", width="3.6")
    d.node("pit", "PIT tick: the PIC sets IRR bit 0", fillcolor="#eeeeee")
    for k, m in enumerate(moments):
        label = (f"{m.title}\neip {m.eip:#x} · IF = {int(m.if_flag)} · window exiting {'on' if m.window else 'off'}")
        d.node(f"m{k}", label, fillcolor=NEW if k == current else PLAIN,
               color=HOT if k == current else "#555555", penwidth="2.5" if k == current else "1")
    d.edge("pit", "m0")
    for k in range(len(moments) - 1):
        where = ("guest runs, IF = 0" if k == 1 else "VMM: IF = 0, cannot inject" if k == 0 else "VMM injects")
        d.edge(f"m{k}", f"m{k + 1}", label=where, fontsize="10")
    return d


class MomentStepper(Walker):
    """What the two steppers here share: moments worked out from a live run beforehand, stepped with
    back, next and reset (so the book's recording, viz.tape, can replay them: RECORDED), the buttons
    disabled at the ends; a subclass builds `self.widget` and says in render() what a moment shows."""

    RECORDED = ("next", "next")

    def _buttons(self, handle, back_tip, next_tip):
        self.at = 0
        self.buttons = {"back": button("back", "step-backward", self.back, back_tip, f"{handle}-back"),
                        "next": button("next", "step-forward", self.next, next_tip, f"{handle}-next"),
                        "reset": button("reset", "undo", self.reset, "back to the first moment", f"{handle}-reset")}
        return list(self.buttons.values())

    def next(self):
        self.at = min(self.at + 1, len(self.moments) - 1)
        self.render()

    def back(self):
        self.at = max(self.at - 1, 0)
        self.render()

    def reset(self):
        self.at = 0
        self.render()

    def render(self):
        self.show(self.moments[self.at])
        self.buttons["back"].disabled = self.buttons["reset"].disabled = self.at == 0
        self.buttons["next"].disabled = self.at == len(self.moments) - 1

    def show(self, moment):
        """Fill the panels for `moment` (the subclass's)."""
        raise NotImplementedError


class InterruptStepper(MomentStepper):
    """Step through interrupt_moments(guest): the chain redrawn with the current moment marked, the
    guest's code at that moment's eip, and what the VMM saw and set there."""

    def __init__(self, guest, controls=KVM_WITHOUT_IRQCHIP):
        self.image, self.moments = interrupt_moments(guest, controls)
        buttons = self._buttons("vmkit-irq-stepper", "the moment before", "the next moment")
        self.status, self.diagram, self.what, self.code = (w.HTML() for _ in range(4))
        self.widget = w.VBox([w.HBox(buttons), self.status,
                              w.HBox([w.VBox([self.diagram], layout=w.Layout(width="42%", padding="0 8px 0 0")),
                                      w.VBox([titled("what happened", self.what),
                                              titled("the guest's code", self.code)], layout=w.Layout(width="58%"))])])
        self.widget.add_class("vmkit-irq-stepper")
        self.render()

    def show(self, m):
        self.status.value = (f"<div style='font-family:monospace'>moment {self.at + 1} of {len(self.moments)} · "
                             f"eip {m.eip:#010x} · IF {int(m.if_flag)} · interrupt-window exiting "
                             f"{'on' if m.window else 'off'}</div>")
        self.diagram.value = interrupt_diagram(self.moments, self.at).pane_html()
        facts = "".join(f"<br><code>{html.escape(k)} = {v:#x}</code>" if isinstance(v, int) and v > 9
                        else f"<br><code>{html.escape(k)} = {v}</code>" for k, v in m.detail.items())
        self.what.value = (f"<div style='font-size:13px'><b style='color:{HOT}'>{html.escape(m.title)}</b><br>"
                           f"{html.escape(m.what)}{facts}"
                           + (f"<br><small>event: {html.escape(str(m.event))}</small>" if m.event else "") + "</div>")
        self.code.value = code_html(self.image, m.eip)


def irq_table(run, first=8):
    """The first `first` interrupt events and INTR / IRQ_WINDOW_OPEN exits of `run`, in order, with how
    each interrupt was injected (the model's VMCS field, KVM_INTERRUPT or KVM_IRQ_LINE)."""
    rows = []
    for e in run.events:
        if e.kind == "interrupt":
            rows.append(["interrupt", f"{e.eip:#x}", f"IRQ {e.detail.get('irq')} -> vector {e.detail['vector']:#x}",
                         e.detail.get("injected", "at VM entry, no exit (in-kernel PIC)")])
        elif e.kind == "vmexit" and e.detail["reason"] in ("INTR", "IRQ_WINDOW_OPEN"):
            rows.append(["vmexit " + e.detail["reason"], f"{e.eip:#x}", e.detail.get("hardware", ""),
                         e.detail.get("why", "the guest can take the waiting interrupt")])
        if len(rows) == first:
            break
    stats = run.stats
    return Table(["event", "eip", "what", "how"], rows,
                 caption=f"{run.technique}: {stats.get('vmexit_INTR', 0)} INTR exits, "
                         f"{stats.get('vmexit_IRQ_WINDOW_OPEN', 0)} IRQ_WINDOW_OPEN exits, {stats.get('irqs', 0)} "
                         f"interrupts injected in the whole run (the first {len(rows)} events shown)")


# --- an emulated device against virtio: exits per request -----------------------------------------------
def exits_per_request(rows):
    """rows: {label: (fewer, more, extra)}, two runs of one setup that differ by `extra` requests. Each
    count per request is their difference over `extra`, so the set-up both runs share drops out."""
    keys = (("vmexits", "exits"), ("vmexit_IO", "IO exits"), ("vmexit_MMIO", "MMIO exits"),
            ("irqs", "interrupts taken"))
    table, labels, exits = [], [], []
    for label, (fewer, more, extra) in rows.items():
        per = {key: (more.stats.get(key, 0) - fewer.stats.get(key, 0)) / extra for key, _ in keys}
        table.append([label] + [f"{per[key]:g}" for key, _ in keys])
        labels.append(label)
        exits.append(per["vmexits"])
    import matplotlib.pyplot as plt        # here, not at the top: only this picture needs matplotlib
    figure, axes = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1))
    bars = axes.barh(range(len(labels)), exits, color=["#c62828" if "COM1" in label else "#1565c0" for label in labels])
    axes.set_yticks(range(len(labels)), labels)
    axes.invert_yaxis()
    axes.set_xlabel("VM exits per request (one request: one 19-byte line)")
    axes.bar_label(bars, labels=[f"{x:g}" for x in exits], padding=3)
    axes.set_xlim(0, max(exits) * 1.15 or 1)
    figure.tight_layout()
    text = "\n".join(f"{label}: {x:g} exits a request" for label, x in zip(labels, exits))
    return (Table(["setup"] + [name for _, name in keys], table,
                  caption="per request: (the run with more requests - the run with fewer) / the requests between them"),
            Plot(figure, "VM exits per request, counted from the runs\n" + text))


# --- the split virtqueue, step by step ------------------------------------------------------------------
@dataclass
class RingMoment:
    """The rings after one step of the driver or the device: a title, what happened, the state."""

    title: str
    what: str
    state: RingState
    eip: int = 0


def _address_after(image, label, text):
    """The address of the first instruction after `label` whose source line holds `text`, and the
    address of the instruction after it."""
    start = image.symbols[label]
    lines = image.source.splitlines()
    found = sorted(a for a, n in image.lines.items() if a >= start and text in lines[n - 1].split(";")[0])
    after = sorted(a for a in image.lines if a > found[0])
    return found[0], after[0]


def ring_moments(requests=3, **equ):
    """The virtio_console guest on the model, stopped three times a request: when the driver has written
    the chain and put its head in the available ring, when it has published avail.idx, and after its
    QueueNotify exit, by which the device has walked the chain into the used ring. A list of RingMoment."""
    image = assemble(guest_source("virtio_console", REQUESTS=requests, **equ))
    m = machine(image, "hardware-assist")
    store, published = _address_after(image, "publish", "[AVAIL + 2]")       # avail.idx = ebx, and after it
    head = _address_after(image, "post", "[AVAIL + 4 + 2 * ecx]")[0]         # the chain's head into the ring
    notify = _address_after(image, "publish", "[QUEUE_NOTIFY]")[0]
    is_notify = lambda e: (e.kind == "vmexit" and e.detail["reason"] == "MMIO"
                           and e.detail.get("register") == "QueueNotify")
    moments = []
    for n in range(requests):
        m.run_until(eip=image.symbols["publish"])
        moments.append(RingMoment(f"request {n}: the driver fills a chain",
                                  f"The driver wrote two descriptors (the line's number, then its text, linked by "
                                  f"NEXT) and put the chain's head in avail.ring[{n} % num]. avail.idx is still {n}: "
                                  "the device cannot see the request yet. No exit: this is the guest writing its "
                                  "own memory.", m.virtio.ring_state(), head))
        m.run_until(eip=published)
        moments.append(RingMoment(f"request {n}: made available",
                                  f"One store, avail.idx = {n + 1}, publishes the request. Still no exit. With "
                                  f"EVENT_IDX the driver now compares avail_event with the indexes: "
                                  "vring_need_event(avail_event, new, old) says whether the device wants a notify.",
                                  m.virtio.ring_state(), store))
        before = len([e for e in m.events if is_notify(e)])
        m.run_until(event=lambda e: is_notify(e))
        notified = len([e for e in m.events if is_notify(e)]) > before
        moments.append(RingMoment(f"request {n}: notified, used",
                                  "The driver wrote QueueNotify: one MMIO exit. Inside it the device took the "
                                  "chain from the available ring, sent its bytes to the console, put (id = head, "
                                  f"len = 0) in the used ring, raised used.idx to {m.virtio.ring_state().used_idx} "
                                  "and set avail_event to the next index it will take."
                                  if notified else "The driver did not notify: the device had not asked for it.",
                                  m.virtio.ring_state(), notify))
    return image, moments


def _desc_flags(flags):
    names = [name for bit, name in ((DESC_F_NEXT, "NEXT"), (DESC_F_WRITE, "WRITE")) if flags & bit]
    return "|".join(names) or "0"


def ring_diagram(state, before=None, title=""):
    """The descriptor table, available ring and used ring of `state` (a RingState): the available
    entries, the one the driver is filling (avail.ring[avail.idx], not available yet), the used
    elements, each pointing at its descriptor; what changed since `before` (another RingState) in yellow."""
    avail_slots = min(state.avail_idx + 1, state.num)            # the available entries and the next one
    used_slots = min(state.used_idx, state.num)
    published = {state.avail_ring[k] for k in range(min(state.avail_idx, state.num))}
    filling = state.avail_ring[state.avail_idx % state.num] if state.num else None
    if state.avail_idx < state.num and (filling in published or filling not in state.buffers):
        avail_slots -= 1                     # the next entry holds nothing the driver wrote for it yet
    heads = {state.avail_ring[k] for k in range(avail_slots)}
    shown = set(heads) | set(state.buffers)
    shown |= {state.desc[i][3] for i in list(shown) if i < len(state.desc) and state.desc[i][2] & DESC_F_NEXT}
    shown = sorted(i for i in shown if i < len(state.desc))

    def colour(now, then):
        return NEW if before is not None and now != then else PLAIN

    d = Diagram("rings", caption=title or "the transmit queue's split virtqueue, as guest memory holds it now",
                text=ring_text(state))
    d.attr(rankdir="LR", fontname="Helvetica", nodesep="0.3")
    d.attr("node", shape="plaintext", fontname="Helvetica", fontsize="11")
    rows = []
    for i in shown:
        addr, length, flags, nxt = state.desc[i]
        text = state.buffers.get(i, b"").decode("latin-1").replace("\n", "\\n")
        rows.append((f"d{i}", f"[{i}] addr {addr:#x} len {length} flags {_desc_flags(flags)}"
                              + (f" next {nxt}" if flags & DESC_F_NEXT else "") + f"  '{text}'",
                     colour(state.desc[i], before.desc[i] if before and i < len(before.desc) else None)))
    d.node("desc", _coloured("descriptor table (the driver writes it)", rows))
    avail_rows = [("flags", f"flags {state.avail_flags}", PLAIN),
                  ("idx", f"idx {state.avail_idx}", colour(state.avail_idx, before and before.avail_idx))]
    for k in range(avail_slots):
        late = " (not available yet)" if k >= state.avail_idx else ""
        avail_rows.append((f"a{k}", f"ring[{k}] = {state.avail_ring[k]}{late}",
                           colour(state.avail_ring[k], before and before.avail_ring[k])))
    avail_rows.append(("ue", f"used_event {state.used_event}", colour(state.used_event, before and before.used_event)))
    d.node("avail", _coloured("available ring (the driver writes it)", avail_rows))
    used_rows = [("flags", f"flags {state.used_flags}", PLAIN),
                 ("idx", f"idx {state.used_idx}", colour(state.used_idx, before and before.used_idx))]
    used_rows += [(f"u{k}", f"ring[{k}] = id {state.used_ring[k][0]}, len {state.used_ring[k][1]}",
                   colour(state.used_ring[k], before and before.used_ring[k])) for k in range(used_slots)]
    used_rows.append(("ae", f"avail_event {state.avail_event}", colour(state.avail_event, before and before.avail_event)))
    d.node("used", _coloured("used ring (the device writes it)", used_rows))
    d.node("device", _coloured("the device model", [
        ("la", f"takes avail.ring[{state.last_avail}] next", colour(state.last_avail, before and before.last_avail)),
        ("n", f"notifies {state.counts.get('notifies', 0)} · requests {state.counts.get('requests', 0)}", PLAIN)]))
    for k in range(avail_slots):
        d.edge(f"avail:a{k}", f"desc:d{state.avail_ring[k]}", color="#1565c0",
               style="solid" if k < state.avail_idx else "dotted")
    for k in range(used_slots):
        d.edge(f"used:u{k}", f"desc:d{state.used_ring[k][0]}", color="#2e7d32", style="dashed")
    d.edge("device:la", f"avail:a{state.last_avail % state.num}" if state.last_avail < avail_slots else "avail:idx",
           style="dotted", arrowhead="open")
    return d


def _coloured(title, rows):
    cells = "".join(f'<TR><TD PORT="{port}" ALIGN="LEFT" BGCOLOR="{bg}">{html.escape(text)}</TD></TR>'
                    for port, text, bg in rows)
    return (f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3">'
            f'<TR><TD BGCOLOR="#e3e3e3"><B>{html.escape(title)}</B></TD></TR>{cells}</TABLE>>')


def ring_text(state):
    """The rings in words: the indexes, the heads made available, the used elements."""
    k = min(state.avail_idx, state.num)
    filling = (f", avail.ring[{state.avail_idx}] = {state.avail_ring[state.avail_idx % state.num]} not available yet"
               if state.num else "")
    return (f"avail.idx {state.avail_idx}, heads {state.avail_ring[:k]}{filling}, used_event {state.used_event}; "
            f"used.idx {state.used_idx}, elements {[tuple(e) for e in state.used_ring[:min(state.used_idx, state.num)]]}, "
            f"avail_event {state.avail_event}; the device takes avail.ring[{state.last_avail}] next; "
            f"{state.counts.get('notifies', 0)} notifies, {state.counts.get('requests', 0)} requests so far")


class RingStepper(MomentStepper):
    """Step requests round the virtqueue (ring_moments): the rings redrawn at each stop, what changed in
    yellow, the driver's code where the guest stopped."""

    def __init__(self, requests=3, **equ):
        self.image, self.moments = ring_moments(requests, **equ)
        buttons = self._buttons("vmkit-ring-stepper", "the step before", "the next step of driver or device")
        self.status, self.diagram, self.what, self.code = (w.HTML() for _ in range(4))
        self.widget = w.VBox([w.HBox(buttons), self.status, self.diagram,
                              w.HBox([w.VBox([titled("what happened", self.what)], layout=w.Layout(width="50%")),
                                      w.VBox([titled("the driver's code", self.code)], layout=w.Layout(width="50%"))])])
        self.widget.add_class("vmkit-ring-stepper")
        self.render()

    def show(self, m):
        before = self.moments[self.at - 1].state if self.at else None
        self.status.value = (f"<div style='font-family:monospace'>step {self.at + 1} of {len(self.moments)} · "
                             f"avail.idx {m.state.avail_idx} · used.idx {m.state.used_idx} · "
                             f"QueueNotify exits so far {m.state.counts.get('notifies', 0)}</div>")
        self.diagram.value = ring_diagram(m.state, before, m.title).pane_html()
        self.what.value = (f"<div style='font-size:13px'><b style='color:{HOT}'>{html.escape(m.title)}</b><br>"
                           f"{html.escape(m.what)}</div>")
        self.code.value = code_html(self.image, m.eip)


# --- passthrough: not run here --------------------------------------------------------------------------
PASSTHROUGH_STEPS = (
    ("guest driver", "device BAR", "1. MMIO to the device's registers: mapped into the guest, no exit"),
    ("device", "iommu_dma", "2. DMA to a guest-physical address (an IOVA)"),
    ("iommu_dma", "ram", "3. translated by the VFIO container's tables (VFIO_IOMMU_MAP_DMA)"),
    ("device", "iommu_irq", "4. MSI: a write to 0xFEEx_xxxx with a remapping index"),
    ("iommu_irq", "pid", "5. IRTE in posted format: set the vector's bit in the PIR, ON = 1"),
    ("pid", "guest driver", "6. notification vector to the pCPU: the guest takes it, no exit"),
)


def passthrough_diagram():
    """A device assigned to a guest with VFIO: its DMA through the IOMMU's remapping tables and its
    interrupts through interrupt remapping into a posted-interrupt descriptor. Not run here: drawn
    from Linux's Documentation/driver-api/vfio.rst, the VT-d specification (rev. 5.10, chapters 3
    "DMA Remapping" and 5 "Interrupt Remapping", 5.2 "Interrupt Posting") and KVM's posted-interrupt
    code (arch/x86/kvm/vmx/posted_intr.c; vmx_deliver_posted_interrupt in vmx.c)."""
    d = Diagram("passthrough", caption="device passthrough with VFIO, the IOMMU and posted interrupts "
                                       "(not run here: drawn from the sources the lesson cites)",
                text="\n".join(f"{a} -> {b}: {label}" for a, b, label in PASSTHROUGH_STEPS))
    d.attr(rankdir="TB", fontname="Helvetica", compound="true", nodesep="0.6")
    d.attr("node", shape="box", style="rounded,filled", fillcolor="white", fontname="Helvetica", fontsize="11")
    with d.subgraph(name="cluster_guest") as g:
        g.attr(label="guest (VMX non-root)", style="rounded", color="#1565c0")
        g.node("guest driver", "guest's own driver\n(the NIC's real one)")
    with d.subgraph(name="cluster_host") as h:
        h.attr(label="host: the hypervisor sets these up, then stays out of the way", style="rounded", color="#777777")
        h.node("ram", "guest RAM\n(host pages pinned by VFIO)")
        h.node("pid", "posted-interrupt descriptor\nof the vCPU: PIR[256], ON, SN,\nnotification vector, NDST")
    with d.subgraph(name="cluster_hw") as x:
        x.attr(label="hardware", style="rounded", color="#2e7d32")
        x.node("device", "PCI device\n(a NIC, an SR-IOV VF)", fillcolor="#e8f5e9")
        x.node("device BAR", "its BAR\n(registers)", fillcolor="#e8f5e9")
        x.node("iommu_dma", "IOMMU: DMA remapping\n(requester ID -> domain -> tables)", fillcolor="#fff8e1")
        x.node("iommu_irq", "IOMMU: interrupt remapping\n(IRTE, posted format)", fillcolor="#fff8e1")
    for a, b, label in PASSTHROUGH_STEPS:
        d.edge(a, b, label=label, fontsize="9")
    return d
