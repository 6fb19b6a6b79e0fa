"""Lab 2 (trap-and-emulate): guests natively and under vmkit's own trap-and-emulate VMM, and the
instruction census with the classes its definitions give."""
import vmkit
from vmkit.grading.lab2 import VMM_MAX_INSTRUCTIONS, vmm_facts
from vmkit.grading.runs import ending
from vmkit.vmm import TrapAndEmulate
from vmkit.census import CensusRow, census


def vmm_run(source):
    """The guest natively and under vmkit's own trap-and-emulate VMM: {"native": how it ended and
    what it printed, "vmm": vmm_facts}."""
    native = vmkit.run(source, max_instructions=VMM_MAX_INSTRUCTIONS, timeout=30)
    vmm = TrapAndEmulate(vmkit.assemble(source), max_instructions=VMM_MAX_INSTRUCTIONS, timeout=30)
    result = vmm.run()
    return {"native": ending(native), "vmm": vmm_facts(vmm, result)}


def vmm_runs(sources):
    """vmm_run for each guest, in one process: [{"native", "vmm"}, ...]."""
    return [vmm_run(source) for source in sources]


def census_rows(names=None):
    """vmkit's instruction census, measured now: each row's measurements and the classes it derives
    from them."""
    return [{"mnemonic": r.mnemonic, "faults": {str(ring): v for ring, v in r.faults.items()},
             "trapped_under_vmm": r.trapped_under_vmm, "same_under_vmm": r.same_under_vmm,
             "privileged": r.privileged, "sensitive": r.sensitive, "hole": r.hole} for r in census(names)]


def census_classes(measurements):
    """What the census's own definitions make of made-up measurements (faults by ring, trapped under
    the VMM, same under the VMM): {"privileged", "sensitive", "hole"} for each."""
    rows = [CensusRow(m["mnemonic"], "", {int(k): v for k, v in m["faults"].items()}, m["trapped_under_vmm"],
                      m["same_under_vmm"]) for m in measurements]
    return [{"privileged": r.privileged, "sensitive": r.sensitive, "hole": r.hole} for r in rows]


def census_and_classes(measurements):
    """census_rows() and census_classes(measurements), in one process: {"rows", "made_up"}."""
    return {"rows": census_rows(), "made_up": census_classes(measurements)}


FACTS = {f.__name__: f for f in (vmm_run, vmm_runs, census_rows, census_classes, census_and_classes)}
