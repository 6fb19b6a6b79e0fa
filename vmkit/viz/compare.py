"""Comparing the techniques: tables, plots and a designer drawn from vmkit.compare's measurements.

Nothing here measures or runs a guest by itself. Every function takes what vmkit.compare produced
(a suite of Measurements, a fitted cost model) and renders it:

    time_table(suite)          a whole run's µs per round, workload x technique, with each slowdown
    counts_table(suite)        the exact counts: traps, exits, hypercalls, translated blocks, and the
                               memory work among them (shadow page faults, the VT-x model's exits,
                               Xen's bounces and mmu_updates)
    round_counts_table(small, large)   the same for one loop round, from two suites
    round_time_table(shorter, longer), fixed_cost_table(shorter, longer)
                               a run's time split: what each round costs, what the run pays once
    cannot_run(suite)          the cells that could not run, each with its reason
    slowdown_plot(suite)       time against native, per workload, on a log scale
    ordering(suite, workload)  the techniques that ran it, fastest first
    check_orderings(suite, claims, shorter)   each claimed ordering checked against the measured times
    paper_table(), paper_beside_ours(suite, workloads, longer), paper_plot(...)
                               Adams & Agesen (ASPLOS 2006, Figure 4) beside ours
    headline_table(small, suite, longer), headline_plot(suite, longer)
                               pgfault and ptemod, their software VMM against their hardware VMM beside
                               binary translation against the VT-x model without EPT: events and µs a round
    adaptive_table(on, off), adaptive_plot(on, off)
                               ptemod round by round (vmkit.compare.round_by_round), adaptive
                               binary translation on and off: trace faults, call-outs, µs a round
    cost_diagram(model)        where each technique's time goes, with the fitted costs on the arrows
    cost_table(model), residuals_table(model, suite)             the fitted cost model and how well it fits
    Designer(model, suite)     sliders for a workload of one's own; its predicted time per technique

Used by lesson 10.

Long because: every table, plot and widget here reads the same suite and shares its order of
techniques, its colours and its slowdown arithmetic; split, a lesson would have to know which half
holds which table.
"""
import html
import statistics

import ipywidgets as w
import matplotlib.pyplot as plt

from .. import compare
from .diagram import Diagram, Plot, Table
from .translation import ADAMS_AGESEN

# vmkit.compare.COLUMNS: the VT-x model's three memory modes are three columns, first-generation VT-x
# (no EPT: shadow page tables and their exits) before EPT (the model's default, its memory mapped from
# the start) and EPT filled on demand (EPT violations, TLB misses and their walks counted)
TECHNIQUES = compare.COLUMNS
SHORT = {"native": "native", "trap-and-emulate": "trap & emulate", "binary-translation": "binary transl.",
         "paravirt": "paravirt", "hardware-assist/no-ept": "VT-x, no EPT", "hardware-assist": "VT-x, EPT",
         "hardware-assist/ept-on-demand": "VT-x, EPT on demand", "kvm": "real KVM",
         "paravirt/lazy-mmu": "paravirt, lazy MMU"}
COLOURS = {"native": "#424242", "trap-and-emulate": "#c62828", "binary-translation": "#1565c0",
           "paravirt": "#2e7d32", "hardware-assist/no-ept": "#8d6e63", "hardware-assist": "#ef6c00",
           "hardware-assist/ept-on-demand": "#ffb300", "kvm": "#6a1b9a", "paravirt/lazy-mmu": "#81c784"}
COUNTS = ("traps", "exits", "hypercalls", "blocks")       # the events the cost model charges for
COST_TERMS = ("instruction", "trap", "exit", "hypercall", "block")
# the shadow MMU's events (vmkit.compare.MMU_COUNTS), among the traps or the #PF exits, each named once and many times
MMU = {"hidden_faults": ("hidden fault", "hidden faults"), "true_faults": ("true fault", "true faults"),
       "trace_faults": ("trace fault", "trace faults"), "trace_callouts": ("trace call-out", "trace call-outs")}
# the VT-x model's exits for memory (among its exits), and its TLB misses with their walks' references
EXITS = {"cr_exits": ("CR access", "CR accesses"), "invlpg_exits": ("INVLPG", "INVLPG"), "pf_exits": ("#PF", "#PF"),
         "ept_violations": ("EPT violation", "EPT violations")}
WALKS = {"tlb_misses": ("TLB miss", "TLB misses"), "walk_references": ("walk reference", "walk references")}
# Xen's work for the paravirtual kernel (vmkit.compare.PV_COUNTS): the traps it bounced to the kernel's
# handlers, among the traps; its mmu_update hypercalls, among the hypercalls, and the PTEs they changed
BOUNCES = {"bounces": ("bounced", "bounced")}
UPDATES = {"mmu_updates": ("mmu_update", "mmu_updates"), "pt_updates": ("PTE", "PTEs")}

# --- Adams & Agesen, ASPLOS 2006, Figure 4 ------------------------------------------------------------------
# The nanobenchmarks in CPU cycles on their VT-x Pentium 4: native, VMware's software VMM (binary
# translation) and their hardware VMM (first-generation VT-x). Figure 4 plots them; the paper's text
# beside it gives the numbers used here. The cells of ADAMS_AGESEN (in, call/ret, ptemod) are reused.
# Where the text gives only a comparison, the cell says that and carries no number. The ratios the
# paper's numbers give: pgfault 11,242 / 3,927 = 2.9x worse under the hardware VMM than under the
# software VMM; ptemod 12,733 / 391 = 33x ("approximately thirty times worse", the paper says).
_MORE = [
    ("syscall", "a system call round trip (syscall/sysret)", "—", "native + ≈2,000", "≈ native"),
    ("cr8wr", "write the task-priority register %cr8", "—", "35 (≈4× faster than native)", "≈ native"),
    ("pgfault", "a true page fault, taken and handled", "1,093", "3,927", "11,242"),
    ("divzero", "divide by zero: a #DE fault", "889", "3,223", "1,014"),
]
FIGURE_4 = ("syscall", "in", "cr8wr", "call/ret", "pgfault", "divzero", "ptemod")   # the paper's order
PAPER = sorted(ADAMS_AGESEN + _MORE, key=lambda row: FIGURE_4.index(row[0]))
PAPER_SOURCE = ("CPU cycles, from Adams & Agesen, \"A Comparison of Software and Hardware Techniques for x86 "
                "Virtualization\", ASPLOS 2006, Figure 4 and the text that discusses it (their Pentium 4, not "
                "measured here). —: the text gives no number; for ptemod, native is a single store; for in, the "
                "software VMM is fifteen times faster than native.")


def _cycles(cell):
    """A paper cell as a number of cycles, or None where the paper gives only a comparison."""
    text = cell.lstrip("≈").replace(",", "")
    return float(text) if text.replace(".", "").isdigit() else None


def paper_cycles(benchmark):
    """(native, software VMM, hardware VMM) cycles of one of the paper's benchmarks; None where the
    paper's text gives no number."""
    row = next(r for r in PAPER if r[0] == benchmark)
    return tuple(_cycles(c) for c in row[2:])


def paper_table():
    """Adams & Agesen's seven nanobenchmarks (Figure 4), in CPU cycles, as the paper reports them."""
    return Table(["nanobenchmark", "what it does", "native", "software VMM (BT)", "hardware VMM (VT-x)"],
                 PAPER, PAPER_SOURCE)


# --- reading a suite --------------------------------------------------------------------------------------
def _workloads(suite):
    seen = []
    for m in suite.measurements:
        if m.workload not in seen:
            seen.append(m.workload)
    return seen


def _techniques(suite):
    present = {m.technique for m in suite.measurements}
    return [t for t in TECHNIQUES if t in present] + sorted(present - set(TECHNIQUES))


def _cell(suite, workload, technique):
    return next((m for m in suite.measurements if m.workload == workload and m.technique == technique), None)


def _ran(m):
    return m is not None and m.ran


def slowdown(suite, workload, technique):
    """The technique's time on the workload as a multiple of native's, or None if either did not run."""
    m, base = _cell(suite, workload, technique), _cell(suite, workload, "native")
    if not (_ran(m) and _ran(base)) or base.seconds <= 0:
        return None
    return m.seconds / base.seconds


def ordering(suite, workload):
    """The techniques that ran the workload, fastest first (by the measured median time)."""
    ran = [m for m in suite.measurements if m.workload == workload and m.ran]
    return [m.technique for m in sorted(ran, key=lambda m: m.seconds)]


def check_orderings(suite, claims, shorter=None):
    """`claims`: vmkit.compare.Claim, or (workload, faster technique, slower technique, why). Each
    claim checked against the measured times: ✔ holds here, ✘ does not, or — one of the two could not
    run. A whole-run claim compares `suite`'s times; a per-round claim (Claim.per_round) compares
    what one round costs, from `shorter` (the same suite with fewer rounds) and `suite`."""
    rows = []
    for claim, holds in compare.check(suite, claims, shorter=shorter):
        faster, slower = SHORT.get(claim.faster, claim.faster), SHORT.get(claim.slower, claim.slower)
        what = f"{faster} < {slower}" + (f" ÷ {claim.factor:g}" if claim.factor != 1 else "")
        if claim.per_round:
            what += ", per round"
            if shorter is None:
                verdict = "— (needs a shorter run to subtract)"
            elif holds is None:
                verdict = "— (could not run)"
            else:
                a, b = (compare.round_time(shorter, suite, claim.workload, t) for t in (claim.faster, claim.slower))
                verdict = f"{'✔' if holds else '✘'} {_per_round(a)} against {_per_round(b)} µs a round"
        elif holds is None:
            verdict = "— (could not run)"
        else:
            a, b = _cell(suite, claim.workload, claim.faster), _cell(suite, claim.workload, claim.slower)
            verdict = f"{'✔' if holds else '✘'} {times(b.seconds / a.seconds)}"
        rows.append([claim.workload, what, verdict, claim.why])
    return Table(["workload", "claim: faster < slower", "here", "why"], rows,
                 "each ordering the lesson claims, checked against the times just measured; ×: how many times "
                 "faster the first one was, over whole runs; per round: µs a round, the run's fixed part taken out")


def _n(value):
    return f"{value:,}"


def times(ratio):
    """A slowdown as people write it: 2,001×, 40×, 1.3×, 0.07×."""
    return f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.2g}×"


def _us(value):
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}" if value >= 1 else f"{value:.3f}"


def time_table(suite):
    """µs per round for every workload under every technique, with the time against native."""
    techniques = _techniques(suite)
    rows = []
    for name in _workloads(suite):
        row = [name]
        for t in techniques:
            m = _cell(suite, name, t)
            if not _ran(m):
                row.append("—")
                continue
            ratio = slowdown(suite, name, t)
            row.append(_us(m.us_per_round) + (f" ({times(ratio)})" if ratio is not None and t != "native" else ""))
        rows.append(row)
    return Table(["workload"] + [SHORT.get(t, t) for t in techniques], rows,
                 "a whole run's time divided by its loop rounds, in µs (so the run's fixed part is in it), median "
                 "of the repeats, measured side by side in one run on this machine; (×): the time as a multiple "
                 "of native's; —: could not run (see why below)")


def _named(counts, names, number):
    return [f"{number(counts[k])} {name[counts[k] != 1]}" for k, name in names.items() if counts.get(k)]


def _describe(counts, number=None):
    """'145 traps (50 true faults, 4 hidden faults) · 40 blocks': the events of `counts` (a dict),
    the shadow MMU's in brackets after the traps they are part of, or, under the VT-x model without
    EPT, after the #PF exits they are; the VT-x model's memory exits in brackets after the exits, its
    TLB misses last; under paravirt the traps Xen bounced after the traps, and its mmu_updates with
    the PTEs they changed after the hypercalls ('12 hypercalls (10 mmu_updates: 10 PTEs)'); 'none'
    when there are none."""
    number = number or _n
    mmu = ", ".join(_named(counts, MMU, number) + _named(counts, BOUNCES, number))
    parts = []
    for kind in COUNTS:
        value = counts.get(kind, 0)
        if not value:
            continue
        text = f"{number(value)} {kind[:-1] if value == 1 else kind}"
        if kind == "traps" and mmu:
            text += f" ({mmu})"
        if kind == "hypercalls" and counts.get("mmu_updates"):
            text += f" ({': '.join(_named(counts, UPDATES, number))})"
        if kind == "exits":
            exits = _named(counts, EXITS, number)
            if mmu and not counts.get("traps") and counts.get("pf_exits"):
                exits = [f"{e}: {mmu}" if e.endswith("#PF") else e for e in exits]
            text += f" ({'; '.join(exits)})" if exits else ""
        parts.append(text)
    walks = _named(counts, WALKS, number)
    if walks:
        parts.append(walks[0] + (f" ({walks[1]})" if len(walks) > 1 else ""))
    return " · ".join(parts) or "none"


KINDS = COUNTS + tuple(MMU) + tuple(EXITS) + tuple(WALKS) + tuple(BOUNCES) + tuple(UPDATES)   # what _describe reads


def _events(m):
    return _describe({kind: getattr(m, kind, 0) for kind in KINDS})


def counts_table(suite):
    """The exact counts of each cell: guest instructions and the events the VMM paid for. These
    are the same run after run; the times are not."""
    techniques = _techniques(suite)
    rows = []
    for name in _workloads(suite):
        rounds = next((m.rounds for m in suite.measurements if m.workload == name), 0)
        native = _cell(suite, name, "native")
        row = [name, _n(rounds), _n(native.instructions) if _ran(native) else "—"]
        row += [_events(m) if _ran(m) else "—" for m in (_cell(suite, name, t) for t in techniques)]
        rows.append(row)
    return Table(["workload", "rounds", "instructions"] + [SHORT.get(t, t) for t in techniques], rows,
                 "exact counts for the whole run: guest instructions (counted natively), then per technique the "
                 "traps into the VMM (in brackets the page faults and call-outs of the shadow page tables among "
                 "them, or the traps Xen bounced to the kernel's handlers), VM exits (in brackets the VT-x model's "
                 "exits for memory: CR accesses, invlpgs, #PF, with the shadow page tables' faults among them, and "
                 "EPT violations), hypercalls (in brackets Xen's mmu_updates and the PTEs they changed), blocks "
                 "translated, and the VT-x model's TLB misses with the references of their two-dimensional walks "
                 "(EPT on demand); none: the guest ran without the VMM's help")


def _per(value):
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def round_counts(small, large, workload, technique):
    """The exact counts of one round: the difference between two suites run with different rounds,
    divided by the difference in rounds (what the boot and the final report cost cancels out).
    None if either run did not happen."""
    a, b = _cell(small, workload, technique), _cell(large, workload, technique)
    if not (_ran(a) and _ran(b)) or b.rounds == a.rounds:
        return None
    n = b.rounds - a.rounds
    return {kind: (getattr(b, kind) - getattr(a, kind)) / n for kind in ("instructions",) + KINDS}


def round_counts_table(small, large):
    """What one round of each workload costs in events, per technique: exact, from two suites."""
    techniques = _techniques(large)
    rows = []
    for name in _workloads(large):
        native = round_counts(small, large, name, "native")
        row = [name, _per(native["instructions"]) if native else "—"]
        for t in techniques:
            c = round_counts(small, large, name, t)
            row.append("—" if c is None else _describe(c, _per))
        rows.append(row)
    return Table(["workload", "instructions"] + [SHORT.get(t, t) for t in techniques], rows,
                 "per loop round, exact: the counts of two runs with different rounds, subtracted and divided; "
                 "in brackets: the page faults and call-outs of the shadow page tables, or Xen's bounces, among "
                 "the traps, the VT-x model's exits for memory among its exits, Xen's mmu_updates and the PTEs "
                 "they changed among the hypercalls; none: one round needs nothing from the VMM; —: could not "
                 "run")


def _per_round(rt):
    """µs per round, or '< x' where the runs' own disagreement could account for it."""
    if rt is None:
        return "—"
    if not rt.resolved:
        return f"< {_us(max(rt.resolution, 1e-9) * 1e6)}"
    return _us(rt.per_round * 1e6)


def round_time_table(shorter, longer):
    """What one loop round costs, in µs, per workload and technique: the difference of two suites'
    times over the difference of their rounds, so the run's fixed part drops out. A cell smaller than
    the runs' own disagreement shows as < that bound."""
    techniques = _techniques(longer)
    rows = []
    for name in _workloads(longer):
        a, b = _cell(shorter, name, techniques[0]), _cell(longer, name, techniques[0])
        rounds = f"{a.rounds} → {b.rounds}" if a is not None and b is not None else "—"
        rows.append([name, rounds] + [_per_round(compare.round_time(shorter, longer, name, t))
                                      if _cell(shorter, name, t) is not None else "—" for t in techniques])
    return Table(["workload", "rounds"] + [SHORT.get(t, t) for t in techniques], rows,
                 "µs per loop round: (time of the longer run − time of the shorter) ÷ (the extra rounds), medians "
                 "of the repeats; < x: too small to tell from how much the repeats disagreed (x); —: could not run")


def fixed_cost_table(shorter, longer):
    """What a run pays once, in ms, whatever its rounds: the shorter run's time less its rounds' share."""
    techniques = _techniques(longer)
    rows = []
    for name in _workloads(longer):
        row = [name]
        for t in techniques:
            rt = compare.round_time(shorter, longer, name, t) if _cell(shorter, name, t) is not None else None
            row.append("—" if rt is None else _us(max(rt.fixed, 0) * 1e3))
        rows.append(row)
    return Table(["workload"] + [SHORT.get(t, t) for t in techniques], rows,
                 "ms a run pays once, whatever its rounds (building the machine, the boot, the report, translating "
                 "code before it first runs): the shorter run's time less its rounds at the per-round cost; "
                 "—: could not run")


def cannot_run(suite):
    """Each cell that could not run, with the reason vmkit.compare gave."""
    rows = [(m.workload, SHORT.get(m.technique, m.technique), m.reason or "")
            for m in suite.measurements if not m.ran]
    return Table(["workload", "technique", "why it could not run"], rows or [("—", "—", "every cell ran")],
                 "a technique that cannot run a guest says so; the table above shows — there")


def slowdown_plot(suite):
    """Grouped bars: each technique's time on each workload as a multiple of native's (log scale)."""
    workloads, techniques = _workloads(suite), [t for t in _techniques(suite) if t != "native"]
    fig, ax = plt.subplots(figsize=(9.5, 3.8), facecolor="white")
    width = 0.8 / max(len(techniques), 1)
    lines = ["time as a multiple of native's, per workload (log scale):"]
    for k, t in enumerate(techniques):
        xs, ys = [], []
        for i, name in enumerate(workloads):
            ratio = slowdown(suite, name, t)
            if ratio is not None:
                xs.append(i + (k - (len(techniques) - 1) / 2) * width)
                ys.append(ratio)
        ax.bar(xs, ys, width, color=COLOURS.get(t, "#777777"), label=SHORT.get(t, t))
    for name in workloads:
        parts = [f"{SHORT.get(t, t)} {times(slowdown(suite, name, t))}" if slowdown(suite, name, t) is not None
                 else f"{SHORT.get(t, t)} did not run" for t in techniques]
        lines.append(f"  {name}: " + ", ".join(parts))
    ax.axhline(1, color=COLOURS["native"], linestyle="--", linewidth=1)
    ax.text(len(workloads) - 0.5, 1, " native", va="bottom", ha="right", fontsize=9, color=COLOURS["native"])
    ax.set_yscale("log")
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel("time ÷ native time")
    ax.set_title("the same guests under every technique, measured on this machine", fontsize=11)
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return Plot(fig, "\n".join(lines))


# --- the paper beside ours --------------------------------------------------------------------------------
def _benchmarks(workload):
    """The paper's benchmark names a workload mirrors (its `adams_agesen`: a name, a list or None)."""
    mirrors = getattr(workload, "adams_agesen", None)
    if not mirrors:
        return []
    if isinstance(mirrors, str):
        mirrors = mirrors.split(",")
    return [name.strip() for name in mirrors if name.strip() in FIGURE_4]


def mirrored(suite, workloads):
    """[(paper benchmark, our workload)] in the paper's order, for the workloads of `workloads`
    (vmkit.compare.WORKLOADS) that are in the suite and mirror one of its benchmarks."""
    ours = _workloads(suite)
    pairs = [(b, name) for name, wl in workloads.items() if name in ours for b in _benchmarks(wl)]
    return sorted(pairs, key=lambda pair: FIGURE_4.index(pair[0]))


def _ratio(value, base):
    return times(value / base) if value is not None and base else "—"


def _words(cell):
    """A paper cell without a native number to divide by: its cycles, or its words."""
    return f"{cell} cycles" if _cycles(cell) is not None else cell


def _ours(suite, name, technique, longer=None):
    """Our ratio to native for one cell: of whole runs, or per round when `longer` is given (None
    where a round is too cheap to time, or either did not run)."""
    if longer is None:
        return slowdown(suite, name, technique)
    ours, native = (compare.round_time(suite, longer, name, t) if _cell(suite, name, t) is not None else None
                    for t in (technique, "native"))
    if ours is None or native is None or not (ours.resolved and native.resolved):
        return None
    return ours.per_round / native.per_round


def _ours_text(suite, name, technique, longer=None):
    ratio = _ours(suite, name, technique, longer)
    if ratio is not None:
        return times(ratio)
    if longer is not None and _ran(_cell(suite, name, technique)) and _ran(_cell(suite, name, "native")):
        ours = compare.round_time(suite, longer, name, technique) if _cell(suite, name, technique) else None
        if ours is not None and ours.resolved:          # native's round is too cheap to divide by (ptemod: a store)
            return f"{_us(ours.per_round * 1e6)} µs a round (native's: too small to time)"
        return "within the noise"
    return "—"


# Our columns beside the paper's: the translator, the VT-x model (without EPT first: the paper's hardware
# VMM had none) and real KVM; the VT-x modes only where the suite has them
OURS = ("binary-translation", "hardware-assist/no-ept", "hardware-assist", "hardware-assist/ept-on-demand", "kvm")
_ALWAYS = ("binary-translation", "hardware-assist", "kvm")


def _ours_columns(suite):
    present = {m.technique for m in suite.measurements}
    return [t for t in OURS if t in _ALWAYS or t in present]


def paper_beside_ours(suite, workloads, longer=None):
    """For each benchmark of the paper that one of our workloads mirrors: the paper's software and
    hardware VMM against its native, beside ours (binary translation, the VT-x model in the memory
    modes the suite has, real KVM). Ours are whole runs, or with `longer` (the same suite with more
    rounds) one round, the fixed part out."""
    columns = _ours_columns(suite)
    rows = []
    for bench, name in mirrored(suite, workloads):
        native, software, hardware = paper_cycles(bench)
        row = next(r for r in PAPER if r[0] == bench)
        rows.append([bench, name,
                     _ratio(software, native) if native else _words(row[3]),
                     _ratio(hardware, native) if native else _words(row[4])]
                    + [_ours_text(suite, name, t, longer) for t in columns])
    ours = ("whole runs, fixed part included" if longer is None else
            "one loop round, the run's fixed part subtracted; within the noise: the round costs less than the "
            "repeats disagree by")
    return Table(["paper", "ours", "software VMM", "hardware VMM"] + [SHORT[t] for t in columns],
                 rows, "each technique's time as a multiple of native's. The paper: cycles per operation on a "
                 "Pentium 4 (Adams & Agesen, ASPLOS 2006, Figure 4); its hardware VMM was first-generation VT-x, "
                 "without EPT; where it gives no native number its words stand in the cell. Ours: measured here "
                 f"({ours}), where native is Unicorn emulating the guest, not the bare CPU.",
                 groups=[("", 2), ("Adams & Agesen", 2), ("this machine", len(columns))])


def paper_plot(suite, workloads, longer=None):
    """Two panels, one shape: the paper's slowdowns against native (left) beside ours (right); ours
    per round when `longer` is given."""
    pairs = [(b, name) for b, name in mirrored(suite, workloads) if paper_cycles(b)[0]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), facecolor="white")
    lines = ["Adams & Agesen (cycles ÷ native cycles):"]
    for k, (label, colour) in enumerate((("software VMM", COLOURS["binary-translation"]),
                                         ("hardware VMM", COLOURS["hardware-assist/no-ept"]))):
        ys = [paper_cycles(b)[k + 1] / paper_cycles(b)[0] for b, _ in pairs]
        left.bar([i + (k - 0.5) * 0.38 for i in range(len(pairs))], ys, 0.38, color=colour, label=label)
        lines.append(f"  {label}: " + ", ".join(f"{b} {times(y)}" for (b, _), y in zip(pairs, ys)))
    lines.append("this machine (seconds ÷ native seconds" + (", per round):" if longer is not None else "):"))
    ours = _ours_columns(suite)
    width = 0.8 / len(ours)
    for k, t in enumerate(ours):
        xs, ys = [], []
        for i, (_, name) in enumerate(pairs):
            ratio = _ours(suite, name, t, longer)
            if ratio is not None:
                xs.append(i + (k - (len(ours) - 1) / 2) * width)
                ys.append(ratio)
        right.bar(xs, ys, width, color=COLOURS[t], label=SHORT[t])
        lines.append(f"  {SHORT[t]}: " + ", ".join(f"{name} {_ours_text(suite, name, t, longer)}" for _, name in pairs))
    for ax, title, labels in ((left, "Adams & Agesen, ASPLOS 2006", [b for b, _ in pairs]),
                              (right, "this machine" + (", per round" if longer is not None else ""),
                               [name for _, name in pairs])):
        ax.axhline(1, color=COLOURS["native"], linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_xticks(range(len(pairs)), labels)
        ax.set_title(title, fontsize=11)
        ax.set_ylabel("time ÷ native time")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return Plot(fig, "\n".join(lines))


# --- the paper's headline cells: its software VMM against its hardware VMM -----------------------------------
HEADLINE = ("pgfault", "ptemod")


def headline_table(small, suite, longer, workloads=HEADLINE, software="binary-translation",
                   hardware="hardware-assist/no-ept"):
    """Adams & Agesen's pgfault and ptemod, their software VMM (binary translation) against their
    hardware VMM (first-generation VT-x, shadow page tables, no EPT), beside ours: what one round of
    each costs binary translation and the VT-x model without EPT, in exact events (from `small` and
    `suite`, two suites of different rounds) and in µs (from `suite` and `longer`), and the hardware
    column as a multiple of the software one, theirs and ours."""
    rows = []
    for name in workloads:
        _, paper_software, paper_hardware = paper_cycles(name)
        cells, per = [], {}
        for t in (software, hardware):
            counts = round_counts(small, suite, name, t)
            rt = compare.round_time(suite, longer, name, t) if _cell(suite, name, t) is not None else None
            per[t] = rt.per_round if rt is not None and rt.resolved else None
            cells.append("—" if counts is None else f"{_describe(counts, _per)}; {_per_round(rt)} µs")
        ratio = times(per[hardware] / per[software]) if None not in per.values() else "—"
        rows.append([name, f"{paper_software:,.0f}", f"{paper_hardware:,.0f}", times(paper_hardware / paper_software),
                     *cells, ratio])
    return Table(["workload", "software VMM", "hardware VMM", "hardware ÷ software", SHORT[software], SHORT[hardware],
                  "hardware ÷ software"], rows,
                 "one round. Adams & Agesen: CPU cycles on their Pentium 4 (ASPLOS 2006, Figure 4 and its text), "
                 "VMware's binary translator against their VMM on first-generation VT-x, both on shadow page tables. "
                 "This machine: the round's exact events (two runs of different rounds, subtracted) and its µs (the "
                 "same with the longer run, the fixed part out; < x: within the repeats' disagreement)",
                 groups=[("", 1), ("Adams & Agesen (cycles)", 3), ("this machine (one round)", 3)])


def headline_ratios(suite, longer, workloads=HEADLINE, software="binary-translation", hardware="hardware-assist/no-ept"):
    """{workload: (the paper's hardware ÷ software cycles, ours per round or None)}: above 1 the
    software VMM was the faster. Ours is None where a round of either is too cheap to time."""
    out = {}
    for name in workloads:
        _, paper_software, paper_hardware = paper_cycles(name)
        rts = [compare.round_time(suite, longer, name, t) if _cell(suite, name, t) is not None else None
               for t in (software, hardware)]
        ours = rts[1].per_round / rts[0].per_round if all(rt is not None and rt.resolved for rt in rts) else None
        out[name] = (paper_hardware / paper_software, ours)
    return out


def headline_plot(suite, longer, workloads=HEADLINE):
    """The hardware VMM's time over the software VMM's, per round, for pgfault and ptemod: Adams &
    Agesen's (first-generation VT-x over VMware's translator, in cycles) beside ours (the VT-x model
    without EPT over binary translation), on a log scale; above 1 binary translation was the faster."""
    ratios = headline_ratios(suite, longer, workloads)
    fig, ax = plt.subplots(figsize=(6.5, 3.4), facecolor="white")
    lines = ["hardware VMM ÷ software VMM, one round (above 1: binary translation is the faster):"]
    for k, (label, colour) in enumerate((("Adams & Agesen: VT-x ÷ BT (cycles)", COLOURS["hardware-assist/no-ept"]),
                                         ("this machine: VT-x, no EPT ÷ binary transl. (µs)", "#bcaaa4"))):
        xs = [i + (k - 0.5) * 0.38 for i, name in enumerate(ratios) if ratios[name][k] is not None]
        ys = [r[k] for r in ratios.values() if r[k] is not None]
        ax.bar(xs, ys, 0.38, color=colour, label=label)
        for x, y in zip(xs, ys):
            ax.text(x, y, times(y), ha="center", va="bottom", fontsize=9)
        lines.append(f"  {label}: " + ", ".join(f"{name} {times(r[k]) if r[k] is not None else 'too cheap to time'}"
                                                 for name, r in ratios.items()))
    ax.axhline(1, color=COLOURS["native"], linestyle="--", linewidth=1)
    ax.text(-0.55, 1, " equal", va="bottom", ha="left", fontsize=9, color=COLOURS["native"])
    ax.set_yscale("log")
    ax.set_ylim(0.1, 100)
    ax.set_xlim(-0.6, len(ratios) - 0.4)
    ax.set_xticks(range(len(ratios)), list(ratios))
    ax.set_ylabel("hardware ÷ software")
    ax.set_title("first-generation VT-x against binary translation", fontsize=11)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return Plot(fig, "\n".join(lines))


# --- adaptive binary translation, round by round ------------------------------------------------------------
def _runs(runs):
    """A list of runs of vmkit.compare.round_by_round (or one run) as a list of runs."""
    return [runs] if runs and isinstance(runs[0], compare.Round) else list(runs)


def round_medians(runs):
    """[(round number, its counts, its median seconds)] from repeated runs of round_by_round. The
    counts are exact, so every run must have the same ones; the times are the median of the runs'."""
    runs = _runs(runs)
    out = []
    for rounds in zip(*runs):
        counts = rounds[0].counts
        if any(r.counts != counts for r in rounds):
            raise ValueError(f"round {rounds[0].number} counted {[r.counts for r in rounds]} in different runs: "
                             f"the counts should be exact")
        out.append((rounds[0].number, counts, statistics.median(r.seconds for r in rounds)))
    return out


def _windows(n):
    """Rounds 1, 2, 3, then growing windows up to n: where a warm-up shows, and where it is over."""
    edges, start = [], 1
    for end in (1, 2, 3, 10, 100, 1000, 10_000, 100_000):
        if start > n:
            break
        edges.append((start, min(end, n)))
        start = end + 1
    if start <= n:
        edges.append((start, n))
    return edges


def adaptive_table(on, off, count="trace_faults", also="trace_callouts"):
    """Rounds of ptemod with adaptive translation on and off (each: runs of round_by_round), window
    by window: the `count` (trace faults) and `also` (call-outs) per round, exact, and the median µs
    per round. Round 1 also holds the boot."""
    on, off = round_medians(on), round_medians(off)
    rows = []
    for first, last in _windows(min(len(on), len(off))):
        cells = [f"{first}" if first == last else f"{first}–{last}"]
        for rounds in (on, off):
            part = rounds[first - 1:last]
            k = len(part)
            cells += [_per(sum(c[count] for _, c, _ in part) / k), _per(sum(c[also] for _, c, _ in part) / k),
                      _us(statistics.median(t for _, _, t in part) * 1e6)]
        rows.append(cells)
    name, other = MMU[count][1], MMU[also][1]
    return Table(["rounds", name, other, "µs", name, other, "µs"], rows,
                 f"per round, in each window of rounds: {name} and {other} (exact), and the median µs a round "
                 "(this machine's, each round timed between two of the machine's stops); round 1 also holds the "
                 "boot", groups=[("", 1), ("adaptive on", 3), ("adaptive off", 3)])


def adaptive_plot(on, off, count="trace_faults", title="ptemod under binary translation"):
    """Two panels over the round number: the trace faults taken so far (left), and the µs each round
    took (right, from round 2, as round 1 holds the boot; a running median over 9 rounds, on a log
    scale of rounds so that the warm-up shows), with adaptive translation on and off."""
    on, off = round_medians(on), round_medians(off)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), facecolor="white")
    lines = []
    for label, rounds, colour in (("adaptive on", on, COLOURS["binary-translation"]),
                                  ("adaptive off", off, COLOURS["trap-and-emulate"])):
        xs = [n for n, _, _ in rounds]
        total, so_far = 0, []
        for _, c, _ in rounds:
            total += c[count]
            so_far.append(total)
        times_us = [t * 1e6 for _, _, t in rounds[1:]]
        smooth = [statistics.median(times_us[max(0, i - 4):i + 5]) for i in range(len(times_us))]
        left.plot(xs, so_far, color=colour, label=label)
        right.plot(xs[1:], smooth, color=colour, label=label)
        late = times_us[len(times_us) // 2:]
        lines.append(f"{label}: {total:,} {MMU[count][1]} in {len(rounds):,} rounds "
                     f"({sum(c[count] for _, c, _ in rounds[len(rounds) // 2:]):,} in the second half); "
                     f"median {statistics.median(late):,.0f} µs a round in the second half")
    right.set_xscale("log")
    for ax, ylabel, heading in ((left, f"{MMU[count][1]} so far", f"{MMU[count][1]}: adaptive on stops taking them"),
                                (right, "µs a round (running median of 9)", "time per round, from round 2")):
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.set_title(heading, fontsize=11)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    right.set_ylim(bottom=0)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return Plot(fig, "\n".join(lines))


# --- the cost model ---------------------------------------------------------------------------------------
# Which events leave the guest under each technique, and what the VMM then does.
_PATHS = {
    "native": [],
    "trap-and-emulate": [("trap", "privileged instruction: #GP", "VMM emulates it"),
                         ("trap", "#PF on the shadow page tables", "shadow MMU: fill, reflect or trace")],
    "binary-translation": [("block", "new code: translate once", "translation cache"),
                           ("trap", "callout (in, faults)", "VMM emulates it"),
                           ("trap", "#PF on the shadow page tables", "shadow MMU: fill, reflect or trace")],
    "paravirt": [("hypercall", "int 0x82 (mmu_update: a PTE)", "Xen handles it (validates the PTE)"),
                 ("trap", "a fault, int 0x80, cpuid", "Xen bounces it to the kernel (emulates cpuid)")],
    "hardware-assist/no-ept": [("exit", "VM exit (IO, HLT...)", "VMM handles it"),
                               ("exit", "#PF, CR3 load, invlpg", "shadow MMU: fill, reflect or trace")],
    "hardware-assist": [("exit", "VM exit (IO, HLT...)", "VMM handles it")],
    "hardware-assist/ept-on-demand": [("exit", "VM exit (IO, HLT...)", "VMM handles it"),
                                      ("exit", "EPT violation", "KVM maps the frame")],
    "kvm": [("exit", "VM exit (IO, HLT...)", "kvm.ko, then vmkit")],
}


def _us_cost(model, technique, term):
    costs = model.costs.get(technique, {}) if model is not None else {}
    return costs.get(term)


def cost_diagram(model=None, techniques=TECHNIQUES):
    """Where each technique's time goes: guest instructions run on the CPU, and the events that
    leave the guest go to the VMM. With a fitted model, each arrow carries its cost in µs."""
    g = Diagram("costs", caption="cost ≈ instructions × i + traps × t + exits × e + hypercalls × h + blocks × b")
    g.attr(rankdir="LR", fontname="Helvetica", nodesep="0.2", ranksep="0.35", size="10,7")
    g.attr("node", fontname="Helvetica", fontsize="11", shape="box", style="rounded,filled")
    g.attr("edge", fontname="Helvetica", fontsize="10", color="#555555")
    lines = ["cost ≈ instructions × i + traps × t + exits × e + hypercalls × h + blocks × b"]
    for t in reversed(techniques):             # graphviz stacks left-to-right ranks bottom up
        instruction = _us_cost(model, t, "instruction")
        per = f"\n{instruction * 1e9:.0f} ns each" if instruction is not None else ""
        g.node(f"{t}_guest", f"{SHORT.get(t, t)}\nguest instructions{per}", fillcolor="#eceff1")
        line = f"{t}: guest instructions run on the CPU" + (f" ({instruction * 1e9:.0f} ns each)" if per else "")
        for k, (term, what, where) in enumerate(_PATHS.get(t, [])):
            cost = _us_cost(model, t, term)
            label = what + (f"\n{cost * 1e6:.1f} µs" if cost is not None else "")
            g.node(f"{t}_{k}", where, fillcolor="#fff3e0")
            g.edge(f"{t}_guest", f"{t}_{k}", label=label, color=COLOURS.get(t, "#555555"))
            line += f"; {what} -> {where}" + (f" ({cost * 1e6:.1f} µs per {term})" if cost is not None else "")
        lines.insert(1, line)
    g.text = "\n".join(lines)
    return g


def cost_table(model, suite=None, techniques=None):
    """The fitted costs per technique: µs per trap, exit, hypercall and translated block, ns per
    guest instruction. With `suite`, a price the technique's runs never paid shows as —, and one
    they paid but the fit set to zero as 0."""
    techniques = [t for t in (techniques or TECHNIQUES) if t in model.costs]
    plural = dict(zip(COST_TERMS, ("instructions",) + COUNTS))

    def paid(t, term):
        return suite is None or any(getattr(m, plural[term]) for m in suite.measurements if m.technique == t and m.ran)

    rows = []
    for t in techniques:
        c = model.costs[t]
        row = [SHORT.get(t, t), f"{c.get('instruction', 0) * 1e9:.1f}"]
        for term in COST_TERMS[1:]:
            cost = c.get(term) or 0
            row.append(f"{cost * 1e6:.2f}" if cost else "0" if paid(t, term) and suite is not None else "—")
        rows.append(row)
    return Table(["technique", "ns / instruction", "µs / trap", "µs / exit", "µs / hypercall", "µs / block"], rows,
                 "fitted by non-negative least squares to the suite's runs, one fit per technique; —: the technique "
                 "had none of that event, so nothing prices it; 0: it had some, and the fit put their cost elsewhere")


def _counts(m):
    return {"instructions": m.instructions, "traps": m.traps, "exits": m.exits,
            "hypercalls": m.hypercalls, "blocks": m.blocks}


def residuals(model, suite):
    """[(workload, technique, measured s, predicted s)] for every cell that ran and was fitted."""
    return [(m.workload, m.technique, m.seconds, model.predict(m.technique, **_counts(m)))
            for m in suite.measurements if m.ran and m.technique in model.costs]


def residuals_table(model, suite):
    """Measured against predicted, cell by cell, with the error in per cent."""
    rows = [(name, SHORT.get(t, t), _us(measured * 1e6), _us(predicted * 1e6),
             f"{(predicted - measured) / measured:+.0%}" if measured else "—")
            for name, t, measured, predicted in residuals(model, suite)]
    errors = [abs(p - m) / m for _, _, m, p in residuals(model, suite) if m]
    middle = (f"; median error {statistics.median(errors):.0%}; within ±25%: {sum(e <= 0.25 for e in errors)} "
              f"of {len(errors)} runs" if errors else "")
    return Table(["workload", "technique", "measured µs", "predicted µs", "error"], rows,
                 "the whole run's time, measured and as the fitted model predicts it from the counts" + middle)


# --- the designer: a workload of one's own --------------------------------------------------------------------
# slider -> the suite's workload whose one round it adds
PARTS = (("system calls", "syscall"), ("cli/sti sections", "cli-sti"), ("port reads", "in"),
         ("divide errors", "divzero"), ("page faults", "pgfault"), ("PTE writes", "ptemod"))


def design_counts(suite, technique, parts, instructions=0):
    """The counts a designed workload would have under `technique`: `parts` maps a suite workload
    to how many of its rounds the design holds (each round counted as the measured run's counts
    divided by its rounds), plus `instructions` plain guest instructions that leave the guest never.
    None if the technique could not run a part the design uses."""
    total = {"instructions": float(instructions), "traps": 0.0, "exits": 0.0, "hypercalls": 0.0, "blocks": 0.0}
    for name, n in parts.items():
        if not n:
            continue
        m = _cell(suite, name, technique)
        if not _ran(m) or not m.rounds:
            return None
        for key, value in _counts(m).items():
            if key != "blocks":                 # translation is paid once, not per round
                total[key] += n * value / m.rounds
    return total


def predict_design(model, suite, parts, instructions=0):
    """{technique: predicted seconds or None (cannot run a part)} for a designed workload."""
    out = {}
    for t in [t for t in TECHNIQUES if t in model.costs]:
        counts = design_counts(suite, t, parts, instructions)
        out[t] = None if counts is None else max(model.predict(t, **counts), 0.0)
    return out


def design_plot(predicted, measured=None):
    """Bars of predicted time per technique; with `measured`, the real runs' times as diamonds."""
    techniques = list(predicted)
    fig, ax = plt.subplots(figsize=(7.5, 3.2), facecolor="white")
    lines = ["predicted time of the designed workload:"]
    heights = [v for v in list(predicted.values()) + list((measured or {}).values()) if v is not None]
    top = max(heights, default=0) * 1e3 * 1.2 or 1.0
    for i, t in enumerate(techniques):
        p = predicted[t]
        if p is None:
            ax.text(i, top * 0.05, "cannot\nrun it", ha="center", va="bottom", fontsize=8, color="#777777")
            lines.append(f"  {t}: cannot run it")
            continue
        ax.bar(i, p * 1e3, 0.6, color=COLOURS.get(t, "#777777"))
        line = f"  {t}: {p * 1e3:.2f} ms predicted"
        if measured and measured.get(t) is not None:
            ax.plot(i, measured[t] * 1e3, "D", color="black", markersize=7)
            line += f", {measured[t] * 1e3:.2f} ms measured"
        lines.append(line)
    ax.set_ylim(0, top)
    if measured:
        ax.plot([], [], "D", color="black", label="measured: the parts run for real, times added")
        ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False)
    ax.set_xticks(range(len(techniques)), [SHORT.get(t, t) for t in techniques], fontsize=9)
    ax.set_ylabel("ms")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return Plot(fig, "\n".join(lines))


class Designer(w.VBox):
    """Sliders for a workload of one's own: how many system calls, cli/sti sections, port reads,
    divide errors, page faults and PTE writes, and how many plain instructions. The bars show the fitted model's prediction per
    technique. With `measure` (vmkit.compare.measure), the button runs each part for real under
    every technique with that many rounds and adds the times: a check of the model, since a guest
    that mixes the parts would only add the times of its parts if the model holds."""

    SLIDER = dict(readout=True, readout_format=",d", continuous_update=False,
                  style={"description_width": "120px"}, layout=w.Layout(width="440px", min_width="440px"))

    def __init__(self, model, suite, measure=None, maximum=2000):
        self.model, self.suite, self.measure = model, suite, measure
        # each slider shows its value beside it (the readout), and the column of sliders keeps its
        # width: squeezed by the plot beside it, a slider's readout would slide under the picture
        self.sliders = {name: w.IntSlider(value=100 if name == "syscall" else 0, min=0, max=maximum, step=10,
                                          description=label, **self.SLIDER)
                        for label, name in PARTS if name in _workloads(suite)}
        self.instructions = w.IntSlider(value=100_000, min=0, max=2_000_000, step=10_000,
                                        description="instructions", **self.SLIDER)
        self.picture, self.status = w.HTML(layout=w.Layout(flex="1 1 auto", overflow="auto")), w.HTML()
        self.button = w.Button(description="Check against real runs", button_style="primary",
                               layout=w.Layout(width="220px"), disabled=measure is None)
        for slider in list(self.sliders.values()) + [self.instructions]:
            slider.observe(lambda _: self.update(), names="value")
        self.button.on_click(lambda _: self.check())
        self.measured = None
        controls = w.VBox(list(self.sliders.values()) + [self.instructions, self.button],
                          layout=w.Layout(flex="0 0 auto", min_width="450px"))
        super().__init__([w.HBox([controls, self.picture], layout=w.Layout(flex_flow="row wrap")), self.status])
        self.update()

    def parts(self):
        return {name: slider.value for name, slider in self.sliders.items()}

    def predicted(self):
        return predict_design(self.model, self.suite, self.parts(), self.instructions.value)

    def update(self, measured=None):
        self.measured = measured
        plot = design_plot(self.predicted(), measured)
        self.plot = plot
        self.picture.value = plot._repr_mimebundle_()["text/html"]
        if measured is None:
            self.status.value = ("<i>The bars are the model's prediction. The plain instructions are "
                                 "predicted only: no guest of the suite runs them without a loop around.</i>")

    def check(self):
        """Run each part with its rounds under each technique (vmkit.compare.measure) and add the times."""
        if self.measure is None:
            self.status.value = "<i>No way to run guests was given, so this designer predicts only.</i>"
            return None
        self.instructions.value = 0         # the parts are what runs, so the parts are what is compared
        measured = {}
        for t in self.predicted():
            total = 0.0
            for name, rounds in self.parts().items():
                if not rounds:
                    continue
                m = self.measure(name, t, rounds=rounds)
                if not m.ran:
                    total = None
                    break
                total += m.seconds
            measured[t] = total
        self.update(measured)
        self.status.value = html.escape("Measured: each part run for real under each technique with that many "
                                        "rounds, the times added; the instructions slider is set to 0, as no guest runs them alone.")
        return measured
