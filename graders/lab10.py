"""Lab 10 (comparing the techniques): the reference answers (a run's predicted cost from its counts and
a table of prices, the techniques ranked by it, the event kind that costs a run most), the judge of a
student's workload (it ends properly, makes its system calls, and reverses the ordering under the
lab's prices), and the probes."""
import functools
import math
import random

from vmkit import compare
from vmkit.grading.checks import check, check_equal, shown

from .probing import Probe, all_of, lab_setup

FIXED = "fixed"                         # a price table's entry for the run's fixed part, paid once
TITLE_MOST = 40                         # a workload's title, in characters: each is an `out` of the report


def predicted_cost(counts, prices):
    """The cost a run's counts come to at `prices` ({kind: price per event}, and "fixed", paid once):
    a kind the prices lack costs nothing; a kind the counts lack, or count as None, counts 0."""
    total = prices.get(FIXED, 0)
    for kind, price in prices.items():
        if kind != FIXED:
            total += price * (counts.get(kind) or 0)
    return total


def predicted_ranking(runs, prices):
    """The techniques of `runs` ({technique: counts, or None where it did not run}) from cheapest to
    dearest at their own prices ({technique: prices}); those that did not run or have no prices are
    left out, and a tie keeps the order of `runs`."""
    priced = [t for t, counts in runs.items() if counts is not None and t in prices]
    return sorted(priced, key=lambda t: predicted_cost(runs[t], prices[t]))


def dominant_event(counts, prices):
    """The kind of event that costs the run most at `prices` (the fixed part is no event): the first
    in the order of `prices` among equals, None when no event costs anything."""
    best, most = None, 0
    for kind, price in prices.items():
        if kind == FIXED:
            continue
        charge = price * (counts.get(kind) or 0)
        if charge > most:
            best, most = kind, charge
    return best


FACTS = {f.__name__: f for f in (predicted_cost, predicted_ranking, dominant_event)}


# --- the cases ------------------------------------------------------------------------------------------
SETUP = lab_setup("lab10_comparing")            # COSTS, FASTER, SLOWER, EXAMPLE_*: the grader's own copies
LAB_PRICES = SETUP["COSTS"]
FASTER, SLOWER = SETUP["FASTER"], SETUP["SLOWER"]     # the ordering lesson 10's syscall shows, to reverse
COLUMNS_RUN = [c for c in compare.COLUMNS if c != "kvm"]
# a student's workload need not run under paravirt (a domU has no ports): part 3 asks the other columns
OWN_COLUMNS = [c for c in COLUMNS_RUN if c != "paravirt"]
# other prices the hidden checks try (round numbers of an imaginary machine, as the lab's are): with EPT's
# generation of exits, with translation that costs nothing, and a table that prices some kinds only
OTHER_PRICES = [
    {"native": {"instructions": 1, FIXED: 20_000},
     "trap-and-emulate": {"traps": 1800, "instructions": 1, FIXED: 30_000},
     "binary-translation": {"blocks": 2500, "traps": 1200, "instructions": 1, FIXED: 30_000},
     "paravirt": {"hypercalls": 700, "traps": 900, "instructions": 1, FIXED: 30_000},
     "hardware-assist": {"exits": 900, "instructions": 1, FIXED: 30_000},
     "hardware-assist/no-ept": {"exits": 900, "pf_exits": 4000, "instructions": 1, FIXED: 30_000},
     "hardware-assist/ept-on-demand": {"exits": 900, "walk_references": 40, "instructions": 1, FIXED: 30_000}},
    {"trap-and-emulate": {"instructions": 2, "trace_faults": 9000, "traps": 1500},
     "binary-translation": {"instructions": 2, "traps": 1500, "trace_callouts": 400},
     "hardware-assist/no-ept": {"instructions": 2, "exits": 3000}},
]


@functools.lru_cache(maxsize=None)
def _course_counts(rounds):
    """{(workload, column): counts} of vmkit.compare's own workloads (the course's text, run here)."""
    out = {}
    for name in compare.WORKLOADS:
        for column in COLUMNS_RUN:
            m = compare.measure(name, column, rounds)
            out[name, column] = m.counts() if m.ran else None
    return out


def _synthetic(rng, n):
    """Counts and prices the student has not seen: kinds absent from one or the other, None counts,
    a fixed part or none, fractional prices, zero counts and zero prices."""
    kinds = list(compare.COUNTS) + ["executed"]
    cases = []
    for i in range(n):
        counts = {k: rng.choice([0, rng.randrange(1, 50), rng.randrange(50, 100_000)])
                  for k in rng.sample(kinds, rng.randrange(0, len(kinds)))}
        if rng.random() < 0.3:
            counts["executed"] = None
        prices = {k: rng.choice([0, 1, 2, 0.5, 250, 1500, 4000, 12_733])
                  for k in rng.sample(kinds, rng.randrange(0, 6))}
        if rng.random() < 0.5:
            prices[FIXED] = rng.choice([0, 1000, 25_000])
        cases.append([counts, prices])
    return cases


def _cost_cases():
    rng = random.Random(10)
    real = _course_counts(20)
    cases = [[c, prices.get(col, {})] for (w, col), c in real.items() if c is not None
             for prices in [LAB_PRICES] + OTHER_PRICES]
    cases += [[{}, {"traps": 100}], [{"traps": 3}, {}], [{"traps": 3}, {FIXED: 7}], [{"executed": None}, {"executed": 5}],
              [{"traps": 0, "exits": 4}, {"traps": 1000, "exits": 0}]]
    return cases + _synthetic(rng, 300)


def _ranking_cases():
    rng = random.Random(11)
    real = _course_counts(20)
    cases = []
    for name in compare.WORKLOADS:
        runs = {col: real[name, col] for col in COLUMNS_RUN}
        for prices in [LAB_PRICES] + OTHER_PRICES:
            cases.append([runs, prices])
    # ties kept in the order of runs; runs that did not run; techniques without prices
    same = {"traps": 10}
    cases += [[{"b": same, "a": same, "c": {"traps": 1}}, {"a": {"traps": 1}, "b": {"traps": 1}, "c": {"traps": 1}}],
              [{"x": None, "y": {"exits": 2}, "z": {"exits": 1}}, {"x": {"exits": 1}, "y": {"exits": 1}}],
              [{"t": {"traps": 5}}, {}], [{}, {"t": {}}],
              [{"p": {"exits": 3}, "q": {"traps": 3}}, {"p": {"exits": 2, FIXED: 1}, "q": {"traps": 2, FIXED: 1}}]]
    for _ in range(40):
        names = rng.sample(["n", "t", "b", "p", "h", "e", "d"], rng.randrange(1, 7))
        runs = {t: (None if rng.random() < 0.15 else {"traps": rng.randrange(3), "exits": rng.randrange(3)}) for t in names}
        prices = {t: {"traps": rng.choice([1, 2]), "exits": rng.choice([1, 2])} for t in names if rng.random() < 0.8}
        cases.append([runs, prices])
    return cases


def _dominant_cases():
    rng = random.Random(12)
    real = _course_counts(20)
    cases = [[c, prices.get(col, {})] for (w, col), c in real.items() if c is not None
             for prices in [LAB_PRICES] + OTHER_PRICES]
    cases += [[{"traps": 2, "exits": 1}, {"exits": 2, "traps": 1}], [{"traps": 2, "exits": 1}, {"traps": 1, "exits": 2}],
              [{"traps": 5}, {FIXED: 10**9, "traps": 1}], [{"traps": 5}, {FIXED: 100}], [{"traps": 0}, {"traps": 9}],
              [{}, {}], [{"executed": None, "traps": 1}, {"executed": 3, "traps": 0}]]
    return cases + _synthetic(rng, 200)


# --- judges ---------------------------------------------------------------------------------------------
def _same_number(got, want):
    return (type(got) in (int, float) and not isinstance(got, bool)
            and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9))


def _judge_cases(what, same, describe, hint, show=3):
    def judge(answers, expected, cases):
        from vmkit.grading.checks import fail_cases
        from .probing import got_shown
        if not isinstance(answers, list) or len(answers) != len(expected):
            raise AssertionError(f"Check failed: {what}: expected {len(expected)} answers, got {shown(answers)[:200]}")
        wrong = [(describe(case), want, got_shown(got)) for case, want, got in zip(cases, expected, answers)
                 if not same(got, want)]
        fail_cases(what, wrong, len(cases), "cases", hint, show)
    return judge


def _abridged(value, limit=160):
    text = shown(value)
    return text if len(text) <= limit else text[:limit] + "…"


COST_HINT = ("every kind the prices name, times its count (a kind the run did not count counts 0, and so does "
             "a count of None), plus the fixed part once; a kind the prices do not name costs nothing")
RANKING_HINT = ("cheapest first, each technique at its own prices; leave out a technique that did not run (None) "
                "or has no prices; among equal costs keep the order in which the runs are listed")
DOMINANT_HINT = ("the kind whose count times price is largest; the fixed part is not an event; among equal charges "
                 "the first in the order of the prices; None when no event costs anything")

cost_judge = _judge_cases("predicted_cost", _same_number,
                          lambda c: f"predicted_cost({_abridged(c[0])}, {_abridged(c[1])})", COST_HINT)
ranking_judge = _judge_cases("predicted_ranking", lambda got, want: got == want,
                             lambda c: f"predicted_ranking({_abridged(c[0])}, {_abridged(c[1])})", RANKING_HINT)
dominant_judge = _judge_cases("dominant_event", lambda got, want: got == want,
                              lambda c: f"dominant_event({_abridged(c[0])}, {_abridged(c[1])})", DOMINANT_HINT)


def _expected_costs(cases):
    return [predicted_cost(*case) for case in cases]


def _expected_rankings(cases):
    return [predicted_ranking(*case) for case in cases]


def _expected_dominant(cases):
    return [dominant_event(*case) for case in cases]


def workload_judge(answers, expected, cases):
    """Part 2: for each ROUNDS, the workload ends properly natively and under both techniques (its title
    of at most TITLE_MOST characters, ": ", ROUNDS; exit code 1), makes at least ROUNDS system calls from
    ring 3, and costs less under SLOWER than under FASTER at the lab's prices: the ordering reversed."""
    check(isinstance(answers, list) and len(answers) == len(cases), "one run per ROUNDS", got=_abridged(answers))
    for rounds, facts in zip(cases, answers):
        check(isinstance(facts, dict) and "error" not in facts,
              f"your workload runs on the bare machine with ROUNDS = {rounds}",
              got=facts.get("error") if isinstance(facts, dict) else _abridged(facts))
        for technique in ("native", FASTER, SLOWER):
            run = facts["runs"].get(technique, {})
            check("error" not in run, f"your workload runs under {technique} with ROUNDS = {rounds}",
                  got=run.get("error"), hint="read vmkit.compare's workloads (vmkit/guests/cmp_*.asm): what they define "
                                            "and how they end")
            serial = run.get("serial", "")
            check(serial.endswith(f": {rounds}\n") and serial.count("\n") == 1 and "unexpected fault" not in serial
                  and len(serial) <= TITLE_MOST + len(f": {rounds}\n"),
                  f"your workload under {technique} with ROUNDS = {rounds} prints its title (at most {TITLE_MOST} "
                  f"characters) and ROUNDS, once",
                  expected=f"'<title>: {rounds}\\n'", got=repr(serial),
                  hint="`workload` returns ROUNDS in EAX to the kernel (or its system call jumps to `finish` with "
                       "ROUNDS in EAX); 'kernel: unexpected fault' means a vector the workload did not name took over")
            check_equal(run.get("exit_code"), 1, what=f"the exit code under {technique} with ROUNDS = {rounds}",
                        hint="the kernel powers off through pv_ops.power_off after it printed the result")
        check(facts.get("system_calls", 0) >= rounds,
              f"your workload makes at least ROUNDS system calls from ring 3 with ROUNDS = {rounds}",
              expected=f"at least {rounds}", got=facts.get("system_calls"),
              hint="int 0x80 from ring 3, as cmp_syscall.asm's user program makes them")
        fast = predicted_cost(facts["runs"][FASTER]["counts"], LAB_PRICES[FASTER])
        slow = predicted_cost(facts["runs"][SLOWER]["counts"], LAB_PRICES[SLOWER])
        check(slow < fast, f"at the lab's COSTS with ROUNDS = {rounds}, {SLOWER} costs less than {FASTER}",
              expected=f"{SLOWER} < {FASTER}", got=f"{SLOWER} {slow:,} against {FASTER} {fast:,}",
              hint="which events does each technique take for one round of your workload, and what does each cost "
                   "at COSTS? The reversal must hold for every ROUNDS from 10 to 1000, not only the one you tried")


def own_dominant_judge(answers, expected, cases):
    """Part 3, the student's own workload: dominant_event on the counts its runs produced, recomputed here
    from the same counts."""
    check(isinstance(answers, dict) and isinstance(answers.get("facts"), dict), "your workload's runs came back",
          got=_abridged(answers))
    facts = answers["facts"]
    check("error" not in facts, f"your workload runs with ROUNDS = {cases['rounds']}", got=facts.get("error"),
          hint="part 2's checks say what went wrong")
    for technique, prices in cases["prices"].items():
        run = facts["runs"].get(technique, {})
        check("counts" in run, f"your workload runs under {technique}", got=run.get("error"))
        want = dominant_event(run["counts"], prices)
        got = answers["answers"].get(technique)
        check(got == [want], f"dominant_event on your workload's counts under {technique}, at {_abridged(prices)}",
              expected=[want], got=got, hint=DOMINANT_HINT)


# --- the probes -----------------------------------------------------------------------------------------
COST_ASKED = "vmkit.grading.answer_cases(vmkit.grading.yours(predicted_cost, 'predicted_cost'), cases)"
RANKING_ASKED = "vmkit.grading.answer_cases(vmkit.grading.yours(predicted_ranking, 'predicted_ranking'), cases)"
DOMINANT_ASKED = "vmkit.grading.answer_cases(vmkit.grading.yours(dominant_event, 'dominant_event'), cases)"
WORKLOAD_ASKED = (f"[vmkit.grading.lab10.workload_facts(WORKLOAD, {['native', FASTER, SLOWER]!r}, rounds) "
                  f"for rounds in cases]")
OWN_ASKED = ("vmkit.grading.lab10.answers_on_runs(vmkit.grading.yours(dominant_event, 'dominant_event'), WORKLOAD, "
             "cases['rounds'], cases['prices'])")


def _visible_costs():
    return [[SETUP["EXAMPLE_COUNTS"], SETUP["EXAMPLE_PRICES"]]]


def _visible_rankings():
    return [[SETUP["EXAMPLE_RUNS"], LAB_PRICES]]


def _course_dominant_visible():
    m = compare.measure("syscall", SLOWER, 50)
    return [[m.counts(), LAB_PRICES[SLOWER]]]


PROBES = {
    "part1_visible": Probe(
        {"cost": COST_ASKED, "ranking": RANKING_ASKED},
        lambda: {"cost": _visible_costs(), "ranking": _visible_rankings()},
        {"cost": _expected_costs, "ranking": _expected_rankings},
        all_of(cost=cost_judge, ranking=ranking_judge)),
    "part1_hidden": Probe(
        {"cost": COST_ASKED, "ranking": RANKING_ASKED},
        lambda: {"cost": _cost_cases(), "ranking": _ranking_cases()},
        {"cost": _expected_costs, "ranking": _expected_rankings},
        all_of(cost=cost_judge, ranking=ranking_judge), timeout=60),
    "part2_visible": Probe(WORKLOAD_ASKED, [20], lambda cases: None, workload_judge, clean=("WORKLOAD",)),
    "part2_hidden": Probe(WORKLOAD_ASKED, [10, 100, 333, 1000], lambda cases: None, workload_judge, timeout=60,
                          clean=("WORKLOAD",)),
    "part3_visible": Probe(
        {"own": OWN_ASKED, "course": DOMINANT_ASKED},
        lambda: {"own": {"rounds": 50, "prices": {SLOWER: LAB_PRICES[SLOWER]}}, "course": _course_dominant_visible()},
        {"own": lambda cases: None, "course": _expected_dominant},
        all_of(own=own_dominant_judge, course=dominant_judge)),
    "part3_hidden": Probe(
        {"own": OWN_ASKED, "own_other": OWN_ASKED, "course": DOMINANT_ASKED},
        lambda: {"own": {"rounds": 100, "prices": {c: LAB_PRICES[c] for c in OWN_COLUMNS}},
                 "own_other": {"rounds": 37, "prices": {c: p for c, p in OTHER_PRICES[0].items() if c in OWN_COLUMNS}},
                 "course": _dominant_cases()},
        {"own": lambda cases: None, "own_other": lambda cases: None, "course": _expected_dominant},
        all_of(own=own_dominant_judge, own_other=own_dominant_judge, course=dominant_judge), timeout=60),
}
