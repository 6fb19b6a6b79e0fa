"""Binary translation: the guest kernel runs only as translated code, so nothing it does escapes
the VMM, not even the instructions that never trap.

This is VMware's answer (Adams & Agesen, ASPLOS 2006) to the holes of trap-and-emulate. The guest
kernel still runs deprivileged in ring 1 on the shadow tables of trap-and-emulate (this VMM is
that one, extended), but the CPU never executes the kernel's own bytes: every block of kernel code
is first translated into the translation cache (vmkit.vmm.translator), in VMM memory the guest's
segments are truncated below. There `cli` and `sti` become stores to the virtual IF, `pushf` and
`popf` work on the virtual flags, reads of CS show the virtual CS, and what remains privileged or
sensitive calls out to the VMM, which emulates it with trap-and-emulate's handlers. Guest user
code (ring 3) runs directly, untranslated, as it did before.

A guest that pages runs on trap-and-emulate's shadow page tables, with Adams & Agesen's *adaptive*
binary translation (ASPLOS 2006, 3.3) on top: a guest instruction that keeps storing to the guest's
page tables, and so keeps taking trace faults, is retranslated into a call-out that carries out its
store with no fault at all (ADAPT_AFTER).

The guest sees what it would see on its own machine: interrupt frames carry its own CS and its
virtual IF, `iret` and far transfers are emulated at its virtual CPL 0, and GS, which the
translated code uses to reach the VMM's data page, is swapped back to the guest's on the way out
to ring 3.

Its budget and clock count what the bare machine counts, the guest's own instructions: each unit of
the cache adds the guest instructions it stands for to a count in the VMM's data page, and
guest_instructions makes each slice exact; stats["cpu_instructions"] is what the CPU ran.

Long because: one VMM owns the cache, every kind of call-out, the far transfers and segment loads
its guest kernel makes at virtual CPL 0, and adaptive translation; each part is short and works on
the same state.
"""
import dataclasses

from unicorn import UC_HOOK_INTR, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE

from ..errors import GuestError, VmkitError
from ..machine.delivery import EXCEPTION, SOFTWARE
from ..machine.machine import CALL_GATE_32
from ..machine.platform import BOOT_CS, DEFAULT_MEMORY
from ..machine.cpu import PAGE, Fault
from ..machine.x86 import DB, GP, IF, IOPL_MASK, NP, PF_, SS_, TS, UD, decode_gate, encode_descriptor
from . import emit
from .emulate import (EMULATORS, FLAGS, SENSITIVE_READS, guest_descriptor, decode, effective_address, operand_value,
                      write_operand, write_register)
from .trap_emulate import SHADOW_GDT, VMM_BASE, TrapAndEmulate, compress
from .translation_cache import TranslationCache
from .translator import DATA_SIZE, GUEST_TARGET, ICOUNT, PENDING, UNROLL, VGS, VIF, VIOPL, VMM_GS, Translator
from .vcpu import VCpu

VMM_DATA = VMM_BASE + 0x20000           # the data page translated code reaches through GS
CACHE_BASE = VMM_BASE + 0x100000        # the translation cache
DEFAULT_CACHE_SIZE = 0x100000
MAX_CACHE_SIZE = 0x300000
GUEST_OWNED_FLAGS = 0x244DD5           # the arithmetic flags, TF, DF, NT, AC, ID: not IF, IOPL, VM, RF
VMM_CODE_SELECTOR = 0xFFE8 | 1          # shadow GDT: the ring-1 code segment the cache runs in
VMM_DATA_SELECTOR = 0xFFF0 | 1          # shadow GDT: the data page, for GS
PORT_IO = {0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6D, 0x6E, 0x6F}   # in, out, ins, outs
# Trace faults one guest instruction may take before adaptive translation turns its store into a
# call-out. Adams & Agesen give no number; vmkit's choice is small, so the lesson sees it happen.
ADAPT_AFTER = 2


class DataPageVCpu(VCpu):
    """The virtual CPU, its IF, IOPL and GS kept in the VMM's data page: translated code reads and
    writes them there without calling out, and the VMM sees the same values."""

    def __init__(self, cpu, **fields):
        self._cpu = cpu
        self.cs = BOOT_CS                   # the CS the guest kernel believes it runs with
        super().__init__(**fields)

    def _word(self, offset):
        return self._cpu.u32(VMM_DATA + offset)

    def _set(self, offset, value):
        self._cpu.write(VMM_DATA + offset, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    interrupt_flag = property(lambda self: self._word(VIF) != 0,
                              lambda self, on: self._set(VIF, IF if on else 0))
    iopl = property(lambda self: self._word(VIOPL) >> 12, lambda self, v: self._set(VIOPL, (v & 3) << 12))
    gs = property(lambda self: self._word(VGS) & 0xFFFF, lambda self, v: self._set(VGS, v & 0xFFFF))


def truncate(table):
    """Segment truncation: no guest segment may reach the VMM's memory at the top of the address
    space (VMware did the same), so the translation cache is invisible to the guest."""
    table = bytearray(table)
    for offset in range(0, len(table) - 7, 8):
        access, flags = table[offset + 5], table[offset + 6]
        if not access & 0x10 or (not access & 0x08 and access & 0x04):
            continue                        # system descriptors, and expand-down data, are left alone
        base = int.from_bytes(table[offset + 2:offset + 5], "little") | (table[offset + 7] << 24)
        limit = int.from_bytes(table[offset:offset + 2], "little") | ((flags & 0xF) << 16)
        granular = flags & 0x80
        end = base + ((limit << 12) | 0xFFF if granular else limit)
        if base < VMM_BASE <= end:
            limit = ((VMM_BASE - base) >> 12) - 1 if granular else VMM_BASE - base - 1
            table[offset:offset + 2] = (limit & 0xFFFF).to_bytes(2, "little")
            table[offset + 6] = (flags & 0xF0) | ((limit >> 16) & 0xF)
    return bytes(table)


def hide_call_gates(table):
    """Every 32-bit call gate of the shadow table marked not present. A gate into the guest kernel
    would take guest user code straight to the kernel's own bytes, which only ever run translated;
    with P = 0 the far call through it raises #NP with the gate's selector (SDM vol. 2A, CALL: the
    gate's P flag is checked after its DPL), a trap to the VMM, which carries the call out into
    the translation cache (BinaryTranslation.call_gate)."""
    table = bytearray(table)
    for offset in range(0, len(table) - 7, 8):
        if table[offset + 5] & 0x1F == CALL_GATE_32:
            table[offset + 5] &= 0x7F
    return bytes(table)


class BinaryTranslation(TrapAndEmulate):
    """The vmkit PC with a binary-translating VMM in front of the guest.

    `rules` maps cli/sti/pushfd/popfd to rewrite rules and `chain` makes the bytes of a chained
    exit (see vmkit.vmm.translator; lab 3 writes them). An instruction without a rule calls out.
    `cache_size` bounds the translation cache; when it is full the cache is flushed. `adaptive`
    (on by default) retranslates an instruction that keeps taking trace faults into a call-out.
    `count_guest` (on by default): the budget, the clock and stats["instructions"] count the guest's
    own instructions, as the bare machine does (each unit of the cache counts them: see
    guest_instructions); off, they count what the CPU ran, the cache's own instructions included,
    and the cache code runs without its counts (each count is a store to memory, which costs Unicorn
    many times what an instruction on registers does: about 30 ns against 1).
    `inline_calls` (on by default): a `call rel32` pushes the guest's return address and the unit goes
    on in the callee, and a `ret` whose return address nothing in the unit can have changed goes on
    after its call, unchecked (Translator._in_line); other rets check the return they predict.
    `unroll` (8 by default): a loop whose conditional jump goes back to its unit's start is
    translated as that many copies, with one count a pass (1: no unrolling).
    """
    resumes_in_hook = False               # before_slice() moves EIP into the translation cache

    def __init__(self, image, memory=DEFAULT_MEMORY, *, rules=None, chain=None,
                 cache_size=DEFAULT_CACHE_SIZE, emulators=None, adaptive=True, count_guest=True,
                 inline_calls=True, unroll=UNROLL, **budgets):
        if not 0x4000 <= cache_size <= MAX_CACHE_SIZE:
            raise ValueError(f"cache_size must lie between 16 KiB and {MAX_CACHE_SIZE >> 20} MiB")
        self._rules, self._chain_rule = rules, chain
        self.cache_size = (cache_size + 0xFFF) & ~0xFFF
        self._far_return = None               # a return to ring 3 the cache is about to carry out
        self._written = []                    # units a guest write killed during this slice
        self._effect = None                   # what the last emulated call-out did, for its event
        self.adaptive = adaptive
        self.count_guest = count_guest        # the budget counts the guest's instructions, not the cache's
        self.inline_calls, self.unroll = inline_calls, unroll
        self._alone = None                    # a guest address whose next unit holds one instruction
        self._traces = {}                     # guest instruction address -> trace faults it took
        self.cpu_instructions = 0             # what the CPU ran for the guest (the cache's code included)
        self._slice_start = None              # (ICOUNT, uncounted) where a slice started in the cache
        self._stopped_at_int3 = False         # an int3 (a call-out's) ended the running slice
        self._emulated_callouts = {"iret": self._iret, "retf": self._retf, "far": self._far,
                                   "load-ss": self._load_ss, "load-gs": self._load_gs,
                                   "store-sreg": self._store_sreg}     # call-out kind -> its emulation
        table = dict(EMULATORS, **SENSITIVE_READS, **FLAGS) if emulators is None else emulators
        super().__init__(image, memory, emulators=table, **budgets)
        self.technique = "binary-translation"
        self.stats.update(trace_callouts=0, retranslations=0)

    # --- boot: the shadow tables of trap-and-emulate, plus the cache and the VMM's data page -------
    def boot_state(self):
        super().boot_state()
        self.counting_guest = self.count_guest and self.counted     # an uncounted run counts nothing
        uc, cpu = self.uc, self.cpu
        uc.mem_map(VMM_DATA, DATA_SIZE)
        uc.mem_map(CACHE_BASE, self.cache_size)
        cpu.regions += [(VMM_DATA, DATA_SIZE), (CACHE_BASE, self.cache_size)]
        uc.mem_write(SHADOW_GDT + (VMM_CODE_SELECTOR & ~7), encode_descriptor(0, 0xFFFFF, 0xBA))
        uc.mem_write(SHADOW_GDT + (VMM_DATA_SELECTOR & ~7), encode_descriptor(VMM_DATA, DATA_SIZE - 1, 0xB2, 0x4))
        assert VMM_DATA + DATA_SIZE <= CACHE_BASE
        old = self.vcpu
        self.vcpu = DataPageVCpu(cpu, **{f.name: getattr(old, f.name) for f in dataclasses.fields(VCpu)})
        self.vcpu.gs = cpu["gs"]
        cpu["gs"] = VMM_DATA_SELECTOR
        for name in ("ds", "es", "fs"):
            cpu[name] = cpu[name]             # reload: the CPU caches descriptors, now truncated
        uc.mem_write(VMM_DATA + VMM_GS, VMM_DATA_SELECTOR.to_bytes(2, "little"))
        translator = Translator(self._guest_code, dispatcher=CACHE_BASE, data=VMM_DATA,
                                rules=self._rules, chain_rule=self._chain_rule, count=self.counting_guest,
                                inline_calls=self.inline_calls, unroll=self.unroll)
        self.cache = TranslationCache(uc, CACHE_BASE, self.cache_size, VMM_DATA, translator, self._on_code_written)

    def install_hooks(self):
        super().install_hooks()
        # Segment truncation keeps a real CPU's guest out of the VMM's memory; Unicorn, like QEMU,
        # does not check segment limits, so the cache is guarded here: its code is only ever
        # fetched, and a data access to it is the guest looking at the VMM.
        self.uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, self._on_cache_access, None,
                         CACHE_BASE, CACHE_BASE + self.cache_size - 1)
        # which int3 ended a slice, for guest_instructions: Unicorn leaves EIP after it
        self.uc.hook_add(UC_HOOK_INTR, self._on_int3)

    def _on_int3(self, uc, vector, _):
        if vector == 3:
            self._stopped_at_int3 = True

    def _on_cache_access(self, uc, access, address, size, value, _):
        self.stop("cache-access", context=uc.context_save(), address=address, before=bytes(uc.mem_read(address, size)))

    def shadow_descriptors(self, table):
        return hide_call_gates(truncate(compress(table)))

    def _guest_code(self, address, size):
        """Up to `size` bytes of guest code at `address`, read as the CPU fetches them: fewer where
        the next page is not mapped. A first page the guest has not mapped raises its #PF (Fault)."""
        cpu = self.cpu
        if not cpu.paging():
            size = min(size, self.memory - address)
            if address < 0 or size <= 0:
                raise GuestError(f"the guest kernel jumped to {address:#x}, outside its "
                                 f"{self.memory >> 20} MiB of RAM", self.result())
            return cpu.read(address, size, "the guest's code")
        first = min(size, PAGE - (address & (PAGE - 1)))
        code = cpu.read(address, first, "the guest's code")
        if first < size and cpu.peek(address + first, size - first) is not None:
            code += cpu.read(address + first, size - first, "the guest's code")
        return code

    # --- every slice starts in the cache (kernel) or in guest user code -----------------------------
    def before_slice(self):
        """The kernel runs from the cache; the translated code learns whether an interrupt waits."""
        self._enter_cache()
        pending = self.pic.pending() is not None
        self.uc.mem_write(VMM_DATA + PENDING, b"\x01" if pending else b"\x00")
        eip = self.cpu["eip"]
        self._stopped_at_int3 = False
        in_cache = self.counting_guest and eip in self.cache and not self.finished and self.cpu.cpl == 1
        self._slice_start = (self.cpu.u32(VMM_DATA + ICOUNT), self.cache.uncounted(eip, ecx=self._ecx)) \
            if in_cache else None

    # --- the guest's own instructions, counted ---------------------------------------------------------
    def guest_instructions(self, executed):
        """The guest instructions a slice ran, as the bare machine counts them (an instruction counts
        once it has started). Guest user code runs directly: each of the CPU's instructions is one.
        In the cache, each unit adds its guest instructions to ICOUNT in the VMM's data page on every
        way through it that stays in the cache (Translator: a plain `add` in front of an instruction
        that overwrites the flags, else at each exit, kept off the flags); a slice that starts or ends
        part way through a unit, or in a unit that ends in a call-out, is made exact with what
        TranslationCache.uncounted says of where it started and ended. (QEMU counts the same way for
        its -icount: each translated block subtracts its instruction count from a budget on entry,
        gen_tb_start in include/exec/gen-icount.h.) The CPU's own count is stats["cpu_instructions"].
        Not exact: repe/repne cmps and scas count once, not once an iteration; a call-out's instruction
        counts before the machine brings the timer up to date, so a tick due exactly at an emulated in
        can show in it one instruction early (the timer test guest: 705,177 instructions, 705,180 natively)."""
        self.cpu_instructions += executed
        start, self._slice_start = self._slice_start, None
        if start is None:
            return executed
        counter, before = start
        cpu = self.cpu
        eip = cpu["eip"]
        # what ICOUNT gained, signed: a slice that started past a count made ahead (an unrolled loop's)
        # and ended past the count that took some back has a negative gain (slices are short: LONGEST_SLICE)
        counted = ((cpu.u32(VMM_DATA + ICOUNT) - counter + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        # out of the cache within the slice: only the copy of an iret or retf to ring 3 does that, alone
        # in its slice, and its guest instruction counted when its call-out was reached
        after = self.cache.uncounted(eip, after_int3=self._stopped_at_int3, ecx=self._ecx) \
            if eip in self.cache and cpu.cpl == 1 else before
        return counted + after - before

    def _ecx(self):
        return self.cpu["ecx"]

    def _enter_cache(self):
        """The guest kernel is at a guest address (after boot, a delivery, an emulated instruction):
        continue at that address's translation, making it first if there is none."""
        cpu = self.cpu
        if self.finished or cpu.cpl != 1:
            return
        eip = cpu["eip"]
        if eip in self.cache:
            return
        cs = cpu["cs"]
        if cs != VMM_CODE_SELECTOR:
            self._set_vcs(cs & ~3)
            cpu["cs"] = VMM_CODE_SELECTOR
        if cpu["gs"] != VMM_DATA_SELECTOR:
            cpu["gs"] = VMM_DATA_SELECTOR
        try:
            unit = self.cache.lookup(eip, self.vcpu.cs) or self._translate(eip)
        except Fault as fault:                # the guest's tables do not map its next instruction
            return self._fetch_fault(fault)
        finally:
            self._alone = None                # asked for the next unit only, made or not
        cpu["eip"] = unit.cache

    def _fetch_fault(self, fault):
        """The translator could not fetch the guest kernel's next instruction: the #PF the CPU would
        raise on the fetch, reflected into the guest (a true fault); then on at its handler."""
        self.stats["traps"] += 1
        self.stats["true_faults"] += 1
        self.vcpu.cr2 = fault.cr2
        self.record("true-fault", linear=fault.cr2, error_code=fault.error_code, fetch=True)
        self.deliver(fault.vector, EXCEPTION, fault.error_code)
        self._enter_cache()

    def _set_vcs(self, selector):
        if selector == self.vcpu.cs:
            return
        descriptor = guest_descriptor(self, selector)
        if descriptor is not None and descriptor.base != 0:
            raise GuestError(f"the guest kernel's code segment {selector:#x} has base {descriptor.base:#x}; "
                             f"this translator assumes kernel code segments based at 0", self.result())
        self.vcpu.cs = selector
        if self.cache.units:
            self.cache.flush()                # translations show the old CS to the guest

    def _translate(self, guest):
        if self.runs_zeros(guest):
            self.ran_off_the_end(guest)
        alone, self._alone = self._alone == guest, None
        unit, flushed = self.cache.translate(guest, self.vcpu.cs, 1 if alone else None)
        self.stats["blocks_translated"] += 1
        if flushed:
            self.stats["cache_flushes"] = self.stats.get("cache_flushes", 0) + 1
        self.record("translate", eip=guest, cpl=1, guest=guest, cache=unit.cache, size=unit.size,
                    guest_size=sum(end - start for start, end in unit.spans), spans=unit.spans,
                    instructions=sum(1 for p in unit.pieces if p.size), flushed=flushed)
        return unit

    def slice_length(self, limit):
        if self._mid_instruction_with_interrupt():
            return 1                          # run on to the next guest instruction boundary
        if self._far_return is not None:
            return 1                          # just the iret or retf: user code starts with its own flags
        return super().slice_length(limit)

    def _mid_instruction_with_interrupt(self):
        cpu = self.cpu
        return (self._vmm_entry and self.pic.pending() is not None and self.interrupts_enabled()
                and cpu.cpl == 1 and cpu["eip"] in self.cache and self.cache.guest_address(cpu["eip"]) is None)

    def inject_interrupt(self):
        # an interrupt is taken at a guest instruction's boundary, and delivered at its guest address
        if not self._vmm_entry or self._shadow_sti or self.shadow.stepping:
            return False
        cpu = self.cpu
        if self.pic.pending() is not None and self.interrupts_enabled() and cpu.cpl == 1 and cpu["eip"] in self.cache:
            guest = self.cache.guest_address(cpu["eip"])
            if guest is None:
                return False                  # between two host instructions of one guest instruction
            cpu["eip"] = guest
        return super().inject_interrupt()

    # --- the guest sees its own CS, flags and GS ----------------------------------------------------
    def deliver(self, vector, source, error_code=None):
        """As trap-and-emulate; the frame the CPU pushed then shows the guest its own CS and flags."""
        cpu = self.cpu
        virtual = (cpu["eflags"] if cpu.cpl == 3 else self.vcpu.flags_view(0)) & (IF | IOPL_MASK)
        first = len(self.events)
        super().deliver(vector, source, error_code)
        for event in self.events[first:]:
            if event.kind == "ring-transition" and "frame" in event.detail:
                self._virtualize_frame(event, virtual)
                virtual = self.vcpu.flags_view(0) & (IF | IOPL_MASK)    # a nested fault's frame
        if not self.finished and cpu.cpl == 1:
            cpu["gs"] = VMM_DATA_SELECTOR
            cpu["eflags"] = (cpu["eflags"] & ~IOPL_MASK) | IF          # the VMM's own, in the kernel

    def on_sysenter(self):
        """As trap-and-emulate; a sysenter the kernel ran in the cache is at its guest address."""
        guest = self.guest_eip()
        if self.cpu.cpl == 1 and guest is not None:
            self.cpu["eip"] = guest
        super().on_sysenter()

    def kernel_entered(self):
        """As in the cache after a delivery: GS reaches the VMM's data page, and the real IF and IOPL
        are the VMM's."""
        cpu = self.cpu
        cpu["gs"] = VMM_DATA_SELECTOR
        cpu["eflags"] = (cpu["eflags"] & ~IOPL_MASK) | IF

    def leave_kernel(self):
        """User code gets the guest's own GS back (the cache's is the VMM's data page)."""
        try:
            self.cpu["gs"] = self.vcpu.gs
        except Exception:                                       # noqa: BLE001 - a selector the CPU refuses
            self.cpu["gs"] = 0

    def leave_user_mode(self):
        """User code ran directly with its own IF, IOPL and GS in the real registers: they become
        the virtual ones again while the kernel runs translated."""
        cpu = self.cpu
        eflags = cpu["eflags"]
        self.vcpu.interrupt_flag = bool(eflags & IF)
        self.vcpu.iopl = (eflags & IOPL_MASK) >> 12
        self.vcpu.gs = cpu["gs"]

    def enter_user_mode(self):
        """Direct execution: user code gets the guest's IF and IOPL in the real EFLAGS, so its own
        cli, sti, pushf, popf, in and out behave as on the guest's machine; the device model still
        sees every port access."""
        cpu = self.cpu
        cpu["eflags"] = (cpu["eflags"] & ~(IF | IOPL_MASK)) | self.vcpu.flags_view(0) & (IF | IOPL_MASK)

    def _virtualize_frame(self, event, virtual_flags):
        """The CPU pushed the real CS (the cache's) and the real IF and IOPL: the guest must find its own."""
        detail = event.detail
        where = self.cpu.segment_base(detail["ss"]) + detail["esp"]
        frame = []
        for i, (name, value) in enumerate(detail["frame"]):
            if name == "CS" and value == VMM_CODE_SELECTOR:
                value = self.vcpu.cs
            elif name == "EFLAGS":
                value = (value & ~(IF | IOPL_MASK)) | virtual_flags
            else:
                frame.append((name, value))
                continue
            self.cpu.write(where + 4 * i, value.to_bytes(4, "little"), "the interrupt frame")
            frame.append((name, value))
        detail["frame"] = frame

    def interrupts_enabled(self):
        if self.cpu.cpl == 3:
            return bool(self.cpu["eflags"] & IF)
        return self.vcpu.interrupt_flag

    def record(self, kind, eip=None, cpl=None, **detail):
        """As the machine's, at the guest's address when the CPU is in the cache."""
        if eip is None:
            eip = self.cpu["eip"]
            if eip in self.cache:             # report where the guest is, not where the cache is
                unit, piece = self.cache.locate(eip)
                eip = piece.guest if piece is not None else eip
        return super().record(kind, eip=eip, cpl=cpl, **detail)

    # --- call-outs: the cache's int3s -----------------------------------------------------------------
    def exception(self, vector, source, error_code=None, cause=None):
        """In the cache, an int3 is a call-out (or the lookup code's miss) and any other fault is the
        guest instruction's, at its guest address; then trap-and-emulate handles it."""
        cpu = self.cpu
        eip = cpu["eip"]
        if vector == PF_ and source == EXCEPTION and self.shadow.on:
            error_code = self.shadow_page_fault(error_code)
            if error_code is None:
                return                        # hidden or traced: the instruction runs again
        if cpu.cpl == 1 and eip in self.cache:
            self.fault_handled()
            callout = self.cache.callouts.get(eip - 1) if vector == 3 else None
            if callout is not None:
                return self._callout(callout, eip - 1)
            if eip - 1 == self.cache.dispatcher_callout and vector == 3:
                return self._lookup_miss()
            unit, piece = self.cache.locate(eip)
            if piece is None:
                raise GuestError(f"a fault ({vector}) in the VMM's own lookup code at {eip:#x}", self.result())
            if eip == piece.cache and piece.size and self.counting_guest:
                self.instructions += 1        # the guest's instruction started, as the CPU counts it
                self.clock += 1
            cpu["eip"] = piece.guest          # the guest's instruction faulted
            self._far_return = None
        if vector == NP and source == EXCEPTION and cpu.cpl == 3 and self.call_gate(error_code):
            return
        self.handle_trap(vector, source, error_code, cause)

    def call_gate(self, error_code):
        """#NP from user code on a call gate the shadow GDT hides (hide_call_gates): if the guest's
        own gate is present, carry out the far call through it as the CPU would (SDM vol. 2A, CALL,
        "CALL-GATE" and "MORE-PRIVILEGE"; vol. 3A, 5.8.5 and 5.8.6) and record it as a trap and a
        ring-transition with cause "call gate". False when the #NP is the guest's own."""
        cpu = self.cpu
        selector = error_code & ~3 if error_code is not None else 0
        gate_descriptor = guest_descriptor(self, selector) if selector else None
        if gate_descriptor is None or gate_descriptor.s or gate_descriptor.type != CALL_GATE_32 \
                or not gate_descriptor.present:
            return False
        self.fault_handled()
        self._vmm_entry = True
        at = cpu["eip"]
        insn = decode(cpu.read(at, 15), at)
        self.stats["traps"] += 1
        self.record("trap", eip=at, cpl=3, cause="call gate", vector=NP, error_code=error_code,
                    instruction=f"{insn.mnemonic} {insn.op_str}".strip())
        gate = decode_gate(gate_descriptor.raw)
        count = (gate_descriptor.raw >> 32) & 0x1F
        fault = self._code_segment_fault(gate.selector & ~3)
        if fault is not None:
            self.deliver(*fault)
            return True
        # the new stack: the one the guest's TSS gives ring 0, as its ring-1 twin
        tss = guest_descriptor(self, self.vcpu.tr)
        if tss is None:
            self.deliver(TS, EXCEPTION, self.vcpu.tr & ~3)
            return True
        raw = cpu.read(tss.base + 4, 8, "the guest's TSS")
        new_esp, new_ss = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:6], "little") | 1
        old = cpu.regs(("esp", "ss", "cs"))
        parameters = cpu.read(cpu.segment_base(old["ss"]) + old["esp"], 4 * count, "the caller's stack", user=True)
        frame = ((at + insn.size).to_bytes(4, "little") + old["cs"].to_bytes(4, "little") + parameters
                 + old["esp"].to_bytes(4, "little") + old["ss"].to_bytes(4, "little"))
        self.leave_user_mode()
        base = self._stack_base(new_ss)
        esp = (new_esp - len(frame)) & 0xFFFFFFFF
        cpu.write(base + esp, frame, "the call gate's frame")
        cpu.far_transfer(1, (gate.selector & ~3) | 1, new_ss, esp, gate.offset, cpu["eflags"])
        self.kernel_entered()
        words = [int.from_bytes(frame[i:i + 4], "little") for i in range(0, len(frame), 4)]
        names = ["EIP", "CS"] + [f"parameter {i}" for i in range(count)] + ["ESP", "SS"]
        self.record("ring-transition", eip=at, cpl=3, from_ring=3, to_ring=1, cause="call gate", gate=selector,
                    handler=gate.offset, parameters=count, frame=list(zip(names, words)), esp=esp, ss=new_ss,
                    return_eip=at + insn.size, reflected=True)
        return True

    def _stack_base(self, ss):
        descriptor = guest_descriptor(self, ss & ~3)
        return descriptor.base if descriptor is not None else 0

    def _callout(self, c, site):
        cpu = self.cpu
        if c.kind == "miss":
            return self._miss(c)
        if c.kind == "predict":
            return self._predict(c, site)
        self._vmm_entry = True
        if c.kind == "pending":
            self.stats["traps"] += 1
            cpu["eip"] = c.guest
            self.record("trap", eip=c.guest, cpl=1, cause="call-out: an interrupt waits for the virtual IF",
                        vector=None, instruction="(interrupt window)", error_code=None)
            return
        cpu["eip"] = c.guest
        # the guest instruction at c.guest, not the cache's int3, trapped: trap-and-emulate handles it
        if c.kind == "emulate":
            return self._emulate(c)
        if c.kind == "undecodable":
            return self.handle_trap(UD, EXCEPTION, None, cause="call-out: undecodable")
        if c.kind == "int":
            return self._software_interrupt(c)
        if c.kind == "store":
            return self._store(c, site)
        emulation = self._emulated_callouts.get(c.kind)
        if emulation is None:
            raise VmkitError(f"a call-out of kind {c.kind!r} at {c.guest:#x}: the VMM emulates the kinds "
                             f"emulate, undecodable, int, pending, miss and {', '.join(self._emulated_callouts)}")
        insn = decode(cpu.read(c.guest, 15), c.guest)
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        self.stats["traps"] += 1
        self.record("trap", eip=c.guest, cpl=1, cause="call-out", vector=None, instruction=text, error_code=None)
        cpu["eip"] = c.guest + c.size
        self._effect = None
        fault = emulation(c, insn, site)
        if fault is not None:
            cpu["eip"] = c.guest
            self._far_return = None
            self.deliver(*fault)
        elif self._effect:
            self.record("emulate", eip=c.guest, cpl=1, instruction=text, effect=self._effect)

    def _emulate(self, c):
        """A privileged or sensitive instruction, emulated as trap-and-emulate does. An in or out has
        started (the count has it) but not retired: the device it reaches sees the clock before it, as
        on the bare machine, where the port hook runs inside the instruction (Machine._clock_now)."""
        port_io = self.counting_guest and self.cpu.read(c.guest, 1)[0] in PORT_IO
        self.clock -= port_io
        try:
            return self.handle_trap(GP, EXCEPTION, 0, cause="call-out")
        finally:
            self.clock += port_io

    def _miss(self, c):
        """An exit whose target has no translation yet: translate it, then chain the exit to it."""
        self.stats["cache_misses"] = self.stats.get("cache_misses", 0) + 1
        way = c.exit
        unit = self.cache.lookup(way.target, self.vcpu.cs) or self._translate(way.target)
        if c.unit.alive and unit.alive:
            self.cache.chain(way, unit)
        self.cpu["eip"] = unit.cache

    def _predict(self, c, site):
        """A ret's first miss of its prediction: the target on the guest's stack now becomes its
        prediction (the check's displacement, the exit's target), this call-out a nop, and the check
        runs again (ECX is already saved), to hit."""
        self.stats["cache_misses"] = self.stats.get("cache_misses", 0) + 1
        cpu = self.cpu
        target = cpu.u32(cpu.segment_base(cpu["ss"]) + cpu["esp"])
        self.cache.predict(c.exit, target, c.check)
        self.cache.patch(site, emit.nop())
        cpu["eip"] = c.check

    def _lookup_miss(self):
        """ret or an indirect branch to a guest address the lookup table does not hold."""
        self.stats["cache_misses"] = self.stats.get("cache_misses", 0) + 1
        self.cpu["eip"] = self.cpu.u32(VMM_DATA + GUEST_TARGET)

    def _software_interrupt(self, c):
        first = self.cpu.read(c.guest, 2)
        vector = {0xCC: 3, 0xCE: 4, 0xF1: 1}.get(first[0], first[1])
        self.cpu["eip"] = c.guest + c.size        # int n's frame returns after it
        if first[0] == 0xCE and not self.cpu["eflags"] & (1 << 11):
            return                                # into without OF: nothing happens
        if first[0] == 0xF1:
            return self.handle_trap(DB, EXCEPTION, None, cause="int1")
        return self.handle_trap(vector, SOFTWARE)

    # --- transfers the guest kernel makes at its virtual CPL 0 ------------------------------------------
    def _pop(self, count, skip=0):
        cpu = self.cpu
        base = cpu.segment_base(cpu["ss"])
        raw = cpu.read(base + cpu["esp"], 4 * count, "the guest's stack")
        return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]

    def _code_segment_fault(self, selector):
        """The checks a far transfer to ring 0 makes on its code segment (SDM 5.8); a fault or None."""
        if selector & ~3 == 0:
            return (GP, EXCEPTION, 0)
        d = guest_descriptor(self, selector)
        if d is None or not d.is_code:
            return (GP, EXCEPTION, selector & ~3)
        if (d.conforming and d.dpl > 0) or (not d.conforming and (d.dpl != 0 or selector & 3)):
            return (GP, EXCEPTION, selector & ~3)
        if not d.present:
            return (NP, EXCEPTION, selector & ~3)
        return None

    def _iret(self, c, insn, site):
        if insn.prefix[2] == 0x66:
            self.unsupported("a 16-bit iret")
        eip, cs, eflags = self._pop(3)
        return self._far_return_to(c, site, eip, cs & 0xFFFF, eflags, 12, "iret")

    def _retf(self, c, insn, site):
        eip, cs = self._pop(2)
        skip = insn.operands[0].imm if insn.operands else 0
        return self._far_return_to(c, site, eip, cs & 0xFFFF, None, 8 + skip, "retf")

    def _far_return_to(self, c, site, eip, cs, eflags, size, cause):
        cpu = self.cpu
        if eflags is not None:
            self.vcpu.interrupt_flag = bool(eflags & IF)
            self.vcpu.iopl = (eflags & IOPL_MASK) >> 12
        if cs & 3 == 3:
            # out to user code: the CPU itself pops the frame and makes every check, from the copy
            # of the instruction right behind the call-out, once GS is the guest's again
            try:
                cpu["gs"] = self.vcpu.gs
            except Exception:                                   # noqa: BLE001 - a selector the CPU refuses
                cpu["gs"] = 0
            self._far_return = {"cause": cause, "guest": c.guest, "return_eip": eip, "cs": cs}
            cpu["eip"] = site + 1
            self._effect = None
            return None
        if cs & 3:
            self.unsupported(f"an {cause} to ring {cs & 3}")
        fault = self._code_segment_fault(cs)
        if fault is not None:
            return fault
        if eflags is not None:
            cpu["eflags"] = (eflags & GUEST_OWNED_FLAGS) | IF | 0x2
        cpu["esp"] = (cpu["esp"] + size) & 0xFFFFFFFF
        self.record("ring-transition", eip=c.guest, cpl=1, from_ring=1, to_ring=1, cause=cause,
                    frame=[("EIP", eip), ("CS", cs)] + ([("EFLAGS", eflags)] if eflags is not None else []),
                    return_eip=eip, emulated=True)
        self._set_vcs(cs)
        cpu["eip"] = eip
        self._effect = None
        return None

    def after_slice(self):
        """The cache's copy of an iret or retf to ring 3 has run: record the guest's return to user code."""
        super().after_slice()
        if self._far_return is not None and self.cpu.cpl == 3:
            far, self._far_return = self._far_return, None
            self.record("ring-transition", eip=far["guest"], cpl=1, from_ring=1, to_ring=3, cause=far["cause"],
                        return_eip=far["return_eip"], frame=[("EIP", far["return_eip"]), ("CS", far["cs"])])
            self.enter_user_mode()

    def _far(self, c, insn, site):
        """jmp far / call far to a ring-0 code segment, emulated with the CPU's checks."""
        cpu = self.cpu
        ops = insn.operands
        if len(ops) == 2:                                       # ptr16:32
            selector, offset = ops[0].imm & 0xFFFF, ops[1].imm & 0xFFFFFFFF
        else:                                                   # m16:32
            raw = cpu.read(effective_address(self, insn, ops[0]), 6)
            offset, selector = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")
        d = guest_descriptor(self, selector)
        if d is not None and not d.s:
            self.unsupported("a far transfer through a gate or a task")
        fault = self._code_segment_fault(selector)
        if fault is not None:
            return fault
        if bytes(insn.opcode)[0] == 0x9A or (bytes(insn.opcode)[0] == 0xFF and (insn.modrm >> 3) & 7 == 3):
            esp = (cpu["esp"] - 8) & 0xFFFFFFFF
            cpu.write(cpu.segment_base(cpu["ss"]) + esp, (c.guest + c.size).to_bytes(4, "little")
                      + self.vcpu.cs.to_bytes(4, "little"), "the guest's stack")
            cpu["esp"] = esp
        self._set_vcs(selector & ~3)
        cpu["eip"] = offset
        self._effect = f"CS:EIP <- {selector & ~3:#x}:{offset:#x} (virtual CS)"
        return None

    # --- segment registers the translated code cannot load itself ----------------------------------------
    def _selector_operand(self, insn):
        first = bytes(insn.opcode)
        if first[0] in (0x17,) or first[:2] == b"\x0f\xa9":    # pop ss, pop gs
            return self._pop(1)[0] & 0xFFFF, 4
        if first[0] == 0x0F:                                    # lss/lgs r32, m16:32
            raw = self.cpu.read(effective_address(self, insn, insn.operands[1]), 6)
            return int.from_bytes(raw[4:], "little"), 0
        return operand_value(self, insn, insn.operands[1]) & 0xFFFF, 0

    def _load_ss(self, c, insn, site):
        """mov ss, pop ss, lss: the checks the CPU makes at CPL 0 (SDM: MOV, POP), then the ring-1 twin."""
        selector, pops = self._selector_operand(insn)
        if selector & ~3 == 0:
            return (GP, EXCEPTION, 0)
        d = guest_descriptor(self, selector)
        if d is None or selector & 3 or not d.writable or d.dpl != 0:
            return (GP, EXCEPTION, selector & ~3)
        if not d.present:
            return (SS_, EXCEPTION, selector & ~3)
        cpu = self.cpu
        cpu["ss"] = selector | 1
        cpu["esp"] = (cpu["esp"] + pops) & 0xFFFFFFFF
        if bytes(insn.opcode)[:2] == b"\x0f\xb2":
            raw = cpu.read(effective_address(self, insn, insn.operands[1]), 4)
            write_register(cpu, insn.reg_name(insn.operands[0].reg), int.from_bytes(raw, "little"))
        self._effect = f"SS <- {selector | 1:#x} (the ring-1 twin of {selector:#x})"
        return None

    def _load_gs(self, c, insn, site):
        """mov gs, pop gs, lgs: checked as the CPU would at CPL 0; the value goes to the virtual GS."""
        selector, pops = self._selector_operand(insn)
        if selector & ~3:
            d = guest_descriptor(self, selector)
            if d is None or not d.s or (d.is_code and not d.readable):
                return (GP, EXCEPTION, selector & ~3)
            if (d.is_data or not d.conforming) and d.dpl < (selector & 3):
                return (GP, EXCEPTION, selector & ~3)
            if not d.present:
                return (NP, EXCEPTION, selector & ~3)
        cpu = self.cpu
        self.vcpu.gs = selector
        cpu["esp"] = (cpu["esp"] + pops) & 0xFFFFFFFF
        if bytes(insn.opcode)[:2] == b"\x0f\xb5":
            raw = cpu.read(effective_address(self, insn, insn.operands[1]), 4)
            write_register(cpu, insn.reg_name(insn.operands[0].reg), int.from_bytes(raw, "little"))
        self._effect = f"virtual GS <- {selector:#x}"
        return None

    def _store_sreg(self, c, insn, site):
        """mov r/m, cs|ss|gs and push ss: the guest's own selector, not the one the cache runs with."""
        cpu = self.cpu
        if bytes(insn.opcode)[0] == 0x16:                      # push ss
            value = cpu["ss"] & ~3
            esp = (cpu["esp"] - 4) & 0xFFFFFFFF
            cpu.write(cpu.segment_base(cpu["ss"]) + esp, value.to_bytes(4, "little"), "the guest's stack")
            cpu["esp"] = esp
        else:
            name = insn.reg_name(insn.operands[1].reg)
            value = {"cs": self.vcpu.cs, "ss": cpu["ss"] & ~3, "gs": self.vcpu.gs}[name]
            op = insn.operands[0]
            write_operand(self, insn, op, value)
        cpu["eip"] = c.guest + c.size
        self._effect = f"the guest reads its own selector ({value:#x})"
        return None

    # --- adaptive translation: stores to the guest's page tables ----------------------------------------
    def trace_fault(self, linear, error_code):
        """A trace fault in the cache. The guest instruction's count goes up; once it reaches
        ADAPT_AFTER, its unit is dropped and the guest resumes at the instruction, retranslated so
        that its store calls out (_store) instead of faulting."""
        cpu = self.cpu
        eip = cpu["eip"]
        if not (self.adaptive and cpu.cpl == 1 and eip in self.cache):
            return super().trace_fault(linear, error_code)
        unit, piece = self.cache.locate(eip)
        guest = piece.guest if piece is not None else None
        count = self._traces[guest] = self._traces.get(guest, 0) + 1
        if guest is None or count < ADAPT_AFTER:
            return super().trace_fault(linear, error_code)
        self.record("trap", cause="write to a traced page table", vector=PF_, error_code=error_code,
                    instruction=piece.text, linear=linear)
        self.cache.translator.store_callouts.add(guest)
        self.cache.kill(unit)
        self.stats["retranslations"] += 1
        self.record("translate", eip=guest, cpl=1, guest=guest, cache=unit.cache, size=unit.size,
                    invalidated=True, why=f"{count} trace faults: its store becomes a call-out")
        cpu["eip"] = guest                    # retranslated from here next slice, with the call-out

    def _store(self, c, site):
        """The call-out of an instruction that stores to the guest's page tables: the VMM looks at
        where it stores and, if that is a traced page, makes a `mov` store itself, or lets the copy
        behind the int3 make any other with the page writable for one instruction; no fault is
        taken, and the shadow follows as after a trace."""
        cpu = self.cpu
        cpu["eip"] = site + 1                 # the copy of the instruction, right behind the call-out
        insn = decode(cpu.read(c.guest, 15), c.guest)
        self.stats["traps"] += 1
        self._vmm_entry = True
        target = next((effective_address(self, insn, op) for op in insn.operands if op.type == 3), None)
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        self.record("trap", eip=c.guest, cpl=1, cause="call-out: a store to a page table", vector=None,
                    instruction=text, error_code=None, linear=target)
        if target is None or not self.shadow.on:
            return
        physical = cpu.translate(target, peek=True)
        if physical is None or not self.shadow.traced_frame(physical):
            return                            # this time it stores elsewhere: it just runs
        try:
            cpu.translate(target, True, False)    # the guest's accessed and dirty bits for the store
        except Fault:
            return                            # the guest's tables refuse it: the copy faults for real
        dst, src = (insn.operands + [None, None])[:2]
        if insn.mnemonic == "mov" and dst.type == 3 and src is not None and src.type in (1, 2):
            # the common PTE store: the VMM makes it itself, and the guest goes on after the copy
            with self.shadow.writing("call-out"):
                write_operand(self, insn, dst, operand_value(self, insn, src))
            cpu["eip"] = site + 1 + insn.size
            self.stats["trace_callouts"] += 1
        elif self.shadow.begin_store(target, "call-out"):
            self.stats["trace_callouts"] += 1     # any other store: the copy makes it, unfaulted

    # --- guest writes into code it has translated --------------------------------------------------------
    def _on_code_written(self, units, address, size):
        """A write hook saw a store into translated guest code, before the store: Unicorn stops the
        slice inside the storing instruction, its store made but the instruction not retired (EIP
        still on it), so other_stop takes the store back (the bytes before it) and the instruction
        runs again, once, with the units it overlaps dead."""
        self._written.extend(units)
        before = self.cpu.physical_pieces(address, size)
        self.stop("code-written", before=None if before is None else [(p, bytes(self.uc.mem_read(p, n))) for p, n in before])

    def other_stop(self, stop):
        if stop.kind == "cache-access":
            return self._refuse_cache_access(stop.detail)
        if stop.kind != "code-written":
            return super().other_stop(stop)
        cpu = self.cpu
        eip = cpu["eip"]
        for physical, data in stop.detail.get("before") or ():
            self.uc.mem_write(physical, data)     # the storing instruction runs again: its store once
        if cpu.cpl == 3 and self.counted:
            self.instructions -= 1            # it was counted as started; it starts again
            self.clock -= 1
        here = self.cache.locate(eip) if cpu.cpl == 1 and eip in self.cache else (None, None)
        dead, self._written = self._written, []
        for unit in dead:
            if not unit.alive:
                continue
            self.cache.kill(unit)
            self.record("translate", eip=unit.guest, cpl=1, guest=unit.guest, cache=unit.cache,
                        size=unit.size, invalidated=True)
        unit, piece = here
        if unit is not None and not unit.alive:
            exits = {way.site: way.target for way in unit.exits}
            if eip in exits:
                cpu["eip"] = exits[eip]
            elif piece is not None and piece.cache == eip:
                # the unit wrote into its own code: its store runs again in a unit of its own, and the
                # instructions after it are translated afresh from the guest's new bytes
                cpu["eip"] = self._alone = piece.guest

    def _refuse_cache_access(self, detail):
        """What the truncated segment would have done: #GP, before the access."""
        self.uc.context_restore(detail["context"])
        self.uc.mem_write(detail["address"], detail["before"])
        self.uc.ctl_remove_cache(detail["address"], detail["address"] + len(detail["before"]))
        self.exception(GP, EXCEPTION, 0)

    # --- stepping in guest addresses ---------------------------------------------------------------
    def guest_eip(self):
        """Where the guest is: its own address, or None while the CPU is inside the cache code of
        one guest instruction (or in the VMM's lookup code)."""
        eip = self.cpu["eip"]
        if self.cpu.cpl == 1 and eip in self.cache:
            return self.cache.guest_address(eip)
        return eip

    def run_until(self, event=None, eip=None, instructions=None):
        """As Machine.run_until; `eip` is a guest address. The kernel's code runs from the cache,
        so reaching a guest address is found one host instruction at a time: slow, but exact."""
        if eip is None:
            return super().run_until(event=event, instructions=instructions)
        first = len(self.events)
        target = None if instructions is None else self.instructions + instructions
        seen = self._one_cpu_instruction(event)
        while not seen and not self.finished and self.guest_eip() != eip \
                and (target is None or self.instructions < target):
            seen = self._one_cpu_instruction(event)
        return self.events[first:]

    def _one_cpu_instruction(self, event):
        """Run on by one instruction of the CPU's (in the cache, perhaps only a part of a guest
        instruction, so not run_until(instructions=1), which counts the guest's). True if it recorded
        an event that `event` (a kind, or a predicate) waits for."""
        first = len(self.events)
        self.step()
        if isinstance(event, str):
            return any(e.kind == event for e in self.events[first:])
        return event is not None and any(event(e) for e in self.events[first:])

    # --- what the guest sees at the end ----------------------------------------------------------------
    def result(self):
        result = super().result()
        if self.counted:
            result.stats["cpu_instructions"] = self.cpu_instructions
        cpu, regs = self.cpu, result.regs
        if cpu.cpl == 1:
            if regs["eip"] in self.cache:
                unit, piece = self.cache.locate(regs["eip"])
                regs["eip"] = piece.guest if piece is not None else regs["eip"]
            regs["cs"], regs["ss"], regs["gs"] = self.vcpu.cs, regs["ss"] & ~3, self.vcpu.gs
            regs["eflags"] = self.vcpu.flags_view(regs["eflags"])
        return result
