"""vmkit.viz: pictures and widgets drawn from what a run recorded. Nothing here simulates.

    ring_diagram(machine_or_event)   the rings, the CPL, the last transition (graphviz, with .text)
    tables_diagram(machine)          GDT, IDT and TSS as the CPU sees them
    frame_table(event)               the interrupt frame, slot by slot
    excerpt("rings", "user_main")    guest source, highlighted
    Stepper(image, technique=...)    step / next event / run / reset over a live machine
    vmm_loop(result), shadow_tables(machine)   a trap-and-emulate VMM's loop and its shadow tables
    side_by_side(m, unit), cache_graph(m), TranslationStepper(image)   a binary translator's units,
                                     its translation cache as a graph, and a stepper through both
    vmkit.viz.paravirt, .kvm         lesson 04's hypercall stepper and Xen's structure; lesson 05's run loop
    vmkit.viz.migration              lesson 06: a migration's timeline, rounds, transcript, RoundStepper
    vmkit.viz.compare                lesson 08: the comparison's tables and plots, Adams & Agesen beside
                                     them, the cost model and a workload designer
    Choice(...), Number(...)         self-checks with instant feedback
    check_tools()                    one notice, with the fix, if nasm or graphviz's dot is missing
"""
from .diagram import Diagram
from .frames import Frame, frame_table
from .quiz import Choice, Number
from .rings import NATIVE, VIRTUALIZED, last_transition, ring_diagram
from .source import excerpt, highlight
from .stepper import Stepper
from .tables import read_tables, tables_diagram
from .tools import check_tools, missing_tools
from .translation import TranslationStepper, cache_graph, side_by_side, translation_loop
from .vmm import shadow_tables, vmm_loop

__all__ = ["Diagram", "Frame", "frame_table", "Choice", "Number", "NATIVE", "VIRTUALIZED", "last_transition",
           "ring_diagram", "excerpt", "highlight", "Stepper", "read_tables", "tables_diagram",
           "check_tools", "missing_tools", "shadow_tables", "vmm_loop", "TranslationStepper", "cache_graph",
           "side_by_side", "translation_loop"]
