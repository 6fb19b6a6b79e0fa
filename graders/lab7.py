"""Lab 7 (sVirt): vmkit.isolation's MCS levels and dominance, libvirt's category allocator and SELinux's
decisions, on the lab's cases."""
from vmkit.isolation import Level, McsAllocator, decide


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
    """vmkit.isolation.decide for each [scontext, tcontext, tclass, perms]: {perm: allowed | te | mcs}."""
    return [decide(s, t, tclass, perms) for s, t, tclass, perms in cases]


FACTS = {f.__name__: f for f in (mcs_levels, mcs_allocations, svirt_decisions)}
