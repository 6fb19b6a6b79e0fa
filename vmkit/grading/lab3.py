"""Lab 3 (binary translation): a guest under binary translation with rewrite rules and a chain rule a
student wrote, and what the run did as plain data."""
import json

import vmkit
from ..vmm import BinaryTranslation
from .checks import check_equal, check_facts
from .runs import ending, explained
from . import answers
from .answers import yours
from .answers import answer_cases, withheld

BT_MAX_INSTRUCTIONS = 3_000_000
BT_TIMEOUT = 3.0                                    # a guest that never ends is stopped within this
REWRITTEN = ("cli", "sti", "pushfd", "popfd")       # the instructions a translator rewrites, never traps


def run_bt(source, rules=None, chain=None, what="the guest under your translator",
           max_instructions=BT_MAX_INSTRUCTIONS, timeout=BT_TIMEOUT):
    """BinaryTranslation(image, rules=rules, chain=chain) run to its end: (machine, result). A guest
    that does not assemble, runs out of budget or goes astray fails with a message that names it,
    and so does a rule or chain rule that raises."""
    if rules is not None:
        rules = {name: _named_rule(rule, name) for name, rule in rules.items()}
    if chain is not None:
        chain = _named_chain(chain)
    with explained(what, max_instructions, timeout,
                   look="translated code that spins (a chained exit that jumps to itself, or to the wrong "
                        "place), or a guest waiting for a timer tick that never comes because the virtual IF "
                        "stays 0",
                   astray=lambda error: f"went astray: {error}\n  where to look: the bytes your rules and "
                                        f"your chain rule emit (decode them with vmkit.asm.disassemble)"):
        machine = BinaryTranslation(vmkit.assemble(source), rules=rules, chain=chain,
                                    max_instructions=max_instructions, timeout=timeout)
        return machine, machine.run()


def _named_rule(rule, name):
    """`rule`, with an exception it raises turned into a message that names the rule and the guest
    instruction it was translating."""
    def translating(u, insn):
        try:
            return rule(u, insn)
        except Exception as error:
            text = f"{insn.mnemonic} {insn.op_str}".strip()
            raise AssertionError(f"your rule for {name!r} raised {type(error).__name__}: {error}\n"
                                 f"  while translating `{text}` at {insn.address:#x}\n"
                                 f"  where to look: the rule runs once, at translation time, and hands the "
                                 f"translation its code with u.emit(bytes)") from error
    return translating


def _named_chain(chain):
    """`chain`, with an exception it raises turned into a message that names the exit it was chaining."""
    def chaining(site, target):
        try:
            return chain(site, target)
        except Exception as error:
            way = "backwards" if target < site else "forwards"
            raise AssertionError(f"your chain rule raised {type(error).__name__}: {error}\n"
                                 f"  while chaining the exit at {site:#x} to {target:#x} (a jump {way})\n"
                                 f"  where to look: the displacement is a signed 32-bit number") from error
    return chaining


def rewritten_traps(result):
    """The kernel's cli, sti, pushfd and popfd that trapped: [[instruction, eip], ...]. User code's
    own cli (a #GP in ring 3) is the guest's business, not the translator's."""
    return [[e.detail["instruction"], e.eip] for e in result.of_kind("trap")
            if e.cpl != 3 and e.detail.get("instruction", "").split(" ")[0] in REWRITTEN]


def bt_facts(machine, result):
    """What a run under binary translation did, as plain data: how it ended, what it printed, the
    rewritten instructions that trapped anyway, and what the translation cost."""
    facts = {**ending(result), "rewritten_traps": rewritten_traps(result),
             "traps": result.stats.get("traps", 0), "cache_misses": result.stats.get("cache_misses", 0),
             "blocks_translated": result.stats.get("blocks_translated", 0)}
    return json.loads(json.dumps(facts))


def check_like_native(got, native, what, hint=None):
    """bt_facts of a run under a student's translator against the bare machine's ending: the same
    serial output (the first line that differs is shown, with `hint`), the same ending, and no
    rewritten instruction trapped."""
    check_facts(got, native, f"{what}, against the bare machine", fields=("serial", "exit_code", "halted", "shutdown"),
                hints={"serial": hint or "the guest prints what it observes: compare with what your rules make the "
                                         "translated code do to the flags, the stack and the virtual IF",
                       "exit_code": "an exit code comes from `out 0xf4, al`",
                       "shutdown": "a shutdown is a triple fault"})
    check_equal(got["rewritten_traps"], [], what=f"{what}: kernel cli/sti/pushfd/popfd that trapped (instruction, eip)",
                hint="a rewrite rule must emit in-cache code; u.callout(...) or no rule at all is a trap")


# --- the kernel's side of the grader's questions (graders/lab3.py asks them) ------------------------
# Each runs the guests under vmkit as it is on disk (on_disk), so a notebook that patched the
# translator in its own vmkit answers with its own rules all the same.
def on_disk():
    """This module as imported afresh from disk, for the time of the with block (answers.on_disk)."""
    return answers.on_disk(__name__)


def rule_facts(sources, rules, chain=None, timeout=BT_TIMEOUT):
    """bt_facts of each guest under vmkit's rules with `rules` in place of some, and `chain` (None: vmkit's
    chain rule), with the number of exits chained; {"error": ...} for a run that could not end."""
    from ..vmm import translator  # here, not at the top: called under on_disk, this is vmkit as installed
    table = dict(translator.RULES, **rules)
    facts = []
    for source in sources:
        try:
            machine, result = run_bt(source, table, chain, timeout=timeout)
            facts.append({**bt_facts(machine, result),
                          "chained_exits": sum(way.chained_to is not None for unit in machine.cache.units.values()
                                               for way in unit.exits)})
        except Exception as error:          # the student's rules: their error is their answer
            facts.append({"error": f"{type(error).__name__}: {error}"})
    return facts


def bt_cases(sources, rules, chain=None):
    """rule_facts under vmkit as on disk: a student's rules (and chain rule), each guest's facts as plain data."""
    with on_disk() as fresh:
        return fresh.rule_facts(sources, rules, chain)


def table_cases(sources, rules, chain=None):
    """bt_cases with a student's whole table; {"error": ...} for each guest if `rules` is not a dict
    of the student's own rules for cli, sti, pushfd and popfd."""
    try:
        if not isinstance(rules, dict) or sorted(rules) != sorted(REWRITTEN):
            raise ValueError(f"RULES must be a dict with a rule for each of {REWRITTEN}, and nothing else")
        rules = dict(yours(rules, "RULES"))
    except Exception as error:
        return [{"error": f"{type(error).__name__}: {error}"}] * len(sources)
    return bt_cases(sources, rules, chain)


# --- part 4: adaptive translation ---------------------------------------------------------------------
def site_counts(result):
    """The kernel's cli, sti, pushfd and popfd that called out (or trapped), counted by site:
    {"cli at 0x100034": n, ...}."""
    counts = {}
    for address, name in ((e.eip, e.detail.get("instruction", "").split(" ")[0]) for e in result.of_kind("trap")
                          if e.cpl != 3):
        if name in REWRITTEN:
            key = f"{name} at {address:#x}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def run_adaptive(source, adaptive, hot_after, chain=None, timeout=BT_TIMEOUT):
    """The guest under binary translation with a translator `adaptive(hot_after)` made afresh for this run:
    its (rules, handlers), the handlers put over vmkit's own for the instructions they name. (machine, result)."""
    from ..vmm.emulate import EMULATORS, FLAGS, SENSITIVE_READS  # here, not at the top: called under on_disk, this is vmkit as installed
    design = adaptive(hot_after)
    if not (isinstance(design, tuple) and len(design) == 2 and all(isinstance(part, dict) for part in design)):
        raise ValueError(f"adaptive({hot_after}) must return (rules, handlers), two dicts; it returned {design!r:.100}")
    rules, handlers = (dict(yours(part, name)) for part, name in zip(design, ("its rules", "its handlers")))
    if chain is not None:
        chain = _named_chain(chain)
    with explained("the guest under your adaptive translator", BT_MAX_INSTRUCTIONS, timeout,
                   look="a handler that does not emulate its instruction, or translated code that spins",
                   astray=lambda error: f"went astray: {error}\n  where to look: your handlers and your rules"):
        machine = BinaryTranslation(vmkit.assemble(source), rules={n: _named_rule(r, n) for n, r in rules.items()},
                                    chain=chain, emulators={**EMULATORS, **SENSITIVE_READS, **FLAGS, **handlers},
                                    max_instructions=BT_MAX_INSTRUCTIONS, timeout=timeout)
        return machine, machine.run()


def adaptive_facts(sources, adaptive, hot_after, chain=None):
    """run_adaptive of each guest: how it ended, what it printed, and its call-outs by site; {"error": ...}
    for a run that could not end."""
    facts = []
    for source in sources:
        try:
            machine, result = run_adaptive(source, adaptive, hot_after, chain)
            facts.append(json.loads(json.dumps({**ending(result), "callouts": site_counts(result)})))
        except Exception as error:          # the student's design: its error is its answer
            facts.append({"error": f"{type(error).__name__}: {error}"})
    return facts


def adaptive_cases(cases, adaptive, chain=None):
    """adaptive_facts under vmkit as on disk, for cases {"hot_after": n, "guests": [source, ...]} (hot_after
    a number, or one for each guest)."""
    after = cases["hot_after"]
    afters = after if isinstance(after, list) else [after] * len(cases["guests"])
    with on_disk() as fresh:
        return [fact for source, n in zip(cases["guests"], afters)
                for fact in fresh.adaptive_facts([source], adaptive, n, chain)]


def chain_cases(chain, cases):
    """chain(site, target) for each case, as lists of numbers, with vmkit's own jmp encoder withheld
    (the translator's, not the student's)."""
    from ..vmm import emit as emitter  # here, not at the top: called under on_disk, this is vmkit as installed
    return answer_cases(chain, cases, shape=lambda code: list(bytes(code)), within=withheld(emitter, "jmp"))
