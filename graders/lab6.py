"""Lab 6 (live migration): the reference answers of parts 2 to 4 (Xen's pre-copy loop, the downtime
estimate, the loop to a downtime target) and the migrations they make of the lab's cases."""
from vmkit.grading.lab6 import after_rounds, migration_facts, new_migration, round_facts
from vmkit.migration import XEN, Link, MigrationAborted, Round


def xen_precopy(m):
    """Part 2: pre-copy with Xen's stop conditions: the full copy, rounds of dirty pages until a
    condition holds, then the stop-and-copy."""
    m.send(m.all_pages())
    while True:
        reason = XEN.reason(m.rounds, m.sent_total, m.memory_pages, m.link)
        pages = m.dirty_pages()
        if reason is not None:
            return m.stop_and_copy(pages, stop_reason=reason)
        m.send(pages)


def stop_and_copy_seconds(m, pages):
    """Part 3: what pausing now and sending `pages` and the vCPU and device state costs: the downtime,
    exactly as m.stop_and_copy(pages) will take it (at the link's full rate: the guest is paused)."""
    state = len(m.source.cpu_state()) + len(m.source.device_state())
    return m.link.seconds(len(pages), m.link.mbit, extra_bytes=state)


def precopy_to_target(m, target, estimate=stop_and_copy_seconds, max_rounds=29):
    """Part 4: pre-copy until the downtime fits `target` seconds: after each round, stop for "target
    met" (the estimate fits), "no progress" (it did not shrink since the round before) or "max rounds"."""
    m.send(m.all_pages())
    before = None
    while True:
        pages = m.dirty_pages()
        now = estimate(m, pages)
        if now <= target:
            reason = "target met"
        elif before is not None and now >= before:
            reason = "no progress"
        elif len(m.rounds) >= max_rounds:
            reason = "max rounds"
        else:
            reason = None
        if reason is not None:
            return m.stop_and_copy(pages, stop_reason=reason)
        before = now
        m.send(pages)


def xen_stops(histories):
    """Xen's stop condition for each made-up history {"rounds": [[number, sent, dirtied, seconds, mbit, start,
    skipped]], "sent_total", "memory_pages", "link": Link's arguments}: the reason, or None."""
    return [XEN.reason([Round(*r) for r in h["rounds"]], h["sent_total"], h["memory_pages"], Link(**h["link"]))
            for h in histories]


def xen_migrations(cases):
    """xen_precopy for each case: migration_facts, or {"aborted": why, "rounds": the rounds before}."""
    facts = []
    for case in cases:
        m = new_migration(case, "the reference loop")
        try:
            facts.append(migration_facts(xen_precopy(m)))
        except MigrationAborted as error:
            facts.append({"aborted": str(error), "rounds": round_facts(m.rounds)})
    return facts


def downtime_estimates(cases):
    """For each [case, rounds]: [stop_and_copy_seconds of no page, of the dirty pages, and the downtime
    m.stop_and_copy(those pages) then took], after_rounds(case, rounds)."""
    facts = []
    for case, rounds in cases:
        m, pages = after_rounds(case, rounds)
        facts.append([stop_and_copy_seconds(m, []), stop_and_copy_seconds(m, pages), m.stop_and_copy(pages).downtime])
    return facts


def target_migrations(cases):
    """precopy_to_target for each [case, target]: migration_facts."""
    return [migration_facts(precopy_to_target(new_migration(case, "the reference loop"), target))
            for case, target in cases]


FACTS = {f.__name__: f for f in (xen_stops, xen_migrations, downtime_estimates, target_migrations)}
