"""vmkit.run: one guest, one technique, one result."""
from .asm import assemble
from .errors import NotBuiltYet, VmkitError
from .machine import DEFAULT_MAX_INSTRUCTIONS, DEFAULT_MEMORY, DEFAULT_TIMEOUT, Machine, MustCount

TECHNIQUES = ("native", "trap-and-emulate", "binary-translation", "paravirt", "hardware-assist", "kvm")


def machine(image_or_source, technique="native", *, memory=DEFAULT_MEMORY,
            max_instructions=DEFAULT_MAX_INSTRUCTIONS, timeout=DEFAULT_TIMEOUT):
    """A machine ready to step through a guest under `technique` (see Machine.step, run_until)."""
    _check_technique(technique)
    return Machine(assemble(image_or_source), memory, max_instructions=max_instructions,
                   timeout=timeout, technique=technique)


def run(image_or_source, technique="native", *, memory=DEFAULT_MEMORY,
        max_instructions=DEFAULT_MAX_INSTRUCTIONS, timeout=DEFAULT_TIMEOUT):
    """Run a guest to its end under `technique` and return a RunResult.

    Budgets: `max_instructions` (exact, counted) and `timeout` (seconds of real time); past either,
    vmkit.GuestTimeout is raised with the partial result attached. max_instructions=None drops the
    instruction budget: then guest code that nothing can interrupt runs at Unicorn's full speed,
    uncounted (stats has no "instructions"), and vmkit counts again from the start as soon as the
    guest arms its timer or does anything else whose timing must be exact.
    """
    _check_technique(technique)
    image = assemble(image_or_source)
    if max_instructions is None:
        fast = Machine(image, memory, max_instructions=None, timeout=timeout, counted=False, technique=technique)
        try:
            return fast.run()
        except MustCount:
            timeout = None if timeout is None else max(timeout - fast.elapsed, 1e-3)
    return Machine(image, memory, max_instructions=max_instructions, timeout=timeout,
                   technique=technique).run()


def _check_technique(technique):
    if technique not in TECHNIQUES:
        raise VmkitError(f"unknown technique {technique!r}; vmkit knows {', '.join(TECHNIQUES)}")
    if technique != "native":
        raise NotBuiltYet(f"the {technique!r} technique is not built yet in this version of vmkit; "
                          f"'native' runs the guest on the bare model machine")
