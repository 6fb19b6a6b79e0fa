"""Trap-and-emulate: a VMM that runs the guest kernel deprivileged and emulates what traps.

Ring compression: the guest kernel, written for ring 0, runs in ring 1; its user programs stay in
ring 3. The real GDT and IDT are the VMM's *shadow* tables, copies of the guest's own with every
DPL 0 turned into 1, so the guest's selectors keep working one ring out. The real privileged
state (IF, IOPL, the control registers, GDTR, IDTR, TR) belongs to the VMM; the guest's version of
it lives in a virtual CPU.

In ring 1 every privileged instruction raises #GP: a trap into the VMM, which decodes the
instruction, emulates it against the virtual CPU or the device model, and resumes the guest after
it. Exceptions and `int n` trap too; the VMM reflects them into the guest's own handlers through
the shadow IDT. Every `int n` trapping is this VMM's choice, not a law: a gate of DPL 3 could be
left in the shadow IDT for ring 3 to use directly, as x86_32 Xen did for a PV kernel's int 0x80.
Timer interrupts are injected only when the VMM has control (at a trap or at a tick of its own
timer), and only while the guest would take them: in its kernel while the virtual IF is set, and
always while user code runs in ring 3 (the kernel's iret into ring 3 does not trap, so the virtual
IF is not updated for it; user code runs with interrupts on).

A guest that turns paging on runs on shadow page tables (vmkit.vmm.shadow_paging): CR3 loads trap
and switch shadow roots, the guest's page-table pages are write-protected so its stores to them
trace, and a #PF on the shadow is a hidden fault the VMM fills or a true fault it reflects.

What this VMM cannot see is the point of the lesson: instructions that are sensitive but do not
trap in ring 1. popf and iret cannot change the virtual IF, pushf shows the real flags, reading CS
shows RPL 1, and sgdt, sidt, str and smsw show the VMM's values. Nothing here papers over them.
"""
from functools import lru_cache

from unicorn import UC_HOOK_MEM_WRITE
from unicorn import x86_const as X

from ..errors import GuestError
from ..machine.delivery import EXCEPTION, SOFTWARE
from ..machine.cpu import Fault
from ..machine.machine import LONGEST_SLICE, Machine
from ..machine.platform import BOOT_CS, BOOT_DS, BOOT_GDT, BOOT_GDT_LIMIT, DEFAULT_MEMORY, STACK_TOP
from ..machine.x86 import GP, IF, NP, PF_, decode_descriptor, encode_descriptor, vector_name
from .emulate import EMULATORS, decode, operand_value
from .shadow_paging import ShadowPageTables
from .vcpu import VCpu

VMM_BASE = 0xFFC00000             # the VMM's own memory, outside the guest's RAM
VMM_SIZE = 0x20000
SHADOW_GDT = VMM_BASE             # room for all 8192 descriptors
SHADOW_IDT = VMM_BASE + 0x10000
VMM_TSS = VMM_BASE + 0x11000
SHADOW_LDT = VMM_BASE + 0x12000   # the rest of the VMM's memory: room for 7168 descriptors
SHADOW_LDT_SIZE = VMM_SIZE - 0x12000
VMM_LDT_SELECTOR = 0xFFE0         # the shadow GDT's slot for the shadow LDT: the real LDTR
VMM_TSS_SELECTOR = 0xFFF8         # the shadow GDT's last slot: the real TR while the guest runs
# The real TR's cached access rights: an *available* 32-bit TSS (type 9), as QEMU's helper_ltr
# caches them (it loads TR from the descriptor before it sets the busy bit in memory). A far call
# through a call gate into an inner ring makes Unicorn read the new stack from this TSS
# (get_ss_esp_from_tss in QEMU's target/i386 seg_helper.c), and that function aborts the whole
# process unless (type & 7) == 1: a busy type (0xB) here ends in SIGABRT.
VMM_TSS_RIGHTS = 0x8900
DPL_BITS = 0x60
# the instructions that reach a port: what IOPL and the TSS's I/O bitmap decide (SDM vol. 1, 19.5)
IO_INSTRUCTIONS = frozenset({"in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd"})
TRAP_STATE = ("eip", "cs", "cr0")   # what handle_trap reads of the CPU, in one call
# What the compiled cli/sti traps (Machine.traps_compiled) stand for: a subclass that overrides any of
# these decides differently what a trap does, and gets its traps in Python.
COMPILED_TRAPS_STAND_FOR = ("exception", "handle_trap", "record", "inject_interrupt", "interrupts_enabled",
                            "slice_length", "slice_may_go_on", "after_slice", "interrupt_shadow",
                            "fault_handled", "guest_instructions", "compiled_trap")


@lru_cache(maxsize=4096)            # a VMM meets the same few instructions again and again
def _decoded(code, address):
    """The instruction at `address` (vmkit.vmm.emulate.decode), its text for events, the name its
    emulator is filed under ("rep outsb" -> "outsb") and its length (capstone computes each of
    these on every access, so they are kept here); (None, "?", None, 0) when it does not decode."""
    insn = decode(code, address)
    if insn is None:
        return None, "?", None, 0
    return insn, f"{insn.mnemonic} {insn.op_str}".strip(), insn.mnemonic.split()[-1], insn.size


def compress(table):
    """Ring compression of descriptors: every code or data segment of DPL 0 gets DPL 1."""
    table = bytearray(table)
    for offset in range(0, len(table) - 7, 8):
        if table[offset + 5] & 0x10 and not table[offset + 5] & DPL_BITS:
            table[offset + 5] |= 0x20
    return bytes(table)


@lru_cache(maxsize=64)              # every delivery syncs the shadow IDT; the guest's IDT seldom changes
def shadow_gates(table):
    """Ring compression of an IDT: every gate of DPL 0 gets DPL 1, and its handler's selector RPL 1."""
    table = bytearray(table)
    for offset in range(0, len(table) - 7, 8):
        if not table[offset + 5] & DPL_BITS:
            table[offset + 5] |= 0x20
        table[offset + 2] |= 1                        # the handler's selector, RPL 1
    return bytes(table)


class TrapAndEmulate(Machine):
    """The vmkit PC with a trap-and-emulate VMM between it and the guest.

    `emulators` maps a mnemonic to a handler(vmm, insn) -> description (see vmkit.vmm.emulate);
    a lab can pass its own table. An instruction without a handler is reflected to the guest as #GP.
    `shadow_handlers` replaces the shadow MMU's hidden-fault and trace handlers
    (vmkit.vmm.shadow_paging.SHADOW_HANDLERS).
    """
    watch_interrupt_window = False    # this VMM only learns what its traps tell it

    def __init__(self, image, memory=DEFAULT_MEMORY, *, emulators=None, shadow_handlers=None, **budgets):
        self.vcpu = VCpu()
        self.emulators = dict(EMULATORS) if emulators is None else dict(emulators)
        self._shadow_handlers = shadow_handlers
        self._vmm_entry = False       # the VMM has control: the only moment it can inject an interrupt
        self._shadow_sti = False
        self._store_waits = False
        self._gdt_trace = None
        self._ldt_trace = None
        self._guest_ldt = bytearray()
        self._shadow_gdt_size = 0
        self._traps_compile = None    # traps_compiled(): whether this class handles traps as this one does
        super().__init__(image, memory, counted=True, technique="trap-and-emulate", **budgets)
        self.stats.update(hidden_faults=0, true_faults=0, trace_faults=0)

    # --- boot: the guest kernel starts in ring 1 on the shadow tables ------------------------------
    def boot_state(self):
        super().boot_state()
        self.uc.mem_map(VMM_BASE, VMM_SIZE)
        self.cpu.regions.append((VMM_BASE, VMM_SIZE))
        tss = (VMM_TSS & 0xFFFFFF, VMM_TSS >> 24)
        self.uc.mem_write(SHADOW_GDT + VMM_TSS_SELECTOR, bytes.fromhex("6700") + tss[0].to_bytes(3, "little")
                          + bytes([0x89, 0x00, tss[1]]))
        self.uc.mem_write(VMM_TSS + 102, (104).to_bytes(2, "little"))      # no I/O bitmap: every port traps
        self.uc.reg_write(X.UC_X86_REG_TR, (VMM_TSS_SELECTOR, VMM_TSS, 103, VMM_TSS_RIGHTS))
        self.load_gdt(BOOT_GDT, BOOT_GDT_LIMIT)
        self.load_idt(0, 0)
        self.cpu.far_transfer(1, BOOT_CS | 1, BOOT_DS | 1, STACK_TOP, self.image.entry, 0x2 | IF)

    def install_hooks(self):
        super().install_hooks()
        self.vcpu.cr4 = self.cpu["cr4"]   # the CR4 the platform boots with (Unicorn's CPU model sets some bits)
        self.shadow = ShadowPageTables(self, self._shadow_handlers)   # once all the VMM's memory is mapped
        # the CPU reads a gate from the shadow IDT, but a gate on a page the guest has not mapped is a #PF
        self.cpu.stand_ins.append((SHADOW_IDT, 256 * 8, lambda: self.vcpu.idtr[0]))

    # --- what the machine asks its CPU ----------------------------------------------------------------
    def interrupts_enabled(self):
        # user code always runs with interrupts on; in the kernel, the virtual IF decides
        return self.vcpu.interrupt_flag or self.cpu.cpl == 3

    def inject_interrupt(self):
        # only when the VMM has control (a trap, its timer), not in the shadow of an emulated sti,
        # and not while the CPU carries out a store to a traced page
        if not self._vmm_entry or self._shadow_sti or self.shadow.stepping:
            return False
        self._vmm_entry = False
        return super().inject_interrupt()

    def slice_length(self, limit):
        if self.shadow.stepping:          # one instruction: the store to the traced page
            return 1
        if self._store_waits:             # one instruction: the store to the traced GDT (_on_gdt_write)
            self._store_waits = False
            return 1
        if self._shadow_sti:              # the instruction after an emulated sti runs before any interrupt
            self._shadow_sti = False
            return 1
        return self._free_slice_length(limit)

    def _free_slice_length(self, limit):
        """The next slice's length when the VMM does not need one instruction alone: up to the timer's
        next tick, the budget, `limit`."""
        n = min(limit, LONGEST_SLICE)
        if self.max_instructions is not None:
            n = min(n, self.max_instructions - self.instructions)
        if self.pit.armed() and self.pic.irq0_enabled():
            n = min(n, self.pit.next_tick() - self.clock)
        return max(n, 1)

    def slice_may_go_on(self, limit, remaining):
        """A trap handled inside the slice (see Machine.slice_may_go_on). After an emulated sti the
        next slice would be that one instruction alone, and then the VMM would look for an interrupt
        to inject: with none pending that look only ends the VMM's entry (inject_interrupt), and in
        that one instruction nothing raises one without a trap of its own (handled in turn) or the
        timer's tick (which must then be two instructions away or more). So with nothing pending the
        guest goes on, once the look is done here."""
        if self.shadow.stepping is not None or self._store_waits:
            return False
        n = self._free_slice_length(limit)
        if not self._shadow_sti:
            return n >= remaining
        if self.pic.pending() is not None or remaining < 2 or n < remaining:
            return False
        self._shadow_sti = self._vmm_entry = False
        return True

    def on_timer(self):
        self._vmm_entry = True            # the VMM's own timer interrupt gives it control

    # --- a trap: the guest raised an exception, int n or a refused I/O access ------------------------
    def exception(self, vector, source, error_code=None, cause=None):
        """Every exception, int n and refused I/O access of the guest traps to the VMM: handle_trap().
        A #PF on the shadow tables goes to the shadow MMU first (shadow_page_fault)."""
        if vector == PF_ and source == EXCEPTION and self.shadow.on:
            error_code = self.shadow_page_fault(error_code)
            if error_code is None:
                return
        self.handle_trap(vector, source, error_code, cause)

    def after_slice(self):
        if self.shadow.stepping is not None:
            self.shadow.end_store()           # the store ran (or faulted): protect the page again

    # --- shadow page tables -----------------------------------------------------------------------------
    def shadow_page_fault(self, error_code):
        """The CPU faulted on the shadow tables at CR2: the shadow MMU sorts it out
        (ShadowPageTables.handle_fault). None when the guest never sees it; else the guest's error code."""
        self.fault_handled()
        self._vmm_entry = True
        outcome = self.shadow.handle_fault(error_code)
        if outcome is None:
            self.stats["traps"] += 1                      # a true fault is counted by handle_trap, which reflects it
        return outcome

    def trace_fault(self, linear, error_code):
        """A guest store to one of its page tables (called by the shadow MMU): recorded as a trap,
        then carried out (ShadowPageTables.trace_store)."""
        self.record("trap", cause="write to a traced page table", vector=PF_, error_code=error_code,
                    instruction=self._instruction_text(self.cpu["eip"]), linear=linear)
        self.shadow.trace_store(linear, error_code)

    def control_register_written(self, name, old, new):
        """The guest wrote CR0, CR3 or CR4 (emulated): what the shadow MMU does about it, or None."""
        return self.shadow.control_register_written(name, old, new)

    def handle_trap(self, vector, source, error_code=None, cause=None):
        """A trap at the guest instruction EIP points at: record it, and emulate a #GP from an
        instruction with a handler in `emulators` (resuming after it); reflect anything else into
        the guest. `cause` names the trap in its event (by default the vector).

        Every trap comes through here, so its own cost is the VMM's: the state it needs (EIP, CS
        for the ring, CR0 for whether the fetch goes through page tables) is read in one call into
        the engine, and an instruction met before is not decoded again."""
        cpu = self.cpu
        eip, cs, cr0 = cpu.get(TRAP_STATE)
        ring = cs & 3
        at = eip if source != SOFTWARE else self.instruction_address(source)
        paging = cpu.paging(cr0)
        code = cpu.peek(at, 15, paging) or cpu.peek(at, 0x1000 - (at & 0xFFF), paging)
        insn, text, name, size = _decoded(code, at) if code else (None, "?", None, 0)
        self.stats["traps"] += 1
        self._vmm_entry = True
        cause = cause or (f"int {vector:#x}" if source == SOFTWARE else vector_name(vector))
        self.record("trap", eip=at, cpl=ring, cause=cause, vector=vector, instruction=text, error_code=error_code)
        handler = self.emulators.get(name) if insn else None
        if handler is not None and vector == GP and source == EXCEPTION and (ring == 1 or self._guest_may(insn, ring)):
            self.fault_handled()                          # the fault is handled here
            cpu["eip"] = at + size
            try:
                effect = handler(self, insn)
            except Fault as fault:                        # the instruction faults on the guest's machine too
                cpu["eip"] = at
                return self._reflect(fault.vector, EXCEPTION, fault.error_code)
            if effect is not None:
                self.record("emulate", eip=at, cpl=ring, instruction=text, effect=effect)
                return
            cpu["eip"] = at                               # the handler declined: the guest's #GP
        self._reflect(vector, source, error_code)

    def traps_compiled(self):
        """The commonest trap, a cli or sti in the guest kernel, is moved past in C (hooks.c,
        vmkit_vmm_trap) and emulated here when it is recorded (compiled_trap), where handle_trap would
        do nothing more: the handlers for cli and sti are the shipped ones, no store to a traced page
        or GDT and no sti shadow is being let through, and no subclass decides otherwise."""
        if self._traps_compile is None:
            kind = type(self)
            self._traps_compile = all(getattr(kind, name) is getattr(TrapAndEmulate, name)
                                      for name in COMPILED_TRAPS_STAND_FOR)
        emulators = self.emulators
        return (self._traps_compile and emulators.get("cli") is EMULATORS["cli"]
                and emulators.get("sti") is EMULATORS["sti"] and self.shadow.stepping is None
                and not self._store_waits and not self._shadow_sti)

    def compiled_trap(self, eip, opcode, error_code, icount):
        """A cli or sti of the guest kernel's that trapped, and that the compiled hooks moved past: the
        same "trap" and "emulate" events as handle_trap's, and the same emulation. What the slice's
        going on after it then did (Machine._hook_may_go_on) is done too: the VMM's entry ends with
        nothing to inject, and an sti's shadow has passed (hooks.c left room for it)."""
        insn, text, name, _ = _decoded(bytes((opcode,)), eip)
        self.stats["traps"] += 1
        self.keep_event("trap", eip, 1, icount, cause=vector_name(GP), vector=GP, instruction=text,
                        error_code=error_code)
        effect = self.emulators[name](self, insn)
        self.keep_event("emulate", eip, 1, icount, instruction=text, effect=effect)
        self._shadow_sti = self._vmm_entry = False

    def guest_msr(self, index):
        """The guest's wrmsr traps and writes the virtual CPU: its MSRs are there."""
        return self.vcpu.msr.get(index, 0)

    def on_sysenter(self):
        """sysenter: on a real CPU under this VMM, IA32_SYSENTER_CS/ESP/EIP are the VMM's own (the
        guest's wrmsr traps and only changes the virtual CPU), so sysenter enters the VMM in ring 0:
        a trap. The VMM then does what SYSENTER would have done on the guest's machine (SDM vol. 2B,
        SYSENTER), from the guest's MSRs, one ring out: the guest kernel starts at its
        IA32_SYSENTER_EIP in ring 1 on the ring-1 twins of its CS and SS, with the *virtual* IF
        cleared (the real one stays on for the VMM's timer)."""
        cpu = self.cpu
        at = cpu["eip"] - 2
        self.stats["traps"] += 1
        self._vmm_entry = True
        self.record("trap", eip=at, cause="sysenter", vector=None, instruction="sysenter", error_code=None)
        if cpu.cpl == 3:
            self.leave_user_mode()
        if self.fast_system_call(at, ring=1):
            self.vcpu.interrupt_flag = False
            self.kernel_entered()

    def record(self, kind, eip=None, cpl=None, **detail):
        """As the machine's; a far call through a call gate into the kernel is recorded before the
        CPU carries it out, from the VMM's TSS: that is the moment to give it the stack the guest's
        TSS names for ring 0 (the guest may have changed it since the last delivery)."""
        if kind == "ring-transition" and detail.get("cause") == "call gate":
            self._sync_ring1_stack()
        return super().record(kind, eip, cpl, **detail)

    def kernel_entered(self):
        """The VMM has moved its guest into the kernel (ring 1) itself: the real IF stays on, for the
        VMM's timer."""
        self.cpu["eflags"] |= IF

    def leave_kernel(self):
        """The VMM is about to move its guest out of the kernel to user code (sysexit)."""

    def enter_user_mode(self):
        """The guest is in user code after a transfer the VMM carried out (sysexit): user code runs
        with interrupts on (see interrupts_enabled); nothing else to do here."""

    def leave_user_mode(self):
        """Guest user code is being interrupted: it always runs with interrupts on, so the kernel's
        handler starts from a virtual IF of 1."""
        self.vcpu.interrupt_flag = True

    def _guest_may(self, insn, ring):
        """Would the guest have been allowed this instruction on its own machine? Its kernel (ring 1
        here) runs at virtual CPL 0; its user code may do I/O only as the guest's IOPL and its TSS's
        I/O bitmap allow."""
        if ring == 1:
            return True
        name = insn.mnemonic.split()[-1]
        if name not in IO_INSTRUCTIONS:   # invd and invlpg are not I/O, whatever their names begin with
            return False
        if self.vcpu.iopl == 3:
            return True
        port_op = [op for op in insn.operands if op.type != 3][0 if name.startswith("out") else -1]
        port = operand_value(self, insn, port_op) & 0xFFFF
        size = insn.operands[-1 if name.startswith("out") else 0].size
        selector, (gdt, limit) = self.vcpu.tr, self.vcpu.gdtr
        if selector & ~7 == 0 or (selector & ~7) + 7 > limit:
            return False
        tss = decode_descriptor(self.cpu.read(gdt + (selector & ~7), 8, "the guest's GDT"))
        return self.cpu.io_bitmap_allows(tss.base, tss.limit, port, size)

    def _reflect(self, vector, source, error_code):
        """Deliver into the guest's own handler, as the guest's IDT says, one ring out."""
        self.deliver(vector, source, error_code)

    def deliver(self, vector, source, error_code=None):
        """Through the shadow IDT, one ring out; an interrupt gate clears the virtual IF, not the real one."""
        self._sync_shadow_idt()
        self._sync_ring1_stack()
        if self.cpu.cpl == 3:
            self.leave_user_mode()
        first, cr2 = len(self.events), self.cpu["cr2"]
        super().deliver(vector, source, error_code)
        if self.cpu["cr2"] != cr2:
            self.vcpu.cr2 = self.cpu["cr2"]               # a #PF during delivery: the guest's CR2
        for event in self.events[first:]:
            if event.kind == "ring-transition":
                event.detail["reflected"] = True
                if event.detail.get("if_cleared"):
                    self.vcpu.interrupt_flag = False      # an interrupt gate clears the *virtual* IF
        if not self.finished:
            self.cpu["eflags"] |= IF                      # the real IF stays on: the VMM needs its timer

    # --- the shadow tables ------------------------------------------------------------------------------
    def load_gdt(self, base, limit):
        self.vcpu.gdtr = (base, limit)
        self._rebuild_shadow_gdt()
        # the guest's GDT is traced: a write to it traps, so the shadow copy can follow
        if self._gdt_trace is not None:
            self.uc.hook_del(self._gdt_trace)
        self._gdt_trace = self.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_gdt_write, None, base, base + limit)
        self.uc.reg_write(X.UC_X86_REG_GDTR, (0, SHADOW_GDT, 0xFFFF, 0))

    def _rebuild_shadow_gdt(self):
        base, limit = self.vcpu.gdtr
        self._guest_gdt = bytearray(self.cpu.read(base, limit + 1, "the guest's GDT"))
        stale = max(self._shadow_gdt_size - len(self._guest_gdt), 0)
        self.uc.mem_write(SHADOW_GDT, self.shadow_descriptors(self._guest_gdt) + bytes(stale))
        self._shadow_gdt_size = len(self._guest_gdt)

    def load_ldt(self, selector):
        """lldt: the checks the CPU makes (SDM vol. 2A, LLDT: a null selector leaves LDTR unusable;
        #GP(selector) for a selector with TI set, past the GDT's limit or not naming an LDT
        descriptor; #NP(selector) for one not present), then the virtual LDTR and the shadow LDT.

        The shadow LDT is kept as the shadow GDT is: a copy of the guest's LDT with ring compression,
        in the VMM's memory, and the guest's LDT traced, so that every write to it reaches the copy.
        The real LDTR is the VMM's (VMM_LDT_SELECTOR), as the real TR is: `sldt` does not trap, so
        under this VMM it reads the VMM's selector, not the guest's (one of the holes)."""
        base, limit = self.vcpu.gdtr
        if selector & ~3 == 0:
            self.vcpu.ldtr, self.vcpu.ldt = selector, (0, 0)
            self._use_shadow_ldt(None)
            return
        if selector & 4 or (selector & ~7) + 7 > limit:
            raise Fault(GP, selector & ~3)
        descriptor = decode_descriptor(self.cpu.read(base + (selector & ~7), 8, "the guest's GDT"))
        if descriptor.s or descriptor.type != 0x2:
            raise Fault(GP, selector & ~3)
        if not descriptor.present:
            raise Fault(NP, selector & ~3)
        if descriptor.limit + 1 > SHADOW_LDT_SIZE:
            self.unsupported(f"an LDT of {descriptor.limit + 1} bytes (the shadow LDT holds {SHADOW_LDT_SIZE})")
        self.vcpu.ldtr, self.vcpu.ldt = selector, (descriptor.base, descriptor.limit)
        self._use_shadow_ldt(descriptor)

    def _use_shadow_ldt(self, descriptor):
        if self._ldt_trace is not None:
            self.uc.hook_del(self._ldt_trace)
            self._ldt_trace = None
        if descriptor is None:
            self._guest_ldt = bytearray()
            self.uc.reg_write(X.UC_X86_REG_LDTR, (0, 0, 0, 0))
            return
        base, limit = descriptor.base, descriptor.limit
        self._guest_ldt = bytearray(self.cpu.read(base, limit + 1, "the guest's LDT"))
        self.uc.mem_write(SHADOW_LDT, self.shadow_descriptors(self._guest_ldt))
        self.uc.mem_write(SHADOW_GDT + VMM_LDT_SELECTOR, encode_descriptor(SHADOW_LDT, limit, 0x82, 0))
        self.uc.reg_write(X.UC_X86_REG_LDTR, (VMM_LDT_SELECTOR, SHADOW_LDT, limit, 0x8200))
        self._ldt_trace = self.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_ldt_write, None, base, base + limit)

    def load_idt(self, base, limit):
        self.vcpu.idtr = (base, limit)
        self.uc.reg_write(X.UC_X86_REG_IDTR, (0, SHADOW_IDT, limit, 0))

    def shadow_descriptors(self, table):
        """The shadow GDT's copy of guest descriptors: ring compression."""
        return compress(table)

    def _sync_shadow_idt(self):
        """The shadow IDT: the guest's gates, with their DPL and their handler's ring compressed."""
        base, limit = self.vcpu.idtr
        if limit == 0:
            return
        size = min(limit + 1, 256 * 8)
        table = self.cpu.peek(base, size)
        if table is None:                 # part of it is not mapped: the gates that are
            table = b"".join(self.cpu.peek(base + offset, 8) or bytes(8) for offset in range(0, size & ~7, 8))
        self.uc.mem_write(SHADOW_IDT, shadow_gates(table))

    def _sync_ring1_stack(self):
        """The VMM's TSS gives ring 1 the stack the guest's TSS gives ring 0."""
        selector = self.vcpu.tr
        if selector & ~7 == 0:
            return
        base, limit = self.vcpu.gdtr
        if (selector & ~7) + 7 > limit:
            return
        tss = decode_descriptor(self.cpu.read(base + (selector & ~7), 8, "the guest's GDT")).base
        raw = self.cpu.read(tss + 4, 8, "the guest's TSS")                 # esp0, ss0
        self.uc.mem_write(VMM_TSS + 12, raw[:4] + bytes([raw[4] | 1, raw[5], 0, 0]))   # esp1, ss1

    def _on_gdt_write(self, uc, access, address, size, value, _):
        self._on_table_write("GDT", address, size, value)

    def _on_ldt_write(self, uc, access, address, size, value, _):
        self._on_table_write("LDT", address, size, value)

    def _on_table_write(self, table, address, size, value):
        """A write to the traced GDT or LDT (a page-protection fault on real hardware): the VMM lets
        it happen and updates the shadow entry. The hook runs before the write lands, so the new
        bytes come from `value`.

        The write must complete, and be traced, exactly once. Stopping Unicorn inside a memory
        access abandons the instruction, so while run_until waits for an event (a stepper's
        next_event) the slice first stops in front of the store (access_must_wait) and the next
        slice runs it alone; its events are recorded inside_access, which ends the slice after it.
        Otherwise every trap event would stop the store before it landed, and it would trap again,
        forever, with EIP never moving."""
        if self.access_must_wait():
            self._store_waits = True      # the next slice is that one instruction
            return
        with self.inside_access():
            self._trace_table_write(table, address, size, value)

    def _trace_table_write(self, table, address, size, value):
        guest, shadow, base = ((self._guest_gdt, SHADOW_GDT, self.vcpu.gdtr[0]) if table == "GDT"
                               else (self._guest_ldt, SHADOW_LDT, self.vcpu.ldt[0]))
        data = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")
        offset = address - base
        if offset < 0:                                  # a store that begins below the table
            data, offset = data[-offset:], 0
        data = data[:max(len(guest) - offset, 0)]       # ... or runs past its end
        if not data:
            return
        guest[offset:offset + len(data)] = data
        first, last = offset // 8 * 8, (offset + len(data) - 1) // 8 * 8 + 8
        self.uc.mem_write(shadow + first, self.shadow_descriptors(bytes(guest[first:last])))
        self.stats["traps"] += 1
        self._vmm_entry = True
        text = self._instruction_text(self.cpu["eip"])
        self.record("trap", cause=f"write to the traced {table}", vector=None, instruction=text, error_code=None)
        self.record("emulate", instruction=text, effect=f"shadow {table} entry {offset // 8} follows the guest's")

    def _instruction_text(self, address):
        code = self.cpu.peek(address, 15) or self.cpu.peek(address, 0x1000 - (address & 0xFFF))
        return _decoded(code, address)[1] if code else "?"

    # --- services for the emulation handlers ------------------------------------------------------------
    def load_tr(self, selector):
        """ltr: the checks the CPU makes (SDM: LTR), then the virtual TR."""
        base, limit = self.vcpu.gdtr
        if selector & ~3 == 0:
            raise Fault(GP, 0)
        if selector & 4 or (selector & ~7) + 7 > limit:
            raise Fault(GP, selector & ~3)
        descriptor = decode_descriptor(self.cpu.read(base + (selector & ~7), 8, "the guest's GDT"))
        if descriptor.s or descriptor.type not in (0x1, 0x9):
            raise Fault(GP, selector & ~3)                # only an available TSS
        if not descriptor.present:
            raise Fault(NP, selector & ~3)
        self.vcpu.tr = selector
        if (selector & ~7) + 7 <= limit:
            access = base + (selector & ~7) + 5
            kind = self.cpu.read(access, 1)[0]
            if kind & 0x1F == 0x09:                      # ltr marks the guest's TSS busy, as the CPU would
                self.cpu.write(access, bytes([kind | 2]), "the guest's GDT")
                self._rebuild_shadow_gdt()

    def load_ss(self, selector):
        """mov ss with a ring-0 selector: the VMM loads its ring-1 twin."""
        base, limit = self.vcpu.gdtr
        if selector & 3 or selector & ~7 == 0 or (selector & ~7) + 7 > limit:
            return None
        descriptor = decode_descriptor(self.cpu.read(base + (selector & ~7), 8))
        if not descriptor.writable or descriptor.dpl != 0 or not descriptor.present:
            return None
        self.cpu["ss"] = selector | 1
        return f"SS <- {selector | 1:#x} (the ring-1 twin of {selector:#x})"

    def port_out(self, port, size, value):
        self.port_access(port, size, value, "out", self.cpu["eip"])
        if self.debug_exit.exit_code is not None and not self.finished:
            self.finish(self.debug_exit.exit_code)
        elif self.ports.get(port) in (self.pic, self.pit):
            self._vmm_entry = True

    def port_in(self, port, size):
        return self.port_access(port, size, None, "in", self.cpu["eip"])

    def interrupt_shadow(self):
        self._shadow_sti = True

    def halt(self):
        self.on_hlt()
        self._vmm_entry = True

    def unsupported(self, what):
        raise GuestError(f"the guest asked for {what}, which the course's trap-and-emulate and "
                         f"binary-translation VMMs do not model", self.result())
