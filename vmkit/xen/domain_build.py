"""The domain builder: a new PV domain's memory at the start of day, after Xen's construct_dom0
(xen/arch/x86/domain_build.c, the non-PAE x86_32 tree before commit 84d54d5d8b).

Xen's part (populate) allocates the domain's frames and numbers them: pseudo-physical frame n is
machine frame p2m[n], a list the domain gets to keep (start_info's mfn_list), and the
machine-to-physical table (read-only to every guest at MACH2PHYS_VIRT_START) gets the reverse.
dom0's frames are one run of machine frames, as construct_dom0 allocates them; a domU's come from
the top of machine memory down, so that nothing about its addresses survives a wrong guess that
pseudo-physical is machine.

The builder's part (build) then loads the kernel (and dom0's boot modules), fills start_info and builds the bootstrap page
tables: a page directory and an L1 table for every 4 MiB, which map the domain's whole memory at
virtual = pseudo-physical, except the first page, and map the page-table frames themselves
read-only, as Xen's start-of-day layout requires (xen.h: "All bootstrap elements are mapped
read-writable for the guest OS. The only exception is the bootstrap page table, which is mapped
read-only."). Last, it asks the frame table to validate the page directory as an L2 table, which
validates every L1 it points at, pins it and makes it the domain's page directory, the same
references construct_dom0 takes for dom0's. Xen runs both parts for dom0. For a domU, dom0's own
kernel does the builder's part through hypercalls, as Xen's toolstack does (vmkit/guests/pv_dom0.asm);
Xen.create_domain runs it in Python for the tests that want a domU without a dom0 to build it.

What vmkit does differently (docs/architecture.md, 2.5): Xen maps the bootstrap region starting at
the kernel's virtual base (Linux: 0xC0000000) with the bootstrap elements after the kernel, and only
that region; vmkit maps everything at virtual = pseudo-physical with its own pages in fixed places
(vmkit.xen.layout), and sets U/S in every PTE (Xen's L1_PROT leaves it clear) so that the course's
kernels can run user programs from their own image without mapping pages for them.
"""
import struct

from ..errors import GuestError
from ..machine.x86 import encode_descriptor
from . import abi as xen
from . import mm as frames
from .layout import GDT_VIRT_START, MODULES, MODULES_END, PAGE_TABLES, SHARED_INFO, START_INFO

PAGE = xen.PAGE_SIZE
L1_PROT = frames.P | frames.RW | frames.A | frames.US      # construct_dom0's L1_PROT, with U/S added
L2_PROT = frames.P | frames.RW | frames.A | frames.D | frames.US

# Xen's GDT: its flat segments, in the page at FIRST_RESERVED_GDT_BYTE. The guest's segments end
# where the read-only machine-to-physical table ends (GUEST_DESC in xen/arch/x86/boot/x86_32.S).
GUEST_LIMIT = (xen.MACH2PHYS_VIRT_END - 1) >> 12
XEN_GDT_LIMIT = xen.FLAT_RING3_DS | 7
XEN_GDT = {
    xen.HYPERVISOR_CS: encode_descriptor(0, 0xFFFFF, 0x9B),     # ring 0: the hypervisor (unused by guests)
    xen.HYPERVISOR_DS: encode_descriptor(0, 0xFFFFF, 0x93),
    xen.FLAT_RING1_CS: encode_descriptor(0, GUEST_LIMIT, 0xBB),  # ring 1: the guest kernel
    xen.FLAT_RING1_DS: encode_descriptor(0, GUEST_LIMIT, 0xB3),
    xen.FLAT_RING3_CS: encode_descriptor(0, GUEST_LIMIT, 0xFB),  # ring 3: its user programs
    xen.FLAT_RING3_DS: encode_descriptor(0, GUEST_LIMIT, 0xF3),
}                               # (accessed bits preset: the CPU never writes the read-only table)


class OutOfMemory(Exception):
    """Machine memory has not enough free frames for the domain (createdomain: -ENOMEM)."""


def write_gdt(mm):
    """Xen's GDT page, mapped read-only in every domain at GDT_VIRT_START + 0xE000."""
    for selector, descriptor in XEN_GDT.items():
        mm.write((mm.gdt << 12) + (selector & ~7) - xen.FIRST_RESERVED_GDT_BYTE, descriptor)


def bootstrap_layout(nr_pages):
    """(page directory pfn, L1 pfns, mfn_list pfn, mfn_list pages) of a domain of `nr_pages`."""
    l2 = PAGE_TABLES // PAGE
    l1s = list(range(l2 + 1, l2 + 1 + -(-nr_pages // frames.ENTRIES)))
    mfn_list = l1s[-1] + 1
    return l2, l1s, mfn_list, -(-nr_pages * 4 // PAGE)


def populate(domain, mm):
    """Xen's own part of making a domain: its frames, numbered (p2m, the machine-to-physical table),
    and its shared_info with events masked. dom0 (domid 0) gets its frames from the bottom of free
    memory, a domU from the top. (In Xen a domU's frames come from XENMEM_populate_physmap, which the
    toolstack asks for; here createdomain gives them at once.)"""
    nr_pages = domain.memory // PAGE
    _, _, mfn_list, list_pages = bootstrap_layout(nr_pages)
    if (mfn_list + list_pages) * PAGE > MODULES:
        raise GuestError(f"{domain.memory >> 20} MiB is too much memory for vmkit's domain layout: its page "
                         f"tables and mfn_list must fit below the modules at {MODULES:#x}", None)
    p2m = mm.allocate(domain, nr_pages, from_top=domain.domid != 0)
    if p2m is None:
        raise OutOfMemory(f"{nr_pages} frames asked for, {len(mm.free)} free")
    domain.p2m = p2m
    for pfn, mfn in enumerate(p2m):
        mm.set_gpfn_from_mfn(mfn, pfn)
    domain.xen_write(SHARED_INFO + xen.VI_UPCALL_MASK, b"\x01")     # events masked until the guest is ready


def build(domain, mm, image, modules=(), cmdline=b"", flags=0):
    """The domain builder's part, on a populated domain: the kernel (and dom0's boot modules), the
    mfn_list, the bootstrap page tables, validated, pinned and loaded, and start_info. Returns the
    page directory's machine frame."""
    nr_pages = domain.memory // PAGE
    l2, l1s, mfn_list, _ = bootstrap_layout(nr_pages)
    p2m = domain.p2m
    domain.xen_write(image.origin, image.code)
    address = MODULES
    for module in modules:
        if address + len(module.code) > MODULES_END:
            raise GuestError(f"the boot modules do not fit dom0's module area ({MODULES:#x}-{MODULES_END:#x})", None)
        domain.xen_write(address, module.code)
        address = (address + len(module.code) + PAGE - 1) & ~(PAGE - 1)
    domain.xen_write(mfn_list * PAGE, struct.pack(f"<{nr_pages}I", *p2m))

    # the bootstrap page tables: every page but the first, the tables themselves read-only
    tables = {l2, *l1s}
    for index, l1 in enumerate(l1s):
        first = index * frames.ENTRIES
        entries = [0] * frames.ENTRIES
        for pfn in range(max(first, 1), min(first + frames.ENTRIES, nr_pages)):
            entries[pfn - first] = p2m[pfn] << 12 | (L1_PROT & ~frames.RW if pfn in tables else L1_PROT)
        mm.write(p2m[l1] << 12, frames.ROW.pack(*entries))
        mm.put_u32((p2m[l2] << 12) + 4 * index, p2m[l1] << 12 | L2_PROT)

    # the page directory: validated (and with it every L1), pinned, and loaded (Xen's guest_table)
    root = p2m[l2]
    if not mm.get_page_and_type(root, domain, frames.L2):
        raise GuestError(f"the domain builder's page tables did not validate: {mm.why}", None)
    mm.pages[root].pinned = True
    mm.get_page_and_type(root, domain, frames.L2)
    domain.guest_table = root

    first = modules[0] if modules else None
    domain.write_start_info(magic=xen.START_INFO_MAGIC, nr_pages=nr_pages, shared_info=SHARED_INFO, flags=flags,
                            pt_base=l2 * PAGE, nr_pt_frames=len(tables), mfn_list=mfn_list * PAGE,
                            mod_start=MODULES if first else 0, mod_len=len(first.code) if first else 0)
    domain.xen_write(START_INFO + xen.SI_CMD_LINE, cmdline[:xen.MAX_GUEST_CMDLINE - 1] + b"\0")
    return root


def gdt_register():
    """GDTR for every domain: Xen's GDT, at GDT_VIRT_START."""
    return (0, GDT_VIRT_START, XEN_GDT_LIMIT, 0)
