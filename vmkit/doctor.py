"""vmkit.doctor(): what this machine offers the course, and how to get what is missing."""
import os
import platform
import shutil
from dataclasses import dataclass

import unicorn

from .kvm.probe import probe
from .machine import counting, delivery, quirks


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def __str__(self):
        mark = "ok " if self.ok else "-- "
        return f"{mark} {self.name:<22} {self.detail}" + (f"\n     fix: {self.fix}" if not self.ok and self.fix else "")


class Report(list):
    def __str__(self):
        return "\n".join(str(c) for c in self)

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))

    def ok(self, name):
        return any(c.name == name and c.ok for c in self)


def _tool(name, purpose, package):
    path = shutil.which(name)
    return Check(name, bool(path), f"{path} ({purpose})" if path else f"not found ({purpose})",
                 f"sudo apt-get install {package}   or   conda install -c conda-forge {package}")


def _kvm():
    if platform.system() != "Linux":
        return Check("/dev/kvm", False, "KVM needs Linux", "use a Linux machine; every other lesson runs anywhere")
    if not os.path.exists("/dev/kvm"):
        return Check("/dev/kvm", False, "absent: no KVM module, or no VT-x/AMD-V (or nested virtualization off)",
                     "enable VT-x/AMD-V in the firmware and load kvm_intel or kvm_amd")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Check("/dev/kvm", False, "present but not usable by this user",
                     "sudo usermod -aG kvm $USER, then log in again")
    report = probe()                        # tiny guests, once per process: what this KVM can run
    if not report.usable:
        return Check("/dev/kvm", False, report.reason, report.fix)
    can = [n for n, f in report.features.items() if f.ok]
    cannot = [n for n, f in report.features.items() if not f.ok]
    return Check("/dev/kvm", True, f"usable ({report.module or 'kvm'}): runs {', '.join(can)}"
                 + (f"; not {', '.join(cannot)} (vmkit.kvm.probe() says why)" if cannot else ""))


def doctor():
    """Check the tools the course uses. Print the result to see what to install."""
    report = Report([
        Check("unicorn", True, f"{unicorn.__version__} (the CPU emulator every technique runs on)"),
        _tool("nasm", "assembles the guests", "nasm"),
        _tool("dot", "draws the diagrams (graphviz)", "graphviz"),
        _tool("qemu-system-i386", "only for the differential tests", "qemu-system-x86"),
        _kvm(),
    ])
    try:
        quirks.offsets()
        report.append(Check("unicorn internals", True, "vmkit's probe found the CPU state it needs"))
    except Exception as e:                     # noqa: BLE001 - report, don't crash the doctor
        report.append(Check("unicorn internals", False, str(e)))
    built, where = counting.available()
    report.append(Check("block counter", built,
                        f"counted runs count per translated block ({where})" if built else
                        f"counted runs count per instruction, the reference way, several times slower: {where}",
                        "install a C compiler (sudo apt-get install gcc), then run python3 course.py doctor"))
    compiled, why = delivery.available()
    report.append(Check("compiled delivery", compiled,
                        "interrupts are delivered, and the PC's system calls handled, in C" if compiled else
                        f"interrupts are delivered in Python, the reference, several times slower: {why}",
                        "install a C compiler (sudo apt-get install gcc), then run python3 course.py doctor"))
    return report
