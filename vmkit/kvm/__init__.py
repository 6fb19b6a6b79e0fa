"""Real KVM from Python: the ioctl binding (api, vm), what an exit says (exits), the kernel's
counters (stats), the user-space device model (devices), the vmkit PC on KVM (machine), and what
this machine's KVM can run (probe).

    import vmkit.kvm
    print(vmkit.kvm.probe())                      # what the local KVM can run, or why it can't
    vmkit.run(image, "kvm")                       # the vmkit PC on KVM
"""
from .devices import MMIO_BASE, MMIO_SIZE, DeviceModel, MmioDevice
from .exits import Exit, decode
from .machine import KvmMachine
from .stats import StatsFd
from .vm import DEVICE, Kvm, Vcpu, Vm

__all__ = [
           "DEVICE",
           "MMIO_BASE",
           "MMIO_SIZE",
           "DeviceModel",
           "Exit",
           "Kvm",
           "KvmMachine",
           "MmioDevice",
           "StatsFd",
           "Vcpu",
           "Vm",
           "decode",
]
