"""Dirty logging on the emulated machine: write protection, as KVM does it without PML.

To learn which pages a running guest writes, the hypervisor write-protects every page. The first
store to a page faults into the hypervisor, which notes the page as dirty and lets the store go
on, unprotected, so later stores to it run at full speed. Reading the log hands over the set of
dirty pages and protects exactly those again. KVM does the same with its own page tables
(KVM_MEM_LOG_DIRTY_PAGES; newer Intel CPUs log in hardware instead, with PML).

Unicorn protects whole memory regions, so a machine whose writes are logged maps its RAM page
by page (PagedMachine). The VMM's own writes into guest memory (an interrupt frame it pushes, say)
do not fault; they are logged too, as KVM marks the pages it writes itself (mark_page_dirty).
"""
from unicorn import UC_HOOK_MEM_WRITE_PROT, UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_READ

from ..machine.machine import Machine

PAGE_SIZE = 4096
READ_EXECUTE = UC_PROT_READ | UC_PROT_EXEC


class PagedMachine(Machine):
    """The vmkit PC with its RAM mapped as one Unicorn region per 4 KiB page."""

    def map_ram(self, memory):
        for address in range(0, memory, PAGE_SIZE):
            self.uc.mem_map(address, PAGE_SIZE)


class WriteProtectLog:
    """The dirty log of a PagedMachine: start(), then collect() the pages written since the last
    collect(); stop() ends it and leaves every page writable."""

    def __init__(self, machine):
        self.machine = machine
        self.pages = machine.memory // PAGE_SIZE
        self.dirty = set()
        self.faults = 0                  # write-protection faults taken: the cost of logging
        self.logging = False
        self._hook = None
        self._vmm_write = None

    def start(self):
        uc = self.machine.uc
        self._hook = uc.hook_add(UC_HOOK_MEM_WRITE_PROT, self._on_write)
        self._vmm_write = uc.mem_write
        uc.mem_write = self._logged_write          # the VMM's own writes into guest memory
        uc.mem_protect(0, self.pages * PAGE_SIZE, READ_EXECUTE)
        self.dirty = set()
        self.logging = True

    def collect(self):
        """The pages written since the last collect(), in order; they are write-protected again."""
        pages, self.dirty = sorted(self.dirty), set()
        for first, count in runs(pages):             # one call per run of neighbouring pages
            self.machine.uc.mem_protect(first * PAGE_SIZE, count * PAGE_SIZE, READ_EXECUTE)
        return pages

    def stop(self):
        if not self.logging:
            return
        uc = self.machine.uc
        uc.hook_del(self._hook)
        del uc.mem_write                             # the class's method again
        uc.mem_protect(0, self.pages * PAGE_SIZE, UC_PROT_ALL)
        self.logging = False

    def _on_write(self, uc, access, address, size, value, _):
        """A store hit a protected page: log it, unprotect it, and let the store happen."""
        pages = {address // PAGE_SIZE, (address + size - 1) // PAGE_SIZE}     # a store may straddle two
        if not all(0 <= page < self.pages for page in pages):
            return False
        self.faults += 1
        for page in pages - self.dirty:
            self.dirty.add(page)
            uc.mem_protect(page * PAGE_SIZE, PAGE_SIZE, UC_PROT_ALL)
        # Unicorn goes on with the store, but through the translation it made while the page was
        # read-only, and then the store can be lost. Storing the value here makes it certain (twice
        # is harmless: it is the same value).
        self._vmm_write(address, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
        return True

    def _logged_write(self, address, data):
        first, last = address // PAGE_SIZE, (address + max(len(data), 1) - 1) // PAGE_SIZE
        self.dirty.update(p for p in range(first, last + 1) if 0 <= p < self.pages)
        self._vmm_write(address, data)


def runs(pages):
    """(first, count) for each run of consecutive page numbers in the sorted list `pages`."""
    out = []
    for page in pages:
        if out and out[-1][0] + out[-1][1] == page:
            out[-1][1] += 1
        else:
            out.append([page, 1])
    return [tuple(run) for run in out]
