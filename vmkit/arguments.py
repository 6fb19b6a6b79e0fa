"""What vmkit's entry points accept, checked before anything runs: a budget that is not a positive
number and an option the technique does not take (misspelled, or another technique's) are the
caller's mistakes, and each gets an error that says what is accepted,
instead of a guest blamed for never finishing or an option quietly ignored."""
import difflib
import inspect
import math


class DefaultBudget(int):
    """The instruction budget a caller did not choose: an int that knows it was not chosen, so a
    technique that cannot count instructions (real KVM) can tell it from one a caller asked for."""

    def __repr__(self):
        return f"DEFAULT_MAX_INSTRUCTIONS ({int(self):_})"


def check_budgets(max_instructions, timeout):
    """ValueError/TypeError unless max_instructions is a whole number above 0 or None, and timeout
    a finite number of seconds above 0 or None."""
    if max_instructions is not None:
        if isinstance(max_instructions, bool) or not isinstance(max_instructions, int):
            raise TypeError(f"max_instructions must be a whole number of instructions (such as 100_000) or None "
                            f"for no instruction budget, not {max_instructions!r} ({type(max_instructions).__name__})")
        if max_instructions <= 0:
            raise ValueError(f"max_instructions must be above 0 (or None for no instruction budget), not "
                             f"{max_instructions}: the guest would be stopped before its first instruction")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds (such as 5 or 0.5) or None, not {timeout!r} "
                            f"({type(timeout).__name__})")
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be a number of seconds above 0 (or None for no time limit), not {timeout}")


MIN_MEMORY, MAX_MEMORY = 2 << 20, 1 << 30        # the image loads at 1 MiB; a guest of the course needs far less than 1 GiB


def check_memory(memory):
    """ValueError/TypeError unless `memory` is a whole number of 4 KiB pages from 2 MiB to 1 GiB."""
    if isinstance(memory, bool) or not isinstance(memory, int):
        raise TypeError(f"memory is a number of bytes (such as 4 << 20 for 4 MiB), not {memory!r} "
                        f"({type(memory).__name__})")
    if memory % 4096 or not MIN_MEMORY <= memory <= MAX_MEMORY:
        raise ValueError(f"memory must be whole 4 KiB pages from {MIN_MEMORY >> 20} MiB to {MAX_MEMORY >> 20} MiB "
                         f"(the image loads at 1 MiB), not {memory!r}")


def check_options(technique, cls, options, machines):
    """TypeError unless `cls` (the machine of `technique`) takes every keyword of `options`; the
    message names what it takes, the closest spelling, and the techniques that take an option it
    does not."""
    taken = keyword_options(cls)
    for name in options:
        if name in taken:
            continue
        others = [other for other, machine in machines.items() if name in keyword_options(machine)]
        close = difflib.get_close_matches(name, sorted(taken | {"memory", "max_instructions", "timeout"}), n=1)
        message = f"{technique} takes no option {name!r}"
        if close:
            message += f" (did you mean {close[0]!r}?)"
        if others:
            message += f"; {', '.join(others)} {'takes' if len(others) == 1 else 'take'} it"
        message += (f". {technique} takes: {', '.join(sorted(taken))}" if taken else
                    f". {technique} takes no options beyond memory, max_instructions and timeout")
        raise TypeError(message)


def keyword_options(cls):
    """The keyword-only options of a machine class beyond the budgets every machine takes."""
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind is parameter.KEYWORD_ONLY:
                names.add(parameter.name)
    return names - {"max_instructions", "timeout", "counted", "technique"}
