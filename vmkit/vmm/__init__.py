"""The software VMMs: the guest kernel deprivileged to ring 1, on a machine that cannot virtualize itself.

    trap_emulate         privileged instructions trap and are emulated (emulate.py) on a virtual CPU (vcpu.py)
    binary_translation   the guest kernel runs only as translated code (translator.py, emit.py) from a
                         translation cache (translation_cache.py)

    shadow_paging        the MMU: shadow page tables, kept in step with the guest's (also used by the
                         model of VT-x without EPT)

Xen's paravirtualization is vmkit.xen, the model of VT-x vmkit.vtx. Xen's classes are also
importable from here under their old names (Paravirt, HYPERCALLS), so that code written before they
moved keeps working. VT-x's are not (import them from vmkit.vtx): vmkit.vtx uses this package's
shadow page tables, and a name re-exported back would make the two packages import each other.
"""
from ..xen import HYPERCALLS, Paravirt
from .binary_translation import BinaryTranslation
from .emulate import EMULATORS
from .trap_emulate import TrapAndEmulate
from .vcpu import VCpu

__all__ = ["BinaryTranslation", "EMULATORS", "HYPERCALLS", "Paravirt", "TrapAndEmulate", "VCpu"]
