"""Lab 6 (live migration): a student's pre-copy loop on a migration that stops a loop that never ends,
what the migration did as plain data, and the kernel's answers to the grader's cases."""
import importlib
import json
import sys
from contextlib import ExitStack, contextmanager

from ..errors import VmkitError
from ..migration import Link, Migration, MigrationAborted, MigrationResult, Round, sequence, workload
from .checks import check, check_facts
from .answers import plain, raised, withheld

MIGRATION_WARMUP = 0.002                            # guest seconds before the migration and after it
MIGRATION_MAX_ROUNDS = 40                           # past Xen's 30: a loop that never stops ends here
MIGRATION_MAX_SECONDS = 0.15                        # guest seconds on the link; the lab's loops need under 0.1
MIGRATION_FIELDS = ("rounds", "stop_reason", "downtime", "pages_sent", "memory_verified", "output_continuous")
MIGRATION_HINTS = {
    "rounds": "each round as [pages sent, pages skipped, pages dirty at its end, Mbit/s]: the first difference is "
              "the round where your loop and the reference part (which pages it sent, or whether it went on at all)",
    "stop_reason": "the reason the stop condition gave is the migration's stop reason",
    "downtime": "the pause carries what is still dirty, and the vCPU and device state, at the link's full rate",
    "pages_sent": "every round and the stop-and-copy: a page sent twice in a round, or a round that sends pages "
                  "nobody dirtied, shows here",
    "memory_verified": "the destination's memory must equal the source's at the switch-over: every page dirtied "
                       "since it last crossed crosses while the guest is paused (the dirty log forgets what it "
                       "has handed over)",
    "output_continuous": "the peer must see seq 1, 2, 3, ... with no gap or repeat across the switch-over",
}


class MigrationBudget(AssertionError):
    """A student's pre-copy loop went on past the rounds or the guest time any reference loop needs."""


def migration_guest(case):
    """The NASM source of a lab case {"workload": name, "params": {...}}."""
    return workload(case["workload"], **case.get("params", {}))


def round_budget(what="your loop"):
    """An on_round for a Migration: a loop that never stops fails with a message instead of running on."""
    def budget(record):
        spent = record.start + record.seconds
        if record.number > MIGRATION_MAX_ROUNDS or spent > MIGRATION_MAX_SECONDS:
            raise MigrationBudget(
                f"{what} was still sending rounds after {record.number} rounds and {spent * 1000:.0f} ms on the "
                f"link (no reference loop needs more than 29 rounds).\n  where to look: the stop conditions; a "
                f"loop must stop even when the guest never converges")
    return budget


def new_migration(case, what="your loop"):
    """A Migration for a lab case {"workload", "params", "link": Link's arguments, "dies_at"}, on the model,
    on a round_budget."""
    return Migration(migration_guest(case), "model", Link(**case.get("link", {})), MIGRATION_WARMUP,
                     destination_dies_at=case.get("dies_at"), on_round=round_budget(what))


def after_rounds(case, rounds, new=new_migration):
    """A Migration of `case` that has sent the full copy and rounds - 1 rounds of dirty pages: (m, the
    pages dirtied since), the state in which a loop decides whether to stop."""
    m = new(case)
    m.send(m.all_pages())
    for _ in range(rounds - 1):
        m.send(m.dirty_pages())
    return m, m.dirty_pages()


def run_precopy(loop, case, *args, what="your loop"):
    """loop(m, *args) on a new_migration(case): (m, the MigrationResult it returned). A loop that runs
    past the budget, returns something else or calls the building blocks wrongly fails with a message;
    MigrationAborted reaches the caller."""
    m = new_migration(case, what)
    try:
        result = loop(m, *args)
    except MigrationAborted:
        raise
    except VmkitError as error:
        raise AssertionError(f"{what} used the migration's building blocks wrongly: {type(error).__name__}: "
                             f"{error}") from None
    check(isinstance(result, MigrationResult), f"{what} returns what m.stop_and_copy(...) returned",
          expected="a MigrationResult", got=type(result).__name__,
          hint="the part's spec: what the function returns")
    return m, result


def round_facts(rounds):
    """Each Round as [pages sent, pages skipped, pages dirty at its end, Mbit/s]."""
    return [[r.pages_sent, r.pages_skipped, r.pages_dirtied, round(r.mbit, 6)] for r in rounds]


def migration_facts(result, after=MIGRATION_WARMUP):
    """What a migration did, as plain data, once the destination ran `after` guest seconds more: each round
    as round_facts, the stop reason, the downtime, the pages sent, and whether memory and the peer's
    output arrived whole."""
    result.destination.run_for(after)
    transcript = sequence(result.source.output + result.destination.output)
    return json.loads(json.dumps({
        "rounds": round_facts(result.rounds),
        "stop_reason": result.stop_reason, "downtime": result.downtime, "pages_sent": result.pages_sent,
        "memory_verified": result.memory_verified,
        "output_continuous": transcript == list(range(1, len(transcript) + 1)),
        "switch_seq": result.switch_seq, "lines": len(transcript)}))


def check_migration_facts(got, expected, what, fields=MIGRATION_FIELDS):
    """migration_facts of a student's loop against the reference loop's, the first difference explained
    (a downtime within rounding of the reference's counts as equal)."""
    check_facts(got, expected, what, hints=MIGRATION_HINTS, fields=fields, unit="round", end="(no more rounds)",
                tolerance=1e-9)



# --- the kernel's side of grading: a student's functions on the grader's cases, as plain data ----------
# They run on the notebook's vmkit (a student's loop catches, or lets through, the notebook's own
# MigrationAborted); while they run, vmkit's own versions of what the lab asks for are withheld: Xen's
# conditions (StopConditions.reason) while should_stop answers, the package's loop (migrate) while a
# student's loop runs. The conditions a loop is handed come from vmkit as on disk, so a notebook that
# replaced Xen's conditions with its own is not graded on them.


@contextmanager
def withholding(*names):
    """vmkit's own `names` ("reason": Xen's, Clark's and QEMU's conditions; "migrate": the package's
    loop) withheld for the time of the with block."""
    from ..migration import precopy  # here, not at the top: called under on_disk, this is vmkit as installed
    with ExitStack() as stack:
        if "reason" in names:
            stack.enter_context(withheld(precopy.StopConditions, "reason"))
        if "migrate" in names:
            stack.enter_context(withheld(precopy, "migrate"))
        yield


def presets_on_disk():
    """vmkit.migration's PRESETS (Xen's, Clark's and QEMU's conditions) as on disk, whatever the notebook
    did to its own."""
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "vmkit"}
    for name in saved:
        del sys.modules[name]
    try:
        return importlib.import_module("vmkit.migration.precopy").PRESETS
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "vmkit"]:
            del sys.modules[name]
        sys.modules.update(saved)


def answered(call):
    """call()'s value as plain data, or raised(error): the student's code's error is its answer."""
    try:
        return plain(call())
    except Exception as error:
        return raised(error)


def history_args(history):
    """should_stop's arguments for a history as plain data {"rounds": [[number, sent, dirtied, seconds, mbit,
    start, skipped]], "sent_total", "memory_pages", "link": Link's arguments}."""
    return [Round(*r) for r in history["rounds"]], history["sent_total"], history["memory_pages"], Link(**history["link"])


def stop_cases(should_stop, histories):
    """A student's should_stop on each history: the reason it gives, or raised(error); vmkit's own
    conditions withheld."""
    with withholding("reason"):
        return [answered(lambda: should_stop(*history_args(h))) for h in histories]


def stop_after(rounds):
    """A should_stop of the grader's own: stop once `rounds` rounds have been sent, whatever they were."""
    def should_stop(done, sent_total, memory_pages, link):
        return f"after {rounds} rounds" if len(done) >= rounds else None
    return should_stop


def aborted_facts(error):
    """What a migration that failed left: the rounds before, and whether the source runs on with nothing
    lost (its peer's output continues, seq 1, 2, 3, ...)."""
    source = error.migration.source
    before = len(sequence(source.output))
    source.run_for(2 * MIGRATION_WARMUP)
    lines = sequence(source.output)
    return {"rounds": round_facts(error.migration.rounds),
            "source_runs_on": len(lines) > before and lines == list(range(1, len(lines) + 1))}


def loop_answer(loop, case, *args):
    """A loop on a case, as plain data: {"facts": migration_facts} if it returned a migration's result,
    {"aborted": aborted_facts} if the migration's own MigrationAborted reached its caller, raised(error)
    otherwise."""
    try:
        m, result = run_precopy(loop, case, *args)
        return {"facts": migration_facts(result)}
    except MigrationAborted as error:
        if not isinstance(getattr(error, "migration", None), Migration) or error.migration.state != "aborted":
            return raised(error)
        return {"aborted": aborted_facts(error)}
    except Exception as error:
        return raised(error)


def precopy_cases(precopy, cases):
    """A student's precopy(m, should_stop) on each case {"workload", "params", "link", "dies_at", "stop"},
    should_stop being vmkit's "xen" or "clark" conditions as on disk or {"after": n} (stop_after):
    loop_answer of each; vmkit's own loop withheld."""
    presets = presets_on_disk()
    with withholding("migrate"):
        return within_budget(cases, lambda case: loop_answer(
            precopy, case, stop_after(case["stop"]["after"]) if isinstance(case.get("stop"), dict)
            else presets[case.get("stop", "xen")].reason))


def within_budget(cases, answer):
    """answer(case) for each case, until a loop runs past its budget (MigrationBudget): the cases after
    are not run (a loop that never stops costs one budget, not one per case), each answered so."""
    answers = []
    for case in cases:
        if answers and str(answers[-1].get("raised", "")).startswith(MigrationBudget.__name__):
            answers.append({"raised": "not run: your loop ran past its budget on an earlier case"})
        else:
            answers.append(answer(case))
    return answers


def given_estimate(fixed, per_page):
    """A downtime estimate handed over as data: `fixed` seconds plus `per_page` seconds for each distinct
    page, whatever the migration (the grader computes the two numbers for each case)."""
    def estimate(m, pages):
        return fixed + len(set(pages)) * per_page
    return estimate


def target_cases(precopy_to_target, cases, estimate=None):
    """A student's precopy_to_target(m, target, estimate) on each case [case, target, [fixed, per_page]]:
    loop_answer of each, with `estimate` (the student's own) or else given_estimate(fixed, per_page);
    vmkit's own loop withheld."""
    with withholding("migrate"):
        return within_budget(cases, lambda c: loop_answer(precopy_to_target, c[0], c[1],
                                                          estimate or given_estimate(*c[2])))


def downtime_cases(estimated_downtime, cases):
    """For each [case, rounds] (after_rounds): a student's estimated_downtime of no page and of the dirty
    pages, then the downtime m.stop_and_copy(those pages) took: each a number or raised(error)."""
    answers = []
    for case, rounds in cases:
        m, pages = after_rounds(case, rounds)
        answers.append([answered(lambda: estimated_downtime(m, [])), answered(lambda: estimated_downtime(m, pages)),
                        answered(lambda: m.stop_and_copy(pages).downtime)])
    return answers
