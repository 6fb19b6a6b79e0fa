"""vmkit.run: one guest, one technique, one result."""
from .arguments import DefaultBudget, check_budgets, check_options
from .asm import assemble
from .errors import VmkitError
from .kvm import KvmMachine
from .machine import DEFAULT_MAX_INSTRUCTIONS, DEFAULT_MEMORY, DEFAULT_TIMEOUT, Machine, MustCount
from .vmm import BinaryTranslation, TrapAndEmulate
from .vtx import HardwareAssist
from .xen import Paravirt

MACHINES = {"native": Machine, "trap-and-emulate": TrapAndEmulate, "binary-translation": BinaryTranslation,
            "paravirt": Paravirt, "hardware-assist": HardwareAssist, "kvm": KvmMachine}
TECHNIQUES = tuple(MACHINES)


def machine(image_or_source, technique="native", *, memory=DEFAULT_MEMORY,
            max_instructions=DEFAULT_MAX_INSTRUCTIONS, timeout=DEFAULT_TIMEOUT, **options):
    """A machine ready to step through a guest under `technique` (see Machine.step, run_until).
    `options` go to the technique: controls= for hardware-assist, vcpus= and path= for kvm."""
    cls = _checked(technique, max_instructions, timeout, options)
    return cls(assemble(image_or_source), memory, max_instructions=max_instructions, timeout=timeout, **options)


def _machine_class(technique):
    if technique not in MACHINES:
        raise VmkitError(f"unknown technique {technique!r}; vmkit knows {', '.join(TECHNIQUES)}")
    return MACHINES[technique]


def _checked(technique, max_instructions, timeout, options):
    """The technique's machine class, once the arguments are ones it takes."""
    cls = _machine_class(technique)
    check_options(technique, cls, options, MACHINES)
    check_budgets(max_instructions, timeout)
    return cls


def run(image_or_source, technique="native", *, memory=DEFAULT_MEMORY,
        max_instructions=DEFAULT_MAX_INSTRUCTIONS, timeout=DEFAULT_TIMEOUT, **options):
    """Run a guest to its end under `technique` and return a RunResult.

    Budgets: `max_instructions` (exact, counted) and `timeout` (seconds of real time); past either,
    vmkit.GuestTimeout is raised with the partial result attached. max_instructions=None drops the
    instruction budget: then guest code that nothing can interrupt runs at Unicorn's full speed,
    uncounted (stats has no "instructions"), and vmkit counts again from the start as soon as the
    guest arms its timer or does anything else whose timing must be exact.

    `options` go to the technique: hardware-assist takes controls=vmkit.vtx.VmcsControls(...); kvm
    takes vcpus= and path= (the KVM device), counts no instructions and stops a guest only by timeout.
    """
    cls = _checked(technique, max_instructions, timeout, options)
    image = assemble(image_or_source)
    if technique == "kvm":
        with cls(image, memory, max_instructions=max_instructions, timeout=timeout, **options) as vm:     # its file descriptors closed after
            return vm.run()
    if cls is not Machine:
        return cls(image, memory, max_instructions=max_instructions, timeout=timeout, **options).run()
    if max_instructions is None:
        fast = Machine(image, memory, max_instructions=None, timeout=timeout, counted=False)
        try:
            return fast.run()
        except MustCount:
            timeout = None if timeout is None else max(timeout - fast.elapsed, 1e-3)
    return Machine(image, memory, max_instructions=max_instructions, timeout=timeout).run()
