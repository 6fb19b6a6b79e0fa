"""Xen's x86_32 paravirtual ABI: the numbers and layouts a PV guest and the hypervisor agree on.

Named after Xen's public headers (xen/include/public/): xen.h, arch-x86/xen-x86_32.h, sched.h,
event_channel.h, grant_table.h, version.h, vcpu.h, domctl.h, io/ring.h and io/blkif.h; the page-table
bits after the hypervisor's own asm-x86/page.h and x86_32/page.h. Where the non-PAE and PAE x86_32
ABIs differ, these are the non-PAE ones ("xen-3.0-x86_32", two-level paging, as vmkit's PC pages),
from Xen's tree before the non-PAE hypervisor was removed (the parent of commit 84d54d5d8b, "i386:
Remove non-PAE hypervisor build target", May 2008, in the 3.3-unstable tree). Offsets are those of
the 32-bit structures (`unsigned long` is 4 bytes, a uint64_t is 4-byte aligned unless the header
says uint64_aligned_t). The course's PV guests spell the same numbers as `equ`s
of their own (vmkit/guests/pv_*.asm), so a student reads them where they are used. Where this
hypervisor puts its pages in a domain's memory is vmkit's choice, not the ABI's: vmkit.xen.layout.
"""
import struct
from dataclasses import dataclass

# --- arch-x86/xen-x86_32.h: the flat segments in the Xen-private part of every GDT -------------
FIRST_RESERVED_GDT_BYTE = 0xE000       # entries from here on belong to Xen
HYPERVISOR_CS, HYPERVISOR_DS = 0xE008, 0xE010
FLAT_RING1_CS, FLAT_RING1_DS, FLAT_RING1_SS = 0xE019, 0xE021, 0xE021
FLAT_RING3_CS, FLAT_RING3_DS, FLAT_RING3_SS = 0xE02B, 0xE033, 0xE033
FLAT_KERNEL_CS, FLAT_KERNEL_DS = FLAT_RING1_CS, FLAT_RING1_DS
# Xen's own part of every address space, non-PAE: the top 64 MiB. Its first 4 MiB map the machine-to-
# physical table read-only for the guest; the flat segments end there (GUEST_SEGMENT_MAX_ADDR).
HYPERVISOR_VIRT_START = 0xFC000000
MACH2PHYS_VIRT_START, MACH2PHYS_VIRT_END = 0xFC000000, 0xFC400000
HYPERCALL_VECTOR = 0x82                # `int 0x82`, open to ring 1 only

# --- xen.h: hypercall numbers ------------------------------------------------------------------
HYPERCALL_NAMES = {
    0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch", 4: "set_callbacks",
    5: "fpu_taskswitch", 6: "sched_op_compat", 7: "platform_op", 8: "set_debugreg", 9: "get_debugreg",
    10: "update_descriptor", 12: "memory_op", 13: "multicall", 14: "update_va_mapping",
    15: "set_timer_op", 16: "event_channel_op_compat", 17: "xen_version", 18: "console_io",
    19: "physdev_op_compat", 20: "grant_table_op", 21: "vm_assist", 22: "update_va_mapping_otherdomain",
    23: "iret", 24: "vcpu_op", 25: "set_segment_base", 26: "mmuext_op", 27: "xsm_op", 28: "nmi_op",
    29: "sched_op", 30: "callback_op", 31: "xenoprof_op", 32: "event_channel_op", 33: "physdev_op",
    34: "hvm_op", 35: "sysctl", 36: "domctl",
}
HYPERCALL_NUMBERS = {name: number for number, name in HYPERCALL_NAMES.items()}


def hypercall_name(number):
    return HYPERCALL_NAMES.get(number, f"hypercall {number}")


# errno values a hypercall returns negated in EAX (xen/include/public/errno.h)
EPERM, ENOENT, ESRCH, ENOMEM, EACCES, EFAULT, EBUSY, EEXIST, EINVAL, ENOSPC, ENOSYS = 1, 2, 3, 12, 13, 14, 16, 17, 22, 28, 38
ERRNO_NAMES = {EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", ENOMEM: "ENOMEM", EACCES: "EACCES",
               EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", EINVAL: "EINVAL", ENOSPC: "ENOSPC",
               ENOSYS: "ENOSYS"}

# virtual interrupts (xen.h)
VIRQ_TIMER, VIRQ_DEBUG, VIRQ_CONSOLE, VIRQ_DOM_EXC = 0, 1, 2, 3
NR_VIRQS = 24
GLOBAL_VIRQS = (VIRQ_CONSOLE, VIRQ_DOM_EXC)

# console_io (xen.h)
CONSOLEIO_write, CONSOLEIO_read = 0, 1

# domain ids (xen.h)
DOMID_FIRST_RESERVED = DOMID_SELF = 0x7FF0
DOMID_IO, DOMID_XEN, DOMID_INVALID = 0x7FF1, 0x7FF2, 0x7FF4

# --- direct paging (xen.h): mmu_update, update_va_mapping, mmuext_op ---------------------------------------
MMU_NORMAL_PT_UPDATE, MMU_MACHPHYS_UPDATE, MMU_PT_UPDATE_PRESERVE_AD = 0, 1, 2     # ptr[1:0]
MMU_UPDATE = struct.Struct("<QQ")                    # ptr (machine address of the PTE | command), val
MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_PIN_L3_TABLE, MMUEXT_PIN_L4_TABLE = 0, 1, 2, 3
MMUEXT_UNPIN_TABLE, MMUEXT_NEW_BASEPTR, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL = 4, 5, 6, 7
MMUEXT_NAMES = {0: "pin_l1_table", 1: "pin_l2_table", 2: "pin_l3_table", 3: "pin_l4_table", 4: "unpin_table",
                5: "new_baseptr", 6: "tlb_flush_local", 7: "invlpg_local", 8: "tlb_flush_multi",
                9: "invlpg_multi", 10: "tlb_flush_all", 11: "invlpg_all", 12: "flush_cache", 13: "set_ldt",
                15: "new_user_baseptr", 16: "clear_page", 17: "copy_page", 18: "flush_cache_global",
                19: "mark_super", 20: "unmark_super"}
MMUEXT_OP = struct.Struct("<III")                    # cmd, arg1 (mfn or linear_addr), arg2
UVMF_NONE, UVMF_TLB_FLUSH, UVMF_INVLPG, UVMF_FLUSHTYPE_MASK = 0, 1, 2, 3
UVMF_LOCAL, UVMF_ALL = 0, 1 << 2
MMU_UPDATE_PREEMPTED = 1 << 31                       # the count's top bit: a continuation (never set here)

# 32-bit page-table entries, and what a PV guest may not set in them (asm-x86/page.h, x86_32/page.h;
# Xen spells the bits _PAGE_PRESENT, _PAGE_RW, ...)
PAGE_PRESENT, PAGE_RW, PAGE_USER, PAGE_PWT, PAGE_PCD = 0x001, 0x002, 0x004, 0x008, 0x010
PAGE_ACCESSED, PAGE_DIRTY, PAGE_PSE, PAGE_GLOBAL = 0x020, 0x040, 0x080, 0x100
PTE_FLAGS = 0xFFF                                    # 20-bit frame number, 12 bits of flags
BASE_DISALLOW_MASK = 0xFFFFF198 & PTE_FLAGS          # PAT/PSE, PCD, PWT and GLOBAL
L1_DISALLOW_MASK = L2_DISALLOW_MASK = BASE_DISALLOW_MASK   # (_PAGE_GNTTAB is 0 outside debug builds)
L2_PAGETABLE_SHIFT = 22
L2_PAGETABLE_FIRST_XEN_SLOT = HYPERVISOR_VIRT_START >> L2_PAGETABLE_SHIFT     # 1008: slots from here are Xen's
INVALID_M2P_ENTRY = 0xFFFFFFFF

# --- start_info (xen.h): where ESI points at entry -------------------------------------------------
START_INFO_MAGIC = b"xen-3.0-x86_32"
START_INFO = struct.Struct("<32sIII IIII IIIII")    # magic .. mod_len; cmd_line follows at +80
SI_MAGIC, SI_NR_PAGES, SI_SHARED_INFO, SI_FLAGS = 0, 32, 36, 40
SI_STORE_MFN, SI_STORE_EVTCHN, SI_CONSOLE_MFN, SI_CONSOLE_EVTCHN = 44, 48, 52, 56
SI_PT_BASE, SI_NR_PT_FRAMES, SI_MFN_LIST, SI_MOD_START, SI_MOD_LEN, SI_CMD_LINE = 60, 64, 68, 72, 76, 80
MAX_GUEST_CMDLINE = 1024
SIF_PRIVILEGED, SIF_INITDOMAIN = 1 << 0, 1 << 1

# --- shared_info (xen.h): one page Xen and the guest both write ---------------------------------------
VCPU_INFO_SIZE = 64
XEN_LEGACY_MAX_VCPUS = 32
VI_UPCALL_PENDING, VI_UPCALL_MASK, VI_PENDING_SEL, VI_ARCH_CR2, VI_TIME = 0, 1, 4, 8, 32
# vcpu_time_info, at vcpu_info + 32: version, pad, tsc_timestamp, system_time, mul, shift
VCPU_TIME_INFO = struct.Struct("<IIQQIb3x")
SH_EVTCHN_PENDING = XEN_LEGACY_MAX_VCPUS * VCPU_INFO_SIZE     # 2048: 32 words of pending bits
SH_EVTCHN_MASK = SH_EVTCHN_PENDING + 32 * 4                    # 2176: 32 words of mask bits
SH_WC_VERSION = SH_EVTCHN_MASK + 32 * 4                        # 2304
BITS_PER_EVTCHN_WORD = 32
NR_EVENT_CHANNELS = BITS_PER_EVTCHN_WORD * BITS_PER_EVTCHN_WORD   # 1024 with 32-bit longs

# --- traps and callbacks (xen.h, arch-x86/xen.h) -------------------------------------------------------
TRAP_INFO = struct.Struct("<BBHI")      # vector, flags (DPL in bits 0-1, bit 2: mask events), cs, address
TI_DPL_MASK, TI_SET_IF = 3, 4
MULTICALL_ENTRY = struct.Struct("<8I")  # op, result, args[6]


@dataclass(frozen=True)
class TrapInfo:
    """One entry of the guest's virtual IDT (set_trap_table): who handles a vector, and how."""
    vector: int
    flags: int              # bits 0-1: the DPL an `int n` needs; bit 2: mask events on entry
    cs: int
    address: int

    @property
    def dpl(self):
        return self.flags & TI_DPL_MASK

    @property
    def masks_events(self):          # like an interrupt gate clearing IF
        return bool(self.flags & TI_SET_IF)

    def __repr__(self):
        return f"TrapInfo(vector={self.vector:#x}, dpl={self.dpl}, cs={self.cs:#x}, address={self.address:#x})"


# --- sched.h -------------------------------------------------------------------------------------------
SCHEDOP_yield, SCHEDOP_block, SCHEDOP_shutdown, SCHEDOP_poll, SCHEDOP_remote_shutdown = 0, 1, 2, 3, 4
SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend, SHUTDOWN_crash, SHUTDOWN_watchdog = 0, 1, 2, 3, 4
SHUTDOWN_NAMES = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash", 4: "watchdog"}
SCHED_SHUTDOWN = struct.Struct("<I")            # reason
SCHED_REMOTE_SHUTDOWN = struct.Struct("<H2xI")  # domain_id, reason

# --- version.h -----------------------------------------------------------------------------------------
XENVER_version, XENVER_extraversion, XENVER_compile_info, XENVER_capabilities = 0, 1, 2, 3
XENVER_changeset, XENVER_platform_parameters, XENVER_get_features, XENVER_pagesize = 4, 5, 6, 7
XEN_VERSION = (4, 2)                     # the last Xen whose hypervisor ran on 32-bit x86
XEN_EXTRAVERSION = b".0-vmkit"
XEN_CAPABILITIES = b"xen-3.0-x86_32"

# --- vcpu.h (timers) -----------------------------------------------------------------------------------
VCPUOP_set_periodic_timer, VCPUOP_stop_periodic_timer = 6, 7
VCPUOP_set_singleshot_timer, VCPUOP_stop_singleshot_timer = 8, 9
DEFAULT_PERIODIC_NS = 10_000_000        # Xen gives every PV vcpu a 100 Hz periodic timer until it stops it
MIN_PERIODIC_NS = 1_000_000

# --- event_channel.h -----------------------------------------------------------------------------------
EVTCHNOP_bind_interdomain, EVTCHNOP_bind_virq, EVTCHNOP_bind_pirq, EVTCHNOP_close = 0, 1, 2, 3
EVTCHNOP_send, EVTCHNOP_status, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_ipi = 4, 5, 6, 7
EVTCHNOP_bind_vcpu, EVTCHNOP_unmask = 8, 9
EVTCHNOP_NAMES = {0: "bind_interdomain", 1: "bind_virq", 2: "bind_pirq", 3: "close", 4: "send", 5: "status",
                  6: "alloc_unbound", 7: "bind_ipi", 8: "bind_vcpu", 9: "unmask"}
EVTCHN_ALLOC_UNBOUND = struct.Struct("<HHI")        # dom, remote_dom, port (out)
EVTCHN_BIND_INTERDOMAIN = struct.Struct("<H2xII")   # remote_dom, remote_port, local_port (out)
EVTCHN_BIND_VIRQ = struct.Struct("<III")            # virq, vcpu, port (out)
EVTCHN_BIND_IPI = struct.Struct("<II")              # vcpu, port (out)
EVTCHN_PORT = struct.Struct("<I")                   # close, send, unmask: port
EVTCHN_STATUS = struct.Struct("<H2xIIIHxxI")        # dom, port, status, vcpu, u.dom, u.port (or u.virq)
EVTCHNSTAT_closed, EVTCHNSTAT_unbound, EVTCHNSTAT_interdomain = 0, 1, 2
EVTCHNSTAT_pirq, EVTCHNSTAT_virq, EVTCHNSTAT_ipi = 3, 4, 5

# --- grant_table.h (version 1 entries) -------------------------------------------------------------------
GNTTABOP_map_grant_ref, GNTTABOP_unmap_grant_ref, GNTTABOP_setup_table = 0, 1, 2
GNTTABOP_query_size = 6
GNTTABOP_NAMES = {0: "map_grant_ref", 1: "unmap_grant_ref", 2: "setup_table", 3: "dump_table", 4: "transfer",
                  5: "copy", 6: "query_size"}
GRANT_ENTRY = struct.Struct("<HHI")                  # flags, domid, frame
GTF_invalid, GTF_permit_access, GTF_type_mask = 0, 1, 3
GTF_readonly, GTF_reading, GTF_writing = 1 << 2, 1 << 3, 1 << 4
GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly = 1 << 0, 1 << 1, 1 << 2
GNTTAB_MAP_GRANT_REF = struct.Struct("<QIIHhIQ")     # host_addr, flags, ref, dom, status, handle, dev_bus_addr
GNTTAB_UNMAP_GRANT_REF = struct.Struct("<QQIh2x")    # host_addr, dev_bus_addr, handle, status
GNTTAB_SETUP_TABLE = struct.Struct("<H2xIh2xI")      # dom, nr_frames, status, frame_list
GNTTAB_QUERY_SIZE = struct.Struct("<H2xIIh2x")       # dom, nr_frames, max_nr_frames, status
GNTST_okay, GNTST_general_error, GNTST_bad_domain, GNTST_bad_gntref = 0, -1, -2, -3
GNTST_bad_handle, GNTST_bad_virt_addr, GNTST_bad_dev_addr, GNTST_no_device_space = -4, -5, -6, -7
GNTST_permission_denied = -8
GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE = 0, 1

# --- domctl.h (interface version 8, Xen 4.2) --------------------------------------------------------------
XEN_DOMCTL_INTERFACE_VERSION = 0x00000008
XEN_DOMCTL_createdomain, XEN_DOMCTL_destroydomain, XEN_DOMCTL_pausedomain = 1, 2, 3
XEN_DOMCTL_unpausedomain, XEN_DOMCTL_getdomaininfo, XEN_DOMCTL_getmemlist = 4, 5, 6
XEN_DOMCTL_setvcpucontext = 12
DOMCTL_NAMES = {1: "createdomain", 2: "destroydomain", 3: "pausedomain", 4: "unpausedomain", 5: "getdomaininfo",
                6: "getmemlist", 12: "setvcpucontext"}
DOMCTL_HEADER = struct.Struct("<IIH6x")               # cmd, interface_version, domain; the union at +16
DOMCTL_UNION = 16
DOMCTL_SIZE = DOMCTL_UNION + 128
# xen_domctl_createdomain: ssidref, handle[16], flags -- then vmkit's own fields (see domains.py): the
# new domain's kernel (address and length in the caller's memory), which vmkit's trace watches and
# shows but Xen does not load, and the new domain's pages, which Xen gives it at once.
CREATEDOMAIN = struct.Struct("<I16sI III")
GETMEMLIST = struct.Struct("<QQQQ")                   # max_pfns, start_pfn, buffer (of uint64), num_pfns (out)
VCPUCONTEXT = struct.Struct("<I4xQ")                  # vcpu, ctxt (a 64-bit guest handle)
# struct vcpu_guest_context (arch-x86/xen.h, x86_32): fpu_ctxt[512], flags, user_regs (cpu_user_regs,
# xen-x86_32.h), trap_ctxt[256], ldt_base, ldt_ents, gdt_frames[16], gdt_ents, kernel_ss, kernel_sp,
# ctrlreg[8], debugreg[8], event and failsafe callback cs:eip, vm_assist: 2800 bytes
VCPU_GUEST_CONTEXT_SIZE = 2800
VGC_FLAGS, VGC_USER_REGS, VGC_TRAP_CTXT, VGC_KERNEL_SS, VGC_CTRLREG = 512, 516, 584, 2708, 2716
VGC_EVENT_CALLBACK, VGC_FAILSAFE_CALLBACK = 2780, 2788
CPU_USER_REGS = struct.Struct("<7IHHIHBxIIH2xH2xH2xH2xH2x")   # ebx..eax, error_code, entry_vector, eip, cs,
                                                              # saved_upcall_mask, eflags, esp, ss, es, ds, fs, gs
VGCF_in_kernel, VGCF_online = 1 << 2, 1 << 5
GETDOMAININFO = struct.Struct("<H2xIQQQQQQIII16sI")  # domain, flags, tot_pages .. cpupool
XEN_DOMINF_dying, XEN_DOMINF_shutdown, XEN_DOMINF_paused = 1 << 0, 1 << 2, 1 << 3
XEN_DOMINF_blocked, XEN_DOMINF_running = 1 << 4, 1 << 5
XEN_DOMINF_shutdownshift, XEN_DOMINF_shutdownmask = 16, 255

# --- io/ring.h and io/blkif.h: the shared ring of the block split driver ------------------------------------
SRING_HEADER = struct.Struct("<IIII48x")             # req_prod, req_event, rsp_prod, rsp_event, pad
BLKIF_REQUEST = struct.Struct("<BBHQQ IBB2x")        # operation, nr_segments, handle, id, sector, seg[0]
BLKIF_REQUEST_SIZE = 108                             # eleven segments of 8 bytes from +20 (x86_32 packing)
BLKIF_RESPONSE = struct.Struct("<QBxh")              # id, operation, status
BLKIF_RING_SIZE = 32                                 # (4096 - 64) // 108 = 37, rounded down to a power of 2
BLKIF_OP_READ, BLKIF_OP_WRITE = 0, 1
BLKIF_RSP_OKAY, BLKIF_RSP_ERROR = 0, -1
SECTOR_SIZE = 512

PAGE_SIZE = 4096
U64 = struct.Struct("<Q")
