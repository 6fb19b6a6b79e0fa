"""Lab 6 (live migration): the reference answers of parts 1 to 3 (Xen's stop conditions, the pre-copy
loop, the downtime estimate), the reference policy part 4's policies of the students' own design are
judged against, the migrations they make of the lab's cases, and each graded cell's probe."""
from vmkit.grading.lab6 import (MIGRATION_FIELDS, MIGRATION_HINTS, after_rounds, loop_answer, migration_facts,
                                round_facts, stop_after)
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
    """Part 4's reference policy (the students design their own; this one sets the bounds they are judged
    by): every round sends all the pages still dirty; stop when the estimate fits `target` seconds, when it
    did not shrink since the round before (the writable working set is reached: more rounds only cost
    pages), or after Xen's 29 rounds."""
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


REFERENCE_RUNS = {}         # the reference policy's runs, by case: (loop_answer's data, the estimate as data)


def reference_policy_run(case, target):
    """The reference policy on `case` with the reference estimate: (loop_answer's data, [seconds for no
    page, seconds per page], the estimate as data for the kernel's given_estimate: the vCPU and device
    state keep their size all along), once per case."""
    key = repr([case, target])
    if key not in REFERENCE_RUNS:
        seen = []
        def policy(m, target):
            seen.append(m)
            return precopy_to_target(m, target)
        answer = loop_answer(policy, case, target)
        m = seen[0]
        fixed = stop_and_copy_seconds(m, [])
        REFERENCE_RUNS[key] = answer, [fixed, (stop_and_copy_seconds(m, list(range(m.memory_pages))) - fixed)
                                       / m.memory_pages]
    return REFERENCE_RUNS[key]


def target_migrations(cases):
    """The reference policy on each [case, target, ...]: loop_answer's plain data."""
    return [reference_policy_run(case, target)[0] for case, target, *_ in cases]


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
                         "the part's spec: the pause goes at the link's full rate, whatever rate the rounds went at; "
                         "the latency and the vCPU and device state count even when no page crosses")
    return judge


# Part 1: Xen's conditions. The visible histories hold each condition, each at its edge ("fewer than 50",
# "more than 3x", "more than the round before", an adaptive link only) and two that hold at once.
ADAPTIVE = {"mbit": 1000, "start_mbit": 100, "adaptive": True}
STOPS_VISIBLE = [
    made_up([(1024, 0, 12, 1000)], what="one full round"),
    made_up([(1024, 0, 12, 1000), (12, 0, 3, 1000)], what="a second round of 12 pages"),
    made_up([(1024, 0, 50, 1000), (45, 5, 50, 1000)], what="45 pages sent and 5 skipped"),
    made_up([(1024, 0, 300, 1000), (280, 20, 250, 1000)], what="280 pages sent and 20 skipped"),
    made_up([(1024, 0, 60, 1000)] + [(60, 0, 60, 1000)] * 28, what="29 rounds"),
    made_up([(1024, 0, 60, 1000)] + [(60, 0, 60, 1000)] * 27 + [(30, 0, 60, 1000)],
            what="29 rounds, the latest sending 30 pages"),
    made_up([(1024, 0, 900, 1000), (900, 0, 850, 1000), (850, 0, 820, 1000), (820, 0, 800, 1000)],
            what="3594 pages sent"),
    made_up([(1024, 0, 1000, 1000), (1000, 0, 948, 1000), (948, 0, 100, 1000), (100, 0, 90, 1000)],
            what="exactly 3072 pages sent, 3x memory"),
    made_up([(1024, 0, 300, 100), (300, 0, 320, 1000), (320, 0, 330, 1000)], ADAPTIVE,
            what="more sent at the adaptive link's maximum"),
    made_up([(1024, 0, 300, 1000), (300, 0, 320, 1000), (320, 0, 330, 1000)],
            what="more sent at full rate, on a fixed link"),
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
STOPS_HINT = ("the part's spec, rule by rule: what the 50 counts and in which round; \"more than\" is not \"at "
              "least\"; the rate limit only on an adaptive link at its maximum, against what the round before "
              "sent; Xen's order when several hold")

# Part 2: the loop. A case: the workload, the link, when the destination dies, and the should_stop
# the loop is handed (Xen's conditions unless it says otherwise).
PRECOPY_VISIBLE = [
    {"what": "a working set of 32 pages", "workload": "steady", "params": {"wws_pages": 32}, "link": {"mbit": 10000}},
    {"what": "a slow writer of random pages", "workload": "random", "params": {"pages": 700, "pace": 3000, "seed": 2},
     "link": {"mbit": 1000}},
    {"what": "a should_stop that stops after 3 rounds", "workload": "steady", "params": {"wws_pages": 100},
     "link": {"mbit": 10000}, "stop": {"after": 3}},
    {"what": "a link that goes down in round 3", "workload": "steady", "params": {"wws_pages": 100},
     "link": {"mbit": 10000, "fail_after_pages": 1050}},
]
PRECOPY_HIDDEN = [
    {"what": "a link that goes down during the stop-and-copy", "workload": "steady", "params": {"wws_pages": 32},
     "link": {"mbit": 10000, "fail_after_pages": 1040}},
    {"what": "a destination that dies during the stop-and-copy", "workload": "steady", "params": {"wws_pages": 40},
     "link": {"mbit": 10000}, "dies_at": "stop-and-copy"},
    {"what": "a writer of random pages that trips the rate limit", "workload": "random",
     "params": {"seed": 11, "pages": 300}, "link": {"mbit": 1000, "start_mbit": 400, "adaptive": True}},
    {"what": "a working set of 55 pages, for 29 rounds", "workload": "steady", "params": {"wws_pages": 55},
     "link": {"mbit": 10000}},
    {"what": "a should_stop that stops after round 1", "workload": "steady", "params": {"wws_pages": 40},
     "link": {"mbit": 10000}, "stop": {"after": 1}},
    {"what": "Clark's conditions (vmkit.migration.CLARK.reason)", "workload": "steady", "params": {"wws_pages": 150},
     "link": {"mbit": 1000}, "stop": "clark"},
]
PRECOPY_ASKED = "vmkit.grading.lab6.precopy_cases(vmkit.grading.yours(precopy, 'precopy'), cases)"

# Part 3: the estimate. A case: [migration case, the rounds sent before the estimate].
DOWNTIME_VISIBLE = [
    [{"what": "on an adaptive link whose latest round went below its maximum", "workload": "random",
      "params": {"seed": 9, "pages": 150}, "link": {"mbit": 2000, "start_mbit": 2000, "adaptive": True}}, 2],
]
DOWNTIME_HIDDEN = [
    [{"what": "on an adaptive link that starts slow", "workload": "steady", "params": {"wws_pages": 200},
      "link": {"mbit": 5000, "start_mbit": 300, "adaptive": True}}, 2],
    [{"what": "on a fixed 1000 Mbit/s link", "workload": "steady", "params": {"wws_pages": 32},
      "link": {"mbit": 1000}}, 1],
    [{"what": "of an idle guest on a link with a long latency", "workload": "idle", "params": {"work": 5000},
      "link": {"mbit": 10000, "latency_ms": 1.5}}, 1],
]
DOWNTIME_ASKED = "vmkit.grading.lab6.downtime_cases(vmkit.grading.yours(estimated_downtime, 'estimated_downtime'), cases)"

# Part 4: a pre-copy policy of the student's design. A case: [migration case, target]. Judged against the
# reference policy (precopy_to_target above) on the same case: verified; the downtime within the target
# where the reference meets it, else within DOWNTIME_SLACK of the reference's; the pages sent within
# PAGES_SLACK of the reference's; a failure of the link or the destination reaching the caller. The
# failures come where every policy meets them: the link drops before one copy of memory has crossed,
# the destination dies at the switch-over.
PAGES_SLACK = 1.25
DOWNTIME_SLACK = 1.25
TARGET_VISIBLE = [
    [{"what": "a slow writer, a 0.5 ms target", "workload": "steady", "params": {"wws_pages": 300, "pace": 4000, "work": 10},
      "link": {"mbit": 1000}}, 0.0005],
    [{"what": "a fast writer of random pages on a 3 Gbit/s link, a 0.1 ms target (out of reach)", "workload": "random",
      "params": {"seed": 5, "pages": 120}, "link": {"mbit": 3000}}, 0.0001],
    [{"what": "a link that goes down in round 1", "workload": "steady", "params": {"wws_pages": 64},
      "link": {"mbit": 10000, "fail_after_pages": 500}}, 0.0005],
]
TARGET_HIDDEN = [
    [{"what": "a slow writer and a target out of reach", "workload": "steady",
      "params": {"wws_pages": 200, "pace": 3000, "work": 20}, "link": {"mbit": 1000}}, 0.0002],
    [{"what": "a slow writer of random pages, a 0.5 ms target", "workload": "random",
      "params": {"seed": 4, "pages": 500, "pace": 3000, "work": 20}, "link": {"mbit": 1000}}, 0.0005],
    [{"what": "a working set rewritten faster than any round, a 0.1 ms target", "workload": "steady",
      "params": {"wws_pages": 100, "work": 2000}, "link": {"mbit": 10000}}, 0.0001],
    [{"what": "the diabolical writer, which never converges, a 1 ms target", "workload": "diabolical",
      "link": {"mbit": 10000}}, 0.001],
    [{"what": "a link that goes down in round 1", "workload": "random", "params": {"seed": 8, "pages": 200},
      "link": {"mbit": 2000, "fail_after_pages": 700}}, 0.0005],
    [{"what": "a destination that dies at the switch-over", "workload": "steady", "params": {"wws_pages": 300,
      "pace": 4000, "work": 10}, "link": {"mbit": 1000}, "dies_at": "stop-and-copy"}, 0.0005],
]
TARGET_ASKED = ("vmkit.grading.lab6.target_cases(vmkit.grading.yours(precopy_to_target, 'precopy_to_target'), cases, "
                "vmkit.grading.yours(estimated_downtime, 'estimated_downtime'))")
TARGET_HIDDEN_ASKED = ("vmkit.grading.lab6.target_cases(vmkit.grading.yours(precopy_to_target, 'precopy_to_target'), "
                       "cases)")


def with_estimates(cases):
    """Part 4's hidden cases, each with the reference estimate as data, for the kernel's given_estimate."""
    return [[case, target, reference_policy_run(case, target)[1]] for case, target in cases]


def bounds(want, target):
    """What a policy must do where the reference did `want` (loop_answer's data): (the downtime it may
    take, the pages it may send)."""
    facts = want["facts"]
    downtime = target if facts["downtime"] <= target else DOWNTIME_SLACK * facts["downtime"]
    return downtime, int(PAGES_SLACK * facts["pages_sent"])


def policy_judge(answers, expected, cases):
    """A judge for part 4: each case's answer (loop_answer's data) against the reference policy's bounds."""
    for (case, target, *_), want, got in zip(cases, expected, answers_for(answers, cases)):
        what = f"precopy_to_target on {case['what']}"
        if isinstance(got, dict) and RAISED in got:
            fail(f"{what}: how it ended", "MigrationAborted, from the round or stop-and-copy that failed"
                 if "aborted" in want else "a MigrationResult", said(got),
                 "a failed migration reaches the caller as it failed" if "aborted" in want else
                 "the building blocks' errors and the budget's message say what went wrong")
        if "aborted" in want:
            if "aborted" not in got:
                fail(f"{what}: how the failure reached the caller", "migration.MigrationAborted",
                     "a MigrationResult", "a migration whose link or destination failed cannot have finished")
            if not got["aborted"]["source_runs_on"]:
                fail(f"{what}: the source runs on with nothing lost", "seq 1, 2, 3, ... continuing",
                     "a gap or a repeat", "a failed migration leaves the source as it was: touch nothing after")
            continue
        if "facts" not in got:
            fail(f"{what}: how it ended", "a MigrationResult", "migration.MigrationAborted",
                 "this migration does not fail: what made yours give up?")
        facts = got["facts"]
        for field, rule in (("memory_verified", "the destination's memory equals the source's at the switch-over: "
                             "every page the guest wrote after its last copy crossed must cross while it is paused"),
                            ("output_continuous", "the peer sees seq 1, 2, 3, ... across the switch-over")):
            if facts.get(field) is not True:
                fail(f"{what}: {field.replace('_', ' ')}", True, repr(facts.get(field)), rule)
        downtime, pages = bounds(want, target)
        reference = want["facts"]
        if not facts["downtime"] <= downtime + 1e-12:
            met = reference["downtime"] <= target
            fail(f"{what}: the downtime", f"at most {downtime * 1000:.3f} ms (" + (
                f"the target; the reference policy met it with {reference['downtime'] * 1000:.3f} ms)" if met else
                f"{DOWNTIME_SLACK:g}x the reference policy's {reference['downtime'] * 1000:.3f} ms: no policy meets "
                f"the target here)"), f"{facts['downtime'] * 1000:.3f} ms after {len(facts['rounds'])} rounds",
                 "stop once what is left fits the target; where it never will, stop once more rounds no longer "
                 "make the pause shorter" if met else "more rounds no longer pay, but stopping too early leaves "
                 "more behind than need be")
        if not facts["pages_sent"] <= pages:
            fail(f"{what}: the pages sent", f"at most {pages} ({PAGES_SLACK:g}x the reference policy's "
                 f"{reference['pages_sent']})", f"{facts['pages_sent']} in {len(facts['rounds'])} rounds",
                 "a round that cannot make the pause shorter, or a page the guest will dirty again before the "
                 "switch-over, costs pages for nothing")


PROBES = {
    "part1_visible": Probe(STOPS_ASKED, STOPS_VISIBLE, xen_stops,
                           stops_judge("should_stop on made-up histories", STOPS_HINT)),
    "part1_hidden": Probe(STOPS_ASKED, STOPS_HIDDEN, xen_stops,
                          stops_judge("should_stop on histories at the edge of each condition", STOPS_HINT)),
    "part2_visible": Probe(PRECOPY_ASKED, PRECOPY_VISIBLE, xen_migrations, loops_judge("precopy")),
    "part2_hidden": Probe(PRECOPY_ASKED, PRECOPY_HIDDEN, xen_migrations, loops_judge("precopy"), timeout=120),
    "part3_visible": Probe(DOWNTIME_ASKED, DOWNTIME_VISIBLE, downtime_estimates, downtime_judge()),
    "part3_hidden": Probe(DOWNTIME_ASKED, DOWNTIME_HIDDEN, downtime_estimates, downtime_judge()),
    "part4_visible": Probe(TARGET_ASKED, [case + [None] for case in TARGET_VISIBLE], target_migrations,
                           policy_judge),
    "part4_hidden": Probe(TARGET_HIDDEN_ASKED, lambda: with_estimates(TARGET_HIDDEN), target_migrations,
                          policy_judge, timeout=120),
}
