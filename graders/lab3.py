"""Lab 3 (binary translation): guests natively and under vmkit's own binary translator, and vmkit's
own chain rule (part 3's answer)."""
import vmkit
from vmkit.grading.lab3 import BT_MAX_INSTRUCTIONS, bt_facts
from vmkit.grading.runs import ending
from vmkit.vmm import BinaryTranslation
from vmkit.vmm.translator import chain


def bt_run(source):
    """The guest natively and under vmkit's own binary translator: {"native", "bt"}."""
    native = vmkit.run(source, max_instructions=BT_MAX_INSTRUCTIONS, timeout=30)
    machine = BinaryTranslation(vmkit.assemble(source), max_instructions=BT_MAX_INSTRUCTIONS, timeout=30)
    result = machine.run()
    return {"native": ending(native), "bt": bt_facts(machine, result)}


def bt_runs(sources):
    """bt_run for each guest, in one process: [{"native", "bt"}, ...]."""
    return [bt_run(source) for source in sources]


def chain_bytes(cases):
    """vmkit's own chain rule for each [site, target]: the bytes, as a list of numbers."""
    return [list(chain(site, target)) for site, target in cases]


FACTS = {f.__name__: f for f in (bt_run, bt_runs, chain_bytes)}
