"""Adaptive binary translation on ptemod: the trace faults and the time of every round, with adaptive
translation on against off, measured side by side in one run (vmkit.compare.round_by_round).

    .venv/bin/python tests/benchmarks/adaptive.py [DIRECTORY] [--rounds N] [--repeat N]
    (also part of: python3 course.py bench)

ptemod (vmkit/guests/cmp_ptemod.asm) stores to a page-table entry once a round. Under binary
translation on shadow page tables that page table is traced, so the store is a trace fault, until
adaptive translation (Adams & Agesen, ASPLOS 2006: the software VMM "adaptively discovers the PTE
write and translates it into a small program that is cheaper than a trap") has seen it fault
ADAPT_AFTER times; from then on the store is a call-out and takes no fault. The runs with adaptive
on and off alternate, `repeat` of each; per round, the counts are exact (the same in every run) and
the time is the median of the runs'. Round 1 also holds the boot.

Writes into DIRECTORY (default: a new temporary directory, never the repository):
    adaptive.png     trace faults so far, and µs a round, adaptive on against off
    adaptive.md      the same by windows of rounds: trace faults and call-outs a round, µs a round
Target: after the warm-up (the rounds after the first ADAPT_AFTER), adaptive on takes at most one
trace fault in 100 rounds, and adaptive off one every round. The time a round is reported with no
target: in vmkit a trace fault and a call-out both go through Python and both compare the traced
page before and after the store, so what the call-out saves (taking the fault and classifying it)
is a small part of a round here, where it was most of the cost on the paper's hardware.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vmkit import compare
from vmkit.vmm.binary_translation import ADAPT_AFTER

ROUNDS, REPEAT = 1000, 3


def measure(rounds=ROUNDS, repeat=REPEAT):
    """{"on": [runs], "off": [runs]}: round_by_round of ptemod, adaptive on and off, interleaved."""
    runs = {"on": [], "off": []}
    for _ in range(repeat):
        runs["on"].append(compare.round_by_round("ptemod", "binary-translation", rounds))
        runs["off"].append(compare.round_by_round("ptemod", "binary-translation", rounds, adaptive=False))
    return runs


def summary(runs):
    """What the targets and the report need, from the runs of measure()."""
    from vmkit.viz import compare as pictures
    out = {}
    for mode, these in runs.items():
        rounds = pictures.round_medians(these)
        after = rounds[ADAPT_AFTER:]                         # the warm-up over
        second = rounds[len(rounds) // 2:]
        out[mode] = dict(rounds=len(rounds), trace_faults=sum(c["trace_faults"] for _, c, _ in rounds),
                         after_warm_up=sum(c["trace_faults"] for _, c, _ in after), after_rounds=len(after),
                         callouts=sum(c["trace_callouts"] for _, c, _ in rounds),
                         us_per_round=statistics.median(t for _, _, t in second) * 1e6,
                         warm_up_us=sum(t for _, _, t in rounds[1:ADAPT_AFTER + 1]) * 1e6)
    return out


def main(directory=None, rounds=ROUNDS, repeat=REPEAT):
    from vmkit.viz import compare as pictures         # matplotlib: only when the figure is asked for
    directory = Path(directory or tempfile.mkdtemp(prefix="vmkit-adaptive-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"8. adaptive binary translation on ptemod: {rounds:,} rounds, adaptive on and off, {repeat} runs each, "
          f"interleaved (ADAPT_AFTER = {ADAPT_AFTER})")
    started = time.perf_counter()
    runs = measure(rounds, repeat)
    took = time.perf_counter() - started
    table = pictures.adaptive_table(runs["on"], runs["off"])
    plot = pictures.adaptive_plot(runs["on"], runs["off"])
    (directory / "adaptive.png").write_bytes(plot.png())
    markdown = "| " + " | ".join(table.header) + " |\n|" + "--:|" * len(table.header) + "\n" + \
        "\n".join("| " + " | ".join(row) + " |" for row in table.rows) + "\n"
    (directory / "adaptive.md").write_text(f"# ptemod under binary translation, adaptive on and off\n\n"
                                           f"{table.caption}\n\n{markdown}\n{plot.text}\n")
    s = summary(runs)
    print(f"   measured in {took:.1f} s; per round, by windows of rounds (on: trace faults, call-outs, µs | "
          f"off: the same):")
    for row in table.rows:
        print(f"   {row[0]:>10}   on {row[1]:>3} {row[2]:>3} {row[3]:>7} µs   off {row[4]:>3} {row[5]:>3} {row[6]:>7} µs")
    for mode in ("on", "off"):
        m = s[mode]
        print(f"   adaptive {mode:<3}: {m['trace_faults']:,} trace faults and {m['callouts']:,} call-outs in "
              f"{m['rounds']:,} rounds, {m['after_warm_up']:,} of the faults after the warm-up; "
              f"{m['us_per_round']:.0f} µs a round (median, second half); rounds 2-{ADAPT_AFTER + 1}: "
              f"{m['warm_up_us']:.0f} µs")
    print(f"   Written: {directory / 'adaptive.png'}, {directory / 'adaptive.md'}")
    return {"summary": s, "directory": directory}


def targets(measured):
    on, off = measured["summary"]["on"], measured["summary"]["off"]
    cut = on["after_warm_up"] <= on["after_rounds"] / 100 and off["after_warm_up"] == off["after_rounds"]
    return [f"   adaptive translation: ptemod's trace faults after the warm-up: {on['after_warm_up']} in "
            f"{on['after_rounds']:,} rounds adaptive on, {off['after_warm_up']:,} adaptive off (target: at most 1 in "
            f"100 on, every round off) {'met' if cut else 'MISSED'}; a round {on['us_per_round']:.0f} µs on, "
            f"{off['us_per_round']:.0f} µs off ({off['us_per_round'] / on['us_per_round']:.2f}x, no target)"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", help="where to write the figure and table (default: a temp dir)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="ptemod's loop rounds")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="runs with adaptive on, and as many off")
    args = parser.parse_args()
    results = main(args.directory, args.rounds, args.repeat)
    print("\n".join(targets(results)))
    sys.exit(0)
