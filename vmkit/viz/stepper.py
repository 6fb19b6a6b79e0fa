"""A stepper: walk through a guest one instruction or one event at a time and watch the CPU.

The Stepper holds plain state (the machine, the events of the last action, the registers that
action changed, a message). The buttons call step(), next_event(), run() and reset(); each does
its work on the machine and then render() redraws every panel from that state. Tests call the
same methods and read the widgets' values, so no browser is needed to check it.

Used by lessons 01 and 02. Lessons 03 and 04 use its subclasses, viz.translation.TranslationStepper
and viz.paravirt.HypercallStepper.
"""
import html
import re

import graphviz
import ipywidgets as w

from ..asm import assemble, disassemble
from ..errors import GuestError, GuestTimeout
from ..machine.x86 import IF
from ..run import machine
from .diagram import NO_DOT
from .frames import Frame
from .rings import NATIVE, VIRTUALIZED, last_transition, ring_diagram
from .source import highlight
from . import tape

SHOWN_REGS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip", "eflags", "cs", "ss", "ds")
CHANGED = "#ffe066"


def button(text, icon, action, tip, handle):
    """A button that calls action(), with `handle` as a CSS class: a stable handle for browser tests."""
    b = w.Button(description=text, icon=icon, tooltip=tip, layout=w.Layout(width="auto"))
    b.on_click(lambda _: action())
    b.add_class(handle)
    return b


def titled(title, pane):
    """A pane under a bold title."""
    return w.VBox([w.HTML(f"<b style='font-size:13px'>{html.escape(title)}</b>"), pane])


class Walker:
    """What every stepping widget shares (Stepper here, viz.kvm.ExitStepper): the buttons act on a
    live machine through _act(), which refuses to go on after the end, turns a budget or a machine
    error into a message, and keeps the events the action recorded; then render() redraws."""

    STOPPED_BY = "The machine stopped the guest"

    def _act(self, action):
        m = self.machine
        if m.finished or self.stopped:
            self.message = "The guest has stopped. Press reset to start again."
            self.render()
            return
        before, first = self._before(m), len(m.events)
        self.message = ""
        try:
            action()
        except GuestTimeout as e:
            self.stopped, self.message = True, f"The guest ran out of its budget: {e}"
        except GuestError as e:
            self.stopped, self.message = True, f"{self.STOPPED_BY}: {e}"
        self.last_events = m.events[first:]
        self._after(m, before)
        self.render()

    def _before(self, m):
        """What to remember before an action, for _after."""

    def _after(self, m, before):
        """What to work out once an action is done, before render()."""

    def _repr_mimebundle_(self, **kwargs):
        if tape.recording():              # the course's static edition: the walk recorded for its player
            tape.record(self)
        return self.widget._repr_mimebundle_(**kwargs)


class Stepper(Walker):
    BEFORE, AFTER = 3, 6          # instructions shown around EIP
    LOG_LINES = 12
    RECORDED = ("step", "next event")     # the buttons the book's recording presses (viz.tape)

    def __init__(self, guest, *, technique="native", max_instructions=5_000_000, timeout=10.0, show_io=False):
        # A stepper lives in a notebook: a smaller budget than run()'s, so a guest that never
        # ends is reported within moments instead of keeping the kernel busy.
        self.image = assemble(guest)
        self.technique = technique
        self.max_instructions, self.timeout = max_instructions, timeout
        self._build_widgets(show_io)
        self.reset()

    # --- what the buttons do -------------------------------------------------------------------
    def reset(self):
        self.machine = machine(self.image, self.technique, max_instructions=self.max_instructions,
                               timeout=self.timeout)
        self.last_events, self.changed, self.message, self.stopped = [], set(), "", False
        self.render()

    def step(self):
        """One instruction (or the delivery of one pending interrupt)."""
        self._act(self.machine.step)

    def next_event(self):
        """Run until the next event; io events count only while they are shown."""
        wanted = (lambda e: True) if self.show_io.value else (lambda e: e.kind != "io")
        self._act(lambda: self.machine.run_until(event=wanted))

    def run(self):
        """Run to the end of the guest (or of the budget)."""
        self._act(self.machine.run_until)

    def _before(self, m):
        return m.cpu.regs(SHOWN_REGS)

    def _after(self, m, before):
        after = m.cpu.regs(SHOWN_REGS)
        self.changed = {name for name in SHOWN_REGS if after[name] != before[name]}

    # --- widgets ------------------------------------------------------------------------------------
    def _build_widgets(self, show_io):
        self.buttons = {
            "step": self._button("step", "step-forward", self.step, "execute one instruction"),
            "next event": self._button("next event", "forward", self.next_event, "run until something happens"),
            "run": self._button("run to the end", "fast-forward", self.run, "run until the guest finishes"),
            "reset": self._button("reset", "undo", self.reset, "start the guest again from its entry"),
        }
        self.show_io = w.Checkbox(value=show_io, description="show io events", indent=False,
                                  layout=w.Layout(width="auto"))
        self.show_io.observe(lambda _: self.render(), names="value")
        html_pane = lambda width=None: w.HTML(layout=w.Layout(width=width) if width else w.Layout())
        self.status, self.cpl = html_pane(), html_pane("120px")
        self.code, self.registers, self.frame = html_pane("560px"), html_pane("560px"), html_pane()
        self.code.layout.overflow = "auto"           # long source comments scroll, never wrap
        self.diagram, self.log, self.serial = html_pane("340px"), html_pane(), html_pane()
        self.controls = w.HBox(list(self.buttons.values()) + [self.show_io],
                               layout=w.Layout(flex_flow="row wrap", align_items="center"))
        left = w.VBox([titled("code around EIP", self.code), titled("registers", self.registers)])
        right = w.VBox([w.HBox([self.cpl]), self.diagram])
        self.widget = w.VBox([self.controls, self.status, w.HBox([left, right], layout=w.Layout(flex_flow="row wrap")),
                              titled("last ring transition", self.frame),
                              titled("events (newest last; bold: from the last button)", self.log),
                              titled("serial output (COM1)", self.serial)])
        self.widget.add_class("vmkit-stepper")
        for name in ("status", "cpl", "code", "registers", "frame", "diagram", "log", "serial"):
            getattr(self, name).add_class(f"vmkit-stepper-{name}")

    @staticmethod
    def _button(text, icon, action, tip):
        return button(text, icon, action, tip, "vmkit-stepper-" + text.split()[0])

    def _add_button(self, text, icon, action, tip, after):
        """A subclass's own button, placed after the button named `after`; returns it."""
        new, keys = self._button(text, icon, action, tip), list(self.buttons)
        at = keys.index(after) + 1
        self.buttons = {**{k: self.buttons[k] for k in keys[:at]}, text: new,
                        **{k: self.buttons[k] for k in keys[at:]}}
        self.controls.children = list(self.buttons.values()) + [self.show_io]
        return new

    # --- rendering: state -> widget values --------------------------------------------------------
    def render(self):
        m = self.machine
        cpl = m.cpu.cpl
        self.status.value = status_html(m, self.message, self.stopped)
        self.cpl.value = (f"<div style='font-size:22px;font-weight:bold;border:3px solid #333;border-radius:8px;"
                          f"text-align:center;padding:4px;background:#ffd54f;color:#000'>CPL {cpl}</div>")
        self.code.value = code_html(m)
        self.registers.value = registers_html(m.cpu.regs(SHOWN_REGS), self.changed)
        event = last_transition(m.events)
        self.frame.value = Frame(event, m.image)._repr_html_() if event else "<i>no ring transition yet</i>"
        try:
            # scale the picture to the panel's width instead of letting it overflow
            svg = re.sub(r'width="[\d.]+pt" height="[\d.]+pt"', 'width="100%"', self._rings(m).svg(), count=1)
            self.diagram.value = svg
        except graphviz.ExecutableNotFound:
            self.diagram.value = f"<pre>{html.escape(self._rings(m).text)}</pre><i>{html.escape(NO_DOT)}</i>"
        except Exception as e:                   # graphviz missing or broken: say so, keep the rest
            self.diagram.value = f"<pre>{html.escape(self._rings(m).text)}\n({e})</pre>"
        self.log.value = log_html(m.events, self.last_events, self.show_io.value, self.LOG_LINES)
        text = bytes(m.serial.output).decode("utf-8", errors="replace")
        self.serial.value = (f"<pre style='margin:0;background:#222;color:#eee;padding:4px'>"
                             f"{html.escape(text) or ' '}</pre>")
        for name in ("step", "next event", "run"):
            self.buttons[name].disabled = m.finished or self.stopped

    def _rings(self, m):
        # under a VMM the rings hold the VMM, the deprivileged guest kernel and its user programs
        return ring_diagram(m, occupants=NATIVE if self.technique == "native" else VIRTUALIZED)


def status_html(m, message, stopped):
    where = f"ring {m.cpu.cpl} · eip {m.cpu['eip']:#010x} · {m.instructions:,} instructions executed"
    vcpu = getattr(m, "vcpu", None)
    if vcpu is not None:                  # a VMM's guest: the IF that counts is the virtual one
        where += f" · {m.stats['traps']} traps · virtual IF {int(vcpu.interrupt_flag)}"
    if m.finished:
        r = m.result()
        end = (f"the guest finished with exit code {r.exit_code}" if r.exit_code is not None else
               "the CPU shut down (triple fault)" if r.shutdown else "the CPU halted" if r.halted else "finished")
        where = f"<b style='color:#1b5e20'>{end}.</b> " + where
    text = f"<div style='font-family:monospace'>{where}</div>"
    if message:
        colour = "#b71c1c" if stopped else "#555"
        text += f"<div style='color:{colour};font-weight:bold'>{html.escape(message)}</div>"
    return text


def listing(image, eip, before=Stepper.BEFORE, after=Stepper.AFTER, memory=None):
    """Instructions around `eip`: (Instruction, source line number, is_current). x86 cannot be
    decoded backwards, so decoding starts at the nearest label before EIP."""
    if not image.origin <= eip < image.end:
        code = bytes(memory(eip, 16 * after)) if memory else b""
        return [(i, None, i.address == eip) for i in disassemble(code, eip, after)]
    start = max((a for a in image.symbols.values() if a <= eip), default=image.origin)
    decoded = image.disassemble(start, 2048)
    at = next((k for k, i in enumerate(decoded) if i.address == eip), None)
    if at is None:                                   # a label inside data, or a jump mid-instruction
        decoded, at = image.disassemble(eip, after), 0
    chosen = decoded[max(at - before, 0):at + after]
    return [(i, image.line_of(i.address), i.address == eip) for i in chosen]


def code_html(m):
    rows = []
    for insn, line, current in listing(m.image, m.cpu["eip"], memory=lambda a, n: m.cpu.peek(a, n) or b""):
        source = highlight(m.image.source_line(line).strip()) if line else ""
        style = "background:#fff3b0;color:#000;font-weight:bold;" if current else ""
        arrow = "▶" if current else " "
        rows.append(f"<tr style='{style}'><td>{arrow}</td><td style='color:#999'>{insn.address:08x}</td>"
                    f"<td>{html.escape(insn.text)}</td><td style='color:#999'>{line or ''}</td>"
                    f"<td style='white-space:pre'>{source}</td></tr>")
    return ("<style>.vmkit-code td{padding:1px 6px;white-space:nowrap}</style>"
            "<table class='vmkit-code' style='font-family:monospace;font-size:12px;border-collapse:collapse;"
            "background:#fcfcfc;color:#24292e'>"
            "<tr style='color:#666'><th></th><th>address</th><th>instruction</th><th>line</th>"
            "<th style='text-align:left'>NASM source</th></tr>" + "".join(rows) + "</table>")


def registers_html(regs, changed):
    cells = []
    for name in SHOWN_REGS:
        value = regs[name]
        width = 4 if name in ("cs", "ss", "ds") else 8
        style = f"background:{CHANGED};color:#000;font-weight:bold;" if name in changed else ""
        note = f" IF={int(bool(value & IF))}" if name == "eflags" else ""
        cells.append(f"<span style='{style}display:inline-block;min-width:128px;padding:1px 4px;"
                     f"font-family:monospace;font-size:12px'>{name} {value:0{width}x}{note}</span>")
    legend = "<div style='font-size:11px;color:#666'>highlighted: changed by the last button</div>"
    return "<div>" + "".join(cells) + "</div>" + legend


def log_line(e):
    """One event as a log line; a VMM's trap and emulate read as the story they tell."""
    where = f"ring {e.cpl} eip={e.eip:#010x}"
    d = e.detail
    if e.kind == "trap":
        return f"{'trap':<15} {where}  {d.get('instruction', '?')} -> VMM ({d.get('cause', '?')})"
    if e.kind == "emulate":
        return f"{'emulate':<15} {where}  {d.get('instruction', '?')}: {d.get('effect', '')}; resume after it"
    if e.kind == "ring-transition" and d.get("reflected"):
        return str(e).replace(", reflected=True", "") + "  (reflected by the VMM)"
    return str(e)


def log_html(events, last, show_io, lines, line=None):
    """The newest `lines` events as HTML, those in `last` in bold; `line` writes one event."""
    line = line or log_line
    shown = [e for e in events if show_io or e.kind != "io"]
    hidden = len(events) - len(shown)
    fresh = {id(e) for e in last}
    rows = [(f"<b>{html.escape(line(e))}</b>" if id(e) in fresh else html.escape(line(e)))
            for e in shown[-lines:]]
    head = f"{len(events)} events" + (f", {hidden} io events hidden" if hidden else "")
    more = f"… {len(shown) - lines} earlier\n" if len(shown) > lines else ""
    return (f"<div style='font-size:11px;color:#666'>{head}</div><pre style='margin:0;font-size:11px'>"
            f"{more}{chr(10).join(rows) or '(none yet)'}</pre>")
