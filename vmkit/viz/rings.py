"""The privilege rings 0-3, the current privilege level (CPL), and the transition just taken.

Drawn as a stack with ring 3 on top and ring 0 at the bottom, next to the hardware: the lower a
ring, the more it may do. The arrow beside the stack is the last ring transition the machine
recorded, labelled with its cause (int 0x80, #GP, IRQ0, iret).

Used by lessons 01 and 02 (and by the stepper's ring panel).
"""
from ..trace import Event, RunResult
from .diagram import Diagram

# Who lives in which ring on a PC running Linux or Windows natively.
NATIVE = {0: "kernel", 1: "unused by Linux and Windows", 2: "unused by Linux and Windows", 3: "user programs"}
# What a hypervisor does with them: it takes ring 0 and moves the guest kernel up to ring 1.
VIRTUALIZED = {0: "hypervisor (VMM)", 1: "guest kernel(s), deprivileged", 2: "unused",
               3: "guest user programs"}

FILL = {0: "#f4d6d6", 1: "#f6e7d2", 2: "#eef0d8", 3: "#dbeaf7"}
CURRENT = "#ffd54f"


def last_transition(events):
    """The most recent ring-transition Event in `events`, or None."""
    for event in reversed(events):
        if event.kind == "ring-transition":
            return event
    return None


def ring_diagram(what=None, *, cpl=None, occupants=NATIVE, title=None):
    """Draw the rings with the current CPL marked and the last transition as an arrow.

    `what` is a Machine (its CPL now and its last transition), a RunResult (its last transition),
    a ring-transition Event, or None (just the rings; give `cpl` to mark one).
    """
    event = None
    if isinstance(what, Event):
        event = what
    elif isinstance(what, RunResult):
        event = last_transition(what.events)
    elif what is not None:                      # a Machine
        event = last_transition(what.events)
        if cpl is None:
            cpl = what.cpu.cpl
    if event is not None and cpl is None:
        cpl = event.detail.get("to_ring")
    return _draw(cpl, event, occupants, title)


def _draw(cpl, event, occupants, title):
    move = _describe(event)
    caption = title or (f"CPL {cpl}" + (f" after {move}" if move else "") if cpl is not None else "the four rings")
    g = Diagram("rings", caption=caption, text=_text(cpl, event, occupants, move))
    g.attr(rankdir="TB", nodesep="0.3", ranksep="0.12", fontname="Helvetica", bgcolor="white")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="13",
           width="4.0", height="0.55", fixedsize="true")
    g.attr("edge", fontname="Helvetica", fontsize="12")
    for ring in (3, 2, 1, 0):
        here = ring == cpl
        label = f"ring {ring}: {occupants.get(ring, '')}" + ("\n◀ CPL: the CPU runs here" if here else "")
        g.node(f"r{ring}", label, fillcolor=CURRENT if here else FILL[ring],
               penwidth="3" if here else "1", color="black" if here else "#888888",
               fontcolor="black" if here else "#444444")
    g.node("hw", "hardware", shape="box", style="filled", fillcolor="#d0d0d0", height="0.35", fontsize="11")
    for upper, lower in (("r3", "r2"), ("r2", "r1"), ("r1", "r0"), ("r0", "hw")):
        g.edge(upper, lower, style="invis")
    if event is not None:
        a, b = event.detail.get("from_ring"), event.detail.get("to_ring")
        if a is not None and b is not None:
            # constraint=false keeps the stack in order; the arrow runs down the right-hand side
            g.edge(f"r{a}", f"r{b}", label=" " + event.detail.get("cause", "?") + " ", color="#c62828",
                   fontcolor="#c62828", penwidth="2.5", constraint="false", tailport="e", headport="e")
    return g


def _describe(event):
    if event is None:
        return ""
    d = event.detail
    return f"{d.get('cause', 'a transition')} (ring {d.get('from_ring')} → ring {d.get('to_ring')}) at eip {event.eip:#x}"


def _text(cpl, event, occupants, move):
    lines = [f"ring {r}: {occupants.get(r, '')}" + ("   <- CPL (the CPU runs here)" if r == cpl else "")
             for r in (3, 2, 1, 0)]
    lines.append("last transition: " + (move if move else "none yet"))
    return "\n".join(lines)
