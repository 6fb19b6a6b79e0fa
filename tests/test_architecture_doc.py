"""docs/architecture.md stays true to the code, checked cheaply: every event kind, VM-exit reason,
migration phase and stats key vmkit produces is in its tables (found in vmkit's source and by
running a few tiny guests under each technique), and its platform and Xen ABI sections carry
vmkit's own numbers: the hypercall table, the start_info offsets, the selectors."""
import pathlib
import re

import pytest

import vmkit
from vmkit import guests, migration
from vmkit.machine.platform import BOOT_CS, BOOT_DS, BOOT_GDT, DEFAULT_MEMORY, LOAD_ADDRESS, STACK_TOP
from vmkit.vtx import VmcsControls
from vmkit.xen import HYPERCALLS
from vmkit.xen import abi as xen
from vmkit.xen.layout import SHARED_INFO, START_INFO
from vmkit.xen.paravirt import CPUID_XEN_LEAF, Paravirt

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "vmkit"
UD = 6


def section(title):
    """The text under the heading that starts with `title`, up to the next heading of its level."""
    text = DOC.read_text()
    m = re.search(rf"^(#+) {re.escape(title)}.*$", text, re.M)
    assert m, f"docs/architecture.md has no heading starting {title!r}"
    rest = text[m.end():]
    end = re.search(rf"^#{{1,{len(m.group(1))}}} ", rest, re.M)
    return rest[:end.start()] if end else rest


def cells(text):
    """The cells of every table row, split at the pipes that are not escaped."""
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]


def first_column(text):
    """Every `name` in the first cell of a table row."""
    return {name for row in cells(text) if row for name in re.findall(r"`([^`]+)`", row[0])}


def mentioned(text):
    return set(re.findall(r"`([^`]+)`", text))


# --- what the code says ------------------------------------------------------------------------------
def sources():
    return {path: path.read_text() for path in PACKAGE.rglob("*.py")}


def emitted_in_source():
    """(event kinds, migration phases, vmexit reasons) named by literal strings in vmkit's source."""
    kinds, phases, reasons = set(), set(), set()
    for path, text in sources().items():
        kinds |= set(re.findall(r'\bEvent\(\s*(?:kind=)?"([a-z-]+)"', text))
        found = set(re.findall(r'\b_event\(\s*"([a-z-]+)"', text))
        if re.search(r"def _event\(self, phase\b", text):
            phases |= found                      # this module's _event records a phase of a "migration"
        else:
            kinds |= found                       # the KVM machine's _event(kind, ...)
        kinds |= set(re.findall(r'\brecord\(\s*"([a-z-]+)"', text))     # the vmkit PC's record(kind, ...)
        reasons |= set(re.findall(r'\b_?vmexit\((?:[^()"]|\([^()]*\))*?"([A-Z][A-Z_]+)"', text))
    return kinds, phases, reasons


TRIPLE_FAULT = "ud2                     ; no IDT yet: #UD, then #GP, #DF, and a triple fault\n"


def _kvm_runs():
    report = vmkit.kvm.probe()
    if not report.usable:
        return []
    return [("kvm", vmkit.run(guests.source("devices"), "kvm"))]


@pytest.fixture(scope="module")
def runs():
    """A few tiny guests under every technique, and one migration: (technique, result) pairs."""
    done = [(t, vmkit.run(guests.source("rings"), t)) for t in ("native", "trap-and-emulate", "binary-translation")]
    done += [("binary-translation", vmkit.run(guests.source("self_modifying"), "binary-translation")),
             ("native", vmkit.run(TRIPLE_FAULT)),
             ("native", vmkit.run("cli\nhlt\n")),
             ("paravirt", vmkit.run(guests.source("pv_events"), "paravirt")),
             ("paravirt", vmkit.run(guests.source("pv_dom0"), "paravirt", modules=[guests.source("pv_domu")])),
             ("hardware-assist", vmkit.run(guests.source("vmexits"), "hardware-assist",
                                           controls=VmcsControls(exception_bitmap=1 << UD))),
             ("hardware-assist", vmkit.run(guests.source("vmexits"), "hardware-assist",
                                           controls=VmcsControls(hlt_exiting=False))),
             ("hardware-assist", vmkit.run(TRIPLE_FAULT, "hardware-assist"))]
    moved = migration.migrate(migration.workload("idle"))
    done.append(("migration", vmkit.RunResult("migration", events=moved.events)))
    return done + _kvm_runs()


# --- the event vocabulary ------------------------------------------------------------------------------
def test_every_event_kind_in_the_source_is_in_the_event_table():
    table = first_column(section("3.3"))
    kinds, _, _ = emitted_in_source()
    assert kinds, "found no event kinds in vmkit's source: has the way events are recorded changed?"
    assert kinds <= set(vmkit.EVENT_KINDS), f"kinds outside vmkit.EVENT_KINDS: {kinds - set(vmkit.EVENT_KINDS)}"
    assert kinds <= table, f"event kinds missing from docs/architecture.md 3.3: {sorted(kinds - table)}"


def test_the_event_table_lists_exactly_the_vocabulary():
    assert first_column(section("3.3")) == set(vmkit.EVENT_KINDS)


def test_every_vmexit_reason_and_migration_phase_in_the_source_is_named():
    text = mentioned(section("3.3"))
    _, phases, reasons = emitted_in_source()
    assert phases and reasons
    assert reasons <= text, f"vmexit reasons missing from 3.3: {sorted(reasons - text)}"
    assert phases <= text, f"migration phases missing from 3.3: {sorted(phases - text)}"


def test_what_the_runs_record_is_in_the_event_table(runs):
    table, text = first_column(section("3.3")), mentioned(section("3.3"))
    for technique, result in runs:
        for e in result.events:
            assert e.kind in table, f"{technique} recorded a {e.kind!r} event that 3.3 does not list"
            if e.kind == "vmexit":
                assert e.detail["reason"] in text, f"{technique}: vmexit reason {e.detail['reason']} not in 3.3"
            if e.kind == "migration":
                assert e.detail["phase"] in text, f"migration phase {e.detail['phase']!r} not in 3.3"
            if e.kind == "hypercall" or technique == "kvm":
                continue                     # a handler's notes are open-ended; a real KVM's details vary
            missing = set(e.detail) - text
            assert not missing, f"{technique}: a {e.kind!r} event's detail keys {sorted(missing)} are not in 3.3"


def test_every_technique_was_run(runs):
    ran = {technique for technique, _ in runs}
    assert set(vmkit.TECHNIQUES) - {"kvm"} <= ran


def test_every_stats_key_of_the_runs_is_in_the_stats_table(runs):
    table = first_column(section("3.4"))
    for technique, result in runs:
        for key in result.stats:
            named = re.sub(r"^vmexit_[A-Z_]+$", "vmexit_<REASON>", re.sub(r"^kernel_\w+$", "kernel_<counter>", key))
            assert named in table, f"{technique}: stats key {key!r} is not in docs/architecture.md 3.4"


# --- the platform and the Xen ABI ---------------------------------------------------------------------------
def test_the_platform_section_carries_the_machines_numbers():
    text = section("2.1")
    for value in (LOAD_ADDRESS, STACK_TOP, BOOT_GDT):
        assert f"`{value:#x}`" in text, f"{value:#x} is not in 2.1"
    assert f"CS = `{BOOT_CS:#04x}`" in text and f"SS = `{BOOT_DS:#04x}`" in text
    assert f"{DEFAULT_MEMORY >> 20} MiB" in text


def test_every_hypercall_vmkit_handles_is_in_the_abi_section():
    rows = {int(row[0]): row for row in cells(section("2.5")) if len(row) == 3 and row[0].isdigit()}
    for number, handler in HYPERCALLS.items():
        assert number in rows, f"hypercall {number} ({handler.__name__}) is not in the table of 2.5"
        name, what = rows[number][1], rows[number][2]
        assert name == f"`{xen.hypercall_name(number)}`", f"hypercall {number} is named {name} in 2.5"
        assert not what.startswith("-ENOSYS"), f"2.5 says hypercall {number} is not handled; vmkit handles it"
    for number, row in rows.items():
        assert row[1] == f"`{xen.hypercall_name(number)}`", f"2.5 names hypercall {number} {row[1]}"
        if row[2].startswith("-ENOSYS"):
            assert number not in HYPERCALLS, f"2.5 says hypercall {number} returns -ENOSYS; vmkit handles it"


def test_start_info_offsets_selectors_and_shared_info_bytes_are_vmkits():
    text = section("2.5")
    offsets = {name[3:].lower(): getattr(xen, name) for name in dir(xen) if name.startswith("SI_")}
    rows = {row[1].strip("`"): row[0] for row in cells(text) if len(row) == 3 and row[0].startswith("+")}
    assert rows == {name: f"+{offset}" for name, offset in offsets.items()}
    for name in ("FLAT_RING1_CS", "FLAT_RING1_DS", "FLAT_RING3_CS", "FLAT_RING3_DS"):
        assert f"`{getattr(xen, name):#x}`" in text, f"{name} is not in 2.5"
    assert f"`HYPERVISOR_VIRT_START` = `{xen.HYPERVISOR_VIRT_START:#x}`" in text
    assert f"ESI = `{START_INFO:#x}`" in text and f"shared_info at `{SHARED_INFO:#x}`" in text
    assert f"`evtchn_upcall_pending` byte {xen.VI_UPCALL_PENDING}" in text
    assert f"`evtchn_upcall_mask` byte {xen.VI_UPCALL_MASK}" in text
    assert f"`evtchn_pending` starts at byte {xen.SH_EVTCHN_PENDING}" in text
    eax, *signature = Paravirt._xen_cpuid(CPUID_XEN_LEAF)
    assert f"Leaf `{CPUID_XEN_LEAF:#x}` returns EAX = `{eax:#x}`" in text
    assert b"".join(w.to_bytes(4, "little") for w in signature).decode() in text


def test_the_code_cites_this_document_not_an_outside_one():
    outside = "DESIGN" + ".md"
    for folder in ("vmkit", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            assert outside not in path.read_text(), f"{path.relative_to(ROOT)} cites {outside}; cite docs/architecture.md"
    assert "docs/architecture.md" in (PACKAGE / "xen" / "paravirt.py").read_text()
