"""The virtual machine monitors: one module per technique, each a Machine with a VMM in front.

    trap_emulate         the guest kernel deprivileged to ring 1; privileged instructions trap and are emulated
    binary_translation   the guest kernel runs only as translated code from a translation cache
    paravirt             Xen's paravirtual ABI: the guest kernel in ring 1 makes hypercalls instead of trapping
    hardware_assist      vmkit's model of VT-x: the guest at CPL 0 in non-root mode, VM exits as KVM reports them
"""
from .emulate import EMULATORS
from .hardware_assist import HardwareAssist, VmcsControls
from .binary_translation import BinaryTranslation
from .hypercalls import HYPERCALLS
from .paravirt import Paravirt
from .trap_emulate import TrapAndEmulate
from .vcpu import VCpu

__all__ = ["BinaryTranslation", "EMULATORS", "HYPERCALLS", "Paravirt", "TrapAndEmulate", "VCpu", "HardwareAssist",
           "VmcsControls"]
