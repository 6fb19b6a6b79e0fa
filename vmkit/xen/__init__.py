"""Xen's paravirtualization: a hypervisor for guest kernels that know they run on one.

One idea per module, each importing only the ones above it in this list:

    abi              the numbers and structure layouts of Xen's x86_32 PV ABI (Xen's public headers)
    layout           where this hypervisor puts its pages in a domain's memory, and its own in every one
    mm               machine memory, the frame table, and direct paging: validated page-table updates
    domain_build     a new domain's start of day: frames, kernel, start_info, bootstrap page tables
    io_ring          a split driver's shared ring, read out of a domain's memory
    event_channels   virtual interrupts between domains: ports and the shared_info bitmaps
    grant_tables     how a domain lets another one map a page of its memory
    domains          the hypervisor's shared state (Xen): domain table, scheduler, timers; domctl
    hypercalls       what `int 0x82` does: one handler per hypercall, and the table HYPERCALLS
    paravirt         Paravirt: one domain, a vcpu in ring 1 on the vmkit PC (dom0 runs the whole system)

    vmkit.run(image, "paravirt")          # boots `image` as dom0
"""
from .hypercalls import HYPERCALLS, BadAddress
from .paravirt import Paravirt

__all__ = ["BadAddress", "HYPERCALLS", "Paravirt"]
