"""Pictures of hardware assist and KVM: the run loop with its counts, the exit reasons, the split
between the kernel and user space, the VMCS controls and their explorer, the exit stepper, the
threads of this process, and lesson 05 without KVM. Each renders a real run; tests that need the
real KVM skip with the probe's reason."""
import os
import re
import time

import nbformat
import pytest
from nbclient import NotebookClient

import vmkit
import vmkit.guests
from vmkit.kvm import MMIO_BASE
from vmkit.kvm.probe import probe
from vmkit.viz import kvm as kviz
from vmkit.vtx import VmcsControls

HA = "hardware-assist"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSON = os.path.join(ROOT, "lessons", "05_hardware_assist_kvm.ipynb")


def need_kvm(*features):
    why = probe().why_not(*(features or ("protected-mode", "exceptions")))
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def vmexits():
    return vmkit.guests.image("vmexits")


@pytest.fixture(scope="module")
def model_run(vmexits):
    return vmkit.run(vmexits, HA)


def edge(diagram, tail, head):
    """The dot statements of the edges from `tail` to `head`, attributes and all (labels may span lines)."""
    return re.findall(rf"^\s*{tail} -> {head} \[.*?\]$", diagram.source, re.MULTILINE | re.DOTALL)


# --- the guest ----------------------------------------------------------------------------------------

def test_the_guest_meets_every_control_once_or_more(model_run):
    s = model_run.stats
    output = model_run.serial_bytes
    assert (s["vmexit_IO"], s["vmexit_MMIO"], s["vmexit_CPUID"], s["vmexit_HLT"]) == (2 * len(output), 1, 1, 1)
    assert "ID register: 'vmk1'" in model_run.serial and "'KVMKVMKVM'" in model_run.serial
    assert "#UD handled by the guest itself" in model_run.serial and model_run.halted


# --- the run loop ---------------------------------------------------------------------------------------

def test_the_run_loop_carries_the_runs_counts(model_run):
    d = kviz.run_loop_diagram(model_run, controls=VmcsControls())
    total = model_run.stats["vmexits"]
    io = model_run.stats["vmexit_IO"]
    assert f'label=" VM exit ×{total} "' in edge(d, "handler", "guest")[0]
    assert f'label=" VM entry ×{total} "' in edge(d, "entry", "guest")[0]
    (up,) = edge(d, "device", "handler")                   # one edge, one line per reason
    assert f"KVM_EXIT_IO ×{io}" in up and "KVM_EXIT_MMIO ×1" in up and "KVM_EXIT_HLT ×1" in up
    assert "CPUID" not in up                               # KVM keeps it in the kernel
    (inside,) = edge(d, "handler", "entry")
    assert "handled in the kernel ×1" in inside and "CPUID ×1" in inside
    assert f'label=" KVM_RUN ×{total - 1} "' in edge(d, "run", "entry")[0]
    assert f"answer, run again ×{total - 2}" in edge(d, "device", "run")[0]
    assert "the run ends:\nhalted" in d.source or "the run ends:\\nhalted" in d.source
    assert "HLT exiting: on" in d.source and "every port" in d.source
    assert f"{total} VM exits" in d.caption and f"{total - 1} returned to user space" in d.caption
    assert f"KVM_EXIT_IO {io}" in d.text and "CPUID 1" in d.text and "The run ended: halted." in d.text
    assert "<svg" in d.svg()


def test_the_last_exits_edge_is_highlighted(model_run):
    mmio = next(e for e in model_run.of_kind("vmexit") if e.detail["reason"] == "MMIO")
    d = kviz.run_loop_diagram(model_run, highlight=mmio)
    (up,) = edge(d, "device", "handler")
    assert kviz.HOT in up and f'<font color="{kviz.HOT}"><b>KVM_EXIT_MMIO ×1</b></font>' in up
    assert "<b>KVM_EXIT_IO" not in up
    assert kviz.HOT not in edge(d, "handler", "entry")[0]
    cpuid = kviz.run_loop_diagram(model_run, highlight="CPUID")
    assert kviz.HOT in edge(cpuid, "handler", "entry")[0] and kviz.HOT not in edge(cpuid, "device", "handler")[0]
    plain = kviz.run_loop_diagram(model_run)
    assert kviz.HOT not in plain.source


def test_a_live_machine_shows_the_counts_so_far(vmexits):
    m = vmkit.machine(vmexits, HA)
    d = kviz.run_loop_diagram(m)
    assert "nothing yet" in d.source and "the run goes on" in d.source and "0 VM exits" in d.caption
    m.run_until(event="vmexit")
    m.run_until(event="vmexit")
    d = kviz.run_loop_diagram(m)
    assert "KVM_EXIT_IO ×2" in edge(d, "device", "handler")[0]
    assert "answer, run again ×2" in edge(d, "device", "run")[0]          # not ended: both go round again
    assert "The run has not ended yet." in d.text


def test_the_run_loop_on_real_kvm_takes_the_kernels_count(vmexits):
    need_kvm()
    result = vmkit.run(vmexits, "kvm")
    d = kviz.run_loop_diagram(result)
    s = result.stats
    kernel = s["kernel_exits"] - s["vmexits"]
    assert kernel >= 1                                     # CPUID at least never left the kernel
    assert f"handled in the kernel ×{kernel}" in edge(d, "handler", "entry")[0]
    assert f"VM exit ×{s['kernel_exits']}" in edge(d, "handler", "guest")[0]
    assert f"KVM_EXIT_IO ×{s['vmexit_IO']}" in edge(d, "device", "handler")[0]
    assert "the real KVM" in d.caption and "model" not in d.caption
    assert "execution controls: set by kvm.ko" in d.source


# --- tables ----------------------------------------------------------------------------------------------

def test_exit_reasons_name_vt_x_and_kvm(model_run):
    t = kviz.exit_reasons(model_run)
    rows = {row[0]: row for row in t.rows}
    assert list(rows) == ["IO", "MMIO", "CPUID", "HLT"]                  # in the order the run met them
    assert rows["IO"][1] == "I/O instruction (30)" and "KVM_EXIT_IO" in rows["IO"][2]
    assert rows["IO"][3] == model_run.stats["vmexit_IO"]
    assert rows["IO"][4] == f"in port 0x3fd = 0x60 at {model_run.of_kind('vmexit')[0].eip:#x}"
    assert rows["MMIO"][1].startswith("EPT violation (48)") and "read 0xfeb00000 (ID)" in rows["MMIO"][4]
    assert rows["CPUID"][1] == "CPUID (10)" and "never seen outside" in rows["CPUID"][2]
    assert rows["HLT"][4].startswith("hlt at")
    assert "CPUID" in t.text and "<table" in t._repr_html_()


def test_exit_split_under_the_model_is_the_one_kvm_would_make(model_run):
    t = kviz.exit_split(model_run)
    rows = {row[0].strip(): row[1:] for row in t.rows}
    total = model_run.stats["vmexits"]
    assert rows["VM exits, all of them"] == [total, total - 1]
    assert rows["CPUID"] == [1, 0] and rows["IO"] == [model_run.stats["vmexit_IO"]] * 2
    excepted = vmkit.run(vmkit.guests.image("vmexits"), HA, controls=VmcsControls(exception_bitmap=1 << 6))
    assert {row[0].strip(): row[1:] for row in kviz.exit_split(excepted).rows}["EXCEPTION"] == [1, 0]


def test_exit_split_on_real_kvm_reads_the_stats_fd(vmexits):
    need_kvm()
    result = vmkit.run(vmexits, "kvm")
    rows = {row[0].strip(): row[1:] for row in kviz.exit_split(result).rows}
    s = result.stats
    assert rows["VM exits, all of them"] == [s["kernel_exits"], s["vmexits"]]
    assert rows["MMIO"] == [s["kernel_mmio_exits"], 1] and rows["hlt"] == [s["kernel_halt_exits"], 1]
    assert rows["port I/O"][1] == s["vmexit_IO"]
    assert rows["instructions kvm.ko's x86 emulator ran"][0] == s["kernel_insn_emulation"]


def test_the_controls_table_counts_what_each_control_caused(vmexits):
    controls = VmcsControls(hlt_exiting=False, exception_bitmap=1 << 6, io_bitmap={0xF4})
    result = vmkit.run(vmexits, HA, controls=controls)
    rows = {row[3]: row for row in kviz.controls_table(controls, result).rows}
    assert rows["HLT"][2] == "off" and rows["HLT"][4] == 0
    assert rows["EXCEPTION"][2] == "#UD (6)" and rows["EXCEPTION"][4] == 1
    assert rows["IO"][2] == "I/O bitmaps: only 0xf4" and rows["IO"][4] == 0           # the guest never writes 0xf4
    assert rows["CPUID"][4] == 1 and rows["MMIO"][4] == 1 and rows["SHUTDOWN"][4] == 0
    assert "bit 7" in rows["HLT"][1]
    assert "the model has no EPT" in rows["MMIO"][1]                 # it does not claim a second stage
    blank = kviz.controls_table(VmcsControls())
    assert blank.rows[0][4] == "" and "every port" in blank.text


def test_exit_costs_put_the_papers_cycles_beside_the_measurement():
    t = kviz.exit_costs([("in al, 0x80", 12.345)])
    assert t.rows[0] == ["in al, 0x80", "12.35 µs", "measured on this machine"]
    assert ["hardware VMM, first-generation VT-x: a VM exit and entry", "15,826 cycles",
            "Adams & Agesen, ASPLOS 2006: in"] in t.rows
    assert any(row[1] == "3,209 cycles" for row in t.rows)


# --- the engine banner ---------------------------------------------------------------------------------

def test_the_banner_says_why_the_model_runs(tmp_path):
    missing = str(tmp_path / "kvm")
    b = kviz.banner(probe(missing), HA)
    assert not b.ok and b.text.startswith("No usable KVM here") and f"{missing} does not exist" in b.text
    assert "modprobe kvm_intel" in b.text and "'hardware-assist'" in b.text
    bundle = b._repr_mimebundle_()
    assert "vmkit-engine-banner" in bundle["text/html"] and bundle["text/plain"] == b.text


def test_the_banner_names_the_real_kvm():
    need_kvm()
    report = probe()
    b = kviz.banner(report, "kvm")
    assert b.ok and b.text.startswith(f"Real KVM: the guests below run on {report.path}")
    for feature in report.features.values():
        assert ("cannot run" in b.text and feature.name in b.text.split("\n")[1]) or feature.ok


# --- the widgets ---------------------------------------------------------------------------------------

def test_the_explorer_reruns_the_guest_when_a_control_changes(vmexits):
    x = kviz.VmcsExplorer(vmexits)
    bytes_out = len(x.result.serial_bytes)
    assert x.result.stats["vmexit_HLT"] == 1 and "HLT 1" in x.summary.value
    assert all(b.disabled for b in x.ports.values())                  # every port exits: no bitmap to tick
    x.hlt.value = False
    assert "HLT" not in " ".join(k for k in x.result.stats if k.startswith("vmexit_"))
    assert x.result.halted and x.result.serial == vmkit.run(vmexits, HA).serial
    x.exceptions[6].value = True
    assert x.result.stats["vmexit_EXCEPTION"] == 1 and "#UD (6)" in x.table.value
    x.io_mode.value = "I/O bitmap: only the ports ticked"
    assert not any(b.disabled for b in x.ports.values())
    assert x.result.stats["vmexit_IO"] == 2 * bytes_out                 # all three ports still ticked
    x.ports[0x3F8].value = False
    assert x.result.stats["vmexit_IO"] == bytes_out                     # only the line-status reads exit
    assert x.controls == VmcsControls(hlt_exiting=False, exception_bitmap=1 << 6, io_bitmap=frozenset({0x3FD, 0xF4}))
    assert "only 0xf4, 0x3fd" in x.diagram.value and "<svg" in x.diagram.value


def test_the_stepper_walks_the_model_from_exit_to_exit(vmexits, model_run):
    s = kviz.ExitStepper(vmexits, HA)
    assert "no exit yet" in s.exit.value and "0 VM exits" in s.status.value
    s.next_exit()
    assert "<b" in s.exit.value and "IO</b>" in s.exit.value and "port=0x3fd" in s.exit.value
    assert "KVM: returns to user space (KVM_EXIT_IO)" in s.exit.value
    line = vmexits.line_of(s.last_exit.eip)
    assert f"{line:4d}▶" in s.code.value and "in</span>" in s.code.value
    s.next_other()
    assert s.last_exit.detail["reason"] == "MMIO" and "register=ID" in s.exit.value
    s.next_other()
    assert s.last_exit.detail["reason"] == "CPUID" and "KVM_RUN would not even return" in s.exit.value
    assert kviz.HOT in s.diagram.value
    s.run()
    assert s.machine.finished and "halted" in s.status.value
    assert all(s.buttons[b].disabled for b in ("next exit", "next other", "run"))
    assert [(e.kind, e.eip, e.detail) for e in s.machine.events] == [(e.kind, e.eip, e.detail) for e in model_run.events]
    assert "#UD handled by the guest itself" in s.serial.value
    s.next_exit()
    assert "Press reset" in s.status.value
    s.reset()
    assert s.machine.events == [] and not s.buttons["run"].disabled


def test_the_stepper_on_real_kvm_never_stops_at_what_the_kernel_keeps(vmexits):
    need_kvm()
    s = kviz.ExitStepper(vmexits, "kvm")
    try:
        s.next_other()
        assert s.last_exit.detail["reason"] == "MMIO"
        s.next_other()
        assert s.last_exit.detail["reason"] == "HLT"                   # CPUID and the #UD stayed in kvm.ko
        assert s.machine.finished and "the real KVM" in s.status.value
        first = s.machine
        s.reset()
        assert first.vm is None or first.vm.fd < 0                      # the old VM's fds are closed
    finally:
        s.close()


def test_the_stepper_reports_a_guest_that_goes_astray():
    s = kviz.ExitStepper("mov eax, [0x7ff00000]\nhlt", HA)
    s.next_exit()
    assert s.stopped and "outside its" in s.status.value and s.buttons["run"].disabled


# --- a VM is a process --------------------------------------------------------------------------------

def test_the_threads_table_marks_the_vcpu_threads():
    need_kvm()
    with vmkit.machine(vmkit.guests.image("smp"), "kvm", vcpus=2, timeout=10) as m:
        m.start()
        deadline = time.perf_counter() + 5
        while m.devices.serial.output.count(b" up,") < 2 and time.perf_counter() < deadline:
            time.sleep(0.005)
        t = kviz.threads_table(m)
        m.devices.mmio_access(MMIO_BASE + 4, 4, 1, "write")
        m.wait()
    threads = m.vcpu_threads()
    marked = [row for row in t.rows if row[5].startswith("◀")]
    assert [(row[0], row[1], row[5]) for row in marked] == [(threads[0], "CPU 0/KVM", "◀ vCPU 0 of the VM"),
                                                           (threads[1], "CPU 1/KVM", "◀ vCPU 1 of the VM")]
    assert all(row[2] in ("running", "sleeping") for row in marked)
    main = next(row for row in t.rows if row[0] == os.getpid())
    assert main[5].startswith("the main thread")
    assert f"process {os.getpid()}" in t.caption and "vCPU threads" in t.caption
    assert "◀ vCPU 1 of the VM" in t.text and "CPU 1/KVM" in t._repr_html_()


def test_the_threads_table_without_a_vm():
    t = kviz.threads_table()
    assert not any("vCPU" in row[5] for row in t.rows) and any(row[0] == os.getpid() for row in t.rows)
    assert "no VM is running" in t.caption


# --- the lesson without KVM -----------------------------------------------------------------------------

@pytest.mark.notebook
def test_lesson_05_runs_on_the_model_where_kvm_is_missing(tmp_path, monkeypatch):
    """The lesson reads VMKIT_KVM_DEVICE: a path that does not exist makes it fall back to the model."""
    monkeypatch.setenv("VMKIT_KVM_DEVICE", str(tmp_path / "kvm"))
    nb = nbformat.read(LESSON, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(LESSON)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "No usable KVM here" in text and "does not exist" in text
    assert "This cell drives the real KVM; here it cannot" in text
    assert "on hardware-assist:" in text and "No vCPU threads here" in text
