"""vmkit.guests: the course's guests, and their tunable constants set by name instead of by editing text."""
import re
from pathlib import Path

import pytest

import vmkit
from vmkit import guests
from vmkit.errors import AsmError, VmkitError

ROOT = Path(__file__).resolve().parent.parent


def test_every_guest_is_listed_and_its_source_is_the_file():
    assert {"rings", "trap_density", "pv_multicall", "popf_critical", "dirty_writer"} <= set(guests.names())
    path = Path(guests.__file__).parent / "rings.asm"
    assert guests.source("rings") == path.read_text()
    with pytest.raises(KeyError, match="no guest named 'ringz'.*rings"):
        guests.source("ringz")


def test_tunables_are_read_from_the_guests_ifndef_defaults():
    assert guests.tunables("trap_density") == {"EVERY": 10, "ROUNDS": 2000}
    assert guests.tunables("pv_multicall") == {"CALLS": 1024, "BATCH": 0}
    assert guests.tunables("rings") == {"TIMER_HZ": 1000, "SPIN": 250000}
    assert guests.tunables("popf_critical") == {"ROUNDS": 2000, "WORK": 60, "PIT_DIVISOR": 1193}
    assert guests.tunables("holes") == {}


def test_a_guest_with_its_defaults_set_explicitly_assembles_to_the_same_bytes():
    for name in guests.names():
        defaults = {k: v for k, v in guests.tunables(name).items() if isinstance(v, int)}
        if defaults and not name.startswith("cmp_"):
            assert guests.image(name, **defaults).code == guests.image(name).code, name


def test_a_tunable_changes_what_the_guest_does():
    native = vmkit.run(guests.image("trap_density", EVERY=5, ROUNDS=100))
    assert native.stats["instructions"] == 1 + 5 * 100 + 2        # mov ecx; 100 rounds of 5; mov al; out
    te = vmkit.run(guests.image("trap_density", ROUNDS=30), "trap-and-emulate")
    assert te.stats["traps"] == 30 + 1                            # a cli a round, and the out that ends it
    short, default = vmkit.run(guests.image("rings", TIMER_HZ=20000, SPIN=20000)), vmkit.run(guests.image("rings"))
    assert short.stats["instructions"] < default.stats["instructions"] / 5
    assert len(short.of_kind("interrupt")) >= 3 and short.serial.startswith("hello from ring 3")


def test_source_puts_the_defines_in_front_and_leaves_the_file_as_it_is():
    text = guests.source("pv_multicall", BATCH=8, CALLS=64)
    head, rest = text.split("\n", 3)[:3], text.split("\n", 3)[3]
    assert head[1:] == ["%define BATCH 8", "%define CALLS 64"]
    assert rest == guests.source("pv_multicall")


@pytest.mark.parametrize("equ, words", [
    ({"EVRY": 5}, r"no tunable EVRY; its tunables are: EVERY \(default 10\), ROUNDS \(default 2000\)"),
    ({"EVERY": -1}, r"EVERY must be a whole number from 0 to 0xffffffff \(default 10\), not -1"),
    ({"EVERY": "5"}, r"not '5'"),
    ({"EVERY": 2.5}, r"not 2.5"),
    ({"EVERY": True}, r"not True"),
    ({"ROUNDS": 1 << 32}, r"not 4294967296"),
])
def test_an_unknown_name_or_a_bad_value_is_an_error_that_names_the_tunables(equ, words):
    with pytest.raises(VmkitError, match=words):
        guests.source("trap_density", **equ)


def test_a_guest_refuses_values_it_cannot_run_with_in_its_own_words():
    with pytest.raises(AsmError, match="EVERY must be at least 3"):
        guests.image("trap_density", EVERY=2)
    with pytest.raises(AsmError, match="CALLS must be a multiple of BATCH"):
        guests.image("pv_multicall", BATCH=3)


def test_no_lesson_or_test_patches_a_guest_by_replacing_its_text():
    """Guests are changed through guests.source(name, NAME=value), never with str.replace on their
    source: a replacement that no longer matches changes nothing and says nothing."""
    patched = re.compile(r"\.replace\(\\?[\"'][^\"'\\]*\bequ\b")
    places = [p for p in [*ROOT.glob("lessons/*.ipynb"), *ROOT.glob("tests/*.py"), *ROOT.glob("vmkit/**/*.py")]
              if p.name != "test_guests.py" and patched.search(p.read_text())]
    assert places == []
