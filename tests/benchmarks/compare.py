"""The comparison suite: the course's workloads under every technique, measured side by side in
one run on this machine (vmkit.compare), in the manner of Adams & Agesen (ASPLOS 2006).

    .venv/bin/python tests/benchmarks/compare.py [DIRECTORY] [--rounds N] [--repeat N]
    (also part of: python3 course.py bench)

Writes into DIRECTORY (default: a new temporary directory, never the repository):
    compare.csv      one row per workload x technique: exact counts, median seconds, µs per round,
                     slowdown against native, and why a technique could not run a workload
    compare.md       the same table in Markdown; what one round costs and what a run pays once (from a
                     second, shorter suite: the difference over the extra rounds); the claimed
                     orderings, held or not; the cost model fitted to it
    slowdown.png     each technique's time against native's, per workload (log scale)
    paper.png        Adams & Agesen's Figure 4 beside ours, where a workload mirrors a nanobenchmark
and prints the Markdown table, the orderings the lesson claims (held or not, here; the per-round ones
from the two suites) and the cost model. The counts are exact: a second run writes the same ones.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

from vmkit import compare


def fitted_table(model):
    """The cost model as Markdown: µs per count, per technique."""
    lines = ["| technique | ns / instruction | µs / trap | µs / exit | µs / hypercall | µs / block |",
             "|---|--:|--:|--:|--:|--:|"]
    for t, costs in model.costs.items():
        lines.append(f"| {t} | {costs['instruction'] * 1e9:.1f} | "
                     + " | ".join(f"{costs[k] * 1e6:.1f}" for k in compare.COST_TERMS[1:]) + " |")
    return "\n".join(lines) + "\n"


def round_table(shorter, suite):
    """What one round costs (µs) and what a run pays once (ms), per workload and technique, as Markdown."""
    techniques = suite.techniques
    lines = ["| workload | rounds | " + " | ".join(techniques) + " |", "|---|---|" + "--:|" * len(techniques)]
    for name in suite.workloads:
        cells = []
        for t in techniques:
            rt = compare.round_time(shorter, suite, name, t)
            cells.append("—" if rt is None else
                         f"{rt.per_round * 1e6:.1f} µs + {rt.fixed * 1e3:.1f} ms" if rt.resolved else
                         f"< {rt.resolution * 1e6:.1f} µs + {rt.fixed * 1e3:.1f} ms")
        lines.append(f"| {name} | {shorter.cell(name, techniques[0]).rounds} → {suite.cell(name, techniques[0]).rounds} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def shorter_rounds(rounds):
    """The shorter suite's rounds: the lessons' when the main suite runs more, else a fifth of it."""
    if rounds is None or rounds >= 5 * compare.LESSON_ROUNDS:
        return compare.LESSON_ROUNDS
    return max(1, rounds // 5)


def write_plots(suite, directory):
    from vmkit.viz import compare as pictures         # matplotlib: only when the plots are asked for
    written = []
    for name, plot in (("slowdown.png", pictures.slowdown_plot(suite)),
                       ("paper.png", pictures.paper_plot(suite, compare.WORKLOADS))):
        (directory / name).write_bytes(plot.png())
        written.append(directory / name)
    return written


def main(directory=None, rounds=None, repeat=5):
    directory = Path(directory or tempfile.mkdtemp(prefix="vmkit-compare-"))
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    suite = compare.run_suite(rounds=rounds, repeat=repeat)
    shorter = compare.run_suite(rounds=shorter_rounds(rounds), repeat=repeat)
    took = time.perf_counter() - started
    model = compare.fit_cost_model(suite)
    checks = compare.check(suite, shorter=shorter)
    claims = "\n".join(f"- {c.workload}: {c.faster} faster than {c.slower}"
                       + (f" by {c.factor:g}x" if c.factor != 1 else "") + (", per round" if c.per_round else "")
                       + f": {'could not run' if holds is None else 'holds' if holds else 'DOES NOT HOLD'} ({c.why})"
                       for c, holds in checks)
    suite.to_csv(directory / "compare.csv")
    table = suite.to_markdown()
    (directory / "compare.md").write_text(
        f"# The techniques compared\n\n{table}\n## One round, and once per run\n\n"
        f"Per cell: µs per loop round + ms the run pays once (the two suites' difference over the extra rounds; "
        f"< x: within the repeats' disagreement)\n\n{round_table(shorter, suite)}\n"
        f"## Orderings the lesson claims\n\n{claims}\n\n"
        f"## The cost model (least squares, non-negative)\n\n{fitted_table(model)}")
    plots = write_plots(suite, directory)
    print(f"comparison: every workload under every technique, {repeat} runs each "
          f"({'default' if rounds is None else rounds} rounds), in {took:.1f} s\n")
    print(table)
    print("One round (µs) and once per run (ms):")
    print(round_table(shorter, suite))
    print("Orderings the lesson claims:")
    print(claims)
    print("\nThe cost model fitted to these times:\n")
    print(fitted_table(model))
    print("Written: " + ", ".join(str(p) for p in [directory / "compare.csv", directory / "compare.md", *plots]))
    return {"suite": suite, "checks": checks, "directory": directory}


def targets(rows):
    """The lines for run.py's summary of targets."""
    held = sum(1 for _, holds in rows["checks"] if holds)
    ran = sum(1 for _, holds in rows["checks"] if holds is not None)
    return [f"   comparison: {held} of {ran} claimed orderings hold here "
            f"{'(met)' if held == ran else '(MISSED)'}; tables and plots in {rows['directory']}"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", help="where to write the table and plots (default: a temp dir)")
    parser.add_argument("--rounds", type=int, help="loop rounds for every workload (default: each one's own)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per cell; the median is kept")
    args = parser.parse_args()
    results = main(args.directory, args.rounds, args.repeat)
    print("\n".join(targets(results)))
    sys.exit(0)
