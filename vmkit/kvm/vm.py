"""The KVM API one step at a time, as a VMM such as QEMU drives it.

    kvm = Kvm()                        # open /dev/kvm, check the API version        (the system fd)
    vm = kvm.create_vm()               # KVM_CREATE_VM                                (the VM fd)
    ram = vm.add_memory(0, 4 << 20)    # KVM_SET_USER_MEMORY_REGION: guest RAM is this process's memory
    vcpu = vm.create_vcpu()            # KVM_CREATE_VCPU, and kvm_run mapped from it  (the vCPU fd)
    vcpu.enter_protected_mode(entry=0x100000, stack=0x400000, gdt=0x500)   # KVM_SET_SREGS, KVM_SET_REGS
    reason = vcpu.run()                # KVM_RUN: the guest runs until it needs user space

Each step is a short function named after what it does; the classes only hold the file
descriptors together. A VM is a file descriptor of this process, and a vCPU is a thread of it
calling KVM_RUN: that is all "a VM is a Linux process" means.
"""
import ctypes
import errno
import mmap
import os
import signal
import threading

from ..errors import KvmUnavailable
from ..machine.platform import BOOT_CS, BOOT_DS, BOOT_GDT_LIMIT
from . import api
from .api import ioctl
from .stats import open_stats

DEVICE = "/dev/kvm"
PAGE_SIZE = 4096                      # an x86 page, the unit of the dirty log
KICK_SIGNAL = signal.SIGUSR1          # QEMU kicks its vCPU threads out of KVM_RUN with SIGUSR1 too
FLAT_LIMIT = 0xFFFFFFFF
CODE_EXECUTE_READ, DATA_READ_WRITE = 0xB, 0x3       # segment types, accessed bit set as a CPU leaves it
CR0_PE, CR0_ET = 1 << 0, 1 << 4


# --- step 1: the system fd ---------------------------------------------------------------------------
def open_kvm(path=DEVICE):
    """Open the KVM device. A missing device or a missing permission becomes KvmUnavailable with
    the fix, not a traceback from os.open."""
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KvmUnavailable(f"{path} does not exist: this kernel has no KVM module loaded, or the CPU has no "
                             f"VT-x/AMD-V (or, inside a VM, nested virtualization is off)",
                             "enable VT-x/AMD-V in the firmware and load the module (sudo modprobe kvm_intel, "
                             "or kvm_amd); in a cloud VM, choose an instance type with nested virtualization. "
                             "Every other technique in the course runs without KVM.") from None
    except PermissionError:
        raise KvmUnavailable(f"{path} exists but this user may not open it (it belongs to the kvm group)",
                             "sudo usermod -aG kvm $USER, then log out and in again (or run: newgrp kvm)") from None


def check_api_version(kvm_fd, path=DEVICE):
    """KVM_GET_API_VERSION: 12 on every Linux since 2.6.22; anything else is not the KVM API."""
    try:
        version = ioctl(kvm_fd, api.KVM_GET_API_VERSION)
    except OSError as e:
        raise KvmUnavailable(f"{path} is not a KVM device (KVM_GET_API_VERSION failed: {e.strerror})",
                             f"point vmkit at the real KVM device, {DEVICE}") from None
    if version != api.KVM_API_VERSION:
        raise KvmUnavailable(f"{path} speaks KVM API version {version}, not {api.KVM_API_VERSION}",
                             "use a Linux kernel with the standard KVM API")
    return version


def check_extension(kvm_fd, capability):
    """KVM_CHECK_EXTENSION: 0 when the capability is absent, else a positive (often meaningful) value."""
    return ioctl(kvm_fd, api.KVM_CHECK_EXTENSION, capability)


def vcpu_mmap_size(kvm_fd):
    """KVM_GET_VCPU_MMAP_SIZE: how much of the vCPU fd to map (kvm_run and the pages after it)."""
    return ioctl(kvm_fd, api.KVM_GET_VCPU_MMAP_SIZE)


# --- step 2: the VM fd and its memory ----------------------------------------------------------------
def create_vm(kvm_fd):
    """KVM_CREATE_VM with machine type 0: a VM with no memory and no vCPUs yet."""
    return ioctl(kvm_fd, api.KVM_CREATE_VM, 0)


def anonymous_memory(size):
    """Memory for the guest: ordinary anonymous pages of this process, and their address."""
    memory = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return memory, ctypes.c_char.from_buffer(memory)


def set_user_memory_region(vm_fd, slot, guest_phys_addr, size, userspace_addr, flags=0):
    """KVM_SET_USER_MEMORY_REGION: guest physical [guest_phys_addr, +size) is backed by this
    process's memory at userspace_addr. Guest addresses outside every slot are MMIO: accesses
    there leave the guest as KVM_EXIT_MMIO. Setting it again on the same slot with other `flags`
    changes only the flags (KVM_MEM_LOG_DIRTY_PAGES turns dirty logging on or off)."""
    region = api.kvm_userspace_memory_region(slot=slot, flags=flags, guest_phys_addr=guest_phys_addr,
                                             memory_size=size, userspace_addr=userspace_addr)
    ioctl(vm_fd, api.KVM_SET_USER_MEMORY_REGION, region)


def get_dirty_log(vm_fd, slot, pages):
    """KVM_GET_DIRTY_LOG: the pages of `slot` written since the last call, as page numbers within
    the slot. The kernel hands over its bitmap and starts a fresh one (it write-protects the pages
    again, or clears the hardware's dirty bits), so each call sees only the writes after the last."""
    bitmap = (ctypes.c_uint64 * ((pages + 63) // 64))()
    ioctl(vm_fd, api.KVM_GET_DIRTY_LOG, api.kvm_dirty_log(slot=slot, dirty_bitmap=ctypes.addressof(bitmap)))
    return [64 * i + bit for i, word in enumerate(bitmap) if word for bit in range(64) if word >> bit & 1]


# --- step 3: the vCPU fd and kvm_run -----------------------------------------------------------------
def create_vcpu(vm_fd, index):
    """KVM_CREATE_VCPU: a vCPU with the given id, in the state of a CPU after reset (real mode)."""
    return ioctl(vm_fd, api.KVM_CREATE_VCPU, index)


def map_kvm_run(vcpu_fd, size):
    """mmap the vCPU fd: page 0 is struct kvm_run, shared with the kernel. Exit details arrive there,
    and answers (the data of an `in`, of an MMIO read) go back the same way."""
    shared = mmap.mmap(vcpu_fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    return shared, api.kvm_run.from_buffer(shared)


def flat_segment(selector, segment_type):
    """A segment register holding a flat 4 GiB descriptor of ring 0, as after a far jump through the
    platform's boot GDT."""
    return api.kvm_segment(base=0, limit=FLAT_LIMIT, selector=selector, type=segment_type, present=1, dpl=0,
                           db=1, s=1, l=0, g=1)


def enter_protected_mode(sregs, gdt, gdt_limit, code_selector, data_selector):
    """The special registers of the platform's boot state: CR0.PE, a GDT, flat CS and data
    segments, no IDT (an exception before the guest loads one is a triple fault), paging off."""
    sregs.cs = flat_segment(code_selector, CODE_EXECUTE_READ)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, flat_segment(data_selector, DATA_READ_WRITE))
    sregs.gdt.base, sregs.gdt.limit = gdt, gdt_limit
    sregs.idt.base, sregs.idt.limit = 0, 0
    sregs.cr0 = CR0_PE | CR0_ET
    sregs.cr4 = sregs.efer = 0
    return sregs


# --- kicking a vCPU out of KVM_RUN -------------------------------------------------------------------
def _kicked(signum, frame):
    """The kick's handler does nothing: its only job is to exist, so the signal interrupts KVM_RUN
    (an ignored signal would not) and the process is not killed (the default action would)."""


def install_kick_handler():
    """Install the kick signal's handler once (Python allows it only in the main thread)."""
    if signal.getsignal(KICK_SIGNAL) in (signal.SIG_DFL, signal.SIG_IGN, None):
        if threading.current_thread() is not threading.main_thread():
            raise KvmUnavailable("vmkit needs a handler for SIGUSR1 to stop a runaway guest, and Python installs "
                                 "signal handlers only from the main thread",
                                 "create the first KVM machine from the main thread")
        signal.signal(KICK_SIGNAL, _kicked)


class Kvm:
    """The system fd: /dev/kvm opened and checked. `path` lets a test name a device that is absent."""

    def __init__(self, path=DEVICE):
        self.path = path
        self.fd = open_kvm(path)
        try:
            check_api_version(self.fd, path)
        except KvmUnavailable:
            os.close(self.fd)
            raise
        self.vcpu_mmap_size = vcpu_mmap_size(self.fd)

    def check_extension(self, capability):
        return check_extension(self.fd, capability)

    def create_vm(self):
        return Vm(self)

    def supported_cpuid(self):
        """KVM_GET_SUPPORTED_CPUID: the CPUID leaves this KVM can offer a guest."""
        entries = 64
        while True:
            table = cpuid_table(entries)
            table.header.nent = entries
            try:
                ioctl(self.fd, api.KVM_GET_SUPPORTED_CPUID, table)
            except OSError as e:
                if e.errno == errno.E2BIG and entries < 4096:
                    entries *= 2
                    continue
                raise
            return list(table.entries[:table.header.nent])

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def cpuid_table(entries):
    """struct kvm_cpuid2 with room for `entries` entries after its header."""
    class Table(ctypes.Structure):
        _fields_ = (("header", api.kvm_cpuid2), ("entries", api.kvm_cpuid_entry2 * entries))
    return Table()


class Vm:
    """A VM fd with its memory slots and vCPUs."""

    def __init__(self, kvm):
        self.kvm = kvm
        install_kick_handler()
        self.fd = create_vm(kvm.fd)
        self.slots = []                    # (guest_phys_addr, size, memory)
        self._pointers = []                # ctypes views that give each slot's address to the kernel
        self.vcpus = []

    def add_memory(self, guest_phys_addr, size):
        """A new memory slot backed by fresh anonymous memory; returns that memory (an mmap)."""
        memory, pointer = anonymous_memory(size)
        set_user_memory_region(self.fd, len(self.slots), guest_phys_addr, size, ctypes.addressof(pointer))
        self.slots.append((guest_phys_addr, size, memory))
        self._pointers.append(pointer)
        return memory

    def log_dirty_pages(self, slot, on=True):
        """Turn dirty logging of a memory slot on or off (the flag KVM_MEM_LOG_DIRTY_PAGES)."""
        guest_phys_addr, size, _ = self.slots[slot]
        set_user_memory_region(self.fd, slot, guest_phys_addr, size, ctypes.addressof(self._pointers[slot]),
                               api.KVM_MEM_LOG_DIRTY_PAGES if on else 0)

    def dirty_pages(self, slot):
        """The pages of `slot` written since dirty logging began or since the last call."""
        return get_dirty_log(self.fd, slot, self.slots[slot][1] // PAGE_SIZE)

    def create_irqchip(self):
        """KVM_CREATE_IRQCHIP (before any vCPU): a PIC pair, an IOAPIC and, for every vCPU created after
        it, a local APIC, all in the kernel; GSIs 0-15 go to the PIC and the IOAPIC."""
        ioctl(self.fd, api.KVM_CREATE_IRQCHIP)

    def irq_line(self, irq, level):
        """KVM_IRQ_LINE: set GSI `irq` of the in-kernel irqchip to `level`. An edge-triggered interrupt
        is the level set to 1 and back to 0."""
        ioctl(self.fd, api.KVM_IRQ_LINE, api.kvm_irq_level(irq=irq, level=level))

    def ioeventfd(self, address, length, fd, datamatch=None, deassign=False):
        """KVM_IOEVENTFD: from now on a guest write of `length` bytes to MMIO `address` (of the value
        `datamatch`, if given) signals eventfd `fd` in the kernel instead of exiting to user space;
        `deassign` undoes it."""
        flags = (0 if datamatch is None else api.KVM_IOEVENTFD_FLAG_DATAMATCH) | (
            api.KVM_IOEVENTFD_FLAG_DEASSIGN if deassign else 0)
        ioctl(self.fd, api.KVM_IOEVENTFD, api.kvm_ioeventfd(datamatch=datamatch or 0, addr=address, len=length,
                                                             fd=fd, flags=flags))

    def create_vcpu(self):
        vcpu = Vcpu(self, len(self.vcpus))
        self.vcpus.append(vcpu)
        return vcpu

    def stats(self):
        return open_stats(self.fd)

    def close(self):
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._pointers = []                # they export the mmaps' buffers, which must end before close
        slots, self.slots = self.slots, []
        for _, _, memory in slots:
            try:
                memory.close()
            except BufferError:
                pass                       # a view into guest RAM is still alive; the GC frees it later


class Vcpu:
    """A vCPU fd and its kvm_run page. `run()` is KVM_RUN; the exit's details are in `kvm_run`."""

    def __init__(self, vm, index):
        self.vm = vm
        self.index = index
        self.fd = create_vcpu(vm.fd, index)
        self._shared, self.kvm_run = map_kvm_run(self.fd, vm.kvm.vcpu_mmap_size)
        # views into kvm_run, made once (each ctypes attribute access builds a new view object)
        self.io, self.mmio = self.kvm_run.u.io, self.kvm_run.u.mmio
        self.synced_regs, self.synced_cs = self.kvm_run.regs, self.kvm_run.sregs.cs
        self.thread = None                 # the thread inside KVM_RUN, for kick()

    # registers
    def get_regs(self):
        regs = api.kvm_regs()
        ioctl(self.fd, api.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs):
        ioctl(self.fd, api.KVM_SET_REGS, regs)

    def get_sregs(self):
        sregs = api.kvm_sregs()
        ioctl(self.fd, api.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs):
        ioctl(self.fd, api.KVM_SET_SREGS, sregs)

    def set_cpuid(self, entries):
        """KVM_SET_CPUID2: what CPUID answers in this guest (KVM answers it without leaving the kernel)."""
        table = cpuid_table(len(entries))
        table.header.nent = len(entries)
        for i, entry in enumerate(entries):
            table.entries[i] = entry
        ioctl(self.fd, api.KVM_SET_CPUID2, table)

    def enter_protected_mode(self, entry, stack, gdt, gdt_limit=BOOT_GDT_LIMIT, code_selector=BOOT_CS,
                             data_selector=BOOT_DS):
        """Leave the reset state for the platform's boot state, at `entry` with ESP = `stack`."""
        self.set_sregs(enter_protected_mode(self.get_sregs(), gdt, gdt_limit, code_selector, data_selector))
        regs = api.kvm_regs()
        regs.rip, regs.rsp, regs.rflags = entry, stack, 0x2
        self.set_regs(regs)

    def sync_registers(self, on=True):
        """KVM_CAP_SYNC_REGS: the kernel copies regs and sregs into kvm_run at every exit, so reading
        RIP or CS costs no ioctl."""
        self.kvm_run.kvm_valid_regs = (api.KVM_SYNC_X86_REGS | api.KVM_SYNC_X86_SREGS) if on else 0

    # running
    def run(self):
        """KVM_RUN once: returns the exit reason (kvm_run.exit_reason; KVM_EXIT_INTR when a signal
        or immediate_exit ended it)."""
        self.thread = threading.get_ident()
        try:
            ioctl(self.fd, api.KVM_RUN)
        except InterruptedError:
            self.kvm_run.immediate_exit = 0
            return api.KVM_EXIT_INTR
        return self.kvm_run.exit_reason

    def kick(self):
        """Make KVM_RUN return, now or at its next call: immediate_exit covers the race where the
        thread is about to enter the guest, the signal the case where it is already inside."""
        self.kvm_run.immediate_exit = 1
        if self.thread is not None and self.thread != threading.get_ident():
            try:
                signal.pthread_kill(self.thread, KICK_SIGNAL)
            except (ProcessLookupError, OSError):
                pass                       # the thread has ended: immediate_exit is enough

    def interrupt(self, vector):
        """KVM_INTERRUPT: inject an external interrupt (only without an in-kernel interrupt controller,
        and only when kvm_run.ready_for_interrupt_injection says the guest can take it)."""
        ioctl(self.fd, api.KVM_INTERRUPT, api.kvm_interrupt(irq=vector))

    # exit data that lives in the kvm_run page
    def io_data(self):
        """The bytes an IO exit carries: what an `out` wrote (count items of size bytes)."""
        io = self.io
        return self._shared[io.data_offset:io.data_offset + io.size * io.count]

    def answer_io(self, data):
        """The answer to an `in`: KVM completes the instruction with it at the next KVM_RUN."""
        offset = self.io.data_offset
        self._shared[offset:offset + len(data)] = data

    def answer_mmio(self, data):
        """The answer to an MMIO read, completed the same way."""
        ctypes.memmove(self.mmio.data, data, len(data))

    def stats(self):
        return open_stats(self.fd)

    def close(self):
        if self.fd < 0:
            return
        self.kvm_run = self.io = self.mmio = self.synced_regs = self.synced_cs = None   # views pin the mapping
        try:
            self._shared.close()
        except BufferError:
            pass
        os.close(self.fd)
        self.fd = -1
