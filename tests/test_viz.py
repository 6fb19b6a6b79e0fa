"""The visual layer renders what the machine recorded: diagrams, frames and the stepper."""
import importlib
import pkgutil
import re
from pathlib import Path

import nbformat
import pytest

import vmkit
import vmkit.guests
import vmkit.viz
from vmkit.viz.frames import frame_table
from vmkit.viz.quiz import Choice, Number
from vmkit.viz.rings import ring_diagram
from vmkit.viz.source import excerpt
from vmkit.viz.stepper import Stepper, listing
from vmkit.viz.tables import tables_diagram
from vmkit.viz.vmm import shadow_tables, vmm_loop

LOOP_FOREVER = """
    mov eax, 1
spin:
    inc eax
    jmp spin
"""


@pytest.fixture(scope="module")
def rings():
    return vmkit.guests.image("rings")


def test_diagram_marks_ring_3_after_the_first_iret(rings):
    m = vmkit.machine(rings)
    assert "<- CPL" in ring_diagram(m).text.splitlines()[3]          # boot: ring 0
    event = m.run_until(event="ring-transition")[-1]
    assert event.detail["cause"] == "iret"
    d = ring_diagram(m)
    lines = d.text.splitlines()
    assert lines[0].startswith("ring 3") and "<- CPL" in lines[0]
    assert not any("<- CPL" in line for line in lines[1:4])
    assert "iret (ring 0 → ring 3)" in d.text
    source = d.source
    assert 'r0 -> r3 [label=" iret "' in source
    assert "CPL 3 after iret" in d.caption
    assert "<svg" in d.svg()
    assert d._repr_mimebundle_()["text/plain"] == d.text


def test_diagram_from_an_event_shows_its_cause(rings):
    gp = [e for e in vmkit.run(rings).events if e.detail.get("cause") == "#GP"][0]
    d = ring_diagram(gp)
    assert 'r3 -> r0 [label=" #GP "' in d.source
    assert "ring 0: kernel   <- CPL" in d.text


def test_tables_diagram_reads_the_guests_tables(rings):
    m = vmkit.machine(rings)
    m.run_until(event="ring-transition")
    text = tables_diagram(m).text
    assert "0x0018  code, DPL 3" in text
    assert "vector 0x80" in text and "DPL 3" in text.split("vector 0x80")[1].splitlines()[0]
    assert "ESP0 0x%x (kernel_stack_top)" % rings.symbols["kernel_stack_top"] in text


def test_frame_of_int_0x80_has_addresses_and_the_user_ss(rings):
    m = vmkit.machine(rings)
    m.run_until(event="ring-transition")
    event = m.run_until(event="ring-transition")[-1]
    frame = frame_table(event, m)
    assert [r[1] for r in frame.rows] == ["EIP", "CS", "EFLAGS", "ESP", "SS"]
    esp = event.detail["esp"]
    assert [r[0] for r in frame.rows] == [esp + 4 * i for i in range(5)]
    assert frame.rows[-1][2] == 0x23 and "RPL 3" in frame.rows[-1][3]
    assert bytes(m.uc.mem_read(esp + 16, 4)) == (0x23).to_bytes(4, "little")   # the frame is really there


def test_next_event_shows_the_events_frame(rings):
    s = Stepper(rings)
    s.next_event()                                  # the kernel's iret into ring 3
    s.next_event()                                  # int 0x80
    event = s.last_events[-1]
    assert event.detail["cause"] == "int 0x80"
    assert "pushed by the CPU for int 0x80" in s.frame.value
    for name, value in event.detail["frame"]:
        assert f"{value:#010x}" in s.frame.value
    assert f"{event.detail['esp']:#010x}" in s.frame.value
    assert "CPL 0" in s.cpl.value
    assert "cause=int 0x80" in s.log.value


def test_step_highlights_exactly_the_changed_registers(rings):
    s = Stepper(rings)
    s.step()                                        # lgdt: only EIP moves
    assert s.changed == {"eip"}
    s.step()                                        # the far jump: EIP (CS reloaded with the same value)
    s.step()                                        # mov ax, KERNEL_DS
    assert s.changed == {"eip", "eax"}
    highlighted = [part.split(">")[1].split()[0] for part in s.registers.value.split("<span")[1:]
                   if "#ffe066" in part]
    assert sorted(highlighted) == ["eax", "eip"]


def test_code_panel_shows_the_nasm_line_at_eip(rings):
    s = Stepper(rings)
    s.next_event()
    eip = s.machine.cpu["eip"]
    assert eip == rings.symbols["user_main"]
    rows = listing(rings, eip)
    current = [r for r in rows if r[2]]
    assert len(current) == 1 and rings.source_line(current[0][1]).strip() == "mov eax, SYS_WRITE"
    assert "▶" in s.code.value and "SYS_WRITE" in s.code.value


def test_reset_returns_to_the_entry(rings):
    s = Stepper(rings)
    s.run()
    s.reset()
    assert s.machine.cpu["eip"] == rings.entry and s.machine.cpu.cpl == 0
    assert s.machine.events == [] and s.changed == set()
    assert "0 instructions" in s.status.value and "CPL 0" in s.cpl.value
    assert not s.buttons["step"].disabled


def test_run_shows_the_exit_code_and_the_serial_output(rings):
    s = Stepper(rings)
    s.run()
    assert s.machine.finished
    assert "exit code 3" in s.status.value
    assert "hello from ring 3" in s.serial.value
    assert s.buttons["run"].disabled and s.buttons["step"].disabled
    s.step()                                        # a click after the end explains, never raises
    assert "reset" in s.status.value


def test_io_events_are_filtered_unless_asked_for(rings):
    s = Stepper(rings)
    s.run()
    assert "port=" not in s.log.value and "io events hidden" in s.log.value
    s.show_io.value = True
    assert "port=" in s.log.value


def test_a_stepper_under_trap_and_emulate_reads_trap_emulate_resume_in_its_log():
    """Under the VMM, does the log tell trap -> emulate -> resume, and the status the virtual IF?"""
    s = Stepper(vmkit.guests.image("holes"), technique="trap-and-emulate")
    assert s.machine.cpu.cpl == 1 and "virtual IF 0" in s.status.value
    s.next_event()
    assert "lgdt" in s.log.value and "-&gt; VMM (#GP)" in s.log.value
    assert "shadow GDT rebuilt" in s.log.value and "resume after it" in s.log.value
    assert "guest kernel" in s.diagram.value


def test_a_guest_that_loops_forever_shows_the_timeout(rings):
    s = Stepper(LOOP_FOREVER, max_instructions=20_000)
    s.run()
    assert s.stopped
    assert "ran out of its budget" in s.status.value and "max_instructions" in s.status.value
    assert "Traceback" not in s.status.value
    assert s.buttons["run"].disabled
    s.reset()
    assert not s.stopped and "budget" not in s.status.value


def test_excerpt_finds_a_label_not_its_uses():
    ex = excerpt("rings", "user_main", "jmp $", mark="cli")
    assert ex.lines[0] == "user_main:" and ex.lines[-1].strip() == "jmp $"
    assert len(ex.mark) == 1 and "cli" in ex.text.splitlines()[-2]
    assert '<span style="color:#005cc5">cli</span>' in ex._repr_html_()


def test_self_checks_give_feedback():
    q = Choice("Which ring?", ["ring 0", "ring 3"], "ring 3", {"ring 0": "no", "ring 3": "yes"})
    assert q.check() is None
    q.choices.value = "ring 0"
    assert q.check() is False and "no" in q.result.value
    q.choices.value = "ring 3"
    assert q.check() is True and "Right" in q.result.value
    n = Number("RPL?", 3, "the low two bits")
    n.field.value = "0x3"
    assert n.check() is True
    n.field.value = "three"
    assert n.check() is None


# --- text alternatives and a machine without graphviz or nasm --------------------------------------

def lesson_diagrams(rings):
    """The lesson's kinds of diagram: the rings at boot and after a transition, and the tables."""
    m = vmkit.machine(rings)
    at_boot = ring_diagram(m)
    m.run_until(event="ring-transition")
    return [at_boot, ring_diagram(m), tables_diagram(m), ring_diagram(cpl=1, occupants=vmkit.viz.rings.VIRTUALIZED)]


def test_every_diagram_carries_its_text_as_alt_text_and_beside_the_picture(rings):
    """Does each diagram's HTML form give its text both as the picture's alt and in words below it?"""
    import html
    for d in lesson_diagrams(rings):
        bundle = d._repr_mimebundle_()
        assert d.text.strip() and bundle["text/plain"] == d.text
        assert f'alt="{html.escape(d.text)}"' in bundle["text/html"]
        assert f"<pre>{html.escape(d.text)}</pre>" in bundle["text/html"]
        assert "bgcolor=white" in d.source         # its own light page, whatever the theme around it


@pytest.fixture
def no_graphviz(monkeypatch, tmp_path):
    """A PATH on which graphviz's dot cannot be found (an empty directory)."""
    monkeypatch.setenv("PATH", str(tmp_path))


def test_without_dot_a_diagram_is_its_text_and_one_line_naming_the_fix(rings, no_graphviz):
    """Without graphviz, does a diagram show as its text form with the install command, not an error?"""
    d = ring_diagram(vmkit.machine(rings))
    bundle = d._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert d.text in bundle["text/plain"] and "apt-get install graphviz" in bundle["text/plain"]
    assert "apt-get install graphviz" in bundle["text/html"]


def test_without_dot_the_stepper_still_steps(rings, no_graphviz):
    """Without graphviz, does the stepper draw its rings as text and keep every other panel?"""
    s = Stepper(rings)
    s.next_event()
    assert "ring 3: user programs   &lt;- CPL" in s.diagram.value and "apt-get install graphviz" in s.diagram.value
    assert "CPL 3" in s.cpl.value


def test_check_tools_names_what_is_missing_and_the_fix(monkeypatch):
    """Is there one notice, naming each missing program, what it is for and the command to install it?"""
    from vmkit.viz.tools import ToolNotice, missing_tools
    monkeypatch.setattr("shutil.which", lambda name: None if name in ("nasm", "dot") else "/bin/" + name)
    assert missing_tools() == ["nasm", "dot"]
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objs: shown.extend(objs))
    vmkit.viz.tools.check_tools()
    assert len(shown) == 1 and isinstance(shown[0], ToolNotice)
    text = shown[0].text
    assert "sudo apt-get install nasm" in text and "sudo apt-get install graphviz" in text
    assert "apt-get install graphviz" in shown[0]._repr_mimebundle_()["text/html"]


def test_check_tools_is_silent_when_all_is_there(monkeypatch):
    """With nasm and dot installed, does the lesson's first cell show nothing at all?"""
    monkeypatch.setattr("shutil.which", lambda name: "/bin/" + name)
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objs: shown.extend(objs))
    assert vmkit.viz.tools.check_tools() is None and shown == []


def test_the_hosted_stack_puts_its_monitor_in_ring_0():
    """Goldberg's types are about what the monitor runs on, not its ring: does the type 2 drawing
    show the hosted monitor's driver in ring 0, beside the host kernel, and say so in its text?"""
    from vmkit.viz.hypervisors import STACKS, hypervisor_stack
    _, rows, examples = STACKS["type2"]
    ring0 = [cells for cells, ring in rows if ring == "ring 0"][0]
    assert any("driver" in text for text, _, _ in ring0) and "vmmon" in examples and "vboxdrv" in examples
    text = hypervisor_stack("type2").text
    assert "monitor runs the guests in ring 0 too" in text and "host OS owns the hardware" in text
    assert all(hypervisor_stack(kind).text for kind in STACKS)


# --- the trap-and-emulate VMM's pictures (vmkit.viz.vmm) -------------------------------------------------------
def test_the_vmm_loop_counts_where_each_timer_interrupt_was_injected(rings):
    """The rings kernel never executes sti: does the loop say the timer came in while the user program
    ran in ring 3, not while the virtual IF was on?"""
    result = vmkit.run(rings, "trap-and-emulate")
    injected = [e for e in result.of_kind("ring-transition") if str(e.detail.get("cause")).startswith("IRQ")]
    assert injected and all(e.detail["from_ring"] == 3 for e in injected)
    d = vmm_loop(result)
    assert f"{len(injected)} timer interrupts were injected" in d.text
    assert f"{len(injected)} while its user program ran in ring 3, 0 while its kernel" in d.text
    assert "does not trap" in d.text and "virtual IF keeps the kernel's last value" in d.text
    assert f'timer -> reflect [label=" {len(injected)} "' in d.source and "in ring 3 or its virtual IF is 1" in d.source
    traps, emulated = len(result.of_kind("trap")), len(result.of_kind("emulate"))
    assert f"{traps} traps, {emulated} emulated, {traps - emulated} reflected" in d.caption


def test_the_vmm_loop_of_a_kernel_that_enables_interrupts_counts_kernel_injections():
    d = vmm_loop(vmkit.run(vmkit.guests.image("popf_critical"), "trap-and-emulate"))
    line = [l for l in d.text.splitlines() if "timer interrupts" in l][0]
    assert ": 0 while its user program ran in ring 3," in line and " 0 while its kernel" not in line
    assert "does not trap" not in d.text                               # no user program: no note about ring 3


def test_the_shadow_tables_show_ring_compression_and_why_the_virtual_if_is_0_in_ring_3(rings):
    m = vmkit.machine(rings, "trap-and-emulate")
    m.run_until(event="ring-transition")                               # the iretd into ring 3
    assert m.cpu.cpl == 3 and not m.vcpu.interrupt_flag
    d = shadow_tables(m)
    assert "0x0008    code         DPL 0   code         DPL 1" in d.text
    assert "IF           0x0               0x1   differs" in d.text
    assert "The guest is in ring 3" in d.text and "ring 3" in d.caption
    assert 'label="DPL 0→1"' in d.source


# --- the package: viz.<module>.<name>, and each module's "Used by" line -------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
VIZ_MODULES = sorted(m.name for m in pkgutil.iter_modules(vmkit.viz.__path__) if not m.name.startswith("_"))


def notebooks_that_use(module):
    """The lessons (two digits) and labs (one) whose code cells name viz.<module>. or vmkit.viz.<module>."""
    lessons, labs = set(), set()
    for path in [*ROOT.glob("lessons/*.ipynb"), *ROOT.glob("labs/*/*.ipynb")]:
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        if re.search(rf"\bviz\.{module}\b", code):
            if path.parent.name == "lessons":
                lessons.add(path.name[:2])
            else:
                labs.add(re.match(r"lab(\d+)", path.parent.name).group(1))
    return lessons, labs


def used_by(module):
    """The lessons and labs a module's docstring names in its first sentence starting "Used by"."""
    doc = importlib.import_module(f"vmkit.viz.{module}").__doc__ or ""
    found = re.search(r"\bUsed by (.*?)\.(?:\s|$)", doc, re.S)
    assert found, f"vmkit/viz/{module}.py: its docstring has no 'Used by lesson NN.' line"
    words = found.group(1)
    labs_part = re.search(r"\blabs? ([\d, and]+)", words)
    return set(re.findall(r"\b\d\d\b", words)), set(re.findall(r"\d+", labs_part.group(1))) if labs_part else set()


@pytest.mark.parametrize("module", VIZ_MODULES)
def test_each_viz_module_names_the_lessons_and_labs_that_use_it(module):
    assert used_by(module) == notebooks_that_use(module), \
        f"vmkit/viz/{module}.py says it is used by {used_by(module)} (lessons, labs); the notebooks say " \
        f"{notebooks_that_use(module)}: correct its 'Used by' line"


def test_the_package_names_its_modules_and_imports_each_on_first_use():
    import subprocess
    import sys
    code = ("import sys; from vmkit import viz; assert 'vmkit.viz.compare' not in sys.modules; "
            "assert viz.quiz.Choice and viz.diagram.Table and 'compare' in dir(viz); print(sorted(dir(viz)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert all(name in out for name in VIZ_MODULES)
    with pytest.raises(AttributeError, match="no module 'ring_diagram'.*viz.quiz.Choice"):
        vmkit.viz.ring_diagram
