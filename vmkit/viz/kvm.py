"""Pictures of hardware-assisted virtualization and KVM at work, drawn from what a run recorded.

    banner(report, technique)      which engine the lesson runs on: the real /dev/kvm, or the model and why
    run_loop_diagram(run)          KVM's run loop as a state diagram across VMX root and non-root mode,
                                   every edge carrying how often this run took it
    exit_reasons(run)              each exit reason: VT-x's number, what KVM does with it, how often here
    exit_split(run)                exits that reached user space against exits the kernel counted
    controls_table(controls, run)  the model's VMCS execution controls and the exits each one caused
    VmcsExplorer(image)            toggle those controls and watch the exits change
    ExitStepper(image, technique)  step from VM exit to VM exit, the run loop redrawn at each one
    threads_table(machine)         this process's threads from /proc/self/task, the vCPU threads marked
    exit_costs(measured)           µs per exit as measured here, beside Adams & Agesen's cycles

`run` is a RunResult or a live machine (a KvmMachine or the hardware-assist model): its events
and counters are read, nothing is run here except by the two widgets, which drive a machine the
way a cell would.

Used by lesson 05.
"""
import html
import os

import ipywidgets as w

from ..asm import assemble
from ..errors import GuestError, GuestTimeout
from ..kvm import process_threads
from ..machine.x86 import vector_name
from ..run import machine, run
from ..vtx.hardware_assist import KERNEL_HANDLED, VmcsControls
from .diagram import Diagram, Table
from .source import highlight
from .stepper import Walker, button, titled
from .translation import ADAMS_AGESEN

# Exits KVM keeps inside the kernel: CPUID is answered from the table user space gave it, and an
# exception the exception bitmap intercepted is handed back to the guest (injected at VM entry).
IN_KERNEL = (*KERNEL_HANDLED, "EXCEPTION")
KVM_EXIT = {"IO": "KVM_EXIT_IO", "MMIO": "KVM_EXIT_MMIO", "HLT": "KVM_EXIT_HLT", "SHUTDOWN": "KVM_EXIT_SHUTDOWN",
            "INTR": "KVM_EXIT_INTR", "IRQ_WINDOW_OPEN": "KVM_EXIT_IRQ_WINDOW_OPEN",
            "INTERNAL_ERROR": "KVM_EXIT_INTERNAL_ERROR",
            "FAIL_ENTRY": "KVM_EXIT_FAIL_ENTRY"}
# reason -> (VT-x basic exit reason, SDM vol. 3C appendix C; what KVM does with the exit)
REASONS = {
    "IO": ("I/O instruction (30)", "returns to user space (KVM_EXIT_IO): the device model answers the port"),
    "MMIO": ("EPT violation (48), then EPT misconfiguration (49)",
             "no memory slot backs the address: kvm.ko decodes the instruction, user space answers (KVM_EXIT_MMIO)"),
    "HLT": ("HLT (12)", ("returns to user space (KVM_EXIT_HLT) here; with an in-kernel interrupt controller "
                         "kvm.ko puts the vCPU thread to sleep itself")),
    "SHUTDOWN": ("triple fault (2)", "returns to user space (KVM_EXIT_SHUTDOWN): the VM is reset or stopped"),
    "CPUID": ("CPUID (10)", "handled in kvm.ko from the table user space set (KVM_SET_CPUID2); never seen outside"),
    "EXCEPTION": ("exception or NMI (0)", "handled in kvm.ko: the exception is injected back into the guest"),
    "INTR": ("external interrupt (1): the signal's IPI", ("returns to user space (KVM_EXIT_INTR): a signal is pending "
                                                          "(the timeout's, or the device model's kick for a tick)")),
    "IRQ_WINDOW_OPEN": ("interrupt window (7)", ("returns to user space (KVM_EXIT_IRQ_WINDOW_OPEN), which asked for "
                                                 "the window: the guest can take the waiting interrupt (KVM_INTERRUPT)")),
    "INTERNAL_ERROR": ("any: kvm.ko could not handle it",
                       "returns to user space (KVM_EXIT_INTERNAL_ERROR): kvm.ko could not go on"),
    "FAIL_ENTRY": ("VM-entry failure (bit 31 set)", "returns to user space (KVM_EXIT_FAIL_ENTRY): invalid guest state"),
}
ENGINES = {"kvm": "the real KVM", "hardware-assist": "vmkit's model of VT-x"}
HOT = "#c62828"          # the edge the last exit took


def _result(run):
    """A RunResult, from a RunResult or a live machine (a snapshot of its counters and events)."""
    return run.result() if hasattr(run, "result") else run


def _counts(result):
    """(exits by reason that reached user space, exits by reason kept in the kernel, kernel-only
    exits the kernel counted without a reason). Under KVM user space sees only its own; the kernel's
    stats fd counts every exit. The model records every exit with its reason."""
    by_reason = {}
    for e in result.events:
        if e.kind == "vmexit":
            by_reason[e.detail["reason"]] = by_reason.get(e.detail["reason"], 0) + 1
    user = {r: n for r, n in by_reason.items() if r not in IN_KERNEL}
    kernel = {r: n for r, n in by_reason.items() if r in IN_KERNEL}
    unnamed = 0
    if result.technique == "kvm":
        unnamed = max(result.stats.get("kernel_exits", 0) - sum(by_reason.values()), 0)
    return user, kernel, unnamed


def _n(count, thing):
    return f"{count} {thing}" + ("" if count == 1 else "s")


def _ending(result):
    if result.exit_code is not None:
        return f"exit code {result.exit_code:#x}"
    if result.shutdown:
        return "shutdown (triple fault)"
    if result.halted:
        return "halted"
    return None


# --- the engine --------------------------------------------------------------------------------------
class Banner:
    """Which engine a lesson runs on, and why: HTML in Jupyter, `text` otherwise."""

    def __init__(self, text, ok):
        self.text, self.ok = text, ok

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        colour, background = ("#1b5e20", "#e8f5e9") if self.ok else ("#e65100", "#fff3e0")
        lines = self.text.split("\n")
        body = "".join(f"<div>{html.escape(line)}</div>" for line in lines[1:])
        box = (f"<div class='vmkit-engine-banner' role='status' style='border-left:5px solid {colour};"
               f"background:{background};color:#000;padding:6px 10px'><b>{html.escape(lines[0])}</b>{body}</div>")
        return {"text/plain": self.text, "text/html": box}

    def __repr__(self):
        return self.text


def banner(report, technique, needs=("protected-mode",)):
    """What runs the lesson's guests: `report` is vmkit.kvm.probe(path), `technique` "kvm" or
    "hardware-assist" (the lesson's choice), `needs` the probe's features its guests need."""
    if technique == "kvm":
        lines = [(f"Real KVM: the guests below run on {report.path} ({report.module or 'module unknown'}), "
                  f"driven from this notebook's Python process.")]
        cannot = [f.name for f in report.features.values() if not f.ok and f.name not in needs]
        if cannot:
            lines.append(f"This KVM cannot run {', '.join(cannot)}: "
                         + (report.why_not(*cannot) or "") + " The lesson's guests do not need them.")
        lines.append("The VMCS controls you toggle further down belong to vmkit's model of VT-x: kvm.ko sets the "
                     "real ones itself.")
        return Banner("\n".join(lines), True)
    why = report.why_not(*needs) or "the lesson chose the model"
    return Banner(f"No usable KVM here: the guests below run on vmkit's model of VT-x ('hardware-assist') instead.\n"
                  f"Why: {why}\n"
                  f"The model records the same exits with the same reasons; cells that need the real KVM "
                  f"(the vCPU threads, the kernel's own counters) say what they would show.", False)


# --- the run loop --------------------------------------------------------------------------------------
def run_loop_diagram(run, highlight=None, controls=None):
    """KVM's run loop as a state diagram: the VMM's thread in ring 3 calls KVM_RUN, kvm.ko enters
    the guest, the guest runs in VMX non-root mode until an exit, and kvm.ko either handles the exit
    itself and re-enters, or returns to user space, where the device model answers. Every edge
    carries how often this run took it; `highlight` (a reason, or an Event) marks one edge."""
    result = _result(run)
    if controls is None:
        controls = getattr(run, "controls", None)
    if highlight is not None and not isinstance(highlight, str):
        highlight = highlight.detail.get("reason")
    user, kernel, unnamed = _counts(result)
    total = sum(user.values()) + sum(kernel.values()) + unnamed
    returns = sum(user.values())
    ending = _ending(result)
    model = result.technique != "kvm"
    caption = (f"the run loop in one run on {ENGINES.get(result.technique, result.technique)}: {_n(total, 'VM exit')}, "
               f"{returns} returned to user space, {total - returns} handled in the kernel"
               + (" (model: vmkit plays both kvm.ko's part and user space's)" if model else ""))
    g = Diagram("run_loop", caption=caption,
                text=_loop_text(result, user, kernel, unnamed, total, returns, ending, controls, highlight))
    g.attr(rankdir="TB", fontname="Helvetica", nodesep="0.5", ranksep="0.55", compound="true")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="11")
    g.attr("edge", fontname="Helvetica", fontsize="10")

    def hot(reason):
        return {"color": HOT, "fontcolor": HOT, "penwidth": "2.4"} if reason and reason == highlight else {}

    with g.subgraph(name="cluster_root") as root:
        root.attr(label="VMX root mode (the host)", style="rounded,dashed", color="#777777", fontsize="11",
                  labeljust="l")
        with root.subgraph(name="cluster_user") as u:
            u.attr(label="ring 3: the VMM process (QEMU's part; here vmkit)", style="rounded,filled",
                   fillcolor="#fff8e1", color="#d7c48a")
            u.node("run", "ioctl(vcpu_fd, KVM_RUN)\nthe vCPU thread enters the kernel", fillcolor="#ffe0b2")
            u.node("device", "device model answers the exit\n(through the shared kvm_run page)",
                   fillcolor="#ffe0b2")
        with root.subgraph(name="cluster_kernel") as k:
            k.attr(label="ring 0: Linux with kvm.ko", style="rounded,filled", fillcolor="#e8f5e9", color="#9cc59f")
            k.node("entry", "VM entry: VMLAUNCH / VMRESUME\nguest state loaded from the VMCS", fillcolor="#c8e6c9")
            k.node("handler", "exit handler: reads the exit\nreason and qualification from the VMCS",
                   fillcolor="#c8e6c9")
    with g.subgraph(name="cluster_guest") as guest:
        guest.attr(label="VMX non-root mode", style="rounded,filled", fillcolor="#e3f2fd", color="#90b4d6",
                   labeljust="l")
        guest.node("guest", "the guest runs unmodified,\nits kernel at CPL 0, at hardware speed", fillcolor="#bbdefb")
    g.node("vmcs", _vmcs_label(controls, model), shape="note", style="filled", fillcolor="#f5f5f5", fontsize="10")
    g.node("end", f"the run ends:\n{ending}" if ending else "the run goes on", shape="oval",
           fillcolor="#eeeeee", style="filled" if ending else "filled,dashed")

    # ring 3 on top, ring 0 below it, the guest at the bottom: edges that go up are drawn as
    # downward edges with their arrow reversed (dir="back"), so graphviz keeps that order
    g.edge("run", "entry", label=f" KVM_RUN ×{returns} ")
    g.edge("entry", "guest", label=f" VM entry ×{total} ")
    g.edge("handler", "guest", label=f" VM exit ×{total} ", dir="back", **hot(highlight))
    in_kernel = sum(kernel.values()) + unnamed
    named = ", ".join(f"{r} ×{n}" for r, n in sorted(kernel.items()))
    label = f" handled in the kernel ×{in_kernel} " + (f"\n {named} " if named else "")
    if unnamed and not named:
        label += "\n (its stats fd names no reasons) "
    g.edge("handler", "entry", label=label, style="solid" if in_kernel else "dashed", constraint="false",
           **hot(highlight if highlight in IN_KERNEL else None))
    if user:                    # one edge, a line per reason: the last exit's line in red
        lines = "<br/>".join(f'<font color="{HOT}"><b>{KVM_EXIT.get(r, r)} ×{n}</b></font>' if r == highlight
                             else f"{KVM_EXIT.get(r, r)} ×{n}" for r, n in sorted(user.items(), key=lambda kv: -kv[1]))
        mark = {k: v for k, v in hot(highlight if highlight in user else None).items() if k != "fontcolor"}
        g.edge("device", "handler", label=f"<{lines}>", dir="back", **mark)
    else:
        g.edge("device", "handler", label=" nothing yet ", style="dashed", dir="back")
    loops = returns - (1 if ending else 0)
    g.edge("device", "run", label=f" answer, run again ×{max(loops, 0)} ", constraint="false")
    g.edge("device", "end", label=" the guest is done " if ending else "", style="solid" if ending else "dashed",
           constraint="false")
    g.edge("entry", "vmcs", style="dotted", arrowhead="none")
    g.edge("handler", "vmcs", style="dotted", arrowhead="none")
    return g


def _vmcs_label(controls, model):
    if controls is None:
        return ("VMCS (one per vCPU)\nguest-state area, host-state area,\nexecution controls: set by kvm.ko,\n"
                "exit reason + qualification")
    return ("VMCS (one per vCPU)\nguest-state area, host-state area\n"
            f"HLT exiting: {'on' if controls.hlt_exiting else 'off'}\n"
            f"exception bitmap: {_bitmap(controls.exception_bitmap)}\n"
            f"I/O: {_io(controls)}\nexit reason + qualification")


def _loop_text(result, user, kernel, unnamed, total, returns, ending, controls, highlight):
    lines = [(f"Run loop on {ENGINES.get(result.technique, result.technique)}: {total} VM exits "
              f"(guest state saved to the VMCS, host state loaded), each followed by kvm.ko's exit handler."),
             f"Handled in the kernel and re-entered without leaving it: {sum(kernel.values()) + unnamed}"
             + "".join(f"; {r} {n}" for r, n in sorted(kernel.items()))
             + (f"; {unnamed} the kernel counted without telling user space" if unnamed else "") + ".",
             f"Returned to user space from KVM_RUN: {returns}"
             + "".join(f"; {KVM_EXIT.get(r, r)} {n}" for r, n in sorted(user.items(), key=lambda kv: -kv[1])) + "."]
    lines.append(f"The run ended: {ending}." if ending else "The run has not ended yet.")
    if controls is not None:
        lines.append(f"VMCS controls: HLT exiting {'on' if controls.hlt_exiting else 'off'}, exception bitmap "
                     f"{_bitmap(controls.exception_bitmap)}, I/O {_io(controls)}.")
    if highlight:
        lines.append(f"Highlighted: the path of the last exit, {highlight}.")
    return "\n".join(lines)


# --- tables ----------------------------------------------------------------------------------------------
def _example(event):
    d = event.detail
    if d["reason"] == "IO":
        return f"{d['direction']} port {d['port']:#x}" + (f" = {d['value']:#x}" if d.get("value") is not None else "")
    if d["reason"] == "MMIO":
        return f"{d['direction']} {d['address']:#x} ({d.get('register') or '?'})"
    if d["reason"] == "CPUID":
        return f"leaf {d['leaf']:#x}"
    if d["reason"] == "EXCEPTION":
        return f"{d['name']} (vector {d['vector']})"
    if d["reason"] == "HLT":
        return "hlt"
    return ", ".join(f"{k}={v}" for k, v in d.items() if k not in ("reason", "vcpu")) or d["reason"]


def exit_reasons(run):
    """Each exit reason this run met: VT-x's basic exit reason, what KVM does with such an exit,
    how often it happened and its first instance."""
    result = _result(run)
    first, counts = {}, {}
    for e in result.of_kind("vmexit"):
        reason = e.detail["reason"]
        counts[reason] = counts.get(reason, 0) + 1
        first.setdefault(reason, e)
    rows = [(reason, REASONS.get(reason, ("?", "?"))[0], REASONS.get(reason, ("?", "?"))[1], counts[reason],
             f"{_example(first[reason])} at {first[reason].eip:#x}") for reason in counts]
    return Table(["reason", "VT-x exit reason (SDM)", "what KVM does with it", "exits", "first one"], rows,
                 f"the exits of one run on {ENGINES.get(result.technique, result.technique)}")


def exit_split(run):
    """Where the exits went: those KVM_RUN returned to user space (counted by vmkit) beside the
    kernel's own counters from the binary stats fd (KVM only). Under the model, the split is the
    one KVM would make."""
    result = _result(run)
    user, kernel, _ = _counts(result)
    s = result.stats
    if result.technique == "kvm":
        rows = [("VM exits, all of them", s.get("kernel_exits", 0), sum(user.values())),
                ("  port I/O", s.get("kernel_io_exits", 0), user.get("IO", 0)),
                ("  MMIO", s.get("kernel_mmio_exits", 0), user.get("MMIO", 0)),
                ("  hlt", s.get("kernel_halt_exits", 0), user.get("HLT", 0)),
                ("  a signal (KVM_EXIT_INTR)", s.get("kernel_signal_exits", 0), user.get("INTR", 0)),
                ("instructions kvm.ko's x86 emulator ran", s.get("kernel_insn_emulation", 0), "—")]
        caption = ("left: the kernel's counters for this VM (binary stats fd, what kvm_stat shows); right: what "
                   "KVM_RUN handed to user space. The difference never left the kernel.")
    else:
        rows = [("VM exits, all of them", sum(user.values()) + sum(kernel.values()), sum(user.values()))]
        rows += [(f"  {r}", n, user.get(r, 0)) for r, n in sorted({**user, **kernel}.items())]
        caption = ("the model records every exit; the right column is what KVM_RUN would hand to user space "
                   "(KVM keeps " + ", ".join(IN_KERNEL) + " in the kernel)")
    return Table(["", "the kernel saw", "user space saw"], rows, caption)


def _bitmap(bits):
    vectors = [n for n in range(32) if bits >> n & 1]
    return ", ".join(f"{vector_name(n)} ({n})" for n in vectors) if vectors else "empty"


def _io(controls):
    if controls.io_bitmap is None:
        return "unconditional I/O exiting: every port"
    if not controls.io_bitmap:
        return "I/O bitmaps, no port set: none exits"
    return "I/O bitmaps: only " + ", ".join(f"{p:#x}" for p in sorted(controls.io_bitmap))


def controls_table(controls, run=None):
    """The model's VM-execution controls (SDM vol. 3C, "VM-execution control fields"), with the exits
    each one caused in `run` (a run under those controls)."""
    counts = _result(run).stats if run is not None else {}
    n = lambda reason: counts.get(f"vmexit_{reason}", 0) if run is not None else ""
    rows = [("HLT exiting", "primary processor-based control, bit 7", "on" if controls.hlt_exiting else "off", "HLT", n("HLT")),
            ("exception bitmap", "32 bits: bit n set = exception n exits", _bitmap(controls.exception_bitmap),
             "EXCEPTION", n("EXCEPTION")),
            ("I/O exiting", "bit 24 'unconditional I/O exiting', or bit 25 'use I/O bitmaps' A and B",
             _io(controls), "IO", n("IO")),
            ("(none)", "CPUID exits unconditionally in non-root mode", "always", "CPUID", n("CPUID")),
            ("(no memory there)", "on VT-x an EPT violation; the model has no EPT: its MMIO page has no memory "
             "behind it", "the MMIO page", "MMIO", n("MMIO")),
            ("(none)", "a triple fault always exits", "always", "SHUTDOWN", n("SHUTDOWN"))]
    return Table(["control", "where in the VMCS", "setting", "exit", "exits in this run" if run is not None else ""],
                 rows, "VM-execution controls of vmkit's model (vmkit.vtx.VmcsControls)")


# --- widgets ---------------------------------------------------------------------------------------------
def _serial_html(text):
    return f"<pre style='margin:0;background:#222;color:#eee;padding:4px'>{html.escape(text) or ' '}</pre>"


EXCEPTIONS = ((0, "#DE"), (3, "#BP"), (6, "#UD"), (13, "#GP"), (14, "#PF"))
PORTS = ((0x3F8, "0x3f8 COM1 data"), (0x3FD, "0x3fd COM1 line status"), (0xF4, "0xf4 isa-debug-exit"))


class VmcsExplorer:
    """The model's VMCS controls as checkboxes: every change reruns the guest under
    "hardware-assist" with the new controls and redraws the controls, the exits and the run loop."""

    def __init__(self, image, controls=None):
        self.image = assemble(image)
        controls = controls or VmcsControls()
        box = lambda text, value: w.Checkbox(value=value, description=text, indent=False,
                                             layout=w.Layout(width="auto"))
        self.hlt = box("HLT exiting", controls.hlt_exiting)
        self.exceptions = {v: box(f"{name} ({v})", bool(controls.exception_bitmap >> v & 1)) for v, name in EXCEPTIONS}
        self.io_mode = w.RadioButtons(options=["every port exits", "I/O bitmap: only the ports ticked"],
                                      value="every port exits" if controls.io_bitmap is None
                                      else "I/O bitmap: only the ports ticked", layout=w.Layout(width="auto"))
        ticked = controls.io_bitmap or set()
        self.ports = {p: box(text, p in ticked or controls.io_bitmap is None) for p, text in PORTS}
        self.table, self.summary, self.diagram = w.HTML(), w.HTML(), w.HTML()
        for widget in [self.hlt, self.io_mode, *self.exceptions.values(), *self.ports.values()]:
            widget.observe(lambda _: self.update(), names="value")
        title = lambda text: w.HTML(f"<b style='font-size:13px'>{html.escape(text)}</b>")
        controls_box = w.VBox([title("VM-execution controls"), self.hlt,
                               w.HTML("exception bitmap:"), w.HBox(list(self.exceptions.values())),
                               w.HTML("I/O:"), self.io_mode, w.HBox(list(self.ports.values()))])
        self.widget = w.VBox([controls_box, self.summary, self.table, self.diagram])
        self.widget.add_class("vmkit-vmcs-explorer")
        self.update()

    @property
    def controls(self):
        bitmap = sum(1 << v for v, b in self.exceptions.items() if b.value)
        io = None if self.io_mode.value == "every port exits" else frozenset(p for p, b in self.ports.items() if b.value)
        return VmcsControls(hlt_exiting=self.hlt.value, exception_bitmap=bitmap, io_bitmap=io)

    def update(self):
        controls = self.controls
        for b in self.ports.values():
            b.disabled = controls.io_bitmap is None
        try:
            self.result = run(self.image, "hardware-assist", controls=controls)
        except (GuestError, GuestTimeout) as e:
            self.result = None
            self.summary.value = f"<b style='color:{HOT}'>{html.escape(str(e))}</b>"
            return
        s = self.result.stats
        counts = ", ".join(f"{k[len('vmexit_'):]} {v}" for k, v in sorted(s.items()) if k.startswith("vmexit_"))
        self.summary.value = (f"<div style='font-family:monospace'><b>{s['vmexits']} VM exits</b> ({counts or 'none'}); "
                              f"the guest's port accesses: {s['io']}; the guest ended: {_ending(self.result)}</div>"
                              + _serial_html(self.result.serial))
        self.table.value = controls_table(controls, self.result)._repr_html_()
        self.diagram.value = run_loop_diagram(self.result, controls=controls).pane_html()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


class ExitStepper(Walker):
    """Walk through a guest from VM exit to VM exit on the real KVM or the model: the run loop is
    redrawn after each button with the edge the last exit took, beside the instruction that exited.
    `options` go to vmkit.machine (path= for KVM, controls= for the model)."""

    LOG_LINES = 10
    STOPPED_BY = "The VMM stopped the guest"

    def __init__(self, guest, technique="kvm", *, timeout=10.0, **options):
        self.image, self.technique, self.timeout, self.options = assemble(guest), technique, timeout, options
        self.machine = None
        buttons = {"next exit": ("next exit", "step-forward", self.next_exit, "run until the next VM exit"),
                   "next other": ("next exit that is not port I/O", "forward", self.next_other,
                                  "run until an exit with another reason than IO"),
                   "run": ("run to the end", "fast-forward", self.run, "run until the guest finishes"),
                   "reset": ("reset", "undo", self.reset, "start the guest again")}
        self.buttons = {key: button(*args, "vmkit-exit-stepper-" + key.replace(" ", "-"))
                        for key, args in buttons.items()}
        pane = lambda: w.HTML(layout=w.Layout(width="100%"))
        self.status, self.exit, self.code, self.diagram, self.log, self.serial = (pane() for _ in range(6))
        half = w.Layout(width="50%", padding="0 8px 0 0")
        left = w.VBox([titled("the last exit", self.exit), titled("the guest's code: the instruction that exited", self.code)],
                      layout=half)
        right = w.VBox([titled("events (newest last; bold: from the last button)", self.log),
                        titled("serial output (COM1)", self.serial)], layout=half)
        self.widget = w.VBox([w.HBox(list(self.buttons.values()), layout=w.Layout(flex_flow="row wrap")),
                              self.status, titled("the run loop so far", self.diagram), w.HBox([left, right])])
        self.widget.add_class("vmkit-exit-stepper")
        for name in ("status", "exit", "code", "diagram", "log", "serial"):
            getattr(self, name).add_class(f"vmkit-exit-stepper-{name}")
        self.reset()

    # --- what the buttons do ---------------------------------------------------------------------------
    def reset(self):
        self.close()
        self.machine = machine(self.image, self.technique, timeout=self.timeout, **self.options)
        self.last_events, self.message, self.stopped = [], "", False
        self.render()

    def next_exit(self):
        self._act(lambda: self.machine.run_until(event="vmexit"))

    def next_other(self):
        self._act(lambda: self.machine.run_until(event=lambda e: e.kind == "vmexit" and e.detail["reason"] != "IO"))

    def run(self):
        self._act(lambda: self.machine.run_until())

    def close(self):
        """Release the machine (a KVM machine holds file descriptors)."""
        if self.machine is not None and hasattr(self.machine, "close"):
            self.machine.close()

    # --- rendering ---------------------------------------------------------------------------------------
    @property
    def last_exit(self):
        return next((e for e in reversed(self.machine.events) if e.kind == "vmexit"), None)

    def render(self):
        m = self.machine
        result = m.result()
        last = self.last_exit
        exits = result.stats.get("vmexits", 0)
        state = (f"the guest finished: {_ending(result)}" if m.finished else "the guest is stopped in an exit"
                 if last is not None else "the guest has not run yet")
        self.status.value = (f"<div style='font-family:monospace'>{html.escape(ENGINES.get(self.technique, self.technique))}"
                             f" · {exits} VM exits seen by the VMM · {html.escape(state)}</div>"
                             + (f"<div style='color:{HOT if self.stopped else '#555'};font-weight:bold'>"
                                f"{html.escape(self.message)}</div>" if self.message else ""))
        self.exit.value = exit_html(last, self.technique)
        self.code.value = code_html(self.image, last.eip if last else self.image.entry)
        self.diagram.value = run_loop_diagram(result, highlight=last, controls=getattr(m, "controls", None)).pane_html()
        fresh = {id(e) for e in self.last_events}
        shown = m.events[-self.LOG_LINES:]
        rows = [f"<b>{html.escape(str(e))}</b>" if id(e) in fresh else html.escape(str(e)) for e in shown]
        more = f"… {len(m.events) - len(shown)} earlier\n" if len(m.events) > len(shown) else ""
        self.log.value = f"<pre style='margin:0;font-size:11px;white-space:pre;overflow-x:auto'>{more}{chr(10).join(rows) or '(none yet)'}</pre>"
        self.serial.value = _serial_html(result.serial)
        for name in ("next exit", "next other", "run"):
            self.buttons[name].disabled = m.finished or self.stopped


def exit_html(event, technique):
    """The exit in words: its reason, what it carried, and who handles it under KVM."""
    if event is None:
        return "<i>no exit yet: press <b>next exit</b></i>"
    reason = event.detail["reason"]
    vtx, kvm = REASONS.get(reason, ("?", "?"))
    if reason in IN_KERNEL:
        kvm += ": under the real KVM, KVM_RUN would not even return for it"
    details = ", ".join(f"{k}={v:#x}" if isinstance(v, int) and v > 9 else f"{k}={v}"
                        for k, v in event.detail.items() if k != "reason")
    return (f"<div style='font-size:13px'><b style='color:{HOT}'>{html.escape(reason)}</b> at eip {event.eip:#010x}"
            f" · VT-x exit reason {html.escape(vtx)}<br>{html.escape(details)}<br>"
            f"<i>KVM: {html.escape(kvm)}</i></div>")


def code_html(image, eip, around=3):
    """The guest's source around the instruction at `eip`, that line marked."""
    line = image.line_of(eip)
    if not line:
        return f"<i>eip {eip:#x} is outside the image's source</i>"
    lines = image.source.splitlines()
    rows = []
    for n in range(max(line - around, 1), min(line + around, len(lines)) + 1):
        style = "background:#fff3b0;font-weight:bold;" if n == line else ""
        rows.append(f"<span style='display:block;{style}'><span style='color:#999'>{n:4d}{'▶' if n == line else ' '} "
                    f"</span>{highlight(lines[n - 1])}</span>")
    return ("<pre style='margin:0;font-size:12px;line-height:1.35;background:#fcfcfc;color:#24292e;white-space:pre;"
            "overflow-x:auto'>"
            + "".join(rows) + "</pre>")


# --- a VM is a process -----------------------------------------------------------------------------------
def _task_stat(tid):
    """(state, CPU it last ran on, CPU seconds used) of one thread, from /proc/self/task/<tid>/stat."""
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return "gone", "", 0.0
    fields = stat[stat.rindex(")") + 2:].split()           # the name may hold spaces; fields 3.. follow it
    ticks = os.sysconf("SC_CLK_TCK")
    return fields[0], fields[36], (int(fields[11]) + int(fields[12])) / ticks


STATES = {"R": "running", "S": "sleeping", "D": "waiting on I/O", "t": "stopped", "Z": "zombie"}


def threads_table(machine=None):
    """This process's threads as Linux lists them (/proc/self/task): each with its name, state, the
    CPU it last ran on and the CPU time it used. The vCPU threads of `machine` (a KvmMachine that has
    been started) are marked."""
    vcpus = {tid: n for n, tid in (machine.vcpu_threads().items() if machine is not None else ())}
    rows = []
    for tid, name in process_threads():
        state, cpu, seconds = _task_stat(tid)
        role = (f"◀ vCPU {vcpus[tid]} of the VM" if tid in vcpus else
                "the main thread (the notebook's code)" if tid == os.getpid() else
                "a worker kvm.ko started for a VM" if name.startswith("kvm") else "")
        rows.append((tid, name, STATES.get(state, state), cpu, f"{seconds:.2f}", role))
    caption = (f"the threads of process {os.getpid()} (this notebook's kernel), from /proc/self/task"
               + ("; ◀ the VM's vCPU threads" if vcpus else "; no VM is running in it now"))
    return Table(["thread id", "name", "state", "last CPU", "CPU s", "what it is"], rows, caption)


# --- what an exit costs ------------------------------------------------------------------------------------
def exit_costs(measured):
    """`measured`: [(what, µs per exit)] measured on this machine; shown beside Adams & Agesen's
    cycles for one `in` (ASPLOS 2006), which were measured on their machine, not here."""
    _, _, native, software, hardware = next(row for row in ADAMS_AGESEN if row[0] == "in")
    rows = [(what, f"{us:.2f} µs", "measured on this machine") for what, us in measured]
    paper = "Adams & Agesen, ASPLOS 2006: in"
    rows += [("native: a real chipset register", f"{native} cycles", paper),
             ("software VMM (binary translation): emulated in the VMM, no exit", f"{software} cycles", paper),
             ("hardware VMM, first-generation VT-x: a VM exit and entry", f"{hardware} cycles", paper)]
    return Table(["one exit", "cost", "source"], rows,
                 "µs: best of a few runs here, the loop around the instruction subtracted; cycles: the paper's "
                 "nanobenchmark. Compare shapes, not absolute numbers.")
