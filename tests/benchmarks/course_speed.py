"""How long the whole course takes to run, notebook by notebook, as one student would wait for it.

    python3 course.py speed                       every lesson and every lab's solution notebook
    python3 course.py speed 'lessons/0[1-3]*'     a subset (globs on the path or the file name)
    python3 course.py speed --json speed.json     also write the numbers

Every lessons/*.ipynb and every lab's source notebook labs/<lab>/<lab>.ipynb (solutions in place,
hidden tests included) runs top to bottom in a fresh kernel, one after the other, offline, in its
own folder. Kernel start-up is part of what a student waits for: it counts in each notebook's time
and is also reported on its own. Each cell's time comes from nbclient's record_timing (the
kernel's busy and reply timestamps).

Targets: each notebook under 20 s, the whole course under 3 minutes. Reported: a table of notebooks
(seconds, kernel start-up, cells, OK / over 20 s / error), the total against 3 minutes, and the ten
slowest cells (notebook, cell number, its first source line, seconds). The exit status is 1 when a
notebook fails to run (a cell raises); a missed time target is printed, and does not change it.
"""
import argparse
import datetime
import fnmatch
import glob
import json
import os
import subprocess
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK_TARGET = 20.0          # seconds, each notebook
COURSE_TARGET = 180.0           # seconds, the whole course
CELL_TIMEOUT = 300              # seconds; a cell that takes longer is an error, not a slow cell
SLOWEST = 10


def course_notebooks():
    """The lessons in order, then each lab's source notebook in order."""
    lessons = sorted(glob.glob(os.path.join(REPO, "lessons", "*.ipynb")))
    labs = sorted(path for path in glob.glob(os.path.join(REPO, "labs", "*", "*.ipynb"))
                  if os.path.basename(path) == os.path.basename(os.path.dirname(path)) + ".ipynb")
    return lessons + labs


def select(patterns):
    """The course's notebooks matching any pattern (path or file name); a notebook file elsewhere as given."""
    if not patterns:
        return course_notebooks()
    chosen = []
    for pattern in patterns:
        if pattern.endswith(".ipynb") and os.path.isfile(pattern):
            matches = [os.path.abspath(pattern)]
        else:
            matches = [path for path in course_notebooks()
                       if fnmatch.fnmatch(os.path.relpath(path, REPO), pattern)
                       or fnmatch.fnmatch(os.path.basename(path), pattern)
                       or fnmatch.fnmatch(os.path.basename(path), pattern + "*")]
        if not matches:
            raise SystemExit(f"no notebook of the course matches {pattern!r}: try a lesson's number "
                             f"('03*'), a lab's name ('lab3*') or a path ('lessons/*.ipynb')")
        chosen += [path for path in matches if path not in chosen]
    return chosen


def cell_seconds(cell):
    """Kernel busy to execute reply, from the timestamps record_timing leaves in the cell's metadata."""
    timing = cell.metadata.get("execution", {})
    start = timing.get("iopub.status.busy") or timing.get("shell.execute_reply.started")
    end = timing.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def first_line(source):
    for line in source.splitlines():
        if line.strip():
            return line.strip()
    return ""


def run_notebook(path):
    """Execute one notebook in a fresh kernel; its times, cells, and the error if a cell raised."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": os.path.dirname(path)}})
    report = {"notebook": os.path.relpath(path, REPO) if path.startswith(REPO) else path,
              "seconds": None, "kernel_seconds": None, "cells": 0, "status": "OK", "error": None,
              "cell_times": []}
    start = end = time.perf_counter()
    executed = []
    try:
        # The kernel's own stderr only says that it talks TCP on localhost; what cells print to
        # stderr reaches nbclient through the kernel's messages anyway.
        with client.setup_kernel(stderr=subprocess.DEVNULL):
            try:
                info = client.wait_for_reply(client.kc.kernel_info())
                nb.metadata["language_info"] = info["content"]["language_info"]
                report["kernel_seconds"] = time.perf_counter() - start
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type == "code":
                        executed.append((index, cell))
                    client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            finally:
                end = time.perf_counter()   # shutting the kernel down is nobody's wait
    except CellExecutionError as error:
        report["status"] = "error"
        report["error"] = f"cell {executed[-1][0]}: {error.ename}: {error.evalue}"
    except (CellTimeoutError, DeadKernelError) as error:
        report["status"] = "error"
        where = f"cell {executed[-1][0]}: " if executed else "kernel: "
        report["error"] = where + (str(error).strip().splitlines() or [type(error).__name__])[0]
    report["seconds"] = end - start
    report["cells"] = len(executed)
    for index, cell in executed:
        seconds = cell_seconds(cell)
        if seconds is not None:
            report["cell_times"].append({"cell": index, "first_line": first_line(cell.source),
                                         "seconds": seconds})
    if report["status"] == "OK" and report["seconds"] > NOTEBOOK_TARGET:
        report["status"] = f"over {NOTEBOOK_TARGET:g} s"
    return report


def summary(reports):
    total = sum(r["seconds"] for r in reports)
    kernels = sum(r["kernel_seconds"] or 0.0 for r in reports)
    cells = [dict(c, notebook=r["notebook"]) for r in reports for c in r["cell_times"]]
    slowest = sorted(cells, key=lambda c: c["seconds"], reverse=True)[:SLOWEST]
    return {"notebooks": reports, "total_seconds": total, "kernel_seconds": kernels,
            "notebook_target_seconds": NOTEBOOK_TARGET, "course_target_seconds": COURSE_TARGET,
            "course_target_met": total <= COURSE_TARGET,
            "notebooks_over": [r["notebook"] for r in reports if r["seconds"] > NOTEBOOK_TARGET],
            "errors": [r["notebook"] for r in reports if r["status"] == "error"],
            "slowest_cells": slowest, "cpus": os.cpu_count()}


def print_report(numbers):
    reports = numbers["notebooks"]
    width = max([len(r["notebook"]) for r in reports] + [8])
    print(f"\n{'notebook':<{width}}  {'seconds':>8}  {'kernel':>7}  {'cells':>5}  status")
    for r in reports:
        kernel = f"{r['kernel_seconds']:7.1f}" if r["kernel_seconds"] is not None else "      -"
        print(f"{r['notebook']:<{width}}  {r['seconds']:8.1f}  {kernel}  {r['cells']:>5}  {r['status']}")
        if r["error"]:
            print(f"{'':<{width}}  {r['error']}")
    total, target = numbers["total_seconds"], numbers["course_target_seconds"]
    print(f"{'total':<{width}}  {total:8.1f}  {numbers['kernel_seconds']:7.1f}  "
          f"{sum(r['cells'] for r in reports):>5}  "
          f"{'met' if numbers['course_target_met'] else 'MISSED'}: target {target:g} s for the course")
    over = numbers["notebooks_over"]
    print(f"each notebook under {numbers['notebook_target_seconds']:g} s: "
          + (f"MISSED by {len(over)}: {', '.join(over)}" if over else "met"))
    print(f"kernel start-up: {numbers['kernel_seconds']:.1f} s of the {total:.1f} s "
          f"({len(reports)} fresh kernels, run one after the other on {numbers['cpus']} cores)")
    print(f"\nthe {len(numbers['slowest_cells'])} slowest cells:")
    for c in numbers["slowest_cells"]:
        line = c["first_line"] if len(c["first_line"]) <= 60 else c["first_line"][:57] + "..."
        print(f"  {c['seconds']:6.2f} s  {c['notebook']} cell {c['cell']}: {line}")
    if numbers["errors"]:
        print(f"\nFAILED to run: {', '.join(numbers['errors'])}")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="globs on a notebook's path or name (default: the whole course)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON to PATH")
    args = parser.parse_args(argv[1:])
    paths = select(args.notebooks)
    reports = []
    for path in paths:
        print(f"running {os.path.relpath(path, REPO) if path.startswith(REPO) else path} ...", flush=True)
        reports.append(run_notebook(path))
    numbers = summary(reports)
    print_report(numbers)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(numbers, f, indent=1)
    return 1 if numbers["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
