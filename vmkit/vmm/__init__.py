"""The virtual machine monitors: one module per technique, each a Machine with a VMM in front.

    trap_emulate   the guest kernel deprivileged to ring 1; privileged instructions trap and are emulated
"""
from .emulate import EMULATORS
from .trap_emulate import TrapAndEmulate
from .vcpu import VCpu

__all__ = ["EMULATORS", "TrapAndEmulate", "VCpu"]
