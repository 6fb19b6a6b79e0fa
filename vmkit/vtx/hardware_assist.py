"""Hardware assist: vmkit's model of VT-x, the way KVM uses it.

With VT-x nothing is deprivileged and nothing is rewritten. The guest kernel runs unmodified at
CPL 0, in VMX non-root mode; the CPU itself leaves the guest (a VM exit) whenever it meets
something the VMM asked to see in the VMCS's execution controls, records why in the exit reason,
and the VMM handles it and resumes the guest (VM entry). The model runs the guest on the vmkit PC
at CPL 0 and turns those moments into "vmexit" events, reported the way KVM reports them to user
space (vmkit.kvm), so the same guest can be compared under both:

    reason      VT-x basic exit reason (SDM vol. 3, appendix C)    when
    IO          30  I/O instruction                      an in/out on a port the I/O bitmap selects
    MMIO        48  EPT violation (no memory behind it;  a load or store in the MMIO device's page
                49  EPT misconfig once KVM marks it)
    HLT         12  HLT                                  hlt, if HLT exiting is on
    CPUID       10  CPUID                                always: VT-x cannot run CPUID in the guest
    EXCEPTION    0  exception or NMI                     a fault whose vector is in the exception bitmap
    SHUTDOWN     2  triple fault                         the guest's CPU gave up
    INTR         1  external interrupt                   the PIC raised an interrupt while the guest
                                                         ran, if external-interrupt exiting is on
    IRQ_WINDOW_OPEN 7  interrupt window                  the guest can take the waiting interrupt, if
                                                         the VMM asked (interrupt-window exiting)

Under real KVM the kernel answers CPUID itself from the table user space gave it, so a CPUID exit
never reaches user space: under "kvm" it does not appear. An exception the bitmap intercepts is
handed back to the guest (injected at the next VM entry), as KVM does with the ones it does not
handle itself.

Interrupts. By default the guest's own timer interrupts come from the model PC's PIC and PIT and are
delivered at VM entry, with no exit recorded: with KVM's in-kernel PIC and PIT, user space never
sees them either. `VmcsControls(external_interrupt_exiting=True)` plays KVM without an in-kernel
irqchip, the PIC and PIT in user space as QEMU drives them, and shows how a tick reaches a guest
that may have interrupts masked:

  - External-interrupt exiting (pin-based VM-execution control bit 0, SDM vol. 3C, 24.6.1, table
    24-5): "external interrupts cause VM exits"; RFLAGS.IF does not block them. When the model's PIT
    ticks while the guest runs and the PIC then offers an interrupt, the guest exits. The run loop
    sees it as KVM reports it to user space, `INTR` (KVM_EXIT_INTR): the device model's timer kicks
    the vCPU thread with a signal, the CPU exits with basic reason 1 (EXTERNAL_INTERRUPT) for the
    host's interrupt, and KVM, finding the signal pending, returns to user space with KVM_EXIT_INTR
    (-EINTR; include/linux/kvm_host.h, kvm_handle_signal_exit).
    The event's `hardware` detail names the SDM's reason. A tick that wakes a vCPU halted in user
    space (a HLT exit) is no exit: the vCPU is not in the guest (QEMU's kvm_handle_halt).
  - Event injection (SDM vol. 3C, 24.8.3, the VM-entry interruption-information field: vector in bits
    7:0, type in 10:8, 0 = external interrupt, valid bit 31; delivered by VM entry as 26.5 describes).
    At the next VM entry the VMM acknowledges the PIC and injects the vector if the guest can take it
    now (IF = 1 and no blocking by STI or MOV SS), as QEMU does with KVM_INTERRUPT when
    kvm_run.ready_for_interrupt_injection and IF are set (target/i386/kvm/kvm.c, kvm_arch_pre_run).
    The "interrupt" event then carries `injected` (how) and the field's value,
    `entry_interruption_info` (0x80000020 for vector 0x20).
  - Otherwise the VMM sets interrupt-window exiting (primary processor-based control bit 2, 24.6.2,
    table 24-6: a VM exit at the beginning of any instruction at which RFLAGS.IF = 1 and nothing
    else blocks interrupts; table 20-6 in the first VT-x editions); QEMU sets
    kvm_run.request_interrupt_window. The guest runs on until it can take the interrupt, exits
    with `IRQ_WINDOW_OPEN` (KVM_EXIT_IRQ_WINDOW_OPEN = 7; basic reason 7, INTERRUPT_WINDOW) at that
    instruction (after `sti` and the instruction in its shadow), and is injected at the entry that
    follows. When another exit gives the VMM control first at an
    instruction where the window is open (an `out` in the sti shadow), it injects there, with no
    window exit, as QEMU does at every KVM_RUN.

The interrupt arrives at the same instruction as with the default controls, so the guest's output
and its other exits do not change; only the INTR and IRQ_WINDOW_OPEN exits (stats
`vmexit_INTR`, `vmexit_IRQ_WINDOW_OPEN`) and the injections are added. Under "kvm" the same
handshake drives the real KVM (vmkit.kvm.interrupts).

Memory, first-generation VT-x (`VmcsControls(enable_ept=False)`): with no EPT the VMM keeps shadow
page tables, the same as the software VMMs' (vmkit.vmm.shadow_paging), and asks for the exits that
keep them in step, as KVM does when EPT is off (Linux, arch/x86/kvm/vmx/vmx.c, vmx_exec_control():
CR3-load, CR3-store and INVLPG exiting; vmx.h, vmx_need_pf_intercept(): every #PF intercepted):

    CR_ACCESS   28  control-register access              mov to CR0, CR3 or CR4, mov from CR3
    INVLPG      14  INVLPG                               invlpg
    EXCEPTION    0  exception (#PF)                      every #PF: a hidden fault, a trace or a true one

The model sees a guest's control-register instructions where they lie in its image (a code hook on
each, as for iret): code the guest writes at run time is not watched. Reads of CR0 and CR4 return
the guest's own values without an exit (VT-x's read shadows), and the guest's CR2 is its own: a #PF
that exits does not change it (SDM vol. 3, 27.1), so only a true fault, injected, sets it.

Memory with EPT, filled on demand (`VmcsControls(ept_on_demand=True)`): KVM starts a guest with an
empty EPT and fills it as the guest touches memory: each first access to a guest-physical page is an
EPT violation (exit 48) that KVM handles in the kernel (arch/x86/kvm/mmu: the TDP page fault), never
seen by user space. The model keeps the EPT as a set of present guest frames (guest-physical equals
host-physical here, as everywhere in vmkit) and keeps the CPU's TLB itself, so that it sees every
TLB miss: a miss is a two-dimensional walk, each reference of the guest's walk (a PDE, a PTE) a
guest-physical address that the 4-level EPT translates first (4 references each), then the page's own
guest-physical address (4 more): 2 x (4 + 1) + 4 = 14 references for a 4-KiB page, where a native walk
makes 2 (Intel SDM vol. 3C, "The Extended Page Table Mechanism"; Bhargava et al., "Accelerating
two-dimensional page walks for virtualized systems", ASPLOS 2008, named this walk). The guest's CR3 loads, page-table stores, invlpg and #PFs cause no exit:
a CR3 load or an invlpg only flushes the TLB, and a store to a page table takes effect at the next
miss, as on the CPU. stats: `tlb_misses`, `walk_references`, `vmexit_EPT_VIOLATION`.

Memory with EPT on (the default): the model has no second-stage translation. The guest's physical addresses are the addresses
of the model's memory (Unicorn's), and when the guest turns paging on, Unicorn walks the guest's own
page tables straight onto that memory. A page-table write, a CR3 load or an invlpg therefore costs
no exit here, as under nested paging, but only because nothing stands between the guest and the
memory: the model does not do nested paging. With EPT (AMD: NPT) the CPU translates every
guest-physical address, those of the guest's own page tables included, through a second table that
the hypervisor owns: that keeps each guest inside the memory it was given, and an access to a
guest-physical address that table does not map is an EPT violation (exit 48), which is how KVM finds
MMIO. Without EPT, KVM keeps shadow page tables instead and takes exits to keep them in step with
the guest's (the page-table writes of Adams & Agesen's ptemod). The model's MMIO device stands in
for the EPT violation: a Unicorn MMIO range with no memory behind it.

The controls are a small VmcsControls dataclass a lesson can toggle:

    vmkit.run(image, "hardware-assist", controls=VmcsControls(hlt_exiting=False))
    VmcsControls(exception_bitmap=1 << 6)        # exit on #UD
    VmcsControls(io_bitmap={0xF4})               # only isa-debug-exit exits; COM1 is not intercepted

With HLT exiting off the vCPU halts inside the guest and the VMM is never told. A port left out of
the I/O bitmap is not intercepted: on real VT-x the access then goes to the physical machine's port;
the model has no other hardware, so it still reaches vmkit's device, only without an exit. That is
not device passthrough: giving a guest a real device takes VFIO, through which the VMM maps the
device's MMIO BARs into the guest, and an IOMMU (VT-d, AMD-Vi) that remaps the device's DMA and
interrupts (Linux, Documentation/driver-api/vfio.rst).

Each event's eip is the instruction that exited, as the VMCS's guest RIP names it.
"""
from dataclasses import dataclass

from unicorn import x86_const as X

from unicorn import UC_HOOK_CODE

from ..machine import quirks
from ..machine.cpuid import cpuid as the_pcs_cpuid
from ..machine.cpu import CR0_PG, CR0_WP, CR4_PSE, PTE_P, PTE_RW, PTE_US, Fault
from ..machine.delivery import EXCEPTION, EXTERNAL, SOFTWARE
from ..machine.devices import MMIO_BASE, MMIO_SIZE, MmioDevice
from ..machine.machine import Machine
from ..machine.platform import DEFAULT_MEMORY
from ..machine.virtio import VIRTIO_BASE, VIRTIO_IRQ, VIRTIO_SIZE, GuestMemory, VirtioConsole
from ..machine.x86 import PF_, vector_name
from ..vmm.emulate import decode, effective_address, read_register, write_register
from ..vmm.shadow_paging import ShadowPageTables, shadow_fill
from ..vmm.vcpu import VCpu

HYPERVISOR_PRESENT = 1 << 31          # CPUID.1:ECX bit 31, set by every hypervisor, clear on bare metal
KVM_SIGNATURE = b"KVMKVMKVM\0\0\0"    # CPUID leaf 0x40000000, EBX ECX EDX, as KVM answers it
INT3, INTO = 0xCC, 0xCE
KERNEL_HANDLED = ("CPUID", "EPT_VIOLATION")   # exits KVM handles inside the kernel: user space never sees them
EPT_LEVELS = 4                        # a 4-level EPT: PML4E, PDPTE, PDE, PTE
ENTRY_INTERRUPTION_VALID = 1 << 31    # the VM-entry interruption-information field's valid bit (24.8.3)
EXTERNAL_INTERRUPT_TYPE = 0           # its interruption type (bits 10:8) for an external interrupt


def entry_interruption_info(vector, kind=EXTERNAL_INTERRUPT_TYPE):
    """The VM-entry interruption-information field that injects `vector` (SDM vol. 3C, 24.8.3)."""
    return ENTRY_INTERRUPTION_VALID | kind << 8 | vector


@dataclass
class VmcsControls:
    """The VM-execution controls of the model's VMCS (SDM vol. 3, 25.6).

    hlt_exiting       primary processor-based control bit 7: hlt exits to the VMM
    exception_bitmap  bit n set: exception n exits (25.6.3); int3 and into count, int n does not
    io_bitmap         None: "unconditional I/O exiting", every port exits; a set of ports: "use I/O
                      bitmaps", only an access touching one of them exits
    enable_ept        secondary processor-based control bit 1. Off: first-generation VT-x, with
                      shadow page tables and CR-access, INVLPG and #PF exits (see the module)
    ept_on_demand     with EPT: the EPT starts empty and fills on EPT violations, and the model
                      counts the TLB misses and the two-dimensional walk's references (see the module)
    external_interrupt_exiting  pin-based control bit 0: an interrupt the PIC raises while the guest
                      runs is an exit (INTR), and the VMM injects it through the VM-entry
                      interruption-information field, asking for an interrupt window (primary
                      processor-based bit 2, set and cleared by the VMM as it needs it: the
                      `interrupt_window` attribute) when the guest cannot take it yet. Off: the
                      interrupt is delivered at VM entry with no exit, as with KVM's in-kernel PIC
    """
    hlt_exiting: bool = True
    exception_bitmap: int = 0
    io_bitmap: frozenset = None
    enable_ept: bool = True
    ept_on_demand: bool = False
    external_interrupt_exiting: bool = False

    def io_exits(self, port, size):
        """An access of `size` bytes at `port` exits if the bitmap has a bit set for any of them."""
        return self.io_bitmap is None or any((port + i) & 0xFFFF in self.io_bitmap for i in range(size))

    def exception_exits(self, vector):
        return bool(self.exception_bitmap >> vector & 1)


class HardwareAssist(Machine):
    """The vmkit PC with the guest in VMX non-root mode: it runs natively at CPL 0, and the exits
    the controls ask for are recorded as "vmexit" events (stats: "vmexits" and "vmexit_<REASON>")."""
    resumes_in_hook = False           # an exit's effects are modelled at the end of a slice

    def __init__(self, image, memory=DEFAULT_MEMORY, *, controls=None, **budgets):
        self.controls = VmcsControls() if controls is None else controls
        self.mmio = MmioDevice()
        self.shadow = None                # shadow page tables: only without EPT
        self.interrupt_window = False     # interrupt-window exiting, as the VMM has set it now
        self._last_exit = None            # the icount of the last exit: the VMM had control right after it
        self._halted_outside = False      # in a HLT exit: the vCPU waits outside the guest
        super().__init__(image, memory, counted=True, technique="hardware-assist", **budgets)
        if self.shadow is not None and not self.controls.enable_ept:
            self.stats.update(hidden_faults=0, true_faults=0, trace_faults=0)
        elif self.shadow is not None:
            self.stats.update(tlb_misses=0, walk_references=0)
            self.shadow.enable(self.vcpu.cr3)         # the CPU walks the model's TLB from the start
        # no memory backs the device's page, so every access to it exits: KVM would see an EPT
        # violation; here it is Unicorn's MMIO callback (the model has no second stage)
        self.uc.mmio_map(MMIO_BASE, MMIO_SIZE, self._on_mmio_read, None, self._on_mmio_write, None)
        # the virtio console (vmkit.machine.virtio) in the next page: its registers exit the same way,
        # its rings are guest RAM that the device reads and writes while it handles the exit
        self.virtio = VirtioConsole(GuestMemory(self.uc.mem_read, self.uc.mem_write),
                                    raise_irq=lambda: self.pic.raise_irq(VIRTIO_IRQ), output=self.serial.output.extend)
        self.uc.mmio_map(VIRTIO_BASE, VIRTIO_SIZE, self._on_virtio_read, None, self._on_virtio_write, None)

    def install_hooks(self):
        super().install_hooks()
        controls = self.controls
        if controls.enable_ept and not controls.ept_on_demand:
            return
        cpu = self.cpu                    # the guest's CR0, CR2, CR3 and CR4, as the VMM keeps them
        self.vcpu = VCpu(cr0=cpu["cr0"], cr3=cpu["cr3"], cr4=cpu["cr4"])
        if controls.enable_ept:           # the model's TLB, from the first instruction
            self.shadow = ShadowPageTables(self, vmm_in_guest_space=False, tracing=False)
            self.ept = set()              # guest frames the EPT maps
        else:
            self.shadow = ShadowPageTables(self, vmm_in_guest_space=False)
        for address in control_register_sites(self.image):
            self.uc.hook_add(UC_HOOK_CODE, self._on_control_register, None, address, address)

    def vmexit(self, reason, eip=None, **detail):
        """Record one VM exit (the VMM then handles it, and VM entry resumes the guest)."""
        self.stats["vmexits"] += 1
        key = f"vmexit_{reason}"
        self.stats[key] = self.stats.get(key, 0) + 1
        event = self.record("vmexit", eip=eip, reason=reason, **detail)
        self._last_exit = event.icount
        return event

    # --- interrupts: external-interrupt exiting, event injection, the interrupt window ----------------
    def on_timer(self):
        """With external-interrupt exiting, a tick that makes the PIC offer an interrupt while the guest
        runs is an exit (the device model's kick; see the module)."""
        if (self.controls.external_interrupt_exiting and not self._halted_outside
                and self.pic.pending() is not None):
            self.vmexit("INTR", irq=self.pic.pending(), hardware="EXTERNAL_INTERRUPT",
                        why="the PIT ticked and the PIC raised its interrupt line: the device model kicks the vCPU")

    def inject_interrupt(self):
        if self.shadow is not None and self.shadow.stepping:
            return False
        if not self.controls.external_interrupt_exiting:
            return super().inject_interrupt()
        if self.pic.pending() is None:
            self.interrupt_window = False              # nothing waits: the VMM clears the control
            return False
        if not self.interrupts_enabled() or quirks.irq_inhibited(self.uc):
            self.interrupt_window = True               # the guest cannot take it yet: ask for the window
            return False
        if self.interrupt_window and self._last_exit not in (self.instructions - 1, self.instructions):
            self.vmexit("IRQ_WINDOW_OPEN", hardware="INTERRUPT_WINDOW")
        self.interrupt_window = False
        irq, vector = self.pic.acknowledge()
        self.stats["irqs"] += 1
        self.record("interrupt", irq=irq, vector=vector, injected="VM-entry interruption-information",
                    entry_interruption_info=entry_interruption_info(vector))
        self.deliver(vector, EXTERNAL)
        return True

    # --- I/O instructions --------------------------------------------------------------------------
    def port_access(self, port, size, value, direction, eip):
        """An IO exit if the I/O bitmap selects the port; the device answers either way."""
        if not self.controls.io_exits(port, size):
            return super().port_access(port, size, value, direction, eip)      # not intercepted: no exit
        exit = self.vmexit("IO", eip=eip, port=port, size=size, direction=direction, value=value)
        value = super().port_access(port, size, value, direction, eip)
        if direction == "in":
            exit.detail["value"] = value
        return value

    # --- the MMIO device: loads and stores no memory backs (an EPT violation on VT-x) ---------------
    def _on_mmio_read(self, uc, offset, size, _):
        if self.access_must_wait():                            # stepping over it while run_until waits
            return 0
        with self.inside_access():
            return self.mmio_access(offset, size, "read", None)

    def _on_mmio_write(self, uc, offset, size, value, _):
        if self.access_must_wait():
            return
        with self.inside_access():
            self.mmio_access(offset, size, "write", value & ((1 << (8 * size)) - 1))

    def _on_virtio_read(self, uc, offset, size, _):
        if self.access_must_wait():
            return 0
        with self.inside_access():
            return self.mmio_access(VIRTIO_BASE - MMIO_BASE + offset, size, "read", None)

    def _on_virtio_write(self, uc, offset, size, value, _):
        if self.access_must_wait():
            return
        with self.inside_access():
            self.mmio_access(VIRTIO_BASE - MMIO_BASE + offset, size, "write", value & ((1 << (8 * size)) - 1))

    def mmio_access(self, offset, size, direction, value):
        """A load (`direction` "read") or a store ("write" of `value`) of `size` bytes at `offset` in
        the MMIO device's page: an MMIO exit, then the device answers. Returns the value read (None
        for a store). Called from inside the access, so it must not stop the slice itself."""
        exit = self.mmio_exit(offset, size, direction, value)
        device, offset = (self.mmio, offset) if offset < MMIO_SIZE else (self.virtio, offset - (VIRTIO_BASE - MMIO_BASE))
        if direction == "write":
            device.write(offset, size, value)
            return None
        value = device.read(offset, size)
        exit.detail["value"] = value
        return value

    def mmio_exit(self, offset, size, direction, value):
        """Record the MMIO exit of an access at `offset` in the device's page; returns its event."""
        register = (MmioDevice.register(offset) if offset < MMIO_SIZE
                    else VirtioConsole.register(offset - (VIRTIO_BASE - MMIO_BASE)))
        return self.vmexit("MMIO", address=MMIO_BASE + offset, size=size, direction=direction, value=value,
                           register=register)

    # --- hlt -------------------------------------------------------------------------------------------
    def on_hlt(self):
        """A HLT exit if HLT exiting is on; the vCPU halts either way."""
        if self.controls.hlt_exiting:
            self.vmexit("HLT", eip=self.cpu["eip"] - 1)
            self._halted_outside = True                # a tick now wakes it in user space: no INTR exit
            try:
                super().on_hlt()
            finally:
                self._halted_outside = False
            return
        first = len(self.events)
        super().on_hlt()
        for event in self.events[first:]:
            if event.kind == "halt":
                event.detail["vmm"] = "not told: HLT exiting is off, the vCPU halts inside the guest"

    # --- cpuid -----------------------------------------------------------------------------------------
    def on_cpuid(self, leaf, subleaf):
        """Always a CPUID exit (VT-x cannot run cpuid in the guest); the VMM's answer stands."""
        self.vmexit("CPUID", leaf=leaf, subleaf=subleaf)
        return self.cpuid(leaf, subleaf)

    def cpuid(self, leaf, subleaf=0):
        """The VMM's answer: the CPU's own, with the hypervisor bit set and KVM's signature leaf."""
        if leaf == 0x40000000:
            words = [int.from_bytes(KVM_SIGNATURE[i:i + 4], "little") for i in (0, 4, 8)]
            return (0x40000001, *words)
        eax, ebx, ecx, edx = the_pcs_cpuid(leaf, subleaf)
        if leaf == 1:
            ecx |= HYPERVISOR_PRESENT
        return eax, ebx, ecx, edx

    # --- without EPT: shadow page tables ------------------------------------------------------------
    def _on_control_register(self, uc, address, size, _):
        code = self.cpu.peek(address, 15)
        insn = decode(code, address) if code else None
        if insn is not None and (insn.mnemonic == "invlpg" or (
                insn.mnemonic == "mov" and any(insn.reg_name(op.reg).startswith("cr")
                                               for op in insn.operands if op.type == 1))):
            self.stop("control-register", insn=insn)   # before it runs: the VMM carries it out

    def other_stop(self, stop):
        if stop.kind != "control-register":
            return super().other_stop(stop)
        insn, cpu = stop.detail["insn"], self.cpu
        cpu["eip"] = insn.address + insn.size
        if self.controls.enable_ept:
            return self._tlb_control(insn)
        if insn.mnemonic == "invlpg":
            linear = effective_address(self, insn, insn.operands[0])
            self.vmexit("INVLPG", eip=insn.address, address=linear)
            if self.shadow.on:
                self.shadow.drop_linear(linear)
            return
        dst, src = (insn.reg_name(op.reg) for op in insn.operands)
        vcpu = self.vcpu
        if dst.startswith("cr"):
            value, old = read_register(cpu, src), getattr(vcpu, dst)
            setattr(vcpu, dst, value)
            if dst == "cr2":
                cpu["cr2"] = value
                return
            exit = self.vmexit("CR_ACCESS", eip=insn.address, cr=int(dst[2]), access="mov to cr", value=value)
            effect = self.shadow.control_register_written(dst, old, value)
            if dst == "cr0":
                cpu["cr0"] = (value & ~(CR0_PG | CR0_WP)) | (CR0_PG | CR0_WP if self.shadow.on else value & CR0_WP)
            elif dst == "cr4":
                cpu["cr4"] = value & ~CR4_PSE          # the shadow tables map 4-KiB pages only
            elif not self.shadow.on:
                cpu["cr3"] = value
            if effect:
                exit.detail["shadow"] = effect
            return
        value = cpu["cr2"] if src == "cr2" else getattr(vcpu, src)
        if src == "cr3":
            self.vmexit("CR_ACCESS", eip=insn.address, cr=3, access="mov from cr", value=value)
        write_register(cpu, dst, value)           # CR0 and CR4 through their read shadows: no exit

    # --- with EPT filled on demand: the TLB and the two-dimensional walk ---------------------------------
    def _tlb_control(self, insn):
        """A control-register instruction or invlpg under EPT: no exit. The guest's values are its
        own; a CR3 load, a paging-mode change or an invlpg flushes the model's TLB, as the CPU's."""
        cpu, vcpu = self.cpu, self.vcpu
        if insn.mnemonic == "invlpg":
            self.shadow.drop_linear(effective_address(self, insn, insn.operands[0]))
            return
        dst, src = (insn.reg_name(op.reg) for op in insn.operands)
        if not dst.startswith("cr"):
            write_register(cpu, dst, cpu["cr2"] if src == "cr2" else getattr(vcpu, src))
            return
        value = read_register(cpu, src)
        setattr(vcpu, dst, value)
        if dst == "cr2":
            cpu["cr2"] = value
        elif dst == "cr4":
            cpu["cr4"] = value & ~CR4_PSE
            self.shadow.flush()
        elif dst == "cr0":
            cpu["cr0"] = value | CR0_PG | CR0_WP        # the TLB's tables, whatever the guest's mode
            self.shadow.flush()
        else:
            self.shadow.flush()                           # a CR3 load: every TLB entry goes

    def two_dimensional_walk(self, linear):
        """The references a TLB miss on `linear` makes under EPT, in order: (what, guest-physical
        address); the EPT's own four are named by the guest-physical address they translate. The
        guest's tables as they are now; a 4-MiB guest page has no PTE."""
        refs = []
        for what, gpa in self._guest_references(linear):
            refs += [(f"EPT level {level} for {what}", gpa) for level in range(EPT_LEVELS, 0, -1)]
            if what != "the page":
                refs.append((what, gpa))
        return refs

    def _guest_references(self, linear):
        """(what, guest-physical address) of each guest entry the walk reads, then of the page."""
        vcpu = self.vcpu
        if not vcpu.cr0 & CR0_PG:
            return [("the page", linear)]
        pde_address, pte_address = self.shadow.guest_entry_addresses(linear)
        refs = [("the guest's PDE", pde_address)]
        if pte_address is not None:
            refs.append(("the guest's PTE", pte_address))
        physical = self.cpu.translate(linear, peek=True)
        return refs + ([("the page", physical)] if physical is not None else [])

    def _tlb_miss(self, linear, error_code):
        """A TLB miss: the two-dimensional walk, with an EPT violation for each guest frame the EPT
        does not map yet, then the TLB entry. False when the guest's own tables refuse the access."""
        write, user = bool(error_code & 2), bool(error_code & 4)
        if self.cpu.translate(linear, write, user, peek=True) is None:
            return False
        refs = self._guest_references(linear)
        for what, gpa in refs:
            if gpa < self.memory and gpa >> 12 not in self.ept:
                self.ept.add(gpa >> 12)                   # KVM maps the frame; the guest retries
                self.vmexit("EPT_VIOLATION", gpa=gpa & ~0xFFF, linear=linear, access=what)
        self.stats["tlb_misses"] += 1
        self.stats["walk_references"] += sum(EPT_LEVELS + (what != "the page") for what, _ in refs)
        if not self.vcpu.cr0 & CR0_PG:
            self.shadow.set_shadow(linear, (linear & ~0xFFF) | PTE_P | PTE_RW | PTE_US, linear & ~0xFFF)
            return True
        return shadow_fill(self.shadow, linear, write, user)

    def trace_fault(self, linear, error_code):
        """A guest store to one of its page tables, taken as a #PF exit: carried out, and the shadow follows."""
        self.shadow.trace_store(linear, error_code)

    def slice_length(self, limit):
        if self.shadow is not None and self.shadow.stepping:
            return 1                                   # the store to the traced page, alone
        return super().slice_length(limit)

    def after_slice(self):
        if self.shadow is not None and self.shadow.stepping is not None:
            self.shadow.end_store()

    def deliver(self, vector, source, error_code=None):
        """As the machine's. With shadow tables or the model's TLB, the GDT's pages are filled first:
        Unicorn loads CS and SS from the GDT outside the guest's run, where it cannot take a fault."""
        if self.shadow is not None and self.shadow.on:
            base, limit = self.cpu.table(X.UC_X86_REG_GDTR)
            for page in range(base & ~0xFFF, base + limit + 1, 0x1000):
                entry = self.shadow.shadow_entry(page)
                if entry is None or entry[1] & (PTE_P | PTE_RW) != PTE_P | PTE_RW:
                    self._implicit_fill(page)
        super().deliver(vector, source, error_code)

    def _implicit_fill(self, linear):
        """The CPU's own access to a GDT page the TLB or the shadow does not hold yet: it reads a
        descriptor, and writes its accessed bit, so the page is filled for a write where the guest
        allows one."""
        write = self.cpu.translate(linear, True, peek=True) is not None
        code = 2 if write else 0
        if self.controls.enable_ept:
            self._tlb_miss(linear, code)
        elif self.shadow.handlers["hidden-fault"](self.shadow, linear, write, False):
            self.vmexit("EXCEPTION", vector=PF_, name=vector_name(PF_), error_code=code)
            self.stats["hidden_faults"] += 1
            self.record("hidden-fault", linear=linear, error_code=code, fills=1, implicit=True)

    def _guest_error_code(self, linear, error_code):
        """The error code the guest's own walk gives (its A bits set as the CPU sets them)."""
        try:
            self.cpu.translate(linear, bool(error_code & 2), bool(error_code & 4))
        except Fault as fault:
            return fault.error_code
        return error_code

    # --- exceptions and the triple fault -------------------------------------------------------------
    def exception(self, vector, source, error_code=None):
        """An EXCEPTION exit if the bitmap selects the vector; then injected back into the guest.
        Without EPT every #PF exits, and the shadow MMU decides whether the guest sees it."""
        at = self.instruction_address(source)
        if vector == PF_ and source == EXCEPTION and self.shadow is not None and self.controls.enable_ept:
            self.fault_handled()
            linear = self.cpu["cr2"]
            if self._tlb_miss(linear, error_code):
                self.cpu["cr2"] = self.vcpu.cr2           # a TLB miss is no fault: the guest's CR2 stays
                return
            self.vcpu.cr2 = linear                        # the guest's own #PF: no exit under EPT
            return Machine.exception(self, vector, source, self._guest_error_code(linear, error_code))
        if vector == PF_ and source == EXCEPTION and self.shadow is not None and self.shadow.on:
            self.vmexit("EXCEPTION", eip=at, vector=vector, name=vector_name(vector), error_code=error_code)
            self.fault_handled()
            error_code = self.shadow.handle_fault(error_code)
            if error_code is not None:
                Machine.exception(self, vector, source, error_code)   # a true fault: injected
            return
        if self.controls.exception_exits(vector) and (
                source == EXCEPTION or (source == SOFTWARE and self.cpu.read(at, 1)[0] in (INT3, INTO))):
            self.vmexit("EXCEPTION", eip=at, vector=vector, name=vector_name(vector), error_code=error_code)
        super().exception(vector, source, error_code)             # injected back into the guest

    def record(self, kind, eip=None, cpl=None, **detail):
        """As the machine's; a triple fault (a shutdown event) is a SHUTDOWN exit first."""
        if kind == "shutdown":
            self.vmexit("SHUTDOWN", eip=eip)                        # VT-x exits on a triple fault
        return super().record(kind, eip, cpl, **detail)


def control_register_sites(image):
    """Where in the image a mov to or from a control register (0F 20, 0F 22) or an invlpg (0F 01 /7
    with a memory operand) may start, at the addresses the code runs at."""
    code = image.code
    for i in range(len(code) - 2):
        if code[i] == 0x0F and (code[i + 1] in (0x20, 0x22) or (
                code[i + 1] == 0x01 and (code[i + 2] >> 3) & 7 == 7 and code[i + 2] >> 6 != 3)):
            yield image.linked(image.origin + i)
