"""The course's reference answers and the facts the labs' checks expect, one module per lab, and
the grading that decides every graded cell with them (probing.py).

This package sits beside `labs/` in the course directory and is not part of vmkit (pyproject.toml
installs `vmkit*` only), so a student's notebook, which imports vmkit, cannot import it; the
students' copy of the course leaves it out, and the grading sandbox does not show it. It runs in
the grader's process: each lab module's `PROBES` says what to ask a student's kernel after each
graded cell and how to decide (probing.py), with the lab's reference answers and facts (`FACTS`).

`reference` computes a fact in a new Python interpreter that imports vmkit and this package from
disk, for a caller that wants a fact computed away from its own process (the tests compare the two):

    graders.reference("lab1.ring3_census", RING3_TEST, ["nop", "cli"])     # {"nop": "runs", "cli": "#GP"}

Arguments and results travel as JSON.
"""
import importlib
import json
import os
import subprocess
import sys

COURSE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # the course directory
LABS = ("lab1", "lab2", "lab3", "lab4", "lab5", "lab6", "lab7", "lab8", "lab9", "lab10")

# -I: isolated mode, so neither the notebook's folder nor PYTHON* variables it may have set can put
# another vmkit or another graders first; the course directory comes after the installed packages.
_COMPUTE = (f"import sys; sys.path.append({COURSE!r})\n"
            "import importlib, json\n"
            "fact, args = json.load(sys.stdin)\n"
            "lab, name = fact.split('.')\n"
            "json.dump(importlib.import_module('graders.' + lab).FACTS[name](*args), sys.stdout)\n")


def reference(fact, *args, timeout=60):
    """Compute `fact` ("<lab>.<name>", one of that lab module's FACTS) of `args` in a new Python
    process and return it."""
    lab, _, name = fact.partition(".")
    if lab not in LABS or name not in importlib.import_module(f"{__name__}.{lab}").FACTS:
        known = [f"{lab}.{name}" for lab in LABS for name in importlib.import_module(f"{__name__}.{lab}").FACTS]
        raise ValueError(f"unknown reference fact {fact!r}; known: {', '.join(known)}")
    done = subprocess.run([sys.executable, "-I", "-c", _COMPUTE], input=json.dumps([fact, list(args)]),
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the reference computation {fact!r} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)
