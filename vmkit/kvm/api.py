"""The KVM API as the kernel defines it (linux/kvm.h, asm/kvm.h): ioctl numbers, exit reasons,
capabilities and the structures passed through the file descriptors, as ctypes.

Nothing here runs a guest; vmkit.kvm.vm uses these names one step at a time. The names are the
header's, so the kernel's documentation (Documentation/virt/kvm/api.rst) reads straight onto them.
"""
import ctypes
import os

# --- ioctl request numbers: _IOC(direction, type, number, size) from asm-generic/ioctl.h ---------
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction, number, size):
    return (direction << 30) | (size << 16) | (KVMIO << 8) | number


def _IO(number):
    return _IOC(_IOC_NONE, number, 0)


def _IOR(number, struct):
    return _IOC(_IOC_READ, number, ctypes.sizeof(struct))


def _IOW(number, struct):
    return _IOC(_IOC_WRITE, number, ctypes.sizeof(struct))


KVMIO = 0xAE
KVM_API_VERSION = 12                  # the only version there has ever been, since Linux 2.6.22


# --- structures ------------------------------------------------------------------------------------
class kvm_userspace_memory_region(ctypes.Structure):
    """A memory slot: guest physical addresses [guest_phys_addr, +memory_size) are backed by this
    process's memory at userspace_addr."""
    _fields_ = (("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("guest_phys_addr", ctypes.c_uint64),
                ("memory_size", ctypes.c_uint64), ("userspace_addr", ctypes.c_uint64))


class kvm_dirty_log(ctypes.Structure):
    """KVM_GET_DIRTY_LOG's argument: the slot, and where the kernel writes one bit per page of it
    (set: written since the last call; the call clears the log)."""
    _fields_ = (("slot", ctypes.c_uint32), ("padding1", ctypes.c_uint32), ("dirty_bitmap", ctypes.c_uint64))


class kvm_regs(ctypes.Structure):
    _fields_ = tuple((name, ctypes.c_uint64) for name in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "rflags"))


class kvm_segment(ctypes.Structure):
    """A segment register as the CPU holds it: the selector and the descriptor it loaded."""
    _fields_ = (("base", ctypes.c_uint64), ("limit", ctypes.c_uint32), ("selector", ctypes.c_uint16),
                ("type", ctypes.c_uint8), ("present", ctypes.c_uint8), ("dpl", ctypes.c_uint8),
                ("db", ctypes.c_uint8), ("s", ctypes.c_uint8), ("l", ctypes.c_uint8), ("g", ctypes.c_uint8),
                ("avl", ctypes.c_uint8), ("unusable", ctypes.c_uint8), ("padding", ctypes.c_uint8))


class kvm_dtable(ctypes.Structure):
    _fields_ = (("base", ctypes.c_uint64), ("limit", ctypes.c_uint16), ("padding", ctypes.c_uint16 * 3))


KVM_NR_INTERRUPTS = 256


class kvm_sregs(ctypes.Structure):
    _fields_ = tuple((name, kvm_segment) for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")) + (
        ("gdt", kvm_dtable), ("idt", kvm_dtable),
        ("cr0", ctypes.c_uint64), ("cr2", ctypes.c_uint64), ("cr3", ctypes.c_uint64), ("cr4", ctypes.c_uint64),
        ("cr8", ctypes.c_uint64), ("efer", ctypes.c_uint64), ("apic_base", ctypes.c_uint64),
        ("interrupt_bitmap", ctypes.c_uint64 * ((KVM_NR_INTERRUPTS + 63) // 64)))


class kvm_cpuid_entry2(ctypes.Structure):
    _fields_ = (("function", ctypes.c_uint32), ("index", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("eax", ctypes.c_uint32), ("ebx", ctypes.c_uint32), ("ecx", ctypes.c_uint32),
                ("edx", ctypes.c_uint32), ("padding", ctypes.c_uint32 * 3))


class kvm_cpuid2(ctypes.Structure):
    """The header; the entries follow it in memory (see vm.cpuid_table)."""
    _fields_ = (("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32))


class kvm_interrupt(ctypes.Structure):
    _fields_ = (("irq", ctypes.c_uint32),)


class kvm_irq_level(ctypes.Structure):
    """KVM_IRQ_LINE's argument: a GSI of the in-kernel irqchip and the level to set it to."""
    _fields_ = (("irq", ctypes.c_uint32), ("level", ctypes.c_uint32))


class kvm_ioeventfd(ctypes.Structure):
    """KVM_IOEVENTFD's argument (Documentation/virt/kvm/api.rst, 4.59): a guest write of `len` bytes
    to `addr` (MMIO, or a port with KVM_IOEVENTFD_FLAG_PIO) signals the eventfd `fd` instead of
    exiting to user space; with KVM_IOEVENTFD_FLAG_DATAMATCH only a write of `datamatch`."""
    _fields_ = (("datamatch", ctypes.c_uint64), ("addr", ctypes.c_uint64), ("len", ctypes.c_uint32),
                ("fd", ctypes.c_int32), ("flags", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 36))


KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2


# kvm_run: the page shared with the kernel, mapped from the vCPU fd. The union after the header
# holds the details of the exit named by exit_reason.
class _io(ctypes.Structure):
    _fields_ = (("direction", ctypes.c_uint8), ("size", ctypes.c_uint8), ("port", ctypes.c_uint16),
                ("count", ctypes.c_uint32), ("data_offset", ctypes.c_uint64))


class _mmio(ctypes.Structure):
    _fields_ = (("phys_addr", ctypes.c_uint64), ("data", ctypes.c_uint8 * 8), ("len", ctypes.c_uint32),
                ("is_write", ctypes.c_uint8))


class _fail_entry(ctypes.Structure):
    _fields_ = (("hardware_entry_failure_reason", ctypes.c_uint64), ("cpu", ctypes.c_uint32))


class _internal(ctypes.Structure):
    _fields_ = (("suberror", ctypes.c_uint32), ("ndata", ctypes.c_uint32), ("data", ctypes.c_uint64 * 16))


class _hw(ctypes.Structure):
    _fields_ = (("hardware_exit_reason", ctypes.c_uint64),)


class _ex(ctypes.Structure):
    _fields_ = (("exception", ctypes.c_uint32), ("error_code", ctypes.c_uint32))


class _system_event(ctypes.Structure):
    _fields_ = (("type", ctypes.c_uint32), ("ndata", ctypes.c_uint32), ("data", ctypes.c_uint64 * 16))


class _exit_union(ctypes.Union):
    _fields_ = (("hw", _hw), ("fail_entry", _fail_entry), ("ex", _ex), ("io", _io), ("mmio", _mmio),
                ("internal", _internal), ("system_event", _system_event), ("padding", ctypes.c_char * 256))


class kvm_run(ctypes.Structure):
    _fields_ = (("request_interrupt_window", ctypes.c_uint8), ("immediate_exit", ctypes.c_uint8),
                ("padding1", ctypes.c_uint8 * 6),
                ("exit_reason", ctypes.c_uint32), ("ready_for_interrupt_injection", ctypes.c_uint8),
                ("if_flag", ctypes.c_uint8), ("flags", ctypes.c_uint16),
                ("cr8", ctypes.c_uint64), ("apic_base", ctypes.c_uint64),
                ("u", _exit_union),
                ("kvm_valid_regs", ctypes.c_uint64), ("kvm_dirty_regs", ctypes.c_uint64),
                ("regs", kvm_regs), ("sregs", kvm_sregs))   # s.regs (KVM_CAP_SYNC_REGS)


# --- system ioctls (on /dev/kvm) -------------------------------------------------------------------
KVM_GET_API_VERSION = _IO(0x00)
KVM_CREATE_VM = _IO(0x01)
KVM_CHECK_EXTENSION = _IO(0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(0x04)
# --- VM ioctls -------------------------------------------------------------------------------------
KVM_CREATE_VCPU = _IO(0x41)
KVM_GET_DIRTY_LOG = _IOW(0x42, kvm_dirty_log)
KVM_SET_USER_MEMORY_REGION = _IOW(0x46, kvm_userspace_memory_region)
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0      # kvm_userspace_memory_region.flags: log writes to this slot
KVM_SET_TSS_ADDR = _IO(0x47)
KVM_CREATE_IRQCHIP = _IO(0x60)
KVM_IRQ_LINE = _IOW(0x61, kvm_irq_level)
KVM_IOEVENTFD = _IOW(0x79, kvm_ioeventfd)
KVM_GET_STATS_FD = _IO(0xCE)          # also a vCPU ioctl
# --- vCPU ioctls -----------------------------------------------------------------------------------
KVM_RUN = _IO(0x80)
KVM_GET_REGS = _IOR(0x81, kvm_regs)
KVM_SET_REGS = _IOW(0x82, kvm_regs)
KVM_GET_SREGS = _IOR(0x83, kvm_sregs)
KVM_SET_SREGS = _IOW(0x84, kvm_sregs)
KVM_INTERRUPT = _IOW(0x86, kvm_interrupt)
KVM_SET_CPUID2 = _IOW(0x90, kvm_cpuid2)
KVM_GET_SUPPORTED_CPUID = _IOC(_IOC_READ | _IOC_WRITE, 0x05, ctypes.sizeof(kvm_cpuid2))

# --- capabilities (KVM_CHECK_EXTENSION) ------------------------------------------------------------
KVM_CAP_IOEVENTFD = 36                # KVM_IOEVENTFD: a guest write signals an eventfd instead of exiting
KVM_CAP_IRQCHIP = 0                   # KVM_CREATE_IRQCHIP: the PIC, IOAPIC and local APIC in the kernel
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_SYNC_REGS = 74
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_BINARY_STATS_FD = 203
KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1

# --- exit reasons (kvm_run.exit_reason) ------------------------------------------------------------
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT = 0, 1
# KVM_EXIT_INTERNAL_ERROR's suberror
KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4

EXIT_REASONS = {value: name[len("KVM_EXIT_"):] for name, value in dict(globals()).items()
                if name.startswith("KVM_EXIT_") and not name.startswith("KVM_EXIT_IO_")}
INTERNAL_ERRORS = {KVM_INTERNAL_ERROR_EMULATION: "the kernel could not emulate an instruction",
                   KVM_INTERNAL_ERROR_SIMUL_EX: "an exception while delivering another exception",
                   KVM_INTERNAL_ERROR_DELIVERY_EV: "an exit while delivering an event (interrupt or exception)",
                   KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "a hardware exit reason the kernel does not handle"}

# --- the system call itself --------------------------------------------------------------------------
# fcntl.ioctl refuses arguments above INT_MAX (a pointer is one); libc's ioctl through ctypes takes
# any integer. ctypes releases the GIL for the call, so vCPU threads run their guests in parallel.
_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong)
_ioctl.restype = ctypes.c_int


def ioctl(fd, request, arg=0):
    """ioctl(2) on a KVM file descriptor. `arg` is an integer or a ctypes object (passed by address).
    Returns the kernel's non-negative result; raises OSError (InterruptedError for EINTR)."""
    address = arg if isinstance(arg, int) else ctypes.addressof(arg)     # `arg` stays alive meanwhile
    result = _ioctl(fd, request, address)
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result
