"""Where this hypervisor puts its pages in every domain's (pseudo-physical) memory.

These addresses are vmkit's choice, not part of Xen's ABI (docs/architecture.md, 2.5, lists them
with the rest of the domain's memory, and says how Xen places these pages). The guest learns
shared_info's address from start_info, and the grant table's frame from GNTTABOP_setup_table.
"""
from ..machine.platform import LOAD_ADDRESS
from . import abi as xen

SHARED_INFO = 0x1000
START_INFO = 0x2000
GRANT_TABLE = 0x3000            # one frame of version-1 grant entries
STORE_PAGE = 0x4000             # a domU's page for meeting its backends (see domains.py)
MODULES = 0x10000               # dom0's boot modules: the domU kernels it may build
MODULES_END = LOAD_ADDRESS      # ... up to the kernel's own image

# The hypervisor's own memory, mapped read-only into every domain: its GDT with the flat segments.
XEN_AREA = xen.HYPERVISOR_VIRT_START
XEN_AREA_SIZE = 0x10000
