"""Where the hypervisor sits: type 1, type 2 and KVM drawn as layer stacks, each with its text form.

    hypervisor_stack("type1" | "type2" | "kvm")  -> Diagram

Goldberg's 1973 thesis named the two types by what the monitor runs on: a type 1 VMM runs on the
bare machine, a type 2 VMM runs on a host operating system. The right-hand column says which
privilege ring each layer's code runs in. The rings do not decide the type: a hosted monitor that
runs guests at speed has its own ring-0 part too, entered through a driver in the host kernel
(VMware Workstation's vmmon, whose task.c holds the "switching routines between the host and the
monitor"; VirtualBox's vboxdrv, which loads its ring-0 VMM, VMMR0).

Used by lesson 00.
"""
from .diagram import Diagram

GUEST, VMM, HOST, HARDWARE, PLAIN = "#e3f2fd", "#ffe0b2", "#e8f5e9", "#eeeeee", "#ffffff"


def _cell(text, colour, colspan=1):
    lines = "<br/>".join(text.split("\n")) or " "     # graphviz refuses an empty cell
    border = ' border="0"' if colour == PLAIN else ""    # an empty slot, not a box
    return f'<td bgcolor="{colour}" colspan="{colspan}" cellpadding="6"{border}>{lines}</td>'


def _ring(text):
    if not text:
        return '<td border="0"> </td>'
    return f'<td border="0" cellpadding="6"><font color="#555555"><i>{text}</i></font></td>'


# each stack: rows from top to bottom, a row being [(text, colour, colspan), ...] and its ring note
STACKS = {
    "type1": ("Type 1 (bare metal): the hypervisor is the only thing on the hardware", [
        ([("VM 1\napps\nguest OS", GUEST, 1), ("VM 2\napps\nguest OS", GUEST, 1),
          ("management VM\n(Xen: dom0)", GUEST, 1)], "guests: deprivileged"),
        ([("hypervisor: schedules vCPUs, owns memory and devices", VMM, 3)], "ring 0"),
        ([("hardware: CPUs, memory, disks, network", HARDWARE, 3)], ""),
    ], "Examples: Xen, VMware ESX/ESXi, Microsoft Hyper-V."),
    "type2": ("Type 2 (hosted): the hypervisor runs on a host operating system", [
        ([(" ", PLAIN, 1), ("VM 1\napps\nguest OS", GUEST, 1), ("VM 2\napps\nguest OS", GUEST, 1)],
         "guests: deprivileged"),
        ([("other\napplications", HOST, 1), ("hypervisor process:\nuser interface, device emulation", VMM, 2)],
         "ring 3"),
        ([("host OS kernel:\nowns the hardware", HOST, 1), ("the hypervisor's driver in the host kernel:\n"
                                        "its monitor runs the guests from here", VMM, 2)], "ring 0"),
        ([("hardware", HARDWARE, 3)], ""),
    ], "Examples: VMware Workstation (driver: vmmon), VirtualBox (vboxdrv); QEMU on its own, "
       "with no driver, runs everything in ring 3."),
    "kvm": ("KVM: Linux itself becomes the hypervisor; each VM is a Linux process", [
        ([("VM 1\nguest apps\nguest OS", GUEST, 1), ("VM 2\nguest apps\nguest OS", GUEST, 1),
          (" ", PLAIN, 1)], "guests (VMX non-root)"),
        ([("QEMU process:\ndevice model", VMM, 1), ("QEMU process:\ndevice model", VMM, 1),
          ("other Linux\nprocesses", HOST, 1)], "ring 3"),
        ([("Linux kernel + kvm.ko: vCPU threads scheduled by Linux, VM entry and exit", VMM, 3)], "ring 0"),
        ([("hardware with Intel VT-x or AMD-V", HARDWARE, 3)], ""),
    ], "Since Linux 2.6.20; used by Red Hat Enterprise Linux 6 and RHEV 3.0."),
}

TEXT = {
    "type1": "Type 1 hypervisor, from the bottom up: the hardware; on it, directly, the hypervisor in "
             "ring 0, which schedules the virtual CPUs and owns memory and devices; on the hypervisor, "
             "side by side, the virtual machines, each with its own guest OS and applications, one of "
             "them often a management VM (Xen's dom0). No host operating system sits underneath. "
             "Examples: Xen, VMware ESX/ESXi, Microsoft Hyper-V.",
    "type2": "Type 2 hypervisor, from the bottom up: the hardware; in ring 0 the host operating "
             "system's kernel and, loaded into it, the hypervisor's driver, through which the "
             "hypervisor's monitor runs the guests in ring 0 too; in ring 3, beside ordinary "
             "applications, the hypervisor's process with its user interface and device emulation; "
             "above them the virtual machines, each with its guest OS and applications. The host OS "
             "owns the hardware and the monitor relies on it. Examples: VMware Workstation (its "
             "driver is vmmon), VirtualBox (vboxdrv); QEMU on its own, with no driver, runs "
             "everything in ring 3.",
    "kvm": "KVM, from the bottom up: hardware with Intel VT-x or AMD-V; the Linux kernel with the kvm "
           "module in ring 0, which enters and leaves guests and whose vCPU threads Linux schedules "
           "like any other; in ring 3 one QEMU process per VM, providing the emulated devices, beside "
           "other Linux processes; each VM's guest OS and applications run in VMX non-root mode. "
           "KVM is in Linux since 2.6.20; Red Hat Enterprise Linux 6 and RHEV 3.0 build on it.",
}


def hypervisor_stack(kind):
    """The layers of a type 1, type 2 or KVM system as a Diagram (with .text)."""
    title, rows, examples = STACKS[kind]
    body = "".join("<tr>" + "".join(_cell(t, c, span) for t, c, span in cells) + _ring(ring) + "</tr>"
                   for cells, ring in rows)
    label = (f'<<table border="0" cellborder="1" cellspacing="3">'
             f'<tr><td colspan="4" border="0"><b>{title}</b></td></tr>{body}'
             f'<tr><td colspan="4" border="0"><font point-size="10">{examples}</font></td></tr></table>>')
    d = Diagram(text=TEXT[kind])
    d.attr("node", fontname="Helvetica", fontsize="11")
    d.node("stack", label=label, shape="plaintext")
    return d
