"""Where this hypervisor puts things: in every domain's pseudo-physical memory, and in Xen's own part
of every address space.

The domain's pages below are vmkit's choice, not part of Xen's ABI (docs/architecture.md, 2.5, lists
them with the rest of the domain's memory, and says how Xen places them). The domain builder maps the
whole of a domain's pseudo-physical memory at the same virtual addresses (virtual = pseudo-physical,
the first page left unmapped), so a PV guest reaches these pages at these addresses. The guest learns
shared_info's address from start_info, the grant table's frame from GNTTABOP_setup_table, and where
its page tables and its phys-to-machine list are from start_info's pt_base and mfn_list.
"""
from ..machine.platform import LOAD_ADDRESS
from . import abi as xen

SHARED_INFO = 0x1000
START_INFO = 0x2000
GRANT_TABLE = 0x3000            # one frame of version-1 grant entries
STORE_PAGE = 0x4000             # a domU's page for meeting its backends (see domains.py)
PAGE_TABLES = 0x5000            # the bootstrap page directory, its page tables, then the mfn_list
MODULES = 0x20000               # dom0's boot modules: the domU kernels it may build
MODULES_END = LOAD_ADDRESS      # ... up to the kernel's own image

# Xen's part of every address space (HYPERVISOR_VIRT_START and up, non-PAE x86_32; the L2 slots from
# 1008 on are copied into every page directory Xen validates, and the guest may not change them):
RO_MPT = xen.MACH2PHYS_VIRT_START           # the machine-to-physical table, read-only to the guest
PERDOMAIN_VIRT_START = 0xFE800000           # per-domain mappings: the vcpu's GDT (config.h, x86_32)
GDT_VIRT_START = PERDOMAIN_VIRT_START       # the GDT; Xen's flat segments in its page at +0xE000
XEN_GDT_PAGE = GDT_VIRT_START + xen.FIRST_RESERVED_GDT_BYTE
