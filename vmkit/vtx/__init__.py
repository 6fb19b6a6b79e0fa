"""vmkit's model of VT-x, the way KVM uses it: the guest at CPL 0 in VMX non-root mode on the vmkit
PC, and the VM exits that the VMCS's controls ask for, recorded as KVM reports them to user space.

    hardware_assist     HardwareAssist (the machine) and VmcsControls (what exits)

    vmkit.run(image, "hardware-assist", controls=VmcsControls(hlt_exiting=False))

Real KVM is vmkit.kvm; its user-space run loop (vmkit.kvm.userspace) also drives this model.
"""
from .hardware_assist import HardwareAssist, VmcsControls

__all__ = ["HardwareAssist", "VmcsControls"]
