"""Lab 6 (live migration): a student's pre-copy loop on a migration that stops a loop that never ends,
and what the migration did as plain data."""
import json

from ..errors import VmkitError
from ..migration import Link, Migration, MigrationAborted, MigrationResult, sequence, workload
from .checks import check, check_facts

MIGRATION_WARMUP = 0.002                            # guest seconds before the migration and after it
MIGRATION_MAX_ROUNDS = 40                           # past Xen's 30: a loop that never stops ends here
MIGRATION_MAX_SECONDS = 0.25                        # guest seconds on the link; the lab's loops need under 0.1
MIGRATION_FIELDS = ("rounds", "stop_reason", "downtime", "pages_sent", "memory_verified", "output_continuous")
MIGRATION_HINTS = {
    "rounds": "each round as [pages sent, pages skipped, pages dirty at its end, Mbit/s]: the first difference is "
              "the round where your loop and the reference part (which pages it sent, or whether it went on at all)",
    "stop_reason": "the name of the condition that ended the pre-copy, passed to m.stop_and_copy(pages, stop_reason=...)",
    "downtime": "the stop-and-copy sends what is still dirty, and the vCPU and device state, at the link's full rate",
    "pages_sent": "every round and the stop-and-copy: a page sent twice in a round, or a round that sends pages "
                  "nobody dirtied, shows here",
    "memory_verified": "the destination's memory must equal the source's at the switch-over: the stop-and-copy "
                       "sends m.dirty_pages() (called once: it clears the log)",
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
          hint="end with `return m.stop_and_copy(pages, stop_reason=...)`")
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
