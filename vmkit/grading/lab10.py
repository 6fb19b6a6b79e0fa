"""Lab 10 (comparing the techniques): a student's workload for the comparison's kernel run on a budget
under the comparison's columns, and what each run counted, as plain data.

A workload is NASM text written as vmkit/guests/cmp_*.asm are: appended to cmp_kernel.asm with
ROUNDS defined in front, exactly as vmkit.compare builds its own (Workload.source). Each run goes
through vmkit as installed (answers.on_disk), whatever the notebook replaced in its own, and its
counts are vmkit.compare's (Measurement.counts(): COUNTS and `executed`), with `instructions` the
guest's own as the bare machine counts them.
"""
import copy

import vmkit
from .. import guests
from .answers import answer_cases, on_disk
from .runs import explained, guest_error_message

# Budgets for one run of a student's workload: a thousand rounds of a few system calls and port
# reads take a few hundred thousand instructions; a workload stuck in `jmp $` ends well under a second.
WORKLOAD_MAX_INSTRUCTIONS = 1_000_000
WORKLOAD_TIMEOUT = 5.0
WORKLOAD_LOOK = ("a loop that never ends (`jmp $`, a counter that never reaches 0), or a workload that never "
                 "reaches `finish` (through `ret` from `workload`, or `jmp finish` from its system call)")


def workload_source(workload, rounds):
    """The whole guest: ROUNDS, the comparison's kernel, then `workload` (as vmkit.compare builds its own)."""
    if not isinstance(workload, str):
        raise TypeError(f"the workload must be a string of NASM, not a {type(workload).__name__}")
    return f"; a lab workload, {rounds} rounds\nROUNDS equ {rounds}\n" + guests.source("cmp_kernel") + workload


def run_workload(workload, technique="native", rounds=10, max_instructions=WORKLOAD_MAX_INSTRUCTIONS,
                 timeout=WORKLOAD_TIMEOUT):
    """Run `workload` with `rounds` under `technique` (a column of vmkit.compare: "hardware-assist/no-ept"
    too) on a budget; the RunResult, or an AssertionError that says what went wrong."""
    from .. import compare  # here, not at the top: called under on_disk, this is vmkit as installed
    base, options = compare.technique_of(technique)
    with explained(f"your workload under {technique} with ROUNDS = {rounds}", max_instructions, timeout,
                   look=WORKLOAD_LOOK):
        return vmkit.run(workload_source(workload, rounds), base, max_instructions=max_instructions,
                         timeout=timeout, **options)


def system_calls(result):
    """How many `int 0x80` a run took from ring 3 (on the bare machine every one is a ring transition)."""
    return sum(1 for e in result.events if e.kind == "ring-transition" and e.detail.get("from_ring") == 3
               and e.detail.get("cause") == "int 0x80")


def run_facts(workload, techniques, rounds):
    """workload_facts, in this module as it is imported (workload_facts calls it in a fresh copy)."""
    from .. import compare  # here, not at the top: called under on_disk, this is vmkit as installed
    try:
        native = vmkit.run(workload_source(workload, rounds), "native", max_instructions=WORKLOAD_MAX_INSTRUCTIONS,
                           timeout=WORKLOAD_TIMEOUT)
    except (vmkit.VmkitError, TypeError) as error:
        return {"error": f"{type(error).__name__} on the bare machine: {guest_error_message(error)}"}
    runs = {}
    for technique in techniques:
        try:
            base, options = compare.technique_of(technique)
            result = native if technique == "native" else vmkit.run(
                workload_source(workload, rounds), base, max_instructions=WORKLOAD_MAX_INSTRUCTIONS,
                timeout=WORKLOAD_TIMEOUT, **options)
            counts = compare.counts_of(result.stats, result.events)
        except vmkit.VmkitError as error:
            runs[technique] = {"error": f"{type(error).__name__}: {guest_error_message(error)}"}
            continue
        counts["instructions"] = native.stats.get("instructions")
        runs[technique] = {"serial": result.serial, "exit_code": result.exit_code,
                           "counts": {k: counts[k] for k in compare.EXACT}}
    return {"rounds": rounds, "system_calls": system_calls(native), "runs": runs}


def workload_facts(workload, techniques, rounds):
    """`workload` with `rounds` run on the bare machine and under each of `techniques`, through vmkit as
    installed: {"rounds", "system_calls" (int 0x80 from ring 3, counted natively), "runs": {technique:
    {"serial", "exit_code", "counts"} or {"error"}}}, or {"error"} if it does not even run natively."""
    with on_disk(__name__) as fresh:                # vmkit as installed, whatever the notebook replaced
        return fresh.run_facts(workload, list(techniques), rounds)


def answers_on_runs(function, workload, rounds, priced):
    """`workload` run with `rounds` under each technique of `priced` ({technique: prices}), and
    `function(counts, prices)` asked of each run's counts (a copy): {"facts": workload_facts(...),
    "answers": {technique: [its answer, as answer_cases gives it]}}."""
    if not callable(function):
        raise TypeError(f"{function!r} is not a function")
    facts = workload_facts(workload, list(priced), rounds)
    answers = {}
    for technique, prices in priced.items():
        run = facts.get("runs", {}).get(technique, {})
        if "counts" in run:
            answers[technique] = answer_cases(function, [[copy.deepcopy(run["counts"]), copy.deepcopy(prices)]])
    return {"facts": facts, "answers": answers}
