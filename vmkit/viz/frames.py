"""The interrupt frame: the dwords the CPU pushes when it delivers an interrupt or exception, and
the ones iret pops to go back. Each row says what the value means, since that is the lesson.

Used by lesson 01 (and by the stepper's frame panel).
"""
import html

from ..machine.x86 import IF, IOPL_MASK, IOPL_SHIFT, decode_selector


def meaning(name, value, names=None, popped=False, event_eip=None, image=None):
    """A short reading of one frame slot; `popped` when iret is taking it off the stack."""
    names = names or {}
    label = f": {names[value]}" if value in names else ""
    if name == "EIP" and image is not None and image.line_of(value):
        label += f" (line {image.line_of(value)}: {image.source_line(image.line_of(value)).split(';')[0].strip()})"
    if name == "EIP" and not popped and value == event_eip:
        # a fault, or an interrupt that came before this instruction ran
        return "resume here: this instruction has not completed" + label
    if name in ("CS", "SS"):
        s = decode_selector(value)
        return f"selector: index {s.index}, {'LDT' if s.ti else 'GDT'}, RPL {s.rpl} (ring {s.rpl})"
    if name == "EFLAGS":
        on = bool(value & IF)
        return f"IF={int(on)} (interrupts {'on' if on else 'off'}), IOPL={(value & IOPL_MASK) >> IOPL_SHIFT}"
    if name == "EIP":
        return f"{'jump to' if popped else 'where to resume'}{label}"
    if name == "ESP":
        return f"{'the outer ring' if popped else 'the interrupted ring'}'s stack pointer{label}"
    if name == "error code":
        return "0: the fault names no selector" if value == 0 else f"selector index {value >> 3}, EXT={value & 1}"
    return ""


class Frame:
    """The frame of one ring-transition Event; HTML in Jupyter, `text` otherwise.

    rows: (address or None, name, value, meaning) from the top of the stack up. Delivery records
    where the frame went (SS:ESP); an iret event does not, so its rows have no address.
    """

    def __init__(self, event, image=None, segment_base=0):
        d = event.detail
        self.event = event
        self.names = {a: n for n, a in image.symbols.items()} if image is not None else {}
        self.popped = d.get("cause") in ("iret", "retf")
        top = d.get("esp")
        self.rows = []
        for i, (name, value) in enumerate(d.get("frame") or []):
            address = None if top is None else segment_base + top + 4 * i
            self.rows.append((address, name, value, meaning(name, value, self.names, self.popped, event.eip, image)))

    @property
    def heading(self):
        d = self.event.detail
        verb = "popped by" if self.popped else "pushed by the CPU for"
        switch = "" if self.popped else (", stack switched to the TSS's SS0:ESP0" if d.get("stack_switch")
                                         else ", same stack (no change of ring)")
        return f"frame {verb} {d.get('cause')} (ring {d.get('from_ring')} → {d.get('to_ring')}){switch}"

    @property
    def text(self):
        lines = [self.heading]
        for address, name, value, what in self.rows:
            where = f"{address:#010x}" if address is not None else " " * 10
            lines.append(f"  {where}  {name:<10} {value:#010x}  {what}")
        if not self.rows:
            lines.append("  (no frame recorded)")
        return "\n".join(lines)

    def _repr_html_(self):
        td = "<td style='padding:1px 6px;text-align:left'>{}</td>".format
        cells = "".join("<tr>" + td("" if a is None else f"{a:#010x}") + td(f"<b>{html.escape(n)}</b>")
                        + td(f"{v:#010x}") + td(html.escape(w)) + "</tr>" for a, n, v, w in self.rows)
        head = "".join(f"<th style='padding:1px 6px;text-align:left'>{h}</th>"
                       for h in ("address", "slot", "value", "meaning"))
        return (f"<div style='font-family:monospace;font-size:13px'><div>{html.escape(self.heading)}</div>"
                f"<table style='border-collapse:collapse;font-family:monospace;font-size:13px'>"
                f"<tr>{head}</tr>{cells}</table>"
                f"<div style='color:#666'>lowest address (the new top of stack) first</div></div>")

    def __repr__(self):
        return self.text


def frame_table(event, where=None):
    """The frame of a ring-transition `event`. `where` (the Machine or the Image it ran) lets the
    table name code addresses by their labels and source lines."""
    return Frame(event, getattr(where, "image", where))
