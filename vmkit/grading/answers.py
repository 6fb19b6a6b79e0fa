"""What a graded cell hands the grader: the student's answers on the grader's cases, as plain data.

When a lab is graded, the grader asks the student's kernel, after each graded cell, for the answers
that cell's checks need (`graders/probing.py`, in the course directory, sends the question and
decides the points in its own process). This module is the kernel's side: it calls the student's
code on each case and turns what came back into JSON-able data, so that nothing the notebook
defined (an object that claims to equal anything, a patched comparison) reaches the decision.

    answer_cases(decode_selector, [[0x2b], [0x08]])      # [[5, 0, 3], [1, 0, 0]]
"""
import contextlib
import importlib
import math
import os
import sys

RAISED = "raised"           # {"raised": "ValueError: ..."} stands for a case the student's code raised on


class NotPlain(TypeError):
    """A value that is not plain data (numbers, text, lists, dicts with text keys, None, booleans)."""


def plain(value, where="the answer"):
    """`value` as JSON-able data: tuples become lists; anything else that is not plain data (an object
    of the notebook's own class, a float that is not a number) raises NotPlain, naming where."""
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise NotPlain(f"{where} is {value!r}, not a number")
        return value
    if type(value) in (list, tuple):
        return [plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if type(value) is dict:
        if not all(type(key) is str for key in value):
            raise NotPlain(f"{where} has keys that are not text: {[k for k in value if type(k) is not str][:3]}")
        return {key: plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    raise NotPlain(f"{where} is a {type(value).__name__}, not plain data (a number, text, tuple, list or dict)")


def raised(error):
    """A case the student's code raised on, as data."""
    return {RAISED: f"{type(error).__name__}: {error}"}


def answer_cases(function, cases, shape=None, within=None):
    """`function(*case)` for each case (a list of arguments), each made plain, or raised(error) where
    the call raised or its value was not plain data. `shape`, if given, turns each value into what
    the checks compare (for example only some keys of a dict) before it is made plain; `within`, a
    context (a `withheld`), is entered around the calls."""
    answers = []
    with within or contextlib.nullcontext():
        for case in cases:
            try:
                value = function(*case)
                answers.append(plain(shape(value) if shape else value))
            except Exception as error:          # the student's code: its error is its answer
                answers.append(raised(error))
    return answers


class NotYours(Exception):
    """An answer that is vmkit's own code: the package's function, class or table handed in as the student's."""


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))      # vmkit/


def yours(answer, name):
    """`answer`, unless it is vmkit's own (a function, method or class defined in the package, or a
    dict or list holding one as a value): then NotYours, saying so. A lab asks for code the student
    writes; the package's own, handed in, earns nothing."""
    for value in (answer.values() if isinstance(answer, dict) else answer if isinstance(answer, (list, tuple))
                  else [answer]):
        where = defined_in(value)
        if where and os.path.abspath(where).startswith(_PACKAGE + os.sep):
            raise NotYours(f"{name} is vmkit's own {getattr(value, '__qualname__', value)!s} "
                           f"(from {os.path.relpath(where, os.path.dirname(_PACKAGE))}): the lab asks for yours")
    return answer


def defined_in(value):
    """The file a function, method or class was defined in (None for anything else)."""
    code = getattr(getattr(value, "__func__", value), "__code__", None)
    if code is not None:
        return code.co_filename
    if isinstance(value, type):
        return getattr(sys.modules.get(value.__module__), "__file__", None)
    return None


class withheld:
    """While the grader asks for answers, vmkit's own versions of what the lab asks for are withheld:
    each named function of a vmkit module raises NotYours when called, however the student reached
    it (`x86.decode_selector`, or a name imported with `from ... import` before), so a student's
    function that calls the package's (lab 1's decoders) earns nothing. Put back afterwards.

        with withheld(vmkit.machine.x86, "decode_selector", "decode_descriptor"):
            answers = answer_cases(decode_selector, cases)

    A function's code is swapped, not the module's name for it, because every reference to the
    function shares its code object; anything else (a class, a table) is replaced by name only."""

    def __init__(self, module, *names):
        self.module, self.names, self.saved = module, names, []

    def __enter__(self):
        for name in self.names:
            value = getattr(self.module, name)
            code = getattr(value, "__code__", None)
            if code is not None and not code.co_freevars:
                self.saved.append((value, "__code__", code))
                value.__code__ = refusal.__code__.replace(co_name=name, co_qualname=name)
            else:
                self.saved.append((self.module, name, value))
                setattr(self.module, name, refuse(f"{self.module.__name__}.{name}"))
        return self

    def __exit__(self, *exc):
        for owner, attribute, value in reversed(self.saved):
            setattr(owner, attribute, value)
        self.saved = []
        return False


def refusal(*args, **kwargs):
    """The code a withheld function runs, named after it: no free variables, so any function can take
    it. It runs with the withheld function's module globals, not this module's, so it reaches NotYours
    and its own frame through builtins only."""
    answers = __import__("vmkit.grading.answers", fromlist=["NotYours"])
    name = __import__("inspect").currentframe().f_code.co_name
    raise answers.NotYours(f"vmkit's own {name} is withheld while you are graded: the lab asks for yours")


def refuse(where):
    def refused(*args, **kwargs):
        raise NotYours(f"{where} is vmkit's own answer to this part: the lab asks for yours")
    return refused


@contextlib.contextmanager
def on_disk(name):
    """The module `name` imported afresh from disk, with every vmkit module under it, for the time of
    the with block (the notebook's own vmkit modules are put back after): a run made through it uses
    vmkit as installed, whatever the notebook replaced in its own (vmkit.run, a decoder, a runner)."""
    saved = {key: module for key, module in sys.modules.items() if key.split(".")[0] == "vmkit"}
    for key in saved:
        del sys.modules[key]
    try:
        yield importlib.import_module(name)
    finally:
        for key in [key for key in sys.modules if key.split(".")[0] == "vmkit"]:
            del sys.modules[key]
        sys.modules.update(saved)
