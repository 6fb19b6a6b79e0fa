"""The course's guest programs, as NASM source that ships with vmkit.

    vmkit.guests.source("rings")                    # the text, to show in a lesson or edit in a lab
    vmkit.guests.image("rings")                     # assembled, ready for vmkit.run
    vmkit.guests.tunables("trap_density")           # {'EVERY': 10, 'ROUNDS': 2000}: what a caller may set
    vmkit.guests.image("trap_density", EVERY=5)     # the same guest with one of them changed

A guest's tunable constants are NASM single-line macros with a default, each written as

    %ifndef EVERY
    %define EVERY 10
    %endif

so that a `%define EVERY 5` in front of the file wins (NASM's `%ifndef` is true while no single-line
macro of that name exists: the NASM manual, "Conditional Assembly"). `source(name, EVERY=5)` puts
that line in front, after checking the name and the value, so a lesson or a test never edits a
guest's text to change a number.
"""
import re
from importlib import resources

from ..asm import assemble
from ..errors import VmkitError

_TUNABLE = re.compile(r"^%ifndef[ \t]+(\w+)[ \t]*(?:;[^\n]*)?\n%define[ \t]+\1[ \t]+([^;\n]*?)[ \t]*(?:;[^\n]*)?\n%endif",
                      re.M)
LARGEST = 0xFFFFFFFF             # a tunable is a whole number that fits in 32 bits


def names():
    return sorted(p.name[:-4] for p in resources.files(__package__).iterdir() if p.name.endswith(".asm"))


def _text(name):
    path = resources.files(__package__) / f"{name}.asm"
    if not path.is_file():
        raise KeyError(f"no guest named {name!r}; the course has {', '.join(names())}")
    return path.read_text()


def _number(text):
    try:
        return int(text, 0)
    except ValueError:
        return text                                  # an expression: shown as written


def tunables(name):
    """The constants a caller may set in guest `name`, with their defaults: {NAME: default}."""
    return {key: _number(default) for key, default in _TUNABLE.findall(_text(name))}


def source(name, **equ):
    """The NASM source of guest `name`, with each keyword set as the value of that tunable constant.

    source("trap_density", EVERY=5, ROUNDS=100) is the file with `%define EVERY 5` and
    `%define ROUNDS 100` in front. A name the guest does not have, or a value that is not a whole
    number from 0 to 0xFFFFFFFF, is a VmkitError that lists what the guest has."""
    text = _text(name)
    if not equ:
        return text
    known = {key: _number(default) for key, default in _TUNABLE.findall(text)}
    for key, value in equ.items():
        if key not in known:
            have = ", ".join(f"{k} (default {v})" for k, v in known.items()) or "none"
            raise VmkitError(f"guest {name!r} has no tunable {key}; its tunables are: {have}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LARGEST:
            raise VmkitError(f"{name}'s {key} must be a whole number from 0 to {LARGEST:#x} "
                             f"(default {known[key]}), not {value!r}")
    head = "".join(f"%define {key} {value}\n" for key, value in equ.items())
    return f"; {name}.asm with {', '.join(f'{k}={v}' for k, v in equ.items())}\n" + head + text


def image(name, **equ):
    """Guest `name` assembled, with `equ` as in source()."""
    return assemble(source(name, **equ))
