"""Lab 7 (sVirt): the kernel's answers to the grader's cases, as plain data: a student's parse_level
and dominates on levels, allocate_pair on runs of a seeded random.Random, decide on accesses and
label_scenario on scenarios, with vmkit.isolation's own versions of the parts withheld while they
answer; and what a labelling is judged on (a scenario's accesses, the labels' own faults), which the
visible check of part 4 and the grader share."""
import itertools
import random
import re
from contextlib import contextmanager

from .. import isolation
from .answers import answer_cases, plain, raised, refusal
from .checks import fail_cases

# vmkit.isolation's own answers to the lab's parts, by class (None: the module's own functions). The
# lessons and the scenario need them, so they stay in the package, and are withheld while graded.
WITHHELD = {"Level": ("parse", "dominates"), "MlsRange": ("parse",), "Context": ("parse",),
            "Constraint": ("holds",), "Policy": ("decide",), "McsAllocator": ("allocate",), None: ("_category",)}


@contextmanager
def withholding():
    """vmkit.isolation's own parsing, dominance, allocator and decision raise NotYours for the time of
    the with block, however a student's code reached them; put back after."""
    saved = []
    try:
        for owner, names in WITHHELD.items():
            where = vars(isolation) if owner is None else vars(getattr(isolation, owner))
            for name in names:
                function = getattr(where[name], "__func__", where[name])      # a classmethod's function
                saved.append((function, function.__code__))
                qualname = name if owner is None else f"isolation.{owner}.{name}"
                function.__code__ = refusal.__code__.replace(co_name=qualname, co_qualname=qualname)
        yield
    finally:
        for function, code in reversed(saved):
            function.__code__ = code


def level_shape(value):
    """parse_level's answer as data: [sensitivity, sorted categories] for a (number, set) pair."""
    if type(value) is not tuple or len(value) != 2 or not isinstance(value[1], (set, frozenset)):
        raise TypeError(f"parse_level returns (sensitivity, frozenset of categories), not {type(value).__name__} "
                        f"{repr(value)[:80]}")
    return [value[0], sorted(value[1])]


def level_cases(parse_level, dominates, texts, pairs):
    """{"levels": parse_level of each text, "dominates": dominates of each pair}, each plain or raised."""
    with withholding():
        return {"levels": answer_cases(parse_level, [[text] for text in texts], shape=level_shape),
                "dominates": answer_cases(dominates, [list(pair) for pair in pairs])}


def allocation_cases(allocate_pair, runs):
    """For each run [seed, count, first, last, reserved]: allocate_pair called `count` times on one
    random.Random(seed) and one in_use set holding `reserved`: [the labels (ending "RuntimeError" where it
    raised that), in_use after, sorted], or raised(error) for any other error."""
    answers = []
    with withholding():
        for seed, count, first, last, reserved in runs:
            rng, in_use, labels = random.Random(seed), set(reserved), []
            try:
                for _ in range(count):
                    try:
                        labels.append(plain(allocate_pair(rng, in_use, first, last)))
                    except RuntimeError:
                        labels.append("RuntimeError")
                        break
                answers.append([labels, plain(sorted(in_use), "in_use")])
            except Exception as error:          # the student's code: its error is its answer
                answers.append(raised(error))
    return answers



# --- part 2: the rules an allocator keeps (any sequence of draws that keeps them is libvirt's kind) ----
PAIR = re.compile(r"s0:c(\d+),c(\d+)\Z")


def pairs_in(first, last):
    """Every label s0:cA,cB with first <= A < B <= last."""
    return {f"s0:c{a},c{b}" for a, b in itertools.combinations(range(first, last + 1), 2)}


def in_range(label, first, last):
    """Is `label` a pair s0:cA,cB of two categories of first..last, A < B?"""
    match = PAIR.match(label) if isinstance(label, str) else None
    return bool(match) and first <= int(match[1]) < int(match[2]) <= last


def run_fault(run, answer):
    """What a run's answer [labels, in_use after] (allocation_cases) breaks of part 2's rules, in words, or None."""
    seed, count, first, last, reserved = run
    if not (isinstance(answer, list) and len(answer) == 2 and all(isinstance(part, list) for part in answer)):
        return f"the answer is {answer!r}"[:200]
    labels, in_use = answer
    n = last - first + 1
    free = n * (n - 1) // 2 - len({label for label in reserved if in_range(label, first, last)})
    handed = [label for label in labels if label != "RuntimeError"]
    for i, label in enumerate(handed):
        if not in_range(label, first, last):
            return f"{label!r} is no label s0:cA,cB with c{first} <= cA < cB <= c{last}"
        if label in reserved or label in handed[:i]:
            return f"{label!r} was in use already" if label in reserved else f"{label!r} was handed out twice"
    free -= len(handed)
    if "RuntimeError" in labels and free:
        return f"RuntimeError after {len(handed)} labels, with {free} pairs of c{first}..c{last} still free"
    if len(handed) < count and "RuntimeError" not in labels:
        return f"{len(handed)} labels for {count} calls"
    if sorted(map(str, in_use)) != sorted(set(reserved) | set(handed)):
        return (f"in_use holds {len(in_use)} labels after; the {len(reserved)} in use before and the "
                f"{len(handed)} handed out make {len(set(reserved) | set(handed))}")
    return None


def describe_run(run):
    seed, count, first, last, reserved = run
    shown = f" ({', '.join(reserved)})" if len(reserved) <= 6 else ""
    return (f"{count} calls on random.Random({seed}), categories c{first}..c{last}"
            + (f", {len(reserved)} pairs in use{shown}" if reserved else ""))


def allocation_faults(runs, answers):
    """[(the run in words, expected, got)] for each run whose answer breaks a rule."""
    return [(describe_run(run), Words("every rule of the spec kept"), Words(fault))
            for run, answer in zip(runs, answers) if (fault := run_fault(run, answer))]


def spread_faults(runs, answers):
    """Runs of one call each on the same range and pairs in use, with other seeds: a fault unless every
    free pair came out first at least once (the allocator draws at random)."""
    _, _, first, last, reserved = runs[0]
    free = pairs_in(first, last) - set(reserved)
    drawn = {answer[0][0] for answer in answers if isinstance(answer, list) and answer and answer[0]}
    if drawn >= free:
        return []
    return [(f"the first label on random.Random({runs[0][0]}) to random.Random({runs[-1][0]}), categories "
             f"c{first}..c{last} with only {', '.join(sorted(free))} free", Words("each free pair at least once"),
             Words(f"only {', '.join(sorted(map(str, drawn)))}"))]


def check_allocations(allocate_pair, runs, spread, hint):
    """The visible check of part 2: the rules on `runs`, and every free pair drawn across `spread`."""
    answers, drawn = allocation_cases(allocate_pair, runs), allocation_cases(allocate_pair, spread)
    fail_cases("allocate_pair's runs", allocation_faults(runs, answers), len(runs), "runs", hint)
    fail_cases("allocate_pair's draws", spread_faults(spread, drawn), 1, "spreads", hint)


def decision_cases(decide, cases):
    """decide on each [scontext, tcontext, tclass, perms]: its verdicts, plain or raised."""
    with withholding():
        return answer_cases(decide, [[s, t, tclass, list(perms)] for s, t, tclass, perms in cases])



def labelling_cases(label_scenario, scenarios):
    """label_scenario on each scenario: its labels ({name: context}), plain or raised."""
    with withholding():
        return answer_cases(label_scenario, [[scenario] for scenario in scenarios])


# --- part 4: what a labelling of a scenario is judged on ----------------------------------------------
# A scenario: {"vms": [names], "images": {name: {"read": [vms], "write": [vms]}}, "categories": [first, last]}.
# Nothing here knows a labelling: it lists what a scenario asks, and what a decision made of given labels.
ACCESSES = {"read": ("open", "read"), "write": ("open", "write")}     # the file permissions an access needs


def scenario_accesses(scenario):
    """Every (vm, image, access, required) a scenario decides, in order."""
    return [(vm, image, access, vm in scenario["images"][image][access])
            for vm in scenario["vms"] for image in scenario["images"] for access in ACCESSES]


def label_faults(scenario, labels):
    """What is wrong with the labels themselves, as [(the case in words, expected, got)]: a name without
    a context, a context that does not parse, a VM not in svirt_t, a level outside s0 and the scenario's
    categories."""
    if not isinstance(labels, dict):
        return [("label_scenario's answer", "a dict {name: context}", labels)]
    first, last = scenario["categories"]
    faults = []
    for name in list(scenario["vms"]) + list(scenario["images"]):
        where, text = f"the context of {name}", labels.get(name)
        try:
            context = isolation.Context.parse(text)
        except Exception as error:          # the student's text: why it is no context is the answer
            faults.append((where, "user:role:type:level", f"{text!r} ({type(error).__name__}: {error})"))
            continue
        if name in scenario["vms"] and context.type != "svirt_t":
            faults.append((where, "a VM's process in svirt_t", text))
        levels = (context.low, context.high)
        if any(level.sensitivity != 0 for level in levels):
            faults.append((where, "the sensitivity s0", text))
        if any(not first <= category <= last for level in levels for category in level.categories):
            faults.append((where, f"categories within c{first}..c{last}", text))
    return faults


def access_faults(scenario, labels, decide):
    """For labels without faults: each access that `decide(scontext, tcontext, tclass, perms)` (a dict
    {permission: verdict}) decides otherwise than the scenario asks, as [(the case in words, expected, got)]."""
    faults = []
    for vm, image, access, required in scenario_accesses(scenario):
        verdicts = decide(labels[vm], labels[image], "file", list(ACCESSES[access]))
        refused = sorted({verdict for verdict in verdicts.values() if verdict != "allowed"})
        if required == bool(refused):
            got = f"refused ({', '.join(refused)})" if refused else "allowed"
            faults.append((f"{vm} may {access} {image}", "allowed" if required else "refused", got))
    return faults


def labelling_faults(scenario, labels, decide):
    """([(the case in words, expected, got)], how many cases, their unit): the labels' own faults, or
    else the accesses decided wrong."""
    faults = label_faults(scenario, labels)
    if faults:
        return faults, len(scenario["vms"]) + len(scenario["images"]), "labels"
    return access_faults(scenario, labels, decide), len(scenario_accesses(scenario)), "accesses"


LABELLING_HINT = ("the part's spec: type enforcement decides what a VM's type may do to an image's type at all, "
                  "dominance of the levels which of those accesses reach which image")


def check_labelling(scenario, labels, show=4):
    """The visible check of part 4: the labels on `scenario`, decided by the lesson's policy
    (vmkit.isolation.POLICY)."""
    faults, total, unit = labelling_faults(scenario, labels, lambda *access: dict(isolation.POLICY.decide(*access).verdicts))
    fail_cases("label_scenario on the visible scenario", [(case, Words(want), Words(got) if isinstance(got, str) else got)
                                                          for case, want, got in faults], total, unit, LABELLING_HINT, show)


class Words(str):
    """Text shown as it is, without quotes (a check's message prints it)."""
    def __repr__(self):
        return str(self)
