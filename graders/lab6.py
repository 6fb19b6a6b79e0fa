"""Lab 6 (live migration): the reference answers of parts 1 to 4 (Xen's stop conditions, the pre-copy
loop, the downtime estimate, the loop to a downtime target), the migrations they make of the lab's
cases, and each graded cell's probe."""
from vmkit.grading.lab6 import (MIGRATION_FIELDS, MIGRATION_HINTS, after_rounds, loop_answer, migration_facts,
                                new_migration, round_facts, stop_after)
from vmkit.migration import PRESETS, XEN, Link, MigrationAborted, Round


def precopy(m, should_stop):
    """Part 2: pre-copy with `should_stop`'s conditions: the full copy, rounds of dirty pages until it
    gives a reason, then the stop-and-copy. MigrationAborted reaches the caller."""
    m.send(m.all_pages())
    while True:
        reason = should_stop(m.rounds, m.sent_total, m.memory_pages, m.link)
        pages = m.dirty_pages()
        if reason is not None:
            return m.stop_and_copy(pages, stop_reason=reason)
        m.send(pages)


def xen_precopy(m):
    """Part 2 with Xen's conditions (tools/libxc/xc_domain_save.c; vmkit.migration.XEN)."""
    return precopy(m, XEN.reason)


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


def should_stop_of(case):
    """The should_stop a part-2 case names: vmkit's "xen" or "clark" conditions, or {"after": n}."""
    stop = case.get("stop", "xen")
    return stop_after(stop["after"]) if isinstance(stop, dict) else PRESETS[stop].reason


def xen_migrations(cases):
    """The reference loop on each part-2 case, with the conditions it names: loop_answer's plain data
    ({"facts": ...}, or {"aborted": {"rounds", "source_runs_on"}})."""
    return [loop_answer(precopy, case, should_stop_of(case)) for case in cases]


def downtime_estimates(cases):
    """For each [case, rounds]: [stop_and_copy_seconds of no page, of the dirty pages, and the downtime
    m.stop_and_copy(those pages) then took], after_rounds(case, rounds)."""
    facts = []
    for case, rounds in cases:
        m, pages = after_rounds(case, rounds)
        facts.append([stop_and_copy_seconds(m, []), stop_and_copy_seconds(m, pages), m.stop_and_copy(pages).downtime])
    return facts


def target_migrations(cases):
    """precopy_to_target for each [case, target, ...] with the reference estimate: loop_answer's plain data."""
    return [loop_answer(precopy_to_target, case, target) for case, target, *_ in cases]


def estimate_script(case, target):
    """What the reference estimate said at each decision of the reference loop on `case`: [[rounds sent,
    the dirty pages' count, their sum, the estimate]] (vmkit.grading.lab6.scripted_estimate's script)."""
    script = []
    def recording(m, pages):
        now = stop_and_copy_seconds(m, pages)
        script.append([len(m.rounds), len(pages), sum(pages), now])
        return now
    try:
        precopy_to_target(new_migration(case, "the reference loop"), target, recording)
    except MigrationAborted:
        pass
    return script


FACTS = {f.__name__: f for f in (xen_stops, xen_migrations, downtime_estimates, target_migrations)}


# --- the probes: each graded cell's cases, asked of the student's kernel and decided here -------------
# Messages show counts in decimal (pages, rounds), as the lab speaks of them.
from vmkit.grading.answers import RAISED
from vmkit.grading.checks import first_difference
from .probing import Probe


def made_up(rounds, link=None, what=None):
    """A history as plain data, rounds given as (pages_sent, pages_skipped, pages_dirtied, mbit) as the
    notebook's history() takes them, on `link` (Link's arguments; a fixed 1000 Mbit/s link by default)."""
    return {"what": what, "memory_pages": 1024, "link": link or {"mbit": 1000},
            "rounds": [[n, s, d, s * 4096 * 8 / (r * 1e6), r, 0.0, k] for n, (s, k, d, r) in enumerate(rounds, 1)],
            "sent_total": sum(s for s, _, _, _ in rounds)}


def said(answer):
    """An answer as the student reads it: a case their code raised on shows the error; numbers in decimal."""
    if isinstance(answer, dict) and set(answer) == {RAISED}:
        return f"your code raised {answer[RAISED]}"
    return repr(answer)


def fail(what, expected, got, hint=None):
    lines = [f"Check failed: {what}", f"  expected: {expected}", f"  got:      {got}"]
    raise AssertionError("\n".join(lines + ([f"  where to look: {hint}"] if hint else [])))


def answers_for(answers, cases):
    if not isinstance(answers, list) or len(answers) != len(cases):
        raise AssertionError(f"Check failed: expected {len(cases)} answers, got {repr(answers)[:200]}")
    return answers


def stops_judge(what, hint):
    """A judge for should_stop: each history's reason, the wrong ones listed (at most three)."""
    def judge(answers, expected, histories):
        wrong = [(h["what"], want, got) for h, want, got in zip(histories, expected, answers_for(answers, histories))
                 if got != want]
        if wrong:
            lines = [f"Check failed: {what}: {len(wrong)} of {len(histories)} histories wrong"]
            for case, want, got in wrong[:3]:
                lines.append(f"  should_stop on {case}\n      expected: {want!r}\n      got:      {said(got)}")
            if len(wrong) > 3:
                lines.append(f"  ... and {len(wrong) - 3} more")
            raise AssertionError("\n".join(lines + [f"  where to look: {hint}"]))
    return judge


def explain_facts(got, want, what):
    """migration_facts of a student's loop against the reference's, the first difference explained, in
    decimal (a downtime within rounding of the reference's counts as equal)."""
    for field in MIGRATION_FIELDS:
        g, e = got.get(field), want[field]
        if g == e or (isinstance(g, float) and isinstance(e, float) and abs(g - e) <= 1e-9 * max(1.0, abs(e))):
            continue
        name = field
        if isinstance(g, list) and isinstance(e, list):
            first, g, e = first_difference(g, e, "(no more rounds)")
            name = f"{field}, round {first + 1} of {len(want[field])} expected"
        fail(f"{what}: {name}", repr(e), repr(g), MIGRATION_HINTS.get(field))


def loops_judge(loop):
    """A judge for a loop's runs: each case's answer (loop_answer's data) against the reference loop's."""
    def judge(answers, expected, cases):
        for case, want, got in zip(cases, expected, answers_for(answers, cases)):
            what = f"{loop} on {case['what'] if isinstance(case, dict) else case[0]['what']}"
            if isinstance(got, dict) and RAISED in got:
                reached = "MigrationAborted, from the round or stop-and-copy that failed" if "aborted" in want \
                    else "a MigrationResult"
                fail(f"{what}: how it ended", reached, said(got),
                     "let MigrationAborted through: no retry, no except that swallows it" if "aborted" in want
                     else "the building blocks' errors and the budget's message say what went wrong")
            if "aborted" in want:
                if "aborted" not in got:
                    fail(f"{what}: how the failure reached the caller", "migration.MigrationAborted",
                         f"{loop} returned what m.stop_and_copy(...) returned",
                         "a migration whose link or destination failed cannot have finished: let the exception through")
                if got["aborted"]["rounds"] != want["aborted"]["rounds"]:
                    first, g, e = first_difference(got["aborted"]["rounds"], want["aborted"]["rounds"], "(no more rounds)")
                    fail(f"{what}: the rounds before the failure, round {first + 1} of "
                         f"{len(want['aborted']['rounds'])} expected", repr(e), repr(g),
                         "each round as [pages sent, pages skipped, pages dirty at its end, Mbit/s]")
                if got["aborted"]["source_runs_on"] != want["aborted"]["source_runs_on"]:
                    fail(f"{what}: the source runs on with nothing lost", "seq 1, 2, 3, ... continuing",
                         "a gap or a repeat", "a failed migration leaves the source as it was: touch nothing after")
                continue
            if "facts" not in got:
                fail(f"{what}: how it ended", "a MigrationResult", "migration.MigrationAborted",
                     "this migration does not fail: what made yours give up?")
            explain_facts(got["facts"], want["facts"], what)
    return judge


def downtime_judge(which=(0, 1, 2)):
    """A judge for estimated_downtime: [no page, the dirty pages, the downtime the stop-and-copy took]."""
    names = ("for no page", "for the dirty pages", "the downtime m.stop_and_copy(pages) took after")
    def judge(answers, expected, cases):
        for (case, rounds), want, got in zip(cases, expected, answers_for(answers, cases)):
            for i in which:
                g, e = got[i] if isinstance(got, list) and len(got) == 3 else got, want[i]
                if not (isinstance(g, float) and abs(g - e) <= 1e-9 * max(1.0, e)):
                    fail(f"estimated_downtime after round {rounds} {case['what']}, {names[i]}", repr(e), said(g),
                         "estimated_downtime must not change the migration" if i == 2 else
                         "the stop-and-copy goes at the link's full rate, m.link.mbit, not at the latest round's; "
                         "the vCPU and device state cross the link even when no page does")
    return judge


# Part 1: Xen's conditions
ADAPTIVE = {"mbit": 1000, "start_mbit": 100, "adaptive": True}
STOPS_VISIBLE = [
    made_up([(1024, 0, 12, 1000)], what="one full round"),
    made_up([(1024, 0, 12, 1000), (12, 0, 3, 1000)], what="a second round of 12 pages"),
    made_up([(1024, 0, 300, 1000), (280, 20, 250, 1000)], what="280 pages sent and 20 skipped"),
    made_up([(1024, 0, 60, 1000)] + [(60, 0, 60, 1000)] * 28, what="29 rounds"),
    made_up([(1024, 0, 900, 1000), (900, 0, 850, 1000), (850, 0, 820, 1000), (820, 0, 800, 1000)],
            what="3594 pages sent"),
    made_up([(1024, 0, 300, 100), (300, 0, 320, 1000), (320, 0, 330, 1000)], ADAPTIVE,
            what="more sent at the adaptive link's maximum"),
    made_up([(1024, 0, 1000, 1000), (1000, 0, 948, 1000), (948, 0, 100, 1000), (100, 0, 90, 1000)],
            what="exactly 3072 pages sent, 3x memory"),
]
STOPS_HIDDEN = [
    made_up([(1024, 0, 50, 1000), (50, 0, 50, 1000)], what="exactly 50 pages sent"),
    made_up([(1024, 0, 200, 1000), (49, 0, 200, 1000)], what="49 pages sent and none skipped"),
    made_up([(1024, 0, 50, 1000), (20, 30, 50, 1000)], what="20 pages sent and 30 skipped"),
    made_up([(200, 824, 824, 1000)], what="a first round that skipped most pages"),
    made_up([(1024, 0, 3, 1000), (30, 40, 3, 1000)], what="few pages left dirty after a full round"),
    made_up([(1024, 0, 900, 1000), (900, 0, 700, 1000), (700, 0, 448, 1000), (448, 0, 448, 1000)],
            what="exactly 3x memory sent, in four rounds"),
    made_up([(1024, 0, 900, 1000), (900, 0, 700, 1000), (700, 0, 449, 1000), (449, 0, 448, 1000)],
            what="one page more than 3x memory sent"),
    made_up([(1024, 0, 80, 100), (80, 0, 95, 300), (95, 0, 99, 600)], ADAPTIVE,
            what="more sent, on an adaptive link below its maximum"),
    made_up([(1024, 0, 80, 100), (80, 0, 95, 1000), (95, 0, 99, 1000)], ADAPTIVE,
            what="more sent, at the maximum of an adaptive link"),
    made_up([(1024, 0, 80, 100), (95, 0, 95, 1000), (95, 0, 99, 1000)], ADAPTIVE,
            what="as many sent as the round before, at the maximum of an adaptive link"),
    made_up([(1024, 0, 80, 100), (300, 0, 400, 1000), (250, 60, 500, 1000)], ADAPTIVE,
            what="more dirtied but fewer sent, at the maximum"),
    made_up([(1024, 0, 200, 1000), (200, 0, 300, 1000), (300, 0, 300, 1000)],
            what="more sent at full rate on a fixed link"),
    made_up([(1024, 0, 900, 1000)], ADAPTIVE, what="a first round at the adaptive link's maximum"),
    made_up([(1024, 0, 60, 1000)] + [(60, 0, 60, 1000)] * 27, what="28 rounds"),
    made_up([(1024, 0, 60, 1000)] + [(60, 0, 60, 1000)] * 27 + [(40, 0, 60, 1000)], what="29 rounds and few pages sent"),
    made_up([(1024, 0, 60, 100)] + [(60, 0, 60, 1000)] * 27 + [(61, 0, 60, 1000)], ADAPTIVE,
            what="29 rounds at the adaptive link's maximum, more sent"),
    made_up([(1024, 0, 1000, 1000), (1000, 0, 1000, 1000), (1000, 0, 40, 1000), (40, 0, 30, 1000)],
            what="3x memory and few pages sent"),
]
STOPS_ASKED = "vmkit.grading.lab6.stop_cases(vmkit.grading.yours(should_stop, 'should_stop'), cases)"
STOPS_HINT = ("the part's spec: the 50 counts pages sent plus pages skipped in the latest round (fewer than 50); "
              "more than 3x memory; 29 rounds; the rate limit only on an adaptive link at its maximum, when more "
              "pages were sent than the round before; Xen's order decides when several hold")

# Part 2: the loop. A case: the workload, the link, when the destination dies, and the should_stop
# the loop is handed (Xen's conditions unless it says otherwise).
PRECOPY_VISIBLE = [
    {"what": "a working set of 32 pages", "workload": "steady", "params": {"wws_pages": 32}, "link": {"mbit": 10000}},
    {"what": "a slow writer of random pages", "workload": "random", "params": {"pages": 700, "pace": 3000, "seed": 2},
     "link": {"mbit": 1000}},
]
PRECOPY_HIDDEN = [
    {"what": "a link that goes down in round 4", "workload": "steady", "params": {"wws_pages": 100},
     "link": {"mbit": 10000, "fail_after_pages": 1100}},
    {"what": "a link that goes down in round 11", "workload": "steady", "params": {"wws_pages": 120},
     "link": {"mbit": 10000, "fail_after_pages": 1500}},
    {"what": "a link that goes down during the stop-and-copy", "workload": "steady", "params": {"wws_pages": 32},
     "link": {"mbit": 10000, "fail_after_pages": 1040}},
    {"what": "a destination that dies in round 3", "workload": "random", "params": {"seed": 3, "pages": 200},
     "link": {"mbit": 10000}, "dies_at": 3},
    {"what": "a destination that dies in round 6", "workload": "steady", "params": {"wws_pages": 55},
     "link": {"mbit": 10000}, "dies_at": 6},
    {"what": "a destination that dies during the stop-and-copy", "workload": "steady", "params": {"wws_pages": 40},
     "link": {"mbit": 10000}, "dies_at": "stop-and-copy"},
    {"what": "a writer of random pages that trips the rate limit", "workload": "random",
     "params": {"seed": 11, "pages": 300}, "link": {"mbit": 1000, "start_mbit": 400, "adaptive": True}},
    {"what": "a working set of 55 pages, for 29 rounds", "workload": "steady", "params": {"wws_pages": 55},
     "link": {"mbit": 10000}},
    {"what": "a should_stop that stops after 4 rounds", "workload": "random", "params": {"seed": 6, "pages": 300},
     "link": {"mbit": 2000}, "stop": {"after": 4}},
    {"what": "Clark's conditions (vmkit.migration.CLARK.reason)", "workload": "steady", "params": {"wws_pages": 150},
     "link": {"mbit": 1000}, "stop": "clark"},
]
PRECOPY_ASKED = "vmkit.grading.lab6.precopy_cases(vmkit.grading.yours(precopy, 'precopy'), cases)"

# Part 3: the estimate
DOWNTIME_VISIBLE = [[{"what": "on a fixed 1000 Mbit/s link", "workload": "steady", "params": {"wws_pages": 32},
                      "link": {"mbit": 1000}}, 1]]
DOWNTIME_HIDDEN = [
    [{"what": "on an adaptive link", "workload": "random", "params": {"seed": 9, "pages": 150},
      "link": {"mbit": 2000, "start_mbit": 1000, "adaptive": True}}, 2],
    [{"what": "on an adaptive link that starts slow", "workload": "steady", "params": {"wws_pages": 200},
      "link": {"mbit": 5000, "start_mbit": 300, "adaptive": True}}, 3],
    [{"what": "of an idle guest on a link with a long latency", "workload": "idle", "params": {"work": 5000},
      "link": {"mbit": 1000, "latency_ms": 5.0}}, 1],
]
DOWNTIME_ASKED = "vmkit.grading.lab6.downtime_cases(vmkit.grading.yours(estimated_downtime, 'estimated_downtime'), cases)"

# Part 4: the target. A case: [migration case, target, the reference estimate's script].
TARGET_VISIBLE = [
    [{"what": "a slow writer, a 0.5 ms target", "workload": "steady", "params": {"wws_pages": 300, "pace": 4000, "work": 10},
      "link": {"mbit": 1000}}, 0.0005],
    [{"what": "a fast writer of random pages on a 3 Gbit/s link, a 0.1 ms target", "workload": "random",
      "params": {"seed": 5, "pages": 120}, "link": {"mbit": 3000}}, 0.0001],
]
TARGET_HIDDEN = [
    [{"what": "a working set rewritten faster than any round, a 0.1 ms target", "workload": "steady",
      "params": {"wws_pages": 100, "work": 2000}, "link": {"mbit": 10000}}, 0.0001],
    [{"what": "a slow writer and a target out of reach", "workload": "steady",
      "params": {"wws_pages": 200, "pace": 3000, "work": 20}, "link": {"mbit": 1000}}, 0.0002],
    [{"what": "a slow writer of random pages, a 0.5 ms target", "workload": "random",
      "params": {"seed": 4, "pages": 500, "pace": 3000, "work": 20}, "link": {"mbit": 1000}}, 0.0005],
    [{"what": "the diabolical writer, which never converges, a 1 ms target", "workload": "diabolical",
      "link": {"mbit": 10000}}, 0.001],
    [{"what": "a target met after round 1", "workload": "steady", "params": {"wws_pages": 20},
      "link": {"mbit": 10000}}, 0.001],
    [{"what": "a link that goes down in round 3", "workload": "steady", "params": {"wws_pages": 300, "pace": 4000,
      "work": 10}, "link": {"mbit": 1000, "fail_after_pages": 1250}}, 0.0005],
]
TARGET_ASKED = ("vmkit.grading.lab6.target_cases(vmkit.grading.yours(precopy_to_target, 'precopy_to_target'), cases, "
                "vmkit.grading.yours(estimated_downtime, 'estimated_downtime'))")
TARGET_HIDDEN_ASKED = ("vmkit.grading.lab6.target_cases(vmkit.grading.yours(precopy_to_target, 'precopy_to_target'), "
                       "cases)")


def scripted(cases):
    """Part 4's hidden cases, each with the reference estimate's script, for the kernel's grader's estimate."""
    return [[case, target, estimate_script(case, target)] for case, target in cases]


PROBES = {
    "part1_visible": Probe(STOPS_ASKED, STOPS_VISIBLE, xen_stops,
                           stops_judge("should_stop on made-up histories", STOPS_HINT)),
    "part1_hidden": Probe(STOPS_ASKED, STOPS_HIDDEN, xen_stops,
                          stops_judge("should_stop on histories at the edge of each condition", STOPS_HINT)),
    "part2_visible": Probe(PRECOPY_ASKED, PRECOPY_VISIBLE, xen_migrations, loops_judge("precopy")),
    "part2_hidden": Probe(PRECOPY_ASKED, PRECOPY_HIDDEN, xen_migrations, loops_judge("precopy"), timeout=120),
    "part3_visible": Probe(DOWNTIME_ASKED, DOWNTIME_VISIBLE, downtime_estimates, downtime_judge((1, 2))),
    "part3_hidden": Probe(DOWNTIME_ASKED, DOWNTIME_HIDDEN, downtime_estimates, downtime_judge()),
    "part4_visible": Probe(TARGET_ASKED, [case + [[]] for case in TARGET_VISIBLE], target_migrations,
                           loops_judge("precopy_to_target")),
    "part4_hidden": Probe(TARGET_HIDDEN_ASKED, lambda: scripted(TARGET_HIDDEN), target_migrations,
                          loops_judge("precopy_to_target"), timeout=120),
}
