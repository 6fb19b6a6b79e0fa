"""Lab 7 (sVirt): MLS dominance, the rules an allocator of category pairs keeps, the security server's
decision on the lab's own policy (that of its set-up cell), and the scenarios a labelling is judged on,
with each graded cell's probe."""
import contextlib
import io
import itertools
import random

from vmkit.grading.checks import fail_cases
from vmkit.grading.lab7 import Words, allocation_faults, labelling_faults, pairs_in, spread_faults
from vmkit.isolation import Context, Level
from .probing import Probe, all_of, got_shown, lab_setup

with contextlib.redirect_stdout(io.StringIO()):      # the set-up cell prints the policy for the student
    SETUP = lab_setup("lab7_svirt")                  # ALLOW, CONSTRAINTS: the grader's own copies


def mcs_levels(texts, pairs):
    """Each level parsed as [sensitivity, sorted categories], and whether a dominates b for each pair."""
    return {"levels": [[level.sensitivity, sorted(level.categories)] for level in map(Level.parse, texts)],
            "dominates": [Level.parse(a).dominates(Level.parse(b)) for a, b in pairs]}


def security_server(scontext, tcontext, tclass, perms):
    """{permission: "allowed" | "te" | "mcs"}: type enforcement by the set-up cell's ALLOW, then each of its
    CONSTRAINTS that concerns the permission and applies to the subject's type (h1 dom h2, and l2 eq h2
    where the object must be a single level), as the security server computes an access vector."""
    source, target = Context.parse(scontext), Context.parse(tcontext)
    granted = SETUP["ALLOW"].get((source.type, target.type, tclass), set())
    verdicts = {}
    for perm in perms:
        holds = all(source.high.dominates(target.high) and (not single or target.low == target.high)
                    for cls, cperms, applies_to, single in SETUP["CONSTRAINTS"]
                    if cls == tclass and perm in cperms and (applies_to is None or source.type in applies_to))
        verdicts[perm] = "te" if perm not in granted else "allowed" if holds else "mcs"
    return verdicts


def svirt_decisions(cases):
    """The security server's verdicts for each [scontext, tcontext, tclass, perms]."""
    return [security_server(*case) for case in cases]


def reference_labels(scenario):
    """A labelling that gives the scenario exactly its accesses: a category of its own for each group of
    VMs that shares an image (more than one VM, not all), a pair of the other categories for each VM;
    an image at the categories of who reaches it, svirt_image_t if written, virt_content_t if only read,
    virt_image_t (which svirt_t has no rule for) if touched by none."""
    vms, images = scenario["vms"], scenario["images"]
    first, last = scenario["categories"]
    reach = {image: frozenset(access["read"]) | frozenset(access["write"]) for image, access in images.items()}
    groups = sorted({who for who in reach.values() if 1 < len(who) < len(vms)}, key=sorted)
    own_categories = range(first + len(groups), last + 1)
    group_category = {who: first + i for i, who in enumerate(groups)}
    pair = dict(zip(vms, itertools.combinations(own_categories, 2)))
    assert len(pair) == len(vms), f"a scenario of {len(vms)} VMs with too few categories: {scenario}"

    def level(categories):
        return "s0" + (":" + ",".join(f"c{c}" for c in sorted(categories)) if categories else "")

    labels = {vm: "system_u:system_r:svirt_t:" + level(set(pair[vm]) | {group_category[who] for who in groups if vm in who})
              for vm in vms}
    for image, access in images.items():
        who = reach[image]
        kind = "svirt_image_t" if access["write"] else "virt_content_t" if who else "virt_image_t"
        categories = set(pair[next(iter(who))]) if len(who) == 1 else {group_category[who]} if who in group_category else set()
        labels[image] = f"system_u:object_r:{kind}:" + level(categories)
    return labels


FACTS = {f.__name__: f for f in (mcs_levels, svirt_decisions, reference_labels)}


# --- the probes: each graded cell's cases, asked of the student's kernel and decided here -------------
# Messages show categories and counts in decimal, as the lab and SELinux write them: what a check
# shows is turned into Words (text shown as it is) before fail_cases prints it.

def words(value):
    """An answer as the student reads it, numbers in decimal."""
    got = got_shown(value)
    return got if isinstance(got, str) and type(got) is not str else Words(repr(got))


def level_words(level):
    """[sensitivity, sorted categories] as parse_level returns it, in decimal."""
    if not (isinstance(level, list) and len(level) == 2 and isinstance(level[1], list)):
        return words(level)
    shown = ", ".join(map(str, level[1][:8])) + (f", ... ({len(level[1])} in all)" if len(level[1]) > 8 else "")
    return Words(f"({level[0]}, frozenset({{{shown}}}))")


def cases_judge(what, describe, show_answer, hint):
    """A judge: the answers equal the expected ones case by case, each shown by show_answer."""
    def judge(answers, expected, cases):
        if not isinstance(answers, list) or len(answers) != len(expected):
            raise AssertionError(f"Check failed: {what}: expected {len(expected)} answers, got {words(answers)}"[:300])
        fail_cases(what, [(describe(case), show_answer(want), show_answer(got))
                          for case, want, got in zip(cases, expected, answers) if got != want], len(cases), "cases", hint)
    return judge


# Part 1: levels and dominance
LEVELS_ASKED = ("vmkit.grading.lab7.level_cases(vmkit.grading.yours(parse_level, 'parse_level'), "
                "vmkit.grading.yours(dominates, 'dominates'), cases['texts'], cases['pairs'])")


def levels_judge(what, parse_hint, dominates_hint):
    parsed = cases_judge(f"parse_level on {what}", lambda text: f"parse_level({text!r})", level_words, parse_hint)
    dominated = cases_judge(f"dominates on {what}", lambda pair: f"dominates({pair[0]!r}, {pair[1]!r})", words,
                            dominates_hint)

    def judge(answers, expected, cases):
        if not isinstance(answers, dict):
            raise AssertionError(f"Check failed: the answers came back as {words(answers)}"[:300])
        parsed(answers.get("levels"), expected["levels"], cases["texts"])
        dominated(answers.get("dominates"), expected["dominates"], cases["pairs"])
    return judge


def hidden_levels():
    rng = random.Random(7)

    def level():
        cats = sorted(rng.sample(range(1024), rng.choice([0, 1, 2, 2, 3])))
        return f"s{rng.choice([0, 0, 1, 2])}" + (":" + ",".join(f"c{c}" for c in cats) if cats else "")
    texts = ["s1:c0.c2,c4.c6", "s2", "s0:c1023", "s15:c3,c5.c5,c900.c903", "s10:c10.c12", "s0:c999.c1001,c3"]
    texts += [level() for _ in range(40)]
    pairs = [("s1:c1", "s0:c1"), ("s0:c1", "s1:c1"), ("s1", "s0:c1"), ("s2:c1.c9", "s1:c3,c4"),
             ("s0:c1.c5", "s0:c2,c3"), ("s0:c2,c3", "s0:c1.c5"), ("s12:c7", "s3:c7"), ("s3:c7", "s12:c7")]
    pairs += [(level(), level()) for _ in range(150)]
    pairs += [(a, a.split(":")[0] + b[len(b.split(":")[0]):]) for a, b in pairs[8:60]]    # same sensitivity
    return {"texts": texts, "pairs": [list(pair) for pair in pairs]}


def levels_expected(cases):
    return mcs_levels(cases["texts"], cases["pairs"])


LEVELS_VISIBLE = {"texts": ["s0:c12,c34", "s0", "s0:c1.c3,c7", "s0:c0.c1023", "s2:c5", "s1:c4.c6,c9.c10"],
                  "pairs": [["s0:c12,c34", "s0:c12,c34"], ["s0:c12,c34", "s0:c12"], ["s0:c12", "s0:c12,c34"],
                            ["s0:c12,c34", "s0:c12,c99"], ["s0:c0.c1023", "s0:c56,c78"], ["s0:c5,c9", "s0"],
                            ["s1:c3", "s0:c3"], ["s0:c3", "s1:c3"], ["s1:c3", "s0:c3,c4"]]}
PARSE_HINT = "the part's spec: a level's syntax (the SELinux Notebook, \"MLS / MCS Range Format\")"
DOMINATES_HINT = "the part's spec: the dominance rule (the SELinux Notebook, \"Managing Security Levels via Dominance Rules\")"

# Part 2: the allocator, judged by its rules, not by one sequence of draws
ALLOCATIONS_ASKED = "vmkit.grading.lab7.allocation_cases(vmkit.grading.yours(allocate_pair, 'allocate_pair'), cases)"


def all_but(first, last, free):
    """Every pair of cfirst..clast in use but the pairs `free`."""
    return sorted(pairs_in(first, last) - set(free))


def runs_judge(what, hint):
    def judge(answers, expected, runs):
        if not isinstance(answers, list) or len(answers) != len(runs):
            raise AssertionError(f"Check failed: {what}: expected {len(runs)} answers, got {words(answers)}"[:300])
        fail_cases(what, allocation_faults(runs, answers), len(runs), "runs", hint)
    return judge


def spread_judge(what, hint):
    """The runs (one call each, same range and pairs in use, other seeds): every free pair comes out."""
    def judge(answers, expected, runs):
        runs_judge(what, hint)(answers, expected, runs)
        fail_cases(what, spread_faults(runs, answers), 1, "spreads", hint)
    return judge


def spread(seeds, first, last, free):
    return [[seed, 1, first, last, all_but(first, last, free)] for seed in seeds]


ALLOCATIONS_VISIBLE = {"runs": [[1, 5, 0, 1023, []], [3, 7, 0, 3, []]],
                       "spread": spread(range(20), 0, 4, ["s0:c0,c4", "s0:c1,c2"])}
ALLOCATIONS_HIDDEN = {
    "runs": [[2009, 40, 0, 1023, []], [11, 7, 0, 3, []], [12, 11, 5, 9, ["s0:c5,c9", "s0:c6,c7"]],
             [13, 3, 100, 101, []], [14, 30, 0, 7, ["s0:c0,c1", "s0:c2,c3", "s0:c4,c5"]], [15, 200, 500, 520, []],
             [16, 7, 0, 3, ["s0:c10,c20", "s0:c100,c200", "s0:c7,c8", "s0:c30,c31", "s0:c40,c41", "s0:c50,c51"]],
             [17, 4, 8, 11, ["s0:c8,c9", "s0:c0,c1", "s0:c1,c2", "s0:c2,c3", "s0:c0,c3", "s0:c12,c13", "s0:c1,c3"]],
             [18, 60, 990, 1023, all_but(0, 7, [])]],
    "spread": spread(range(100, 140), 0, 7, ["s0:c0,c7", "s0:c3,c4", "s0:c6,c7"])}
ALLOCATIONS_HINT = ("the part's spec: two distinct categories of the range, no pair in use handed out, RuntimeError "
                    "only when every pair of the range is in use, drawn with rng")

# Part 3: the decision
DECISIONS_ASKED = "vmkit.grading.lab7.decision_cases(vmkit.grading.yours(decide, 'decide'), cases)"
VM1, VM2 = "system_u:system_r:svirt_t:s0:c12,c34", "system_u:system_r:svirt_t:s0:c56,c78"
IMG1, IMG2 = "system_u:object_r:svirt_image_t:s0:c12,c34", "system_u:object_r:svirt_image_t:s0:c56,c78"
ISO, HOME = "system_u:object_r:virt_content_t:s0", "unconfined_u:object_r:user_home_t:s0"
LIBVIRTD, ADMIN = "system_u:system_r:virtd_t:s0-s0:c0.c1023", "unconfined_u:unconfined_r:unconfined_t:s0"
DECISIONS_VISIBLE = [[VM1, IMG1, "file", ["open", "read", "write"]], [VM1, IMG2, "file", ["open", "read", "write"]],
                     [VM1, IMG2, "file", ["map", "write"]], [VM1, ISO, "file", ["open", "read"]],
                     [VM1, ISO, "file", ["write"]], [VM1, HOME, "file", ["open", "read"]],
                     [VM1, VM2, "process", ["signal"]], [VM1, VM1, "process", ["signal"]],
                     ["system_u:system_r:svirt_t:s0-s0:c12,c34", IMG1, "file", ["read"]],
                     ["system_u:system_r:svirt_t:s0:c12", "system_u:object_r:svirt_image_t:s0-s0:c12,c34", "file", ["read"]],
                     [ADMIN, IMG2, "file", ["read", "write"]],
                     [LIBVIRTD, "system_u:object_r:svirt_image_t:s0-s0:c1,c2", "file", ["relabelto", "write"]],
                     [LIBVIRTD, "system_u:object_r:svirt_image_t:s0:c1,c2", "file", ["relabelto"]]]


def hidden_decisions():
    rng = random.Random(77)
    subjects = ["system_u:system_r:svirt_t:s0:c3,c700", "system_u:system_r:svirt_t:s0:c3",
                "system_u:system_r:svirt_t:s0:c0.c1023", "system_u:system_r:virtd_t:s0-s0:c0.c1023",
                "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023", "unconfined_u:unconfined_r:unconfined_t:s0",
                "system_u:system_r:virtd_t:s0", "system_u:system_r:svirt_t:s0-s0:c3,c700",
                "system_u:system_r:virtd_t:s0-s0:c3,c4,c5,c700"]
    objects = ["system_u:object_r:svirt_image_t:s0:c3,c700", "system_u:object_r:svirt_image_t:s0:c3",
               "system_u:object_r:svirt_image_t:s0:c9,c700", "system_u:object_r:svirt_image_t:s0-s0:c3,c700",
               "system_u:object_r:virt_image_t:s0", "system_u:object_r:virt_content_t:s0",
               "system_u:object_r:virt_content_t:s0:c3", "unconfined_u:object_r:user_home_t:s0",
               "system_u:object_r:shadow_t:s0", "system_u:object_r:svirt_image_t:s0:c3,c4,c5-s0:c3.c5",
               "system_u:object_r:svirt_image_t:s0:c700,c3-s0:c3,c700", "system_u:object_r:virt_image_t:s0:c3-s0:c3"]
    processes = ["system_u:system_r:svirt_t:s0:c3,c700", "system_u:system_r:svirt_t:s0:c9,c700",
                 "system_u:system_r:svirt_t:s0:c700", "system_u:system_r:svirt_t:s0-s0:c9,c700"]
    permissions = {"file": ["ioctl", "read", "write", "create", "getattr", "setattr", "lock", "relabelfrom",
                            "relabelto", "append", "map", "unlink", "link", "rename", "execute", "open"],
                   "process": ["fork", "transition", "sigchld", "sigkill", "sigstop", "signull", "signal", "ptrace",
                               "getsched", "setsched", "getattr", "dyntransition"]}
    cases = [[subject, target, "file", ["relabelto", "create", "write"]] for subject in subjects[3:5] + subjects[8:]
             for target in objects[9:]]
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


# Part 4: a labelling of the student's design, judged access by access by the grader's security server
LABELLING_ASKED = "vmkit.grading.lab7.labelling_cases(vmkit.grading.yours(label_scenario, 'label_scenario'), cases)"


def make_scenario(vms, categories, private=True, **images):
    """A scenario: each VM's private disk (read and written by it alone) if `private`, and the images
    given as name=(readers, writers)."""
    listed = {f"{vm}.qcow2": {"read": [vm], "write": [vm]} for vm in vms} if private else {}
    listed.update({name.replace("_", "-") + ".img": {"read": sorted(read), "write": sorted(write)}
                   for name, (read, write) in images.items()})
    return {"vms": list(vms), "images": listed, "categories": list(categories)}


LABELLING_VISIBLE = [make_scenario(["web", "db", "build"], [0, 1023], fedora_base=(["web", "db", "build"], []),
                              cluster=(["web", "db"], ["web", "db"]), secrets=([], []))]


def hidden_scenarios():
    rng = random.Random(2026)
    six = ["a", "b", "c", "d", "e", "f"]
    many = [f"vm{i}" for i in range(30)]
    groups = [sorted(rng.sample(many, rng.randint(2, 8))) for _ in range(6)]
    return [
        # overlapping groups, c in two of them, a group that only reads, an image all write, two no VM touches
        make_scenario(six, [0, 1023], base=(six, []), scratch=(six, six), abc=("abc", "abc"), cd=("cd", "cd"),
                 ef_docs=("ef", []), vault=([], []), old_backup=([], [])),
        # the category space nearly full: ten VMs, six categories, a group of three
        make_scenario([f"n{i}" for i in range(10)], [500, 505], base=([f"n{i}" for i in range(10)], []),
                 trio=(["n0", "n1", "n2"], ["n0", "n1", "n2"])),
        # a VM in two groups that write and in one that reads; a VM alone in its read-only image
        make_scenario(six, [100, 111], left=("abc", "abc"), right=("cde", "cde"), docs=("ace", []), a_iso=("a", []),
                 f_only=("f", "f")),
        # one VM: its images are everyone's; a VM without a disk of its own among others
        make_scenario(["solo"], [0, 1], private=True, iso=(["solo"], []), none=([], [])),
        make_scenario(["x", "y", "z"], [10, 15], private=False, xy=("xy", "xy"), yz=("yz", []), xz=("xz", "xz")),
        # thirty VMs, random groups that overlap, in a range of 60 categories
        make_scenario(many, [960, 1019], base=(many, []),
                 **{f"group{i}": (g, g if i % 2 else []) for i, g in enumerate(groups)}),
    ]


def labelling_expected(scenarios):
    """Nothing to compare with (a labelling is judged by the accesses it gives); the grader's own labelling
    must give every scenario exactly its accesses, or the scenario is no question."""
    for case in scenarios:
        faults, _, _ = labelling_faults(case, reference_labels(case), security_server)
        assert not faults, f"graders/lab7.py: no labelling of the grader's gives {case} its accesses: {faults[:3]}"
    return [None] * len(scenarios)


def labelling_judge(what):
    def judge(answers, expected, scenarios):
        if not isinstance(answers, list) or len(answers) != len(scenarios):
            raise AssertionError(f"Check failed: {what}: expected {len(scenarios)} answers, got {words(answers)}"[:300])
        wrong, total = [], 0
        for number, (case, labels) in enumerate(zip(scenarios, answers), 1):
            labels = got_shown(labels)
            if isinstance(labels, str):            # the student's code raised on this scenario
                wrong.append((f"scenario {number} ({len(case['vms'])} VMs)", Words("labels"), labels))
                total += 1
                continue
            faults, count, _ = labelling_faults(case, labels, security_server)
            wrong += [(f"scenario {number} ({len(case['vms'])} VMs, c{case['categories'][0]}..c{case['categories'][1]}): "
                       f"{where}", Words(want), Words(got) if isinstance(got, str) else got) for where, want, got in faults]
            total += count
        fail_cases(what, wrong, total, "labels and accesses",
                   "the part's spec: who may read or write each image decides which VMs' levels must dominate "
                   "its level and which must not; the scenario's categories are all there is")
    return judge


PROBES = {
    "part1_visible": Probe(LEVELS_ASKED, LEVELS_VISIBLE, levels_expected,
                           levels_judge("the visible levels", PARSE_HINT, DOMINATES_HINT)),
    "part1_hidden": Probe(LEVELS_ASKED, hidden_levels, levels_expected,
                          levels_judge("levels with other sensitivities and ranges", PARSE_HINT, DOMINATES_HINT)),
    "part2_visible": Probe({"runs": ALLOCATIONS_ASKED, "spread": ALLOCATIONS_ASKED}, ALLOCATIONS_VISIBLE,
                           {"runs": lambda runs: None, "spread": lambda runs: None},
                           all_of(runs=runs_judge("allocate_pair's visible runs", ALLOCATIONS_HINT),
                                  spread=spread_judge("allocate_pair's draws", ALLOCATIONS_HINT))),
    "part2_hidden": Probe({"runs": ALLOCATIONS_ASKED, "spread": ALLOCATIONS_ASKED}, ALLOCATIONS_HIDDEN,
                          {"runs": lambda runs: None, "spread": lambda runs: None},
                          all_of(runs=runs_judge("allocate_pair on other seeds, ranges and pairs in use", ALLOCATIONS_HINT),
                                 spread=spread_judge("allocate_pair's draws on another range", ALLOCATIONS_HINT))),
    "part3_visible": Probe(DECISIONS_ASKED, DECISIONS_VISIBLE, svirt_decisions,
                           cases_judge("decide on the visible accesses", describe_access, words,
                                       "the part's spec: type enforcement first, then each constraint that concerns "
                                       "the permission and applies to the subject")),
    "part3_hidden": Probe(DECISIONS_ASKED, hidden_decisions, svirt_decisions,
                          cases_judge("decide on other subjects, objects and permissions", describe_access, words,
                                      "the part's spec: which levels a constraint compares, and when two levels "
                                      "are equal")),
    "part4_visible": Probe(LABELLING_ASKED, LABELLING_VISIBLE, labelling_expected,
                           labelling_judge("label_scenario on the visible scenario")),
    "part4_hidden": Probe(LABELLING_ASKED, hidden_scenarios, labelling_expected,
                          labelling_judge("label_scenario on other scenarios")),
}
