"""Lab 1 (rings): what the machine does with each instruction in ring 3 (part 2's answer), how a
guest ends and which ring transitions it made, and vmkit's decoding of selectors and descriptors."""
import vmkit
from vmkit.grading.lab1 import DESCRIPTOR_FIELDS, MAX_INSTRUCTIONS, TIMEOUT, interrupt_frames
from vmkit.grading.runs import ending, guest_error_message
from vmkit.machine.x86 import decode_descriptor, decode_selector, vector_name


def outcome_in_ring3(template, instruction):
    """What the CPU does with `instruction` in ring 3, inside `template` (a test kernel whose
    `{instruction}` slot runs in ring 3 and is followed by `int 0x80`): "runs" when the int 0x80
    after it is reached, else the exception it raised ("#GP", "#UD", ...)."""
    result = vmkit.run(template.format(instruction=instruction), max_instructions=100_000, timeout=5)
    for event in result.events:
        if event.kind == "ring-transition" and event.detail.get("from_ring") == 3:
            if event.detail["cause"] == "int 0x80":
                return "runs"
            return vector_name(event.detail["vector"])
    return "no transition from ring 3"


def ring3_census(template, instructions):
    """outcome_in_ring3 for each instruction: {instruction: outcome}."""
    return {instruction: outcome_in_ring3(template, instruction) for instruction in instructions}


def guest_trace(source, max_instructions=MAX_INSTRUCTIONS, timeout=TIMEOUT):
    """How a guest ends and the ring transitions it made, as plain data."""
    try:
        result = vmkit.run(source, max_instructions=max_instructions, timeout=timeout)
    except vmkit.VmkitError as error:
        return {"error": f"{type(error).__name__}: {guest_error_message(error)}"}
    transitions = [{"cause": e.detail["cause"], "vector": e.detail.get("vector"),
                    "from_ring": e.detail["from_ring"], "to_ring": e.detail["to_ring"],
                    "stack_switch": e.detail.get("stack_switch"), "esp": e.detail.get("esp"),
                    "ss": e.detail.get("ss"), "eip": e.eip}
                   for e in result.events if e.kind == "ring-transition"]
    return {**ending(result), "transitions": transitions}


def selector_fields(values):
    """vmkit's decoding of each selector: [[index, ti, rpl], ...]."""
    return [[s.index, s.ti, s.rpl] for s in map(decode_selector, values)]


def descriptor_fields(raws):
    """vmkit's decoding of each 64-bit descriptor: [{base, limit, type, s, dpl, present}, ...]."""
    return [{name: getattr(decode_descriptor(raw), name) for name in DESCRIPTOR_FIELDS} for raw in raws]


FACTS = {f.__name__: f for f in (selector_fields, descriptor_fields, ring3_census, guest_trace, interrupt_frames)}
