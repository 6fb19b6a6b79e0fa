"""A lab's points are decided here, in the grader's process, never in the student's kernel.

nbgrader's own rule gives a graded code cell its points when running it raised no error. That
trusts the kernel the student's code has run in, and that code can do anything there before the
checks run: blank the checks with an IPython input transformer, make every `check` a no-op with an
import hook, hand over an object that claims to equal anything, redefine the templates a check
builds on. No check that runs in that kernel can be trusted to fail.

So the course grades with `ProbingExecute`, nbgrader's Execute with one step added (nbgrader_config.py
puts it in `Autograde.autograde_preprocessors`). After each graded cell has run as nbgrader runs it,
the executor asks the kernel a question: the cell's `Probe` names the student's functions to call
and the cases to call them on (cases that live here, in the course directory, and reach the kernel
only when it is graded). The kernel answers with plain data (`vmkit.grading.answers`); this process
computes the reference answers itself, from `graders/` and the vmkit on disk, and compares. The cell
keeps its points only if it raised nothing itself and every answer is right; otherwise an error
output that says what was expected and what came back is added, and nbgrader's own rule then scores
it 0. A cell's value (an `execute_result`) is shown as plain output, so no cell reaches nbgrader's
partial-credit rule (a number as a cell's value is read as its score).

Forging a grade now means producing the right answers to cases seen only while being graded: the
work the lab asks for. A kernel that answers nothing, or garbage, or dies, scores 0 for that cell.

A lab module lists its probes by grade_id:

    PROBES = {"part1_selectors": Probe(
        ask="vmkit.grading.answer_cases(decode_selector, cases)",
        cases=[[0x08], [0x2b]],
        expect=lambda cases: [list(vmkit_decode(value)) for value, in cases],
        judge=same_answers("decode_selector", hint="..."))}

Every graded cell of a lab has a probe (tests/test_grading.py checks it); a graded cell without one
scores 0, with a message for the instructor.
"""
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from nbgrader.utils import is_grade

from vmkit.grading.answers import RAISED
from vmkit.grading.checks import fail_cases, shown

MARK = "\x1evmkit-answers "             # the line the kernel prints its answers on


@dataclass(eq=False)
class Probe:
    """What the grader asks the kernel after one graded cell, and how it decides.

    ask      a Python expression evaluated in the student's kernel, with `cases` (the cases, as JSON
             data), `vmkit` (with vmkit.grading and the lab's vmkit.grading.<lab> imported) and the
             notebook's names in scope: the student's answers, as plain data; or a dict of such
             expressions, each evaluated with its own cases, for a cell that checks several things
    cases    the cases, JSON data (a dict of them beside a dict of asks), or a function that computes
             them here; they reach the kernel only when it is graded
    expect   expect(cases): the reference answers, computed in this process (once per grading run);
             a dict of such functions beside a dict of asks
    judge    judge(answers, expected, cases): raise AssertionError, with a message for the student,
             unless the answers are right
    timeout  seconds the kernel may take to answer (default: nbgrader's per-cell timeout)
    withhold {module: [names]}: vmkit's own versions of what the part asks for, withheld while the
             kernel answers (vmkit.grading.withheld), so a student's code that calls them, however
             it reached them, earns nothing
    clean    names of the notebook's text answers (NASM source): the kernel is asked for their values
             only, and `ask` is evaluated by the grader in a fresh process of its own (`clean_run`),
             with just those names, `cases` and `vmkit` in scope, so the runs it reports are runs of
             the student's text on vmkit as installed, whatever the notebook replaced in its kernel"""
    ask: Union[str, dict]
    cases: object
    expect: Union[Callable, dict]
    judge: Callable
    timeout: Optional[int] = None
    withhold: dict = field(default_factory=dict)
    clean: tuple = ()
    _computed: tuple = field(default=None, repr=False)
    _lock: object = field(default_factory=threading.Lock, repr=False)

    def computed(self):
        """(cases, expected answers), computed once (one thread at a time: see ProbingExecute)."""
        with self._lock:
            if self._computed is None:
                cases = self.cases() if callable(self.cases) else self.cases
                if isinstance(self.expect, dict):
                    expected = {key: expect(cases[key]) for key, expect in self.expect.items()}
                else:
                    expected = self.expect(cases)
                self._computed = cases, expected
            return self._computed


def same_answers(what, hint=None, call=None, describe=None, show=3):
    """A judge: the answers equal the expected ones case by case (`describe(case)` says a case in
    words; by default `call(case)`)."""
    def judge(answers, expected, cases):
        if not isinstance(answers, list) or len(answers) != len(expected):
            raise AssertionError(f"Check failed: {what}: expected {len(expected)} answers, got "
                                 f"{shown(answers)[:200]}")
        wrong = [(describe(case) if describe else f"{call or 'your function'}({shown(case)})", want, got_shown(got))
                 for case, want, got in zip(cases, expected, answers) if got != want]
        fail_cases(what, wrong, len(cases), "cases", hint, show)
    return judge


def all_of(**judges):
    """A judge for a dict of asks: each part's judge on its answers, in order."""
    def judge(answers, expected, cases):
        if not isinstance(answers, dict):
            raise AssertionError(f"Check failed: the answers came back as {shown(answers)[:200]}")
        for key, part in judges.items():
            part(answers.get(key), expected[key], cases[key])
    return judge


def got_shown(answer):
    """An answer as the student reads it: a case their code raised on shows the error."""
    if isinstance(answer, dict) and set(answer) == {RAISED}:
        return Raised(answer[RAISED])
    return answer


class Raised(str):
    def __repr__(self):
        return f"raised {self}"


def probes_of(assignment):
    """The PROBES of graders/<lab>.py for an nbgrader assignment named <lab>_<topic>."""
    lab = assignment.split("_")[0]
    return getattr(importlib.import_module(f"graders.{lab}"), "PROBES", {})


def lab_setup(assignment):
    """The names a lab's set-up cell defines (its test kernels, templates and helpers), from the course's
    own source notebook labs/<assignment>/<assignment>.ipynb: the grader's copies, whatever a notebook
    being graded redefined."""
    course = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    nb = nbformat.read(os.path.join(course, "labs", assignment, f"{assignment}.ipynb"), as_version=4)
    setup = next(cell for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    names = {"__name__": f"setup of {assignment}"}
    exec(compile(setup.source, f"{assignment}.ipynb, set-up cell", "exec"), names)
    return names


def question(probe, lab, cases):
    """The code the kernel runs to answer `probe`: one line of output, MARK and the answers as JSON.
    Its one name starts with a double underscore and is deleted after, so no cell of the notebook sees it."""
    asks = probe.ask if isinstance(probe.ask, dict) else {None: probe.ask}
    lines = [f"def __vmkit_answers():",
             f"    import contextlib, importlib, json, vmkit, vmkit.grading, vmkit.grading.{lab}",
             f"    every = json.loads({json.dumps(json.dumps(cases))})",
             f"    answers = {{}}",
             f"    with contextlib.ExitStack() as withholding:"]
    for module, names in probe.withhold.items():
        lines += [f"        withholding.enter_context(vmkit.grading.withheld(importlib.import_module({module!r}), "
                  f"*{list(names)!r}))"]
    for key, ask in asks.items():
        lines += [f"        cases = every" + (f"[{key!r}]" if key is not None else ""),
                  f"        answers[{key!r}] = {ask}"]
    lines += [f"    return json.dumps(answers[None] if {list(asks) == [None]} else answers)",
              f"print({MARK!r} + __vmkit_answers())",
              f"del __vmkit_answers"]
    return "\n".join(lines) + "\n"


def texts_asked(names):
    """The probe that asks the kernel for the values of `names` (a clean probe's text answers)."""
    return Probe({name: f"vmkit.grading.plain({name}, {name!r})" for name in names}, {name: None for name in names},
                 {}, None)


def clean_run(probe, lab, cases, texts, timeout, kernel_name):
    """`probe`'s answers, evaluated in a fresh Python process with the student's `texts`
    ({name: value}) as its only notebook names: sandboxed like the kernel when the course's grader
    (autograde.py) made the kernel spec, else a plain process of this Python."""
    prelude = "".join(f"{name} = json.loads({json.dumps(json.dumps(value))})\n" for name, value in texts.items())
    source = f"import json\n{prelude}" + question(probe, lab, cases)
    try:
        done = subprocess.run(clean_command(kernel_name) + ["-"], input=source, capture_output=True, text=True,
                              timeout=timeout, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        raise AssertionError(f"The grader ran your answers ({', '.join(texts)}) and they did not finish within "
                             f"{timeout} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise AssertionError(f"The grader's run of your answers ({', '.join(texts)}) failed: {last[-400:]}")
    return read_answers([{"output_type": "stream", "name": "stdout", "text": done.stdout}])


def clean_command(kernel_name):
    """How to start the clean process: through autograde.py's `clean`, in a sandbox with the limits of
    the kernel, when the kernel spec is the one autograde.py wrote; else this Python."""
    try:
        argv = KernelSpecManager().get_kernel_spec(kernel_name).argv
    except Exception:           # no such spec (nbgrader's own default kernel): a plain process
        argv = []
    if len(argv) > 4 and os.path.basename(argv[1]) == "autograde.py" and argv[2] == "kernel":
        return [argv[0], argv[1], "clean", argv[3], "--"]
    return [sys.executable]


def read_answers(outputs):
    """The answers in the kernel's reply to a question, or raise AssertionError saying why there are none."""
    for output in outputs:
        if output.get("output_type") == "error":
            raise AssertionError(f"Your code raised {output.get('ename')}: {output.get('evalue')} while the grader "
                                 f"asked for its answers")
    text = "".join(output.get("text", "") for output in outputs
                   if output.get("output_type") == "stream" and output.get("name") == "stdout")
    lines = [line for line in text.split("\n") if line.startswith(MARK)]     # not splitlines: MARK starts with \x1e, a line break to it
    if len(lines) != 1:
        raise AssertionError("The grader asked your kernel for its answers and got none back (did a cell change "
                             "how the notebook runs code, or print the grader's mark?)")
    try:
        return json.loads(lines[0][len(MARK):])
    except ValueError as error:
        raise AssertionError(f"Your kernel's answers were not data the grader can read: {error}") from None


class ProbingExecute(Execute):
    """nbgrader's Execute, which then decides each graded cell here, by its probe."""

    def preprocess(self, nb, resources=None, km=None):
        self.lab = resources["nbgrader"]["assignment"].split("_")[0]
        self.probes = probes_of(resources["nbgrader"]["assignment"])
        # The reference answers are computed here while the student's kernel, another process, runs
        # the notebook: this process mostly waits for it, so on a second core they cost no time.
        # decide() takes a probe's answers when its cell comes (waiting, if they are still being made).
        threading.Thread(target=compute_all, args=(list(self.probes.values()),), daemon=True,
                         name="reference answers").start()
        return super().preprocess(nb, resources, km)

    def preprocess_cell(self, cell, resources, index):
        cell, resources = super().preprocess_cell(cell, resources, index)
        if cell.cell_type == "code" and is_grade(cell):
            self.decide(cell, index)
        return cell, resources

    def decide(self, cell, index):
        """Ask the kernel for the answers of `cell`'s probe, and add an error to `cell` unless they are right."""
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        cell.outputs = [NotebookNode(output_type="display_data", data=o["data"], metadata=o.get("metadata", {}))
                        if o["output_type"] == "execute_result" else o for o in cell.outputs]
        probe = self.probes.get(grade_id)
        if probe is None:
            return fail(cell, f"The grader has no probe for the graded cell {grade_id!r}: it is not graded "
                              f"(graders/ needs a PROBES entry for it)")
        cases, expected = probe.computed()
        asking = texts_asked(probe.clean) if probe.clean else probe
        asked = NotebookNode(cell_type="code", source=question(asking, self.lab, asking.computed()[0]), metadata={},
                             outputs=[])
        timeout = self.timeout
        try:
            self.timeout = probe.timeout or timeout
            self.execute_cell(asked, index, store_history=False)
        finally:
            self.timeout = timeout
            self.nb["cells"][index] = cell          # execute_cell put the question in the cell's place
        try:
            answers = read_answers(asked.outputs)
            if probe.clean:
                answers = clean_run(probe, self.lab, cases, answers, probe.timeout or timeout, self.kernel_name)
            probe.judge(answers, expected, cases)
        except AssertionError as error:
            return fail(cell, str(error))
        except (TypeError, KeyError, IndexError, AttributeError, ValueError) as error:
            return fail(cell, f"The answers your kernel gave the grader had the wrong shape ({error!r})")
        if not any(o["output_type"] == "error" for o in cell.outputs):
            cell.outputs.append(NotebookNode(output_type="stream", name="stdout",
                                             text=f"The grader checked this cell's answers: all right.\n"))


def compute_all(probes):
    """Every probe's cases and reference answers, in order (a failure is left for decide() to meet)."""
    for probe in probes:
        try:
            probe.computed()
        except Exception:              # noqa: BLE001 - decide() computes it again and reports it
            pass


def fail(cell, message):
    cell.outputs.append(NotebookNode(output_type="error", ename="AssertionError", evalue=message,
                                     traceback=[f"AssertionError: {message}"]))
