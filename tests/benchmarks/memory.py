"""Memory virtualization side by side in one run: Adams & Agesen's two headline cells, ptemod and
pgfault, under every way vmkit virtualizes a guest's paging (vmkit.compare).

    .venv/bin/python tests/benchmarks/memory.py [DIRECTORY] [--rounds SHORT LONG] [--repeat N]
    (also part of: python3 course.py bench)

ptemod (one store to a page-table entry a round) under binary translation with adaptive translation
(a call-out a round after the warm-up) against the VT-x model without EPT (first-generation VT-x, the
paper's hardware VMM: a #PF exit a round, a trace of the shadow page tables) and with EPT (mapped from
the start, and filled on demand: a store), and against Xen's answer, direct paging under paravirt: the
kernel asks Xen for the store with one mmu_update (Linux's xen_set_pte), or, in lazy MMU mode, queues
it and sends 32 in one mmu_update. pgfault (a true page fault a round) under shadow paging
(trap-and-emulate, binary translation, the VT-x model without EPT) against EPT (both modes), where the
guest's #PF goes through its own IDT with no exit, and paravirt, where Xen bounces it to the kernel's
handler. Native beside both.

Adams & Agesen (ASPLOS 2006, Figure 4 and its text), in cycles on their Pentium 4: ptemod 391 under
their binary translator against 12,733 under first-generation VT-x; pgfault 3,927 against 11,242.

Every cell runs SHORT and LONG rounds; one round's time is the difference over the extra rounds
(vmkit.compare.round_time), so a run's fixed part (the machine, the boot, translating the kernel)
drops out. The runs are interleaved: each repeat measures every cell at both lengths before the next
repeat starts, so a busy moment of the machine falls on all of them; times are medians. The counts of
a round are exact and the same in every run.

Writes into DIRECTORY (default: a new temporary directory, never the repository):
    memory.png   µs a round per cell, ptemod and pgfault, on a log scale, each bar with its events
    memory.md    the same as a table, with the ratios and the paper's numbers
Targets: every cell's events a round as the techniques must take them (EXPECTED); ptemod with EPT,
in both modes, at least 10x cheaper a round than without EPT (no exit against one); pgfault with EPT
mapped from the start cheaper a round than under every shadow-paging technique; ptemod under paravirt
in lazy MMU mode at least 2x cheaper a round than one mmu_update a store. The paper's order
(binary translation faster than first-generation VT-x on both) is reported with no target: here an
exit and a trap are both a Python call, so the counts decide, and they do not favour the translator.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vmkit import compare

ROUNDS, REPEAT = (100, 900), 5          # the same number of digits: the report prints as many
NO_EPT, EPT, ON_DEMAND = "hardware-assist/no-ept", "hardware-assist", "hardware-assist/ept-on-demand"
PV, LAZY = "paravirt", "paravirt/lazy-mmu"
CELLS = {
    "ptemod": ("native", "binary-translation", NO_EPT, EPT, ON_DEMAND, PV, LAZY),
    "pgfault": ("native", "trap-and-emulate", "binary-translation", NO_EPT, EPT, ON_DEMAND, PV),
}
BATCH = 32                              # lazy MMU mode: PTE writes an mmu_update (vmkit/guests/cmp_kernel.asm)
SHADOW = ("trap-and-emulate", "binary-translation", NO_EPT)
# the events one round must take in each cell, exact; every count not named is 0 a round
EXPECTED = {
    ("ptemod", "native"): {},
    ("ptemod", "binary-translation"): {"traps": 1, "trace_callouts": 1},
    ("ptemod", NO_EPT): {"exits": 1, "pf_exits": 1, "trace_faults": 1},
    ("ptemod", EPT): {},
    ("ptemod", ON_DEMAND): {},
    ("pgfault", "native"): {},
    ("pgfault", "trap-and-emulate"): {"traps": 2, "true_faults": 1},
    ("pgfault", "binary-translation"): {"traps": 3, "true_faults": 1},
    ("pgfault", NO_EPT): {"exits": 1, "pf_exits": 1, "true_faults": 1},
    ("pgfault", EPT): {},
    ("pgfault", ON_DEMAND): {},
    ("ptemod", PV): {"hypercalls": 1, "mmu_updates": 1, "pt_updates": 1},
    ("ptemod", LAZY): {"hypercalls": 1 / BATCH, "mmu_updates": 1 / BATCH, "pt_updates": 1},   # see expected()
    ("pgfault", PV): {"traps": 1, "bounces": 1},
}
PAPER = {"ptemod": (391, 12_733), "pgfault": (3_927, 11_242)}     # cycles: software VMM, hardware VMM
EPT_TARGET = 10.0
LAZY_TARGET = 2.0
EVENTS = ("traps", "exits", "cr_exits", "invlpg_exits", "pf_exits", "ept_violations") + compare.MMU_COUNTS + (
    "tlb_misses", "walk_references", "bounces", "hypercalls", "mmu_updates", "pt_updates")
# compare.COUNTS' events, each kind after what it is part of: the exits' after the exits, Xen's bounces after
# the traps (both after the shadow MMU's), its mmu_updates and the PTEs they wrote after the hypercalls
NAMES = {"traps": ("trap", "traps"), "exits": ("exit", "exits"), "hidden_faults": ("hidden fault", "hidden faults"),
         "true_faults": ("true fault", "true faults"), "trace_faults": ("trace fault", "trace faults"),
         "trace_callouts": ("trace call-out", "trace call-outs"), "cr_exits": ("CR exit", "CR exits"),
         "invlpg_exits": ("INVLPG exit", "INVLPG exits"), "pf_exits": ("#PF exit", "#PF exits"),
         "ept_violations": ("EPT violation", "EPT violations"), "tlb_misses": ("TLB miss", "TLB misses"),
         "walk_references": ("walk reference", "walk references"), "bounces": ("bounce", "bounces"),
         "hypercalls": ("hypercall", "hypercalls"), "mmu_updates": ("mmu_update", "mmu_updates"),
         "pt_updates": ("PTE written", "PTEs written")}
LABELS = {"native": "native", "trap-and-emulate": "trap & emulate", "binary-translation": "binary transl.",
          NO_EPT: "VT-x, no EPT", EPT: "VT-x, EPT", ON_DEMAND: "VT-x, EPT on demand", PV: "paravirt (Xen)",
          LAZY: "paravirt, lazy MMU"}


def expected(rounds):
    """EXPECTED for runs of `rounds` (SHORT, LONG): in lazy MMU mode a run of n rounds makes ceil(n / 32)
    mmu_updates (the last one partly full), so a round's share is exact over the two runs' difference."""
    short, long = rounds
    calls = (-(-long // BATCH) - -(-short // BATCH)) / (long - short)
    return {**EXPECTED, ("ptemod", LAZY): {"hypercalls": calls, "mmu_updates": calls, "pt_updates": 1}}


def _median(runs):
    first = runs[0]
    if any(m.counts() != first.counts() for m in runs):
        raise AssertionError(f"{first.workload} under {first.technique} counted differently from run to run")
    times = [m.seconds for m in runs]
    middle = statistics.median(times)
    return compare.Measurement(**{**first.__dict__, "seconds": middle,
                                  "spread": statistics.median(abs(t - middle) for t in times)})


def measure(rounds=ROUNDS, repeat=REPEAT):
    """Two Suites, the SHORT and the LONG rounds, with every cell of CELLS: medians of `repeat`
    interleaved runs."""
    for technique in {t for ts in CELLS.values() for t in ts}:       # warm up: loading, first translations
        compare.measure("ptemod", technique, 1)
    runs = {(name, t, n): [] for name, ts in CELLS.items() for t in ts for n in rounds}
    for _ in range(repeat):
        for n in rounds:
            for name, techniques in CELLS.items():
                for t in techniques:
                    m = compare.measure(name, t, n)
                    if not m.ran:
                        raise AssertionError(f"{name} under {t} did not run: {m.reason}")
                    runs[name, t, n].append(m)
    return tuple(compare.Suite([_median(runs[name, t, n]) for name, ts in CELLS.items() for t in ts]) for n in rounds)


def per_round(short, long):
    """{(workload, technique): (the events of one round, exact; the RoundTime)}."""
    out = {}
    for name, techniques in CELLS.items():
        for t in techniques:
            a, b = short.cell(name, t), long.cell(name, t)
            n = b.rounds - a.rounds
            events = {k: (getattr(b, k) - getattr(a, k)) / n for k in EVENTS}
            out[name, t] = ({k: int(v) if v == int(v) else v for k, v in events.items() if v}, compare.round_time(a, b, name, t))
    return out


def _count(value):
    """A count a round: 3, 0.5, or 1/32 where a round takes a share of one event."""
    if 0 < value < 1 and (1 / value) == int(1 / value):
        return f"1/{int(1 / value)}"
    return f"{value:g}"


def events_text(events):
    if not events:
        return "none"
    return ", ".join(f"{_count(v)} {NAMES[k][v > 1]}" for k, v in events.items())


def us(rt):
    return rt.per_round * 1e6 if rt is not None and rt.resolved else None


def us_text(rt):
    if rt is None:
        return "—"
    if not rt.resolved:
        return f"< {max(rt.resolution, 1e-9) * 1e6:.2g}"
    value = rt.per_round * 1e6
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def ratio(a, b):
    """a's round over b's, or None where either is too cheap to time."""
    return a / b if a is not None and b is not None and b > 0 else None


def summary(rounds_, rounds=ROUNDS):
    """The ratios the targets and the report need (`rounds`: the two lengths the cells ran)."""
    def u(name, t):
        return us(rounds_[name, t][1])
    bound = {t: rounds_["ptemod", t][1] for t in (EPT, ON_DEMAND)}
    # ptemod with EPT is a store: often too cheap to time, so its bound (the repeats' disagreement) stands in
    ept_us = {t: u("ptemod", t) if u("ptemod", t) is not None else max(bound[t].resolution * 1e6, 1e-3)
              for t in (EPT, ON_DEMAND)}
    return {
        "exact": {key: rounds_[key][0] == events for key, events in expected(rounds).items()},
        "ptemod_no_ept_over_bt": ratio(u("ptemod", NO_EPT), u("ptemod", "binary-translation")),
        "pgfault_no_ept_over_bt": ratio(u("pgfault", NO_EPT), u("pgfault", "binary-translation")),
        "ptemod_no_ept_over_ept": {t: ratio(u("ptemod", NO_EPT), ept_us[t]) for t in (EPT, ON_DEMAND)},
        "ptemod_ept_resolved": {t: u("ptemod", t) is not None for t in (EPT, ON_DEMAND)},
        "pgfault_shadow_over_ept": {t: ratio(u("pgfault", t), u("pgfault", EPT)) for t in SHADOW},
        "pgfault_shadow_over_on_demand": {t: ratio(u("pgfault", t), u("pgfault", ON_DEMAND)) for t in SHADOW},
        "ptemod_over_pv": {t: ratio(u("ptemod", t), u("ptemod", PV)) for t in ("binary-translation", NO_EPT)},
        "ptemod_pv_over_lazy": ratio(u("ptemod", PV), u("ptemod", LAZY)),
        "pgfault_over_pv": {t: ratio(u("pgfault", t), u("pgfault", PV)) for t in SHADOW + ("native",)},
        "us": {key: u(*key) for key in rounds_},
    }


def markdown(rounds_, s, took, rounds, repeat):
    lines = ["# Memory virtualization: ptemod and pgfault, side by side", "",
             f"One round of each cell: its events (exact) and its µs (the median of {repeat} interleaved runs at "
             f"{rounds[0]} and at {rounds[1]} rounds, the difference over the extra rounds; < x: within the runs' "
             f"disagreement). Measured in {took:.1f} s.", "",
             "| workload | technique | events a round | µs a round | × binary translation |", "|---|---|---|--:|--:|"]
    for (name, t), (events, rt) in rounds_.items():
        r = ratio(us(rt), s["us"][name, "binary-translation"])
        lines.append(f"| {name} | {LABELS[t]} | {events_text(events)} | {us_text(rt)} | "
                     f"{'—' if r is None or t == 'binary-translation' else f'{r:.2f}×'} |")
    lines += ["", "Adams & Agesen (ASPLOS 2006, Figure 4), cycles: ptemod 391 under binary translation, 12,733 under "
              "first-generation VT-x (33×); pgfault 3,927 against 11,242 (2.9×).", "", *report_lines(s)]
    return "\n".join(lines) + "\n"


def report_lines(s):
    def x(value):
        return "—" if value is None else f"{value:.0f}x" if value >= 10 else f"{value:.2f}x"
    ept = s["ptemod_no_ept_over_ept"]
    return [
        f"- ptemod, VT-x without EPT over binary translation: {x(s['ptemod_no_ept_over_bt'])} a round (the paper: "
        f"{PAPER['ptemod'][1] / PAPER['ptemod'][0]:.0f}x; one exit against one call-out here, both Python calls)",
        f"- pgfault, VT-x without EPT over binary translation: {x(s['pgfault_no_ept_over_bt'])} a round (the paper: "
        f"{PAPER['pgfault'][1] / PAPER['pgfault'][0]:.1f}x; one exit against three traps here)",
        "- ptemod, VT-x without EPT over with EPT: " + ", ".join(
            f"{LABELS[t]} {'' if s['ptemod_ept_resolved'][t] else 'at least '}{x(ept[t])}" for t in (EPT, ON_DEMAND)),
        "- pgfault, shadow paging over EPT mapped from the start: " + ", ".join(
            f"{LABELS[t]} {x(v)}" for t, v in s["pgfault_shadow_over_ept"].items()),
        "- pgfault, shadow paging over EPT on demand: " + ", ".join(
            f"{LABELS[t]} {x(v)}" for t, v in s["pgfault_shadow_over_on_demand"].items())
        + " (the model keeps the TLB in Python: each guest #PF first passes through its TLB-miss handler)",
        "- ptemod over paravirt (one mmu_update a store): " + ", ".join(
            f"{LABELS[t]} {x(v)}" for t, v in s["ptemod_over_pv"].items()),
        f"- ptemod under paravirt, one mmu_update a store over lazy MMU mode ({BATCH} stores an mmu_update): "
        f"{x(s['ptemod_pv_over_lazy'])}",
        "- pgfault over paravirt (one bounce a round): " + ", ".join(
            f"{LABELS[t]} {x(v)}" for t, v in s["pgfault_over_pv"].items()),
    ]


def plot(rounds_, s):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from vmkit.viz.compare import COLOURS
    fig, axes = plt.subplots(1, 2, figsize=(15.5, 5), facecolor="white",
                             gridspec_kw={"width_ratios": [len(t) for t in CELLS.values()]})
    for ax, (name, techniques) in zip(axes, CELLS.items()):
        heights = []
        for i, t in enumerate(techniques):
            events, rt = rounds_[name, t]
            value = us(rt)
            height = value if value is not None else max(rt.resolution * 1e6, 1e-3)
            heights.append(height)
            ax.bar(i, height, 0.7, color=COLOURS[t], hatch=None if value is not None else "//",
                   edgecolor="white" if value is not None else "#777777")
            ax.text(i, height, ("" if value is not None else "< ") + us_text(rt).lstrip("< ") + " µs",
                    ha="center", va="bottom", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(min(heights) / 4, max(heights) * 4)
        ax.set_xticks(range(len(techniques)),
                      [LABELS[t].replace(", ", ",\n") + "\n\n" + events_text(rounds_[name, t][0]).replace(", ", "\n")
                       for t in techniques], fontsize=7.5)
        software, hardware = PAPER[name]
        ax.set_title(f"{name}: µs a round\nAdams & Agesen: {software:,} cycles under binary translation, {hardware:,} "
                     f"under first-generation VT-x", fontsize=9)
        ax.set_ylabel("µs a round (log)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("memory virtualization, one round, measured side by side (hatched: too cheap to time, the bound "
                 "shown)", fontsize=10)
    fig.tight_layout()
    return fig


def main(directory=None, rounds=ROUNDS, repeat=REPEAT):
    directory = Path(directory or tempfile.mkdtemp(prefix="vmkit-memory-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"9. memory virtualization: ptemod and pgfault under shadow paging, EPT and Xen's direct paging, "
          f"{rounds[0]} and {rounds[1]} rounds, {repeat} interleaved runs a cell")
    started = time.perf_counter()
    short, long = measure(rounds, repeat)
    took = time.perf_counter() - started
    rounds_ = per_round(short, long)
    s = summary(rounds_, rounds)
    text = markdown(rounds_, s, took, rounds, repeat)
    (directory / "memory.md").write_text(text)
    fig = plot(rounds_, s)
    fig.savefig(directory / "memory.png", dpi=110)
    print(f"   measured in {took:.1f} s; one round:")
    for (name, t), (events, rt) in rounds_.items():
        print(f"   {name:<8}{LABELS[t]:<22}{us_text(rt):>8} µs   {events_text(events)}")
    print("\n".join("   " + line for line in report_lines(s)))
    print(f"   Written: {directory / 'memory.png'}, {directory / 'memory.md'}")
    return {"summary": s, "directory": directory}


def targets(measured):
    s = measured["summary"]
    wrong = [f"{name} under {t}" for (name, t), ok in s["exact"].items() if not ok]
    ept = s["ptemod_no_ept_over_ept"]
    ept_met = all(v is not None and v >= EPT_TARGET for v in ept.values())
    shadow = s["pgfault_shadow_over_ept"]
    shadow_met = all(v is not None and v > 1 for v in shadow.values())
    bt = s["ptemod_no_ept_over_bt"], s["pgfault_no_ept_over_bt"]
    lazy = s["ptemod_pv_over_lazy"]
    lazy_met = lazy is not None and lazy >= LAZY_TARGET

    def x(value):
        return "—" if value is None else f"{value:.0f}x" if value >= 10 else f"{value:.2f}x"
    return [f"   memory: every cell's events a round as expected (target: all {len(s['exact'])}) "
            + ("met" if not wrong else f"MISSED: {', '.join(wrong)}"),
            f"   memory: ptemod without EPT over with EPT: " + ", ".join(
                f"{LABELS[t]} {'' if s['ptemod_ept_resolved'][t] else '>= '}{x(v)}" for t, v in ept.items())
            + f" (target: >= {EPT_TARGET:g}x) {'met' if ept_met else 'MISSED'}",
            "   memory: pgfault under shadow paging over EPT: " + ", ".join(f"{LABELS[t]} {x(v)}" for t, v in shadow.items())
            + f" (target: each > 1x) {'met' if shadow_met else 'MISSED'}",
            f"   memory: ptemod under paravirt, one mmu_update a store over lazy MMU mode: {x(lazy)} "
            f"(target: >= {LAZY_TARGET:g}x) {'met' if lazy_met else 'MISSED'}",
            f"   memory: VT-x without EPT over binary translation: ptemod {x(bt[0])}, pgfault {x(bt[1])} (the paper: "
            f"33x, 2.9x; no target)"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", help="where to write the figure and table (default: a temp dir)")
    parser.add_argument("--rounds", type=int, nargs=2, default=ROUNDS, metavar=("SHORT", "LONG"),
                        help="the two lengths each cell runs")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="interleaved runs of every cell at each length")
    args = parser.parse_args()
    results = main(args.directory, tuple(args.rounds), args.repeat)
    print("\n".join(targets(results)))
    sys.exit(0)
