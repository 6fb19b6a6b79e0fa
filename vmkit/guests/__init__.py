"""The course's guest programs, as NASM source that ships with vmkit.

    vmkit.guests.source("rings")   # the text, to show in a lesson or edit in a lab
    vmkit.guests.image("rings")    # assembled, ready for vmkit.run
"""
from importlib import resources

from ..asm import assemble


def names():
    return sorted(p.name[:-4] for p in resources.files(__package__).iterdir() if p.name.endswith(".asm"))


def source(name):
    path = resources.files(__package__) / f"{name}.asm"
    if not path.is_file():
        raise KeyError(f"no guest named {name!r}; the course has {', '.join(names())}")
    return path.read_text()


def image(name):
    return assemble(source(name))
