"""Lab 7 (sVirt): vmkit.isolation's MCS levels and dominance, libvirt's category allocator and SELinux's
decisions, on the lab's cases, and each graded cell's probe."""
import random

from vmkit.grading.answers import RAISED
from vmkit.isolation import POLICY, Level, McsAllocator
from .probing import Probe


def mcs_levels(texts, pairs):
    """Each level parsed as [sensitivity, sorted categories], and whether a dominates b for each pair."""
    return {"levels": [[level.sensitivity, sorted(level.categories)] for level in map(Level.parse, texts)],
            "dominates": [Level.parse(a).dominates(Level.parse(b)) for a, b in pairs]}


def mcs_allocations(runs):
    """For each run [seed, count, first, last, reserved]: the labels a fresh allocator with those pairs
    reserved hands out, in order, ending with "RuntimeError" where every pair is in use."""
    results = []
    for seed, count, first, last, reserved in runs:
        allocator = McsAllocator(seed, first, last)
        for level in reserved:
            allocator.reserve(level)
        labels = []
        for _ in range(count):
            try:
                labels.append(str(allocator.allocate()))
            except RuntimeError:
                labels.append("RuntimeError")
                break
        results.append(labels)
    return results


def svirt_decisions(cases):
    """The security server's verdicts (vmkit.isolation.POLICY) for each [scontext, tcontext, tclass, perms]:
    {perm: allowed | te | mcs}."""
    return [dict(POLICY.decide(s, t, tclass, perms).verdicts) for s, t, tclass, perms in cases]


FACTS = {f.__name__: f for f in (mcs_levels, mcs_allocations, svirt_decisions)}


# --- the probes: each graded cell's cases, asked of the student's kernel and decided here -------------
# Messages show categories and counts in decimal, as the lab and SELinux write them.

def said(answer):
    if isinstance(answer, dict) and set(answer) == {RAISED}:
        return f"your code raised {answer[RAISED]}"
    return repr(answer)


def listed(what, describe, hint=None, show=3):
    """A judge: the answers equal the expected ones case by case, the wrong ones listed (`describe(case)`
    says a case in words)."""
    def judge(answers, expected, cases):
        if not isinstance(answers, list) or len(answers) != len(expected):
            raise AssertionError(f"Check failed: {what}: expected {len(expected)} answers, got {repr(answers)[:200]}")
        wrong = [(describe(case), want, got) for case, want, got in zip(cases, expected, answers) if got != want]
        if not wrong:
            return
        lines = [f"Check failed: {what}: {len(wrong)} of {len(cases)} cases wrong"]
        for case, want, got in wrong[:show]:
            lines.append(f"  {case}\n      expected: {want!r}\n      got:      {said(got)}")
        if len(wrong) > show:
            lines.append(f"  ... and {len(wrong) - show} more")
        raise AssertionError("\n".join(lines + ([f"  where to look: {hint}"] if hint else [])))
    return judge


# Part 1: levels and dominance
LEVELS_ASKED = ("vmkit.grading.lab7.level_cases(vmkit.grading.yours(parse_level, 'parse_level'), "
                "vmkit.grading.yours(dominates, 'dominates'), cases['texts'], cases['pairs'])")


def levels_judge(what, parse_hint, dominates_hint):
    parsed = listed(f"parse_level on {what}", lambda text: f"parse_level({text!r})", parse_hint)
    dominated = listed(f"dominates on {what}", lambda pair: f"dominates({pair[0]!r}, {pair[1]!r})", dominates_hint)
    def judge(answers, expected, cases):
        if not isinstance(answers, dict):
            raise AssertionError(f"Check failed: the answers came back as {repr(answers)[:200]}")
        parsed(answers.get("levels"), expected["levels"], cases["texts"])
        dominated(answers.get("dominates"), expected["dominates"], cases["pairs"])
    return judge


def hidden_levels():
    rng = random.Random(7)
    def level():
        cats = sorted(rng.sample(range(1024), rng.choice([0, 1, 2, 2, 3])))
        return f"s{rng.choice([0, 0, 1, 2])}" + (":" + ",".join(f"c{c}" for c in cats) if cats else "")
    texts = ["s1:c0.c2,c4.c6", "s2", "s0:c1023", "s15:c3,c5.c5,c900.c903"] + [level() for _ in range(40)]
    pairs = [("s1:c1", "s0:c1"), ("s0:c1", "s1:c1"), ("s1", "s0:c1"), ("s2:c1.c9", "s1:c3,c4"),
             ("s0:c1.c5", "s0:c2,c3"), ("s0:c2,c3", "s0:c1.c5")]
    pairs += [(level(), level()) for _ in range(150)]
    pairs += [(a, a.split(":")[0] + b[len(b.split(":")[0]):]) for a, b in pairs[6:60]]    # same sensitivity
    return {"texts": texts, "pairs": [list(pair) for pair in pairs]}


def levels_expected(cases):
    return mcs_levels(cases["texts"], cases["pairs"])


LEVELS_VISIBLE = {"texts": ["s0:c12,c34", "s0", "s0:c1.c3,c7", "s0:c0.c1023"],
                  "pairs": [["s0:c12,c34", "s0:c12,c34"], ["s0:c12,c34", "s0:c12"], ["s0:c12", "s0:c12,c34"],
                            ["s0:c12,c34", "s0:c12,c99"], ["s0:c0.c1023", "s0:c56,c78"], ["s0:c5,c9", "s0"]]}
PARSE_HINT = "the part's spec: a level's syntax, as SELinux's policy language writes it (a range cA.cB holds both ends)"
DOMINATES_HINT = "the part's spec: dominance compares both the sensitivity and the categories (equal counts)"

# Part 2: the allocator
ALLOCATIONS_ASKED = "vmkit.grading.lab7.allocation_cases(vmkit.grading.yours(allocate_pair, 'allocate_pair'), cases)"
ALLOCATIONS_VISIBLE = [[1, 5, 0, 1023, []], [3, 7, 0, 3, []]]
ALLOCATIONS_HIDDEN = [[2009, 40, 0, 1023, []], [11, 7, 0, 3, []], [12, 11, 5, 9, ["s0:c5,c9", "s0:c6,c7"]],
                      [13, 3, 100, 101, []], [14, 30, 0, 7, ["s0:c0,c1", "s0:c2,c3", "s0:c4,c5"]], [15, 200, 500, 520, []]]


def allocations_expected(runs):
    """For each run: [the labels, in_use after (the reserved pairs and every label handed out), sorted]."""
    return [[labels, sorted(set(reserved) | {label for label in labels if label != "RuntimeError"})]
            for labels, (_, _, _, _, reserved) in zip(mcs_allocations(runs), runs)]


def describe_run(run):
    seed, count, first, last, reserved = run
    return (f"{count} calls with random.Random({seed}), categories c{first}..c{last}"
            + (f", {reserved} in use" if reserved else "") + ": [labels, in_use after]")


ALLOCATIONS_HINT = "the part's spec, step by step: both draws every time, in order, the range's first category added"


def allocations_visible(answers, expected, runs):
    """The visible cell's checks: five labels from random.Random(1) in order; the six pairs of c0..c3 in
    any order, then RuntimeError."""
    listed("five labels from random.Random(1)", describe_run, ALLOCATIONS_HINT)(answers[:1], expected[:1], runs[:1])
    got = answers[1] if isinstance(answers, list) and len(answers) == 2 else answers
    ok = (isinstance(got, list) and len(got) == 2 and isinstance(got[0], list) and len(got[0]) == 7
          and got[0][6] == "RuntimeError" and sorted(map(str, got[0][:6])) == sorted(expected[1][0][:6]))
    if not ok:
        raise AssertionError(f"Check failed: seven labels from the categories c0..c3: every pair once, then RuntimeError\n"
                             f"  expected: {sorted(expected[1][0][:6])!r} in any order, then 'RuntimeError'\n"
                             f"  got:      {said(got[0] if isinstance(got, list) and got else got)}\n"
                             f"  where to look: four categories make 4*3/2 = 6 pairs; redraw when the two are equal "
                             f"or the pair is in use")


# Part 3: the decision
DECISIONS_ASKED = "vmkit.grading.lab7.decision_cases(vmkit.grading.yours(decide, 'decide'), cases)"
VM1, VM2 = "system_u:system_r:svirt_t:s0:c12,c34", "system_u:system_r:svirt_t:s0:c56,c78"
IMG1, IMG2 = "system_u:object_r:svirt_image_t:s0:c12,c34", "system_u:object_r:svirt_image_t:s0:c56,c78"
ISO, HOME = "system_u:object_r:virt_content_t:s0", "unconfined_u:object_r:user_home_t:s0"
DECISIONS_VISIBLE = [[VM1, IMG1, "file", ["open", "read", "write"]], [VM1, IMG2, "file", ["open", "read", "write"]],
                     [VM1, IMG2, "file", ["map", "write"]], [VM1, ISO, "file", ["open", "read"]],
                     [VM1, ISO, "file", ["write"]], [VM1, HOME, "file", ["open", "read"]],
                     [VM1, VM2, "process", ["signal"]], [VM1, VM1, "process", ["signal"]]]


def hidden_decisions():
    rng = random.Random(77)
    subjects = ["system_u:system_r:svirt_t:s0:c3,c700", "system_u:system_r:svirt_t:s0:c3",
                "system_u:system_r:svirt_t:s0:c0.c1023", "system_u:system_r:virtd_t:s0-s0:c0.c1023",
                "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023", "unconfined_u:unconfined_r:unconfined_t:s0",
                "system_u:system_r:virtd_t:s0", "system_u:system_r:svirt_t:s0-s0:c3,c700"]
    objects = ["system_u:object_r:svirt_image_t:s0:c3,c700", "system_u:object_r:svirt_image_t:s0:c3",
               "system_u:object_r:svirt_image_t:s0:c9,c700", "system_u:object_r:svirt_image_t:s0-s0:c3,c700",
               "system_u:object_r:virt_image_t:s0", "system_u:object_r:virt_content_t:s0",
               "system_u:object_r:virt_content_t:s0:c3", "unconfined_u:object_r:user_home_t:s0",
               "system_u:object_r:shadow_t:s0"]
    processes = ["system_u:system_r:svirt_t:s0:c3,c700", "system_u:system_r:svirt_t:s0:c9,c700",
                 "system_u:system_r:svirt_t:s0:c700", "system_u:system_r:svirt_t:s0-s0:c9,c700"]
    permissions = {"file": ["ioctl", "read", "write", "create", "getattr", "setattr", "lock", "relabelfrom",
                            "relabelto", "append", "map", "unlink", "link", "rename", "execute", "open"],
                   "process": ["fork", "transition", "sigchld", "sigkill", "sigstop", "signull", "signal", "ptrace",
                               "getsched", "setsched", "getattr", "dyntransition"]}
    cases = []
    for _ in range(400):
        subject = rng.choice(subjects)
        if rng.random() < 0.7:
            target, tclass = rng.choice(objects), "file"
        else:
            target, tclass = rng.choice(processes), "process"
        cases.append([subject, target, tclass, rng.sample(permissions[tclass], rng.choice([1, 2, 3]))])
    return cases


def describe_access(case):
    return f"decide({case[0]!r}, {case[1]!r}, {case[2]!r}, {case[3]!r})"


PROBES = {
    "part1_visible": Probe(LEVELS_ASKED, LEVELS_VISIBLE, levels_expected,
                           levels_judge("the lesson's levels", PARSE_HINT, DOMINATES_HINT)),
    "part1_hidden": Probe(LEVELS_ASKED, hidden_levels, levels_expected,
                          levels_judge("levels with other sensitivities and ranges", PARSE_HINT,
                                       "both conditions: sensitivity and categories")),
    "part2_visible": Probe(ALLOCATIONS_ASKED, ALLOCATIONS_VISIBLE, allocations_expected, allocations_visible),
    "part2_hidden": Probe(ALLOCATIONS_ASKED, ALLOCATIONS_HIDDEN, allocations_expected,
                          listed("sequences of labels", describe_run,
                                 "redraw both categories when they are equal; small ranges make that common")),
    "part3_visible": Probe(DECISIONS_ASKED, DECISIONS_VISIBLE, svirt_decisions,
                           listed("decide on the lesson's accesses", describe_access,
                                  "type enforcement first (ALLOW), then every constraint that concerns the "
                                  "permission and applies to the subject")),
    "part3_hidden": Probe(DECISIONS_ASKED, hidden_decisions, svirt_decisions,
                          listed("decide on other subjects, objects and permissions", describe_access,
                                 "the constraints compare high levels (the part after '-'); some permissions also "
                                 "need a single-level object; the spec says which subjects a constraint applies to")),
}
