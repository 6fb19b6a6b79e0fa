"""Real KVM from Python: the ioctl binding (api, vm), what an exit says (exits), the kernel's
counters (stats), the user-space device model (devices), the vmkit PC on KVM (machine), and what
this machine's KVM can run (probe). Importing it opens no device.

    import vmkit
    print(vmkit.kvm.probe())                      # what the local KVM can run, or why it can't
    vmkit.run(image, "kvm")                       # the vmkit PC on KVM
    vmkit.machine(image, "kvm", vcpus=2)          # start(), vcpu_threads(), wait()
"""
from .devices import MMIO_BASE, MMIO_SIZE, DeviceModel, MmioDevice
from .exits import Exit, decode
from .machine import KvmMachine, process_threads
from .probe import KvmReport, probe
from .stats import StatsFd
from .vm import DEVICE, Kvm, Vcpu, Vm

__all__ = ["DEVICE", "MMIO_BASE", "MMIO_SIZE", "DeviceModel", "Exit", "Kvm", "KvmMachine", "KvmReport",
           "MmioDevice", "StatsFd", "Vcpu", "Vm", "decode", "probe", "process_threads"]
