"""Paravirtualization, the Xen way: a guest kernel that knows it runs on a hypervisor.

A paravirtual (PV) guest is not fooled into thinking it owns the machine. Its kernel runs in ring
1 and never touches the privileged state: instead of `cli`/`sti` it writes a mask byte in a page
it shares with the hypervisor (the virtual interrupt flag); instead of `out` to a serial port it
makes a hypercall (`int 0x82`, number in EAX, arguments in EBX..EDI); instead of an IDT it hands
the hypervisor a trap table; instead of interrupts it receives events through a callback it
registered. Nothing has to trap and be decoded, so the costly part of trap-and-emulate is gone,
at the price of a modified guest. This is Xen's x86_32 ABI as vmkit implements it; section 2.5 of
docs/architecture.md has the whole contract and says where vmkit simplifies what Xen does:

* entry at 0x100000 in ring 1, CS = FLAT_RING1_CS, data segments FLAT_RING1_DS, ESI = the
  start_info page (magic, nr_pages, the shared_info address, flags, the page tables and the
  phys-to-machine list), ESP = 0x400000;
* paging is on from the first instruction, on page tables the domain builder made
  (vmkit.xen.domain_build) and mapped read-only: the guest changes them only through mmu_update,
  update_va_mapping and mmuext_op, which Xen validates (vmkit.xen.mm); a store to one of them is a
  page fault;
* shared_info: vcpu_info[0].evtchn_upcall_pending at byte 0, evtchn_upcall_mask at byte 1, the
  event-channel pending and mask bitmaps at 2048 and 2176;
* the hypervisor's flat segments live in its own GDT (the guest loads none); its part of every
  address space starts at HYPERVISOR_VIRT_START, with the machine-to-physical table there,
  read-only to the guest;
* ports, PIC, PIT and `hlt` are not the guest's: they fault (#GP) like any privileged instruction,
  and the fault is bounced to the guest's own handler, or crashes the domain if it has none; a page
  fault is bounced the same way, with the address in vcpu_info.arch.cr2.

`Paravirt` is one domain: its vcpu (a Unicorn CPU, whose physical memory is the machine's: every
domain's CPU sees all of it, and reaches what its page tables map) and its frames. The first one built is dom0,
and its machine also runs the hypervisor's scheduler (vmkit.xen.domains.Xen), so `vmkit.run(image,
"paravirt")` boots `image` as dom0, and dom0 can build and run domUs. The hypercalls themselves are
in vmkit.xen.hypercalls; a lab can pass its own table.
"""
import struct

from unicorn import UC_ERR_FETCH_UNMAPPED, UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_MEM_WRITE, UC_MEM_WRITE_UNMAPPED
from unicorn import UC_PROT_ALL
from unicorn import x86_const as X

from ..asm import assemble, disassemble
from ..errors import GuestError, GuestTimeout, VmkitError
from ..machine.cpu import CR0_PG, CR0_WP, Fault
from ..machine.delivery import EXCEPTION, SOFTWARE
from ..machine.machine import Machine
from ..machine.platform import DEFAULT_MEMORY, STACK_TOP
from ..machine.x86 import BP, GP, IF, NT, OF_, PF_, RF, TF, VM, frame_names, vector_name
from . import abi as xen
from . import domain_build
from . import mm as frames
from .domains import Xen
from .event_channels import pending_ports
from .hypercalls import HYPERCALLS, BadAddress
from .layout import SHARED_INFO, START_INFO

CPUID_XEN_LEAF = 0x40000000     # Xen's CPUID leaves: the signature, the version, the hypercall page
EVENT_CALLBACK = "event callback"
TRAP_TABLE = "trap table"
PV_STATS = ("upcalls", "bounces", "multicall_entries", "pt_updates")
MEMORY_FAULTS = (UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_ERR_FETCH_UNMAPPED)
PF_PRESENT, PF_WRITE, PF_USER = 1, 2, 4     # the page-fault error code
CR0_PE_ET = 0x11


def _ring1(selector):
    """Xen raises a guest selector's RPL to the guest kernel's ring, 1 (fixup_guest_code_selector)."""
    selector &= 0xFFFF
    return selector | 1 if selector & 3 == 0 else selector


class Paravirt(Machine):
    """One paravirtual domain on the vmkit PC: a vcpu in ring 1 and its own memory.

    `hypercalls` maps a hypercall number to a handler(domain, ebx, ecx, edx, esi, edi) -> int (see
    vmkit.xen.hypercalls); a number without a handler returns -ENOSYS. `modules` are kernels for
    dom0 to build domUs from: they are loaded into dom0's memory and named in start_info's
    mod_start/mod_len (see domains.py). dom0 is privileged (SIF_PRIVILEGED | SIF_INITDOMAIN).
    `page_table_rules` replaces some of the frame table's rules (vmkit.xen.mm.PAGE_TABLE_RULES) for
    the hypervisor dom0 creates, from the start of day on.
    """
    watch_interrupt_window = False       # no PIC reaches a PV guest; events come through the hypervisor
    resumes_in_hook = False              # advance() schedules domains: every slice start is the hypervisor's
    INTERNAL_OPTIONS = ("domid", "hypervisor", "built")     # the hypervisor's own, when dom0 creates a domain

    def __init__(self, image, memory=DEFAULT_MEMORY, *, hypercalls=None, modules=(), cmdline="",
                 domid=0, hypervisor=None, built=True, page_table_rules=None, **budgets):
        self.domid = domid
        self.built = built           # False: an empty domain (createdomain), for dom0's builder to fill
        self.initialised = built     # the vcpu has a context: until then the domain cannot run
        self.hypercalls = dict(HYPERCALLS) if hypercalls is None else dict(hypercalls)
        self.modules = [assemble(m) for m in modules]
        self.cmdline = cmdline.encode() if isinstance(cmdline, str) else bytes(cmdline)
        self.trap_table = {}                            # vector -> TrapInfo (vmkit.xen.abi)
        self.kernel_stack = None                        # stack_switch: where a trap from ring 3 lands
        self.event_callback = self.failsafe_callback = None
        self.blocked = self.paused = self.dying = False
        self.shutdown_code = None                       # SCHEDOP_shutdown's reason once the domain is down
        self.ports = None                               # its event channels (vmkit.xen.event_channels)
        self.timers = None                              # its periodic and single-shot timers
        self.p2m = []                                   # pseudo-physical frame -> machine frame (the builder's)
        self.guest_table = 0                            # the machine frame of its page directory (CR3)
        self._entry = False          # the hypervisor has had control: deliver pending events before resuming
        self._exit_recorded = False
        self._in_hypercall = False
        self._notes = None                              # what the running hypercall's handler noted
        self.xen = Xen(self, memory, page_table_rules) if hypervisor is None else hypervisor   # dom0 creates it
        super().__init__(image, memory, counted=True, technique="paravirt", **budgets)
        for key in PV_STATS:
            self.stats[key] = 0
        self.xen.attach(self)

    # --- boot: Xen's start of day for a PV guest ----------------------------------------------------
    def boot_state(self):
        """Xen's start of day (vmkit.xen.domain_build): the domain's frames, then, for a domain built
        here, its kernel, start_info and page tables, and the vcpu enters the kernel in ring 1 with
        paging on, on those tables. An empty domain waits for its builder (set_vcpu_context)."""
        super().boot_state()
        mm = self.xen.mm
        self.uc.mem_unmap(0, self.memory)               # the RAM the machine loaded the image into: not ours
        self.uc.mem_map_ptr(0, mm.size, UC_PROT_ALL, mm.address)       # the CPU sees machine memory
        self.cpu.ram_size = mm.size
        self.cpu.regions = [(0, mm.size)]
        domain_build.populate(self, mm)
        domain_build.write_gdt(mm)
        self.uc.reg_write(X.UC_X86_REG_GDTR, domain_build.gdt_register())
        if not self.built:
            return
        flags = xen.SIF_PRIVILEGED | xen.SIF_INITDOMAIN if self.domid == 0 else 0
        domain_build.build(self, mm, self.image, self.modules, self.cmdline, flags)
        stack = min(STACK_TOP, self.memory)
        self._enter_kernel(self.image.entry, stack, xen.FLAT_RING1_CS, xen.FLAT_RING1_SS, xen.FLAT_RING1_DS,
                           IF, {"esi": START_INFO})

    def _enter_kernel(self, eip, esp, cs, ss, ds, eflags, registers):
        """The vcpu starts: paging on, on the page directory in guest_table, in ring 1."""
        self.xen.mm.check_page_directory(self.guest_table)
        self.cpu["cr3"] = self.guest_table << 12
        self.cpu["cr0"] = CR0_PE_ET | CR0_WP | CR0_PG   # paging on; Xen keeps WP, so ring 1 cannot write read-only pages
        self.kernel_stack = (ss, esp)                   # the builder's default, until stack_switch
        self.cpu.far_transfer(1, cs, ss, esp, eip, 0x2 | IF | (eflags & ~(IF | 0x3000)))
        for segment in ("ds", "es", "fs", "gs"):
            self.cpu[segment] = ds
        for name, value in registers.items():
            self.cpu[name] = value

    def set_vcpu_context(self, context):
        """XEN_DOMCTL_setvcpucontext with a vcpu_guest_context (`context`, its 2800 bytes): what Xen's
        arch_set_info_guest does for a PV vcpu. The page directory in ctrlreg[3] (a machine address)
        gets a typed reference as an L2 table, validated if it is not one yet; the registers, the
        kernel stack, the callbacks and the trap table are the guest's; the domain can run once
        unpaused. -EINVAL when the page directory does not validate or a selector is not one of Xen's
        ring-1 flat segments; -EEXIST when the vcpu already runs. Returns (the result, what to note)."""
        if self.initialised:
            return -xen.EEXIST, {"refused": "the vcpu already has a context"}
        regs = dict(zip(("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "error_code", "entry_vector", "eip",
                         "cs", "saved_upcall_mask", "eflags", "esp", "ss", "es", "ds", "fs", "gs"),
                        xen.CPU_USER_REGS.unpack_from(context, xen.VGC_USER_REGS)))
        cs, ss, ds = (_ring1(regs["cs"]), _ring1(regs["ss"]), _ring1(regs["ds"]))
        if (cs, ss, ds) != (xen.FLAT_RING1_CS, xen.FLAT_RING1_SS, xen.FLAT_RING1_DS):
            return -xen.EINVAL, {"refused": "the selectors are not Xen's flat ring-1 segments"}
        mm = self.xen.mm
        cr3 = struct.unpack_from("<I", context, xen.VGC_CTRLREG + 4 * 3)[0] >> 12
        if not mm.get_page_and_type(cr3, self, frames.L2):
            return -xen.EINVAL, {"refused": f"the page directory: {mm.why}"}
        self.guest_table = cr3
        kernel_ss, kernel_sp = struct.unpack_from("<II", context, xen.VGC_KERNEL_SS)
        self._enter_kernel(regs["eip"], regs["esp"], cs, ss, ds, regs["eflags"],
                           {r: regs[r] for r in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp")})
        self.kernel_stack = (_ring1(kernel_ss), kernel_sp)
        event_cs, event_eip, failsafe_cs, failsafe_eip = struct.unpack_from("<4I", context, xen.VGC_EVENT_CALLBACK)
        if event_eip:
            self.event_callback = (_ring1(event_cs), event_eip)
        if failsafe_eip:
            self.failsafe_callback = (_ring1(failsafe_cs), failsafe_eip)
        for index in range(256):
            vector, flags, tcs, address = xen.TRAP_INFO.unpack_from(context, xen.VGC_TRAP_CTXT + 8 * index)
            if address:
                self.trap_table[vector] = xen.TrapInfo(vector, flags, _ring1(tcs), address)
        self.initialised = True
        return 0, {"cr3": cr3 << 12, "entry": regs["eip"]}

    def write_start_info(self, **fields):
        """Set start_info fields by name (magic, nr_pages, shared_info, flags, store_mfn, store_evtchn,
        console_mfn, console_evtchn, pt_base, nr_pt_frames, mfn_list, mod_start, mod_len)."""
        names = ("magic", "nr_pages", "shared_info", "flags", "store_mfn", "store_evtchn", "console_mfn",
                 "console_evtchn", "pt_base", "nr_pt_frames", "mfn_list", "mod_start", "mod_len")
        current = dict(zip(names, xen.START_INFO.unpack(self.xen_read(START_INFO, xen.START_INFO.size))))
        current.update(fields)
        self.xen_write(START_INFO, xen.START_INFO.pack(*(current[n] for n in names)))

    def load_page_directory(self, mfn):
        """MMUEXT_NEW_BASEPTR has made machine frame `mfn` the page directory: load it into CR3."""
        self.xen.mm.check_page_directory(mfn)
        self.cpu["cr3"] = mfn << 12
        self.cpu.flush_tlb()

    # --- guest memory, as the hypervisor's copy_from_guest / copy_to_guest see it ----------------------
    # A guest pointer is a virtual address in the guest's own page tables, below HYPERVISOR_VIRT_START
    # (Xen's access_ok); Xen follows it with the guest kernel's rights, so an unmapped page, or a write
    # into a page mapped read-only (a page table), fails: BadAddress, -EFAULT. The first page is never
    # mapped, so a null pointer (or a number passed where a pointer belongs) usually fails too.
    def read(self, address, size):
        if size == 0:
            return b""
        if address < 0 or size < 0 or address + size > xen.HYPERVISOR_VIRT_START:
            raise BadAddress(address, size)
        try:
            return self.cpu.read(address, size)
        except Fault:
            raise BadAddress(address, size) from None

    def write(self, address, data):
        if not data:
            return
        if address < 0 or address + len(data) > xen.HYPERVISOR_VIRT_START:
            raise BadAddress(address, len(data), write=True)
        try:
            self.cpu.write(address, bytes(data))
        except Fault:
            raise BadAddress(address, len(data), write=True) from None

    def unpack(self, layout, address):
        return layout.unpack(self.read(address, layout.size))

    def pack(self, layout, address, *values):
        self.write(address, layout.pack(*values))

    def u32(self, address):
        return struct.unpack("<I", self.read(address, 4))[0]

    def put_u32(self, address, value):
        self.write(address, struct.pack("<I", value & 0xFFFFFFFF))

    # --- the domain's pages as Xen itself reaches them: by pseudo-physical address, through the p2m ---
    # (shared_info, start_info, the grant table: Xen's own mapping of them does not depend on the
    # guest's page tables)
    def machine_address(self, address):
        """The machine address of pseudo-physical `address` of this domain."""
        pfn = address >> 12
        if not 0 <= pfn < len(self.p2m):
            raise BadAddress(address, 1)
        return self.p2m[pfn] << 12 | address & 0xFFF

    def xen_read(self, address, size):
        out = b""
        while size > 0:
            n = min(size, xen.PAGE_SIZE - (address & 0xFFF))
            out += self.xen.mm.read(self.machine_address(address), n)
            address, size = address + n, size - n
        return out

    def xen_write(self, address, data):
        data = bytes(data)
        while data:
            n = min(len(data), xen.PAGE_SIZE - (address & 0xFFF))
            self.xen.mm.write(self.machine_address(address), data[:n])
            address, data = address + n, data[n:]

    def xen_u32(self, address):
        return self.xen.mm.u32(self.machine_address(address))

    def xen_put_u32(self, address, value):
        self.xen.mm.put_u32(self.machine_address(address), value)

    def pfn_to_mfn(self, pfn):
        return self.p2m[pfn]

    # --- the shared_info page: vcpu_info[0] and the event-channel bitmaps ------------------------------
    @property
    def upcall_pending(self):
        return self.xen_read(SHARED_INFO + xen.VI_UPCALL_PENDING, 1)[0]

    @property
    def upcall_mask(self):
        """vcpu_info[0].evtchn_upcall_mask: the virtual interrupt flag, inverted (1 = events off)."""
        return self.xen_read(SHARED_INFO + xen.VI_UPCALL_MASK, 1)[0]

    @upcall_mask.setter
    def upcall_mask(self, value):
        self.xen_write(SHARED_INFO + xen.VI_UPCALL_MASK, bytes([value]))

    def events_need_delivery(self):
        return bool(self.upcall_pending) and not self.upcall_mask

    # --- what the hypercalls ask of the vcpu ---------------------------------------------------------------
    @property
    def privileged(self):
        return self.domid == 0

    def note(self, **detail):
        """Add to the current hypercall's event detail (a handler says what it did)."""
        if self._notes is not None:
            self._notes.update(detail)

    def console_write(self, data):
        self.xen.console_write(self, data)

    def block(self):
        """SCHEDOP_block: enable events and sleep until one is pending (at once if one already is)."""
        self.upcall_mask = 0
        if not self.upcall_pending:
            self.blocked = True

    def kick(self):
        """An event became pending for this domain: wake it, and deliver before it runs on."""
        self.hypervisor_had_control()
        self.blocked = False

    def hypervisor_had_control(self):
        """The hypervisor has had this vcpu (a hypercall, a trap, a switch to this domain): events
        pending for it are delivered before its guest code runs on."""
        self._entry = True

    def shut_down(self, reason, why=None):
        """The domain stops for good with `reason` (SHUTDOWN_*); dom0 hears of it (VIRQ_DOM_EXC)."""
        if self.shutdown_code is not None:
            return
        self.shutdown_code = reason & 0xFF
        self.finished = True
        self.blocked = False
        if why is not None:                  # a crash: the domain did not ask for it
            self.shutdown = True
            self.record("shutdown", why=why, reason=xen.SHUTDOWN_NAMES[xen.SHUTDOWN_crash])
        if not self._in_hypercall:           # else its hypercall's event comes first
            self._record_exit()
        self.xen.domain_shut_down(self)

    def crash(self, why):
        self.shut_down(xen.SHUTDOWN_crash, why=why)

    def _record_exit(self):
        if not self._exit_recorded:
            self._exit_recorded = True
            self.record("exit", exit_code=self.shutdown_code,
                        reason=xen.SHUTDOWN_NAMES.get(self.shutdown_code, str(self.shutdown_code)))

    # --- int 0x82 and every other way into the hypervisor ----------------------------------------------------
    def exception(self, vector, source, error_code=None):
        """Every exception and int n enters the hypervisor: int 0x82 from ring 1 is a hypercall,
        anything else is bounced to the guest's trap table."""
        ring = self.cpu.cpl
        self.fault_handled()                             # the fault is the hypervisor's now
        self.hypervisor_had_control()
        if vector == xen.HYPERCALL_VECTOR and source == SOFTWARE and ring == 1:
            self._hypercall()
        elif vector == PF_ and source == EXCEPTION:
            self._page_fault(error_code, ring)
        else:
            self._trap(vector, source, error_code, ring)

    def _page_fault(self, error_code, ring):
        """A #PF on the guest's own tables: Xen puts the address in vcpu_info.arch.cr2 and bounces it
        (propagate_page_fault in xen/arch/x86/traps.c). A write to a page-table page is one of them:
        Xen maps them read-only, and vmkit's Xen does not emulate the store (no writable page-table
        assist), so the guest's handler is told."""
        address = self.cpu["cr2"]
        detail = {"address": address}
        if error_code is not None and error_code & (PF_PRESENT | PF_WRITE) == PF_PRESENT | PF_WRITE:
            found = self.mapped_frame(address)
            if found is not None and self.xen.mm.pages[found].type in (frames.L1, frames.L2):
                detail["why"] = (f"a store to a page table ({self.xen.mm.pages[found].type}, mfn {found:#x}): "
                                 f"Xen maps page tables read-only; the guest must ask with mmu_update")
        self.xen_put_u32(SHARED_INFO + xen.VI_ARCH_CR2, address)
        self._trap(PF_, EXCEPTION, error_code, ring, **detail)

    def mapped_frame(self, va):
        """The machine frame the guest's current tables map at `va`, or None."""
        mm = self.xen.mm
        found = mm.guest_map_l1e(self, va) if va < xen.HYPERVISOR_VIRT_START else None
        if found is None:
            return None
        pte = mm.u32(found[0])
        return pte >> 12 if pte & frames.P else None

    def _hypercall(self):
        cpu = self.cpu
        number = cpu["eax"]
        args = tuple(cpu[r] for r in ("ebx", "ecx", "edx", "esi", "edi"))
        self.stats["hypercalls"] += 1
        self._in_hypercall = True
        try:
            result, detail = self.call(number, args)
        finally:
            self._in_hypercall = False
        cpu["eax"] = result
        self.record("hypercall", eip=cpu["eip"] - 2, cpl=1, name=xen.hypercall_name(number), number=number,
                    args=args, result=result, **detail)
        if self.shutdown_code is not None:
            self._record_exit()                      # after the hypercall that asked for it

    def call(self, number, args):
        """Run hypercall `number` with `args` for this domain: (result, what the handler noted).
        Used for `int 0x82` and for each entry of a multicall."""
        handler = self.hypercalls.get(number)
        outer, self._notes = self._notes, {}
        try:
            result = -xen.ENOSYS if handler is None else handler(self, *args)
        except BadAddress as bad:
            result = -xen.EFAULT
            self._notes["fault"] = str(bad)
        finally:
            notes, self._notes = self._notes, outer
        if not isinstance(result, int):
            raise VmkitError(f"the handler for hypercall {number} ({xen.hypercall_name(number)}) returned "
                             f"{result!r}; a hypercall handler returns the value for EAX: 0 or another result "
                             f"on success, a negative errno such as -{xen.EINVAL} (-EINVAL) on failure")
        if result < 0 and -result in xen.ERRNO_NAMES:
            notes["error"] = "-" + xen.ERRNO_NAMES[-result]
        return result, notes

    def _trap(self, vector, source, error_code, ring, **detail):
        """An exception or `int n`: Xen's handler looks in the guest's trap table and bounces it."""
        at = self.instruction_address(source)
        cause = f"int {vector:#x}" if source == SOFTWARE else vector_name(vector)
        self.stats["traps"] += 1
        self.record("trap", eip=at, cpl=ring, cause=cause, vector=vector, instruction=self._instruction_text(at),
                    error_code=error_code, **detail)
        if source == SOFTWARE and not self._soft_int_allowed(vector, ring):
            # the gate is closed to this ring: the CPU raises #GP naming the IDT entry, at the int
            self.cpu["eip"] = at
            cause = f"#GP (int {vector:#x} is not open to ring {ring})"
            vector, error_code = GP, vector * 8 + 2
        self.bounce(vector, error_code, cause, at)

    def _soft_int_allowed(self, vector, ring):
        if vector in (BP, OF_):
            return True                          # int3 and into: Xen's gates for them are open to every ring
        if vector == xen.HYPERCALL_VECTOR:
            return ring <= 1
        entry = self.trap_table.get(vector)
        return entry is not None and entry.address != 0 and entry.dpl >= ring

    def bounce(self, vector, error_code, cause, at):
        """Deliver `vector` to the handler the guest registered for it, or crash the domain."""
        entry = self.trap_table.get(vector)
        if entry is None or entry.address == 0:
            self.crash(f"{cause} at {at:#x} in ring {self.cpu.cpl}, and the guest's trap table has no "
                       f"handler for vector {vector} (set_trap_table): Xen crashes the domain")
            return
        if self._enter_guest_handler(entry.cs, entry.address, error_code, entry.masks_events, cause, vector, at,
                                     TRAP_TABLE):
            self.stats["bounces"] += 1

    def _enter_guest_handler(self, cs, eip, error_code, mask_events, cause, vector, at, gate):
        """Xen's create_bounce_frame: push a frame on the guest kernel's stack (switching to the
        stack_switch stack when coming from ring 3) and jump to the handler in ring 1. The frame's
        EFLAGS.IF is the virtual IF (not the mask byte), so the handler knows what to restore; the
        upper half of its CS slot holds the mask byte itself (iret uses only the lower half)."""
        cpu = self.cpu
        ring = cpu.cpl
        old = cpu.regs(("eip", "cs", "eflags", "esp", "ss"))
        saved_mask = self.upcall_mask
        flags = (old["eflags"] & ~IF) | (0 if saved_mask else IF)
        cs_slot = saved_mask << 16 | old["cs"]           # Xen keeps the saved mask in the CS slot's upper half
        switch = ring == 3
        if switch:
            ss, esp = self.kernel_stack
            pushed = [old["ss"], old["esp"], flags, cs_slot, old["eip"]]
        else:
            ss, esp = old["ss"], old["esp"]
            pushed = [flags, cs_slot, old["eip"]]
        if error_code is not None:
            pushed.append(error_code)
        esp = (esp - 4 * len(pushed)) & 0xFFFFFFFF
        in_memory = list(reversed(pushed))
        if cs & ~3 != xen.FLAT_RING1_CS & ~3:
            self.crash(f"{cause}: the guest's handler is at {cs:#x}:{eip:#x}, and {cs:#x} is not a ring-1 code "
                       f"segment (the guest has no GDT of its own here: use FLAT_RING1_CS, {xen.FLAT_RING1_CS:#x})")
            return False
        try:
            if ss & ~3 != xen.FLAT_RING1_SS & ~3:
                raise Fault(GP, ss)
            self.write(cpu.segment_base(ss) + esp, b"".join(v.to_bytes(4, "little") for v in in_memory))
        except (BadAddress, Fault, GuestError):
            self.crash(f"{cause}: the frame for the guest's handler cannot be pushed on its kernel stack "
                       f"{ss:#x}:{esp:#x} (set with stack_switch)")
            return False
        if mask_events:
            self.upcall_mask = 1
        cpu.far_transfer(1, (cs & ~3) | 1, (ss & ~3) | 1, esp, eip, (old["eflags"] & ~(TF | NT | RF | VM)) | IF)
        self.stats["interrupts"] += 1
        self.record("ring-transition", eip=at, cpl=ring, cause=cause, vector=vector, from_ring=ring, to_ring=1,
                    gate=gate, handler=eip, stack_switch=switch, esp=esp, ss=ss,
                    frame=list(zip(frame_names(switch, error_code is not None), in_memory)),
                    error_code=error_code, events_masked=bool(mask_events), return_eip=old["eip"], bounced=True)
        return True

    def memory_fault(self, error, access, address):
        """Memory no page table can reach (Unicorn found no machine memory there): as Xen would, a
        page fault for the guest, the address in vcpu_info.arch.cr2, bounced like any other."""
        if error.errno not in MEMORY_FAULTS:
            return super().memory_fault(error, access, address)
        address = 0 if address is None else address
        write = access in (UC_MEM_WRITE, UC_MEM_WRITE_UNMAPPED)
        code = (PF_WRITE if write else 0) | (PF_USER if self.cpu.cpl == 3 else 0)
        self.fault_handled()
        self.xen_put_u32(SHARED_INFO + xen.VI_ARCH_CR2, address)
        self.hypervisor_had_control()
        self._trap(PF_, EXCEPTION, code, self.cpu.cpl, address=address)

    def _instruction_text(self, address):
        try:
            insn = disassemble(self.cpu.read(address, 15), address, 1)
        except GuestError:
            return "?"
        return f"{insn[0].mnemonic} {insn[0].op_str}".strip() if insn else "?"

    # --- events: delivered through the callback, only when the hypervisor has had control -----------------
    def inject_interrupt(self):
        """No PIC: a pending event is delivered through the event callback (an upcall), and only
        when the hypervisor has had control and the mask byte lets it."""
        if not self._entry:
            return False
        self._entry = False
        if self.finished or self.event_callback is None or not self.events_need_delivery():
            return False
        self.stats["upcalls"] += 1
        self.record("interrupt", source="event channel", ports=pending_ports(self))
        cs, eip = self.event_callback
        return self._enter_guest_handler(cs, eip, None, True, "event upcall", None, self.cpu["eip"], EVENT_CALLBACK)

    def interrupts_enabled(self):
        """The virtual IF: events are on while the mask byte in shared_info is 0."""
        return not self.upcall_mask

    # --- CPUID: vmkit answers it for the PV guest and adds Xen's leaves (docs/architecture.md, 2.5) ---
    def on_cpuid(self, leaf, subleaf):
        """Every cpuid traps to the hypervisor, which answers Xen's leaves and leaves the rest to the CPU."""
        self.stats["traps"] += 1
        self.record("trap", cause="cpuid", vector=None, instruction="cpuid", error_code=None)
        values = self._xen_cpuid(leaf)
        if values is None:
            self.record("emulate", instruction="cpuid", effect=f"leaf {leaf:#x}: the CPU's own values")
            return None
        self.record("emulate", instruction="cpuid", effect=f"leaf {leaf:#x}: the hypervisor's "
                    + ("signature XenVMMXenVMM" if leaf == CPUID_XEN_LEAF else "leaf"))
        return values

    @staticmethod
    def _xen_cpuid(leaf):
        if leaf == CPUID_XEN_LEAF:
            signature = struct.unpack("<3I", b"XenVMMXenVMM")
            return (CPUID_XEN_LEAF + 2,) + signature
        if leaf == CPUID_XEN_LEAF + 1:
            major, minor = xen.XEN_VERSION
            return (major << 16 | minor, 0, 0, 0)
        if leaf == CPUID_XEN_LEAF + 2:
            return (1, 0x40000000, 0, 0)           # one hypercall page, its MSR
        return None

    # --- running: dom0's machine runs the whole system -------------------------------------------------------
    def advance(self, limit, until=None):
        """dom0's machine runs the whole system: each step is one of the hypervisor's scheduler, which
        checks the system's budgets and runs a domain's vcpu with run_slice(). A domU run on its own
        runs its slice."""
        if self is self.xen.dom0:
            self.xen.advance(limit, until)
        else:
            self.run_slice(limit, until)

    def check_budget(self):
        """Budgets belong to the whole system: the scheduler checks them once per slice."""
        total = self.xen.instructions()
        if self.max_instructions is not None and total >= self.max_instructions:
            raise GuestTimeout(f"the domains ran {total:,} instructions without dom0 shutting down "
                               f"(max_instructions={self.max_instructions:,}); dom0 is at eip {self.cpu['eip']:#x}. "
                               f"A loop that never ends? Raise max_instructions if it just needs longer.",
                               self.result())
        elapsed = self.xen.elapsed()
        if self.timeout is not None and elapsed >= self.timeout:
            raise GuestTimeout(f"the domains ran for {elapsed:.1f} s of real time without dom0 shutting down "
                               f"(timeout={self.timeout} s).", self.result())

    def seconds_so_far(self):
        """The system's: the hypervisor's scheduling and every domain's slices, as the caller's clock sees them."""
        return self.xen.elapsed()

    def record(self, kind, eip=None, cpl=None, **detail):
        """As the machine's, with the domain's id: every domain records into dom0's one event log."""
        detail.setdefault("domain", self.domid)
        return super().record(kind, eip, cpl, **detail)

    def result(self):
        result = super().result()
        result.exit_code = self.shutdown_code
        if self is self.xen.dom0:
            result.stats = self.xen.stats()
            result.seconds = self.xen.elapsed()
        return result

    def __repr__(self):
        return f"<Paravirt dom{self.domid} {self.xen.state(self)} at eip {self.cpu['eip']:#x}>"
