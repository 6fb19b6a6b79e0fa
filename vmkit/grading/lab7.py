"""Lab 7 (sVirt): the kernel's answers to the grader's cases, as plain data: a student's parse_level
and dominates on levels, allocate_pair on runs of a seeded random.Random, and decide on accesses,
with vmkit.isolation's own versions of them withheld while they answer."""
import random
from contextlib import contextmanager

from .answers import answer_cases, plain, raised, refusal

# vmkit.isolation's own answers to the lab's parts, by class (None: the module's own functions). The
# lessons and the scenario need them, so they stay in the package, and are withheld while graded.
WITHHELD = {"Level": ("parse", "dominates"), "MlsRange": ("parse",), "Context": ("parse",),
            "Constraint": ("holds",), "Policy": ("decide",), "McsAllocator": ("allocate",), None: ("_category",)}


@contextmanager
def withholding():
    """vmkit.isolation's own parsing, dominance, allocator and decision raise NotYours for the time of
    the with block, however a student's code reached them; put back after."""
    from .. import isolation  # here, not at the top: called under on_disk, this is vmkit as installed
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


def decision_cases(decide, cases):
    """decide on each [scontext, tcontext, tclass, perms]: its verdicts, plain or raised."""
    with withholding():
        return answer_cases(decide, [[s, t, tclass, list(perms)] for s, t, tclass, perms in cases])
