"""vmkit.viz: pictures and widgets drawn from what a run recorded. Nothing here simulates.

A lesson imports the package once and names the module of everything it calls:

    from vmkit import viz
    viz.tools.check_tools()
    viz.rings.ring_diagram(machine)
    viz.quiz.Choice("question", options, answer, feedback)

so a reader sees where each picture comes from, and `grep viz.<module>.` finds every lesson that
uses a module. A module is imported the first time it is named (the matplotlib ones take a
moment), so `viz.compare` costs nothing to a lesson that never draws a plot.

    diagram      Diagram (graphviz), Table (rows), Plot (matplotlib): each with a text form
    quiz         Choice, Number: self-checks with instant feedback
    tools        check_tools(): one notice, with the fix, if nasm or graphviz's dot is missing
    source       excerpt(): guest source, highlighted
    stepper      Stepper: step / next event / run / reset over a live machine
    rings        ring_diagram(): the rings, the CPL, the last transition
    tables       tables_diagram(): GDT, IDT and TSS as the CPU sees them
    frames       frame_table(): the interrupt frame, slot by slot
    vmm          vmm_loop(), shadow_tables(): a trap-and-emulate VMM's loop and its shadow tables
    translation  side_by_side(), cache_graph(), TranslationStepper: a binary translator's units
    paravirt     HypercallStepper, xen_structure(), multicalls, a split driver's ring
    kvm          run_loop_diagram(), ExitStepper, VmcsExplorer: VT-x and KVM's run loop
    io           InterruptStepper, exits_per_request(), RingStepper, passthrough_diagram(): interrupts and I/O
    paging       walk(), WalkStepper, shadow_beside_guest(), ShadowStepper, paging_exits(), two_d_walk(): 32-bit
                 paging, shadow page tables, EPT
    migration    timeline(), rounds_table(), RoundStepper: pre-copy live migration
    isolation    svirt_diagram(), access_walker(): sVirt's labels and decisions
    compare      the comparison's tables and plots, the cost model, a workload designer
    hypervisors  hypervisor_stack(): type 1, type 2 and KVM as layer stacks
    packing      packing_plot(), Explorer: server consolidation
    tape         record(): a stepper's walk kept in its widget, replayed by the book's pages without a kernel

Each module's docstring names the lessons that use it (tests/test_viz.py keeps that true).
"""
import importlib
import pkgutil


def _modules():
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name):
    """viz.<module>: import the module the first time a lesson names it."""
    if name in _modules():
        return importlib.import_module(f"{__name__}.{name}")      # also binds it here, as an import does
    raise AttributeError(f"vmkit.viz has no module {name!r}; its modules are {', '.join(_modules())} "
                         f"(a lesson calls viz.<module>.<name>, e.g. viz.quiz.Choice)")


def __dir__():
    return sorted(set(globals()) | set(_modules()))
