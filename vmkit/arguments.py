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


MIN_MEMORY, MAX_MEMORY = 1 << 20, 1 << 30        # the image loads at 1 MiB; a guest of the course needs far less than 1 GiB


def check_memory(memory):
    """ValueError/TypeError unless `memory` is a whole number of 4 KiB pages from 1 MiB to 1 GiB
    (whether the image fits in it is platform.check_fits's to say)."""
    if isinstance(memory, bool) or not isinstance(memory, int):
        raise TypeError(f"memory is a number of bytes (such as 4 << 20 for 4 MiB), not {memory!r} "
                        f"({type(memory).__name__})")
    if memory % 4096 or not MIN_MEMORY <= memory <= MAX_MEMORY:
        raise ValueError(f"memory must be whole 4 KiB pages from {MIN_MEMORY >> 20} MiB to {MAX_MEMORY >> 20} MiB "
                         f"(the image loads at 1 MiB), not {memory!r}")


def _table(keys=str):
    """A dict of functions (or None for one left out), keyed by `keys`."""
    return lambda v: isinstance(v, dict) and all(isinstance(k, keys) and (f is None or callable(f)) for k, f in v.items())


# What each technique's own option must be: (what it is, in words, for the error; the test)
OPTION_KINDS = {
    "emulators": ("a dict {mnemonic: handler(vmm, insn)}", _table()),
    "shadow_handlers": ("a dict {'hidden-fault' or 'trace': handler}", _table()),
    "rules": ("a dict {mnemonic: rule(u, insn)}", _table()),
    "chain": ("a function chain(site, target) -> bytes", callable),
    "adaptive": ("True or False", lambda v: isinstance(v, bool)),
    "count_guest": ("True or False", lambda v: isinstance(v, bool)),
    "inline_calls": ("True or False", lambda v: isinstance(v, bool)),
    "unroll": ("a whole number of copies, 1 or more", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "cache_size": ("a whole number of bytes", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "hypercalls": ("a dict {hypercall number: handler}", _table(int)),
    "modules": ("a list of NASM sources or Images", lambda v: isinstance(v, (list, tuple))),
    "cmdline": ("text (or bytes)", lambda v: isinstance(v, (str, bytes))),
    "page_table_rules": ("a dict {rule name: function}", _table()),
    "controls": ("a vmkit.vtx.VmcsControls", lambda v: type(v).__name__ == "VmcsControls"),
    "path": ("the KVM device's path, text", lambda v: isinstance(v, str)),
    "vcpus": ("a whole number, 1 or more", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "irqchip": ("'user' or 'kernel'", lambda v: v in ("user", "kernel")),
    "ioeventfd": ("True or False", lambda v: isinstance(v, bool)),
}


def check_options(technique, cls, options, machines):
    """TypeError unless `cls` (the machine of `technique`) takes every keyword of `options` and each
    is of the kind it takes (None stands for the default where the default is None); the message
    names what it takes, the closest spelling, and the techniques that take an option it does not."""
    taken = keyword_options(cls)
    for name, value in options.items():
        if name in taken:
            kind = OPTION_KINDS.get(name)
            if kind is not None and not (value is None and default_is_none(cls, name)) and not kind[1](value):
                raise TypeError(f"{technique}'s option {name} is {kind[0]}, not {value!r:.80}")
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
    """The keyword-only options a caller may give a machine class, beyond the budgets every machine
    takes (not those only the machine's own kind passes: INTERNAL_OPTIONS, Xen's domid and the like)."""
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind is parameter.KEYWORD_ONLY:
                names.add(parameter.name)
    return names - {"max_instructions", "timeout", "counted", "technique"} - set(getattr(cls, "INTERNAL_OPTIONS", ()))


def default_is_none(cls, name):
    """Whether the keyword `name` of `cls`'s constructors defaults to None."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and name in inspect.signature(init).parameters:
            return inspect.signature(init).parameters[name].default is None
    return False
