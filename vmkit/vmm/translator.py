"""The binary translator: guest kernel code in, translation-cache code out.

It decodes the guest's code with capstone, one translation unit at a time (up to a dozen
instructions and the callees it translates in line, or fewer when a control transfer or a call-out
ends it), and for each instruction
decides what the cache gets:

    copied      innocuous instructions, byte for byte (most of a kernel: mov, add, push, ...)
    rewritten   cli, sti, pushf, popf: in-cache code on the virtual flags in the VMM's data page,
                so they never trap (the RULES below; lab 3 writes them); reads of CS, GS:
                the virtual selector instead of the real one
    call-out    privileged and sensitive instructions the cache cannot do alone (hlt, lgdt, in,
                out, int n, iret, far jumps, loads of SS and GS, sgdt, smsw, ...): an `int3` the
                VMM catches, emulates the instruction, and resumes the guest after it
    exit        direct jumps and conditional branches end the unit in 5-byte `jmp rel32` exits,
                first aimed at a call-out that translates the target, then *chained* straight
                to the target's translation (a taken jcc, once chained, jumps there itself);
                indirect jumps go through a lookup table of guest address -> cache address, in
                cache code too
    in line     a `call rel32` pushes the guest's return address and the unit goes on in the
                callee; the callee's `ret` goes on after the call, unchecked, when nothing in
                the unit since the call can have changed the return address or ESP's way back
                to it (Frame); any other `ret` ends the unit, and first checks, in cache code,
                the return address it predicts (an exit, chained like the others), looking its
                target up only when that prediction misses
    unrolled    a loop whose conditional jump goes back to the unit's start is translated as
                UNROLL copies, each copy's jcc going on to the next (the last one's back to the
                first), each way out of the loop an exit

None of this leaves the cache for the VMM once the targets are translated. Real translators do the
same: QEMU's TCG ends a block at an indirect jump or a ret with lookup_and_goto_ptr, whose helper
(helper_lookup_tb_ptr, accel/tcg/tcg-runtime.c; Unicorn's qemu/target/i386/translate.c,
do_gen_eob_worker) finds the next block's code in a hash table and jumps to it, returning to its
main loop only on a miss. VMware's translator (Adams & Agesen, ASPLOS 2006) paid for every ret a
lookup of the same kind: their Figure 4 gives call/ret 11 cycles natively and 51 under binary
translation, one of its costliest cases. This translator's cheaper paths: a call and its ret
translated in line cost a push and a `lea esp`, as many instructions as the guest's own; a ret it
cannot follow in line checks its prediction (most functions return to one caller), and a hit costs
a compare and a chained jump. Translating through calls into one longer trace is what Dynamo did
(Bala, Duesterwald & Banerjia, PLDI 2000), whose unit of translation is a single interprocedural
path (as Hiniker, Hazelwood & Smith, MICRO 2005, "Improving region selection in dynamic
optimization systems", describe it).

Each unit also counts the guest instructions it stands for, into ICOUNT in the VMM's data page, on
each way through it that stays in the cache (Builder.count: one `add` in front of an instruction that
overwrites every flag, adding every instruction of the unit ahead, else at each exit through a saved
register; an unrolled loop's ways out take back what was counted ahead of them), so that the VMM's
budget counts the guest's instructions and not the cache's (BinaryTranslation.guest_instructions).
A count is a store to memory, and a store costs Unicorn many times what an instruction on registers
does, so a pass through a unit makes one count, and an unrolled loop one for all its copies.

GS belongs to the VMM while the guest kernel runs: its segment is the VMM's data page, below.

Long because: every kind of guest instruction is translated here, each by a short function on the
same Builder and Unit (copies, rewrites, call-outs, exits, calls in line, unrolled loops, the ret's
prediction, the counts).
"""
import bisect
from dataclasses import dataclass, field
from functools import cached_property

from capstone import CS_AC_WRITE
from capstone import x86_const as C

from ..machine.cpu import Fault
from . import emit
from .emulate import decode

# The VMM's data page, reached through GS from translated code (offsets in the GS segment).
VIF = 0x00            # the virtual IF: 0 or 0x200, the IF bit of the guest's EFLAGS
VIOPL = 0x04          # the virtual IOPL: the guest's EFLAGS bits 12-13
PENDING = 0x08        # byte: 1 while an interrupt waits for the virtual IF
VGS = 0x0C            # the guest's own GS selector
SAVED_EAX = 0x10      # scratch for the lookup code
SAVED_ECX = 0x14
TARGET = 0x18         # cache address the lookup code jumps to
GUEST_TARGET = 0x1C   # guest address the lookup code did not find
VMM_GS = 0x20         # the data page's own selector, to load GS back with after a guest gs: access
ICOUNT = 0x24         # guest instructions the cache code has counted (mod 2^32): see count()
NIBBLE = 0x100        # 256 bytes: NIBBLE[i] = i & 0xF, a mask the lookup code applies without `and`
LOOKUP = 0x1000       # the lookup table: LOOKUP_ENTRIES x (-guest address, cache address),
LOOKUP_ENTRIES = 0x1000   # indexed by the low 12 bits of the guest address
DATA_SIZE = LOOKUP + 8 * LOOKUP_ENTRIES

IF, IOPL = 1 << 9, 3 << 12
MAX_UNIT = 12         # guest instructions in one translation unit at most (outside callees translated in line)
INLINE_BUDGET = 12    # guest instructions of callees translated in line that a unit may add
MAX_DEPTH = 4         # calls translated in line inside one another
UNROLL = 8            # copies of a loop whose conditional jump goes back to its unit's start
MAX_UNROLLED = 32     # guest instructions in an unrolled loop at most
MAX_UNIT_BYTES = 1024 # cache code past which a unit ends (TranslationCache.UNIT_ROOM is twice that)


@dataclass
class Piece:
    """One guest instruction and what the translator made of it."""
    guest: int
    size: int
    text: str
    cache: int = 0
    code: bytes = b""
    how: str = "copied"         # copied | rewritten | call-out | exit | check


@dataclass
class Exit:
    """A chainable exit: the `jmp rel32` at `site`, first aimed at its call-out right behind it."""
    site: int
    target: int                 # guest address it leads to
    chained_to: object = None   # the Unit it jumps to once chained
    branch: int = None          # a jcc whose taken way is this exit alone: chaining aims it at the target too


@dataclass
class Callout:
    """An `int3` in the cache and what the VMM must do when the guest reaches it."""
    kind: str                   # emulate | int | iret | retf | far | load-ss | load-gs | store-sreg | ...
    guest: int                  # the guest instruction's address (where the guest "is")
    size: int = 0               # its length (the guest resumes at guest + size)
    exit: Exit = None           # for kind "miss": the exit to chain; for "predict": the ret's exit
    unit: object = None
    check: int = 0              # for kind "predict": the cache address of the ret's check


@dataclass
class Unit:
    """A translation unit: guest code at `guest` translated into cache code at `cache`."""
    guest: int
    cache: int
    vcs: int                    # the virtual CS the guest kernel ran with (reads of CS show it)
    pieces: list = field(default_factory=list)
    exits: list = field(default_factory=list)
    code: bytearray = field(default_factory=bytearray)
    chained_from: list = field(default_factory=list)    # exits of other units that jump here
    checks: list = field(default_factory=list)          # (cache address, guest address) of each
                                                        # interrupt check: the guest is there
    marks: list = field(default_factory=list)           # (cache address, guest instructions the counts on
                                                        # the way there have added), in address order
    reps: set = field(default_factory=set)              # cache addresses of rep movs/stos/lods, counted ahead
    counts: list = field(default_factory=list)          # (offset in code, total, added before) of each count's
                                                        # immediate: it adds total - added before
    alive: bool = True

    @property
    def guest_end(self):
        last = max((p for p in self.pieces if p.size), key=lambda p: p.guest, default=None)
        return self.guest if last is None else last.guest + last.size

    @cached_property
    def spans(self):
        """The guest bytes the unit was translated from, as merged [start, end) ranges: one range,
        unless calls were translated in line (the callee's code is elsewhere)."""
        merged = []
        for start, end in sorted((p.guest, p.guest + p.size) for p in self.pieces if p.size):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return [tuple(span) for span in merged]

    @property
    def size(self):
        return len(self.code)

    @property
    def instructions(self):
        """The guest instructions the unit stands for: each piece of guest code once (an unrolled loop's
        copies and a callee translated in line each count)."""
        return sum(1 for p in self.pieces if p.size)

    def uncounted(self, cache, at=None):
        """With the CPU at cache address `cache` in the unit (at `at`, the int3 before it, after a
        call-out): the guest instructions of this pass through it that have started (their first
        cache instruction has run) but that its counts have not added to ICOUNT yet; negative past a
        count that adds ahead, by those that have not started yet. The cache code of a pass is laid
        out in the order it runs, and a way out of it (an exit, with the count that corrects the
        one ahead) is followed by a mark that sets the count of the way on (Builder.mark)."""
        at = cache if at is None else at
        started = sum(1 for p in self.pieces if p.size and p.cache < cache)
        i = bisect.bisect_right(self.marks, at, key=lambda mark: mark[0]) - 1
        return started - (self.marks[i][1] if i >= 0 else 0)

    def rep_uncounted(self, cache, ecx):
        """At a rep string instruction the cache has counted ahead (ECX more, Translator._rep), with ECX
        iterations still to go: the count is ahead by them and by the instruction itself."""
        return -(ecx + 1) if cache in self.reps else 0


class Builder:
    """What a rewrite rule writes with: `u.emit(bytes)`, `u.callout(kind)`, `u.interrupt_window()`."""

    def __init__(self, unit, callouts, counting=True):
        self.unit = unit
        self.callouts = callouts
        self.counting = counting           # whether the unit counts its guest instructions (count())
        self.opened_window = None          # "now" (popf) or "after the next instruction" (sti)
        self.window_at_exits = False       # a branch in sti's shadow: check at each exit, at its target
        self.vcs = unit.vcs
        self.started = 0                   # guest instructions started on the way being translated
        self.added = 0                     # what the counts on this way have added: a number, or "n" for
                                           # every instruction of the unit (known once it is done)
        self.side = False                  # the exit being made leaves an unrolled loop before its end

    @property
    def here(self):
        """The cache address the next emitted byte lands at."""
        return self.unit.cache + len(self.unit.code)

    def emit(self, code):
        self.unit.code += code

    def callout(self, kind, guest, size=0, **more):
        """An int3 the VMM catches: it then does `kind` for the guest instruction at `guest`."""
        self.callouts[self.here] = Callout(kind, guest, size, unit=self.unit, **more)
        self.emit(emit.int3())

    def exit(self, target, count=True):
        """A chainable exit to guest address `target`: jmp rel32 to the call-out right behind it,
        after a count that makes this way's counts add up to the instructions started (unless they
        do already, or `count` is False)."""
        counted = self.count(main=False) if count else None
        if self.window_at_exits:
            self.check_pending(target)       # the branch is done: the interrupt comes at its target
        site = self.here
        way = Exit(site, target)
        self.emit(emit.jmp(site, site + 5))
        self.callout("miss", target, exit=way)
        self.unit.exits.append(way)
        if counted is not None:
            self.mark(self.added)            # the way on past the exit has not made its count
        return way

    def mark(self, added):
        """From here on in the cache code (until the next mark), this way's counts have added `added`."""
        self.unit.marks.append((self.here, added))

    def count(self, clobber=False, register=None, main=True):
        """Add to ICOUNT in the data page what this way through the unit has not counted yet, once on
        each way through the unit that stays in the cache (a way that ends in a call-out the VMM
        counts itself):

            clobber     add dword [gs:ICOUNT], n      (every instruction of the unit, ahead: the next
                                                       guest instruction overwrites every arithmetic
                                                       flag: see overwrites_flags)
            register    mov ecx, [gs:ICOUNT]; lea ecx, [ecx + k]; mov [gs:ICOUNT], ecx
                                                      (the code around has saved ECX: a ret)
            otherwise   the same through EAX, saved in SAVED_EAX and loaded back: no flag changes

        k makes the count of this way the instructions started on it (less than n, and negative, on
        the way out of an unrolled loop that counted every copy ahead). The numbers are filled in when
        the unit is done (Translator.translate). `main`: the way goes on after the count (else an exit
        follows, and exit() marks where the way on resumes). Returns where the count ends, or None if
        the way has counted what it must already."""
        target = "n" if clobber else self.started
        before = self.added
        if not self.counting or before == target or (before == "n" and not self.side):
            return None
        code = self.unit.code
        if clobber:
            self.unit.counts.append((len(code) + 7, target, before))
            self.emit(emit.add_gs(ICOUNT, 0))
        else:
            reg = register or "eax"
            if register is None:
                self.emit(emit.gs_store_reg(SAVED_EAX, "eax"))
            self.emit(emit.gs_load_reg(reg, ICOUNT))
            self.unit.counts.append((len(code) + 2, target, before))
            self.emit(emit.lea_plus(reg, 0) + emit.gs_store_reg(ICOUNT, reg))
        # counted from the instruction after the store in ICOUNT on
        self.mark(target)
        if main:
            self.added = target
        if not clobber and register is None:
            self.emit(emit.gs_load_reg("eax", SAVED_EAX))
        return self.here

    def interrupt_window(self, shadow=True):
        """The virtual IF may have just turned on: check for a waiting interrupt after the next guest
        instruction (shadow=True) or right after this one (shadow=False)."""
        self.opened_window = "next" if shadow else "now"

    def check_pending(self, guest):
        """An interrupt waits and the virtual IF is on: call out so the VMM delivers it.
        pushfd; cmp byte [gs:PENDING], 0; je over; cmp byte [gs:VIF + 1], 0; je over; popfd; int3;
        jmp done; over: popfd; done:"""
        self.unit.checks.append((self.here, guest))
        self.emit(emit.pushfd() + emit.cmp_gs_byte(PENDING, 0) + emit.je_short(14)
                  + emit.cmp_gs_byte(VIF + 1, 0) + emit.je_short(4) + emit.popfd())
        self.callout("pending", guest)
        self.emit(emit.jmp_short(1) + emit.popfd())


# --- the rewrite rules: in-cache code for the instructions that must not trap --------------------
def rewrite_cli(u, insn):
    u.emit(emit.gs_store(VIF, 0))


def rewrite_sti(u, insn):
    u.emit(emit.gs_store(VIF, IF))
    u.interrupt_window()


def rewrite_pushfd(u, insn):
    # the guest's slot holds the real flags; patch IF and IOPL to the virtual ones in place,
    # with the real flags saved around the `and`/`or` that would change them
    u.emit(emit.pushfd() + emit.pushfd() + emit.gs_store_reg(SAVED_EAX, "eax")
           + emit.mov_eax_from_esp(4) + emit.and_eax(~(IF | IOPL)) + emit.or_eax_gs(VIF)
           + emit.or_eax_gs(VIOPL) + emit.mov_esp_from_eax(4) + emit.gs_load_reg("eax", SAVED_EAX)
           + emit.popfd())


def rewrite_popfd(u, insn):
    # IF and IOPL of the popped value go to the virtual flags; the real popfd (ring 1, IOPL 0)
    # takes the arithmetic flags and silently keeps the real IF and IOPL
    u.emit(emit.gs_store_reg(SAVED_EAX, "eax") + emit.mov_eax_from_esp(0) + emit.and_eax(IF)
           + emit.gs_store_reg(VIF, "eax") + emit.mov_eax_from_esp(0) + emit.and_eax(IOPL)
           + emit.gs_store_reg(VIOPL, "eax") + emit.gs_load_reg("eax", SAVED_EAX) + emit.popfd())
    u.interrupt_window(shadow=False)


def chain_jump(site, target):
    """The bytes that turn the exit at `site` into a jump straight to the cache address `target`."""
    return emit.jmp(site, target)


# The rules and the chain rule are what lab 3 asks students to write: they carry names of their own
# (rewrite_*, chain_jump), so that a notebook's cli, sti, pushfd, popfd and chain stay its own.
RULES = {"cli": rewrite_cli, "sti": rewrite_sti, "pushfd": rewrite_pushfd, "popfd": rewrite_popfd}


# --- classification: which guest instructions the cache cannot simply copy ----------------------
def _reg_field(insn):
    return (insn.modrm >> 3) & 7


def _is_register_operand(insn):
    return insn.modrm >> 6 == 3


def classify_instruction(insn):
    """What the translator does with one decoded guest instruction (see the module docstring)."""
    raw = bytes(insn.opcode)            # capstone pads the opcode with zeros to four bytes
    op = raw[:2] if raw[0] == 0x0F else raw[:1]   # so 0F 00 (sldt, str, lldt, ltr, verr, verw) keeps its 00
    first = op[0]
    if insn.prefix[2] == 0x66 and first in (0x9C, 0x9D):
        return "call-out"                                  # 16-bit pushf/popf: emulated
    if insn.mnemonic in RULES or first in (0xFA, 0xFB, 0x9C, 0x9D):
        return "rule"
    if first in (0xEB, 0xE9) or 0x70 <= first <= 0x7F or first in (0xE0, 0xE1, 0xE2, 0xE3, 0xE8) \
            or (first == 0x0F and len(op) > 1 and 0x80 <= op[1] <= 0x8F):
        return "direct"
    if first in (0xC3, 0xC2) or (first == 0xFF and _reg_field(insn) in (2, 4)):
        return "indirect"
    if first == 0x0E or (first == 0x8C and _reg_field(insn) in (1, 5) and _is_register_operand(insn)) \
            or (first == 0x0F and op[1:2] == b"\xA8"):
        return "sensitive-read"                            # push cs, mov r, cs/gs, push gs
    if first in CALLOUT_OPCODES or (first == 0x0F and op[1:2] and op[1] in CALLOUT_0F and not _special_0f01(insn, op)) \
            or (first == 0x8E and _reg_field(insn) in (2, 5)) or (first == 0x8C and _reg_field(insn) in (1, 2, 5)) \
            or (first == 0xFF and _reg_field(insn) in (3, 5)):
        return "call-out"
    if insn.prefix[1] == 0x65:
        return "gs-prefixed"
    return "copy"


FLAG_WRITERS = {"add", "sub", "and", "or", "xor", "cmp", "test", "neg"}


def repeats_by_ecx(insn):
    """rep movs, stos or lods with 32-bit addresses: as many iterations as ECX says (the string
    compares, repe/repne cmps and scas, stop on a flag too: the count takes each as one)."""
    return (insn.prefix[0] in (0xF3, 0xF2) and insn.prefix[3] != 0x67
            and insn.mnemonic.split()[-1][:4] in ("movs", "stos", "lods"))


def overwrites_flags(insn):
    """Whether the instruction sets all six arithmetic flags (OF, SF, ZF, AF, PF, CF) without reading
    any (SDM vol. 2, each one's "Flags Affected"; AF, undefined there after and, or, xor and test, QEMU
    sets to 0 for them, compute_all_logic in target/i386/cc_helper_template.h) and cannot fault (no
    memory operand): the flags before it are dead, so the unit's count may go right in front of it as
    a plain `add`, with no interrupt or fault in between to see them."""
    return insn.mnemonic in FLAG_WRITERS and all(op.type in (1, 2) for op in insn.operands)


# one-byte opcodes that always call out: hlt, int3, int n, into, int1, iret, retf, far call/jmp,
# in/out/ins/outs, push ss, pop ss
CALLOUT_OPCODES = {0xF4, 0xCC, 0xCD, 0xCE, 0xF1, 0xCF, 0xCB, 0xCA, 0x9A, 0xEA, 0xE4, 0xE5, 0xE6,
                   0xE7, 0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6D, 0x6E, 0x6F, 0x16, 0x17}
# after 0F: sldt/str/lldt/ltr/verr/verw, sgdt/sidt/lgdt/lidt/smsw/lmsw/invlpg, lar, lsl, clts,
# invd, wbinvd, mov to/from CRn/DRn, wrmsr, rdmsr, pop gs, lss, lgs
CALLOUT_0F = {0x00, 0x01, 0x02, 0x03, 0x06, 0x08, 0x09, 0x20, 0x21, 0x22, 0x23, 0x30, 0x32, 0xA9,
              0xB2, 0xB5}
def _special_0f01(insn, op):
    """0F 01 with a register ModRM other than smsw/lmsw is another instruction (rdtscp, vmcall,
    monitor, xgetbv, ...): not a descriptor-table access."""
    return op[1] == 0x01 and _is_register_operand(insn) and _reg_field(insn) not in (4, 6)


CALLOUT_KIND = {0xCC: "int", 0xCD: "int", 0xCE: "int", 0xF1: "int", 0xCF: "iret", 0xCB: "retf",
                0xCA: "retf", 0x9A: "far", 0xEA: "far", 0x16: "store-sreg", 0x17: "load-ss"}


def callout_kind(insn):
    op = bytes(insn.opcode)
    first = op[0]
    if first in CALLOUT_KIND:
        return CALLOUT_KIND[first]
    if first == 0xFF:
        return "far"
    if first == 0x8E:
        return "load-ss" if _reg_field(insn) == 2 else "load-gs"
    if first == 0x8C:
        return "store-sreg"
    if first == 0x0F and op[1] in (0xB2,):
        return "load-ss"
    if first == 0x0F and op[1] in (0xA9, 0xB5):
        return "load-gs"
    return "emulate"


class Translator:
    """Makes translation units from guest code. `rules` and `chain` can be replaced (lab 3)."""

    def __init__(self, read, dispatcher, data, rules=None, chain_rule=None, count=True, inline_calls=True,
                 unroll=UNROLL):
        self.read = read                      # read(address, size) -> bytes of guest memory
        self.dispatcher = dispatcher          # cache address of the lookup code (see dispatcher())
        self.data = data                      # the linear address of the VMM's data page
        self.rules = dict(RULES) if rules is None else dict(rules)
        self.chain = chain_jump if chain_rule is None else chain_rule
        self.store_callouts = set()           # guest addresses whose store calls out (adaptive translation)
        self.count = count                    # units count the guest instructions they stand for (ICOUNT)
        self.inline_calls = inline_calls      # a call rel32 goes on in its callee, in the same unit
        self.unroll = unroll                  # copies of a loop that branches back to its unit's start

    def translate(self, guest, cache, vcs, callouts, limit=None):
        """Translate the guest code at `guest` into a Unit placed at cache address `cache`; `limit`:
        at most that many guest instructions (BinaryTranslation: 1, for a store into translated code
        that must run alone)."""
        unit = Unit(guest=guest, cache=cache, vcs=vcs)
        u = Builder(unit, callouts, self.count)
        body = None if limit else self._loop_body(guest)
        copies = min(self.unroll, MAX_UNROLLED // body) if body else 1
        if copies < 2:
            body = None
        frames = []                          # calls translated in line whose ret is still to come
        address, window, ended, total, outside = guest, False, False, 0, 0
        while body is not None or (total < (limit or MAX_UNIT + INLINE_BUDGET) and outside < MAX_UNIT
                                   and len(unit.code) < MAX_UNIT_BYTES):
            try:
                code = self.read(address, 15)
            except Fault:
                if address == guest:
                    raise                            # the unit's first instruction is not mapped
                break                                # end the unit; its exit faults on the fetch
            insn = decode(code, address)
            if insn is None:
                if window:
                    self._window(u, address)
                start = u.here
                u.callout("undecodable", address)
                unit.pieces.append(Piece(address, 0, "(undecodable)", start, bytes(unit.code[start - cache:]), "call-out"))
                ended = True
                break
            text = f"{insn.mnemonic} {insn.op_str}".strip()
            kind = classify_instruction(insn)
            if kind == "copy" and address in self.store_callouts:
                kind = "store"                       # adaptive translation: its store calls out
            if kind == "rule" and insn.mnemonic not in self.rules:
                kind = "call-out"                    # no rewrite rule: it traps like under trap-and-emulate
            in_line = None if window or body is not None or limit else self._in_line(insn, kind, frames, total)
            if window and kind == "call-out":
                window = False                       # the VMM delivers it after emulating the instruction
            elif window and kind == "indirect":
                self._window(u, address)             # before a ret: the closest the cache code gets
                window = False
            u.window_at_exits, window = window and kind == "direct", window and kind != "direct"
            start = u.here
            how = {"copy": "copied", "rule": "rewritten", "sensitive-read": "rewritten",
                   "gs-prefixed": "rewritten", "call-out": "call-out", "store": "call-out"}.get(kind, "exit")
            u.started += 1                           # from its first cache byte on, it has started
            outside += not frames
            after = address + insn.size
            if body is not None and total % body == body - 1:
                ended = self._loop_branch(u, insn, last=total + 1 == copies * body)
                after = guest                        # the next copy
            elif in_line == "call":
                u.emit(emit.push_imm32(after))       # the guest's return address, as the call pushes it
                for frame in frames:
                    frame.moved(-4)
                frames.append(Frame(after))
                after, how = insn.operands[0].imm & 0xFFFFFFFF, "rewritten"
            elif in_line == "ret":
                pops = 4 + (insn.operands[0].imm if insn.operands else 0)
                u.emit(emit.lea_esp(pops))           # the pop of the return address the call pushed
                after, how = frames.pop().ret, "rewritten"
                for frame in frames:
                    frame.moved(pops)
            else:
                ended = self._one(u, insn, kind)
                for frame in frames:
                    frame.moved(stack_effect(insn, kind))
            u.window_at_exits = False
            unit.pieces.append(Piece(address, insn.size, text, start, bytes(unit.code[start - cache:]), how))
            address = after
            total += 1
            # an sti in the shadow of the sti before it runs with IF already 1, so it holds nothing
            # off: the check comes right after it (SDM Vol. 2B, STI: only an STI that sets IF from 0)
            if u.opened_window == "now" or (window and u.opened_window in (None, "next")):
                self._window(u, address)
                window = False
            elif u.opened_window == "next":
                window = True
            u.opened_window = None
            if ended:
                break
        if not ended:
            if window:
                self._window(u, address)
            start = u.here
            u.exit(address)
            unit.pieces.append(Piece(address, 0, "(end of unit)", start, bytes(unit.code[start - cache:]), "exit"))
        n = unit.instructions
        for at, target, before in unit.counts:
            value = (n if target == "n" else target) - (n if before == "n" else before)
            unit.code[at:at + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
        unit.marks = [(at, n if added == "n" else added) for at, added in unit.marks]
        for piece in unit.pieces:                    # the pieces' copies of the code, with the counts
            piece.code = bytes(unit.code[piece.cache - cache:piece.cache - cache + len(piece.code)])
        return unit

    def _in_line(self, insn, kind, frames, total):
        """"call" or "ret" when this call rel32 or ret is translated in line, else None. A call goes on in
        its callee (up to MAX_DEPTH deep); a ret goes on after the call it returns from when nothing
        since that call can have changed the return address the call pushed or ESP's way back to it
        (Frame: only pushes and pops moved ESP, nothing else stored to memory), so it needs no check:
        the unit is one straight pass that nothing else runs inside (an interrupt, a fault or a
        call-out leaves it for the VMM, which resumes the guest at a guest address)."""
        if not self.inline_calls or any(insn.prefix):
            return None
        first = bytes(insn.opcode)[0]
        if kind == "direct" and first == 0xE8 and len(frames) < MAX_DEPTH and total < MAX_UNIT + INLINE_BUDGET - 2:
            return "call"
        if kind == "indirect" and first in (0xC3, 0xC2) and frames and frames[-1].safe and frames[-1].depth == 0:
            return "ret"
        return None

    def _loop_body(self, guest):
        """The number of guest instructions of a loop at `guest` that the translator unrolls: copied
        instructions only (no rep string instruction, no store that calls out), then a conditional
        jump back to `guest`. None for any other code."""
        address = guest
        for length in range(1, MAX_UNIT + 1):
            try:
                insn = decode(self.read(address, 15), address)
            except Fault:
                return None
            if insn is None:
                return None
            kind = classify_instruction(insn)
            if kind == "direct" and _is_jcc(insn):
                return length if insn.operands[0].imm & 0xFFFFFFFF == guest else None
            if kind != "copy" or address in self.store_callouts or repeats_by_ecx(insn) or insn.prefix[0]:
                return None
            address += insn.size
        return None

    def _loop_branch(self, u, insn, last):
        """The jcc at the end of one copy of an unrolled loop. Taken, it goes on to the next copy (from
        the last, back to the first, after a count of every copy if no `add` counted them ahead); not
        taken, the loop ends: an exit whose count takes back the copies counted ahead that did not run.
        True at the last copy: the unit ends there."""
        condition = _condition(insn)
        after = insn.address + insn.size
        if last:
            u.count()
            u.emit(emit.jcc(condition, u.here, u.unit.cache))
            u.exit(after)
            return True
        at = u.here
        u.emit(emit.jcc(condition, at, at))
        u.side = True
        u.exit(after)
        u.side = False
        u.unit.code[at - u.unit.cache:at - u.unit.cache + 6] = emit.jcc(condition, at, u.here)
        return False

    def _window(self, u, address):
        """The check for a waiting interrupt, as a piece of its own: the guest is at `address`."""
        start = u.here
        u.check_pending(address)
        u.unit.pieces.append(Piece(address, 0, "(interrupt window)", start,
                                   bytes(u.unit.code[start - u.unit.cache:]), "check"))

    def _one(self, u, insn, kind):
        """Translate one instruction; True when it ends the unit."""
        after = insn.address + insn.size
        if kind == "copy":
            if u.counting and u.added == 0 and overwrites_flags(insn):
                u.count(clobber=True)               # the copy sets every flag the add changed
            if u.counting and repeats_by_ecx(insn):
                self._rep(u)
            u.emit(bytes(insn.bytes))
            return False
        if kind == "rule":
            self.rules[insn.mnemonic](u, insn)
            return False
        if kind == "store":
            u.callout("store", insn.address, insn.size)
            u.emit(bytes(insn.bytes))               # the VMM lets this copy store, unfaulted
            return False
        if kind == "sensitive-read":
            u.emit(_sensitive_read(insn, u.vcs))
            return False
        if kind == "gs-prefixed":
            # the guest's own GS for this one instruction, then the VMM's back, read through CS
            # (flat, based at 0) from the data page
            u.emit(emit.load_gs(VGS) + bytes(insn.bytes) + emit.load_gs_from_code(self.data + VMM_GS))
            return False
        if kind == "call-out":
            what = callout_kind(insn)
            u.callout(what, insn.address, insn.size)
            if what in ("iret", "retf"):
                u.emit(bytes(insn.bytes))          # run for real when it returns to user code
            return True
        if kind == "direct":
            return self._direct(u, insn, after)
        return self._indirect(u, insn, after)

    def _rep(self, u):
        """rep movs/stos/lods: the CPU counts each iteration as an instruction, and one more that
        finds ECX 0 (QEMU's gen_repz loops back to the instruction: Unicorn's code hook sees each
        pass), so the count goes up by ECX here, ahead of them: mov [gs:SAVED_EAX], eax;
        mov eax, [gs:ICOUNT]; lea eax, [eax + ecx]; mov [gs:ICOUNT], eax; mov eax, [gs:SAVED_EAX].
        Where a slice stops between two iterations, Unit.rep_uncounted takes back those still to come."""
        u.emit(emit.gs_store_reg(SAVED_EAX, "eax") + emit.gs_load_reg("eax", ICOUNT) + emit.lea_eax_eax_ecx()
               + emit.gs_store_reg(ICOUNT, "eax") + emit.gs_load_reg("eax", SAVED_EAX))
        u.unit.reps.add(u.here)

    def _direct(self, u, insn, after):
        first = bytes(insn.opcode)[0]
        target = insn.operands[0].imm & 0xFFFFFFFF
        if first in (0xEB, 0xE9):                     # jmp rel
            u.exit(target)
        elif first == 0xE8:                           # call rel: push the *guest* return address
            u.emit(emit.push_imm32(after))
            u.exit(target)
        elif first in (0xE0, 0xE1, 0xE2, 0xE3):      # loop/loope/loopne/jecxz: rel8 only
            u.emit(bytes([first, 2]) + emit.jmp_short(0))
            skip = len(u.unit.code)
            u.exit(target)
            u.unit.code[skip - 1] = len(u.unit.code) - skip     # the jmp short over the taken exit
            u.exit(after)
        else:                                         # jcc: taken -> second exit, else the first
            condition = _condition(insn)
            at = u.here
            u.emit(emit.jcc(condition, at, at))
            u.exit(after)
            taken = u.here
            u.unit.code[at - u.unit.cache:at - u.unit.cache + 6] = emit.jcc(condition, at, taken)
            way = u.exit(target)
            if way.site == taken:
                way.branch = at                       # nothing before its jmp: chaining may aim the jcc itself
        return True

    def _indirect(self, u, insn, after):
        """ret, jmp r/m32, call r/m32: the target into EAX, then the shared lookup code."""
        first = bytes(insn.opcode)[0]
        if first in (0xC3, 0xC2):
            return self._ret(u, insn, after)
        u.count()
        u.emit(emit.gs_store_reg(SAVED_EAX, "eax"))
        if first in (0xC3, 0xC2):
            u.emit(emit.pop("eax"))
            if first == 0xC2:
                u.emit(emit.lea_esp(insn.operands[0].imm))
        else:
            u.emit(_operand_to_eax(insn))
            if _reg_field(insn) == 2:
                u.emit(emit.push_imm32(after))
        u.emit(emit.jmp(u.here, self.dispatcher))
        return True


    def _ret(self, u, insn, after):
        """ret: a prediction checked inline, the shared lookup code when it fails.

            mov [gs:SAVED_ECX], ecx
        check:
            mov ecx, [esp]                  ; the return address the guest's stack holds
            lea ecx, [ecx - predicted]      ; 0 exactly when it is the predicted one
            jecxz hit
            int3                            ; "predict", once: the VMM predicts this target (a nop after)
            mov ecx, [gs:SAVED_ECX]
            <the lookup: mov [gs:SAVED_EAX], eax; pop eax; jmp dispatcher>
        hit:
            mov ecx, [gs:SAVED_ECX]
            lea esp, [esp + 4]              ; the pop, without touching EFLAGS
            jmp predicted's translation     ; an exit like any other: chained once translated

        The prediction is the first target the ret returns to (until then, the address after it):
        a function called from one place always hits, in 7 instructions and a chained jump where
        the lookup takes 18 and a jump through memory."""
        pops = 4 + (insn.operands[0].imm if bytes(insn.opcode)[0] == 0xC2 else 0)
        u.emit(emit.gs_store_reg(SAVED_ECX, "ecx"))
        u.count(register="ecx")
        check = u.here
        u.emit(emit.mov_ecx_from_esp() + emit.lea_ecx_ecx(-after))
        jump = len(u.unit.code)
        u.emit(emit.jecxz(0))
        predict = u.here
        u.callout("predict", insn.address, insn.size, check=check)
        u.emit(emit.gs_load_reg("ecx", SAVED_ECX) + emit.gs_store_reg(SAVED_EAX, "eax") + emit.pop("eax"))
        if pops > 4:
            u.emit(emit.lea_esp(pops - 4))
        u.emit(emit.jmp(u.here, self.dispatcher))
        u.unit.code[jump + 1] = len(u.unit.code) - jump - 2
        u.emit(emit.gs_load_reg("ecx", SAVED_ECX) + emit.lea_esp(pops))
        u.exit(after, count=False)
        u.callouts[predict].exit = u.unit.exits[-1]
        return True


def _condition(insn):
    """The condition of a jcc as emit.jcc names it."""
    condition = insn.mnemonic[1:]
    return {"z": "e", "nz": "ne", "c": "b", "nc": "ae", "na": "be", "nbe": "a", "nae": "b", "nb": "ae",
            "pe": "p", "po": "np", "nge": "l", "nl": "ge", "ng": "le", "nle": "g"}.get(condition, condition)


def _is_jcc(insn):
    op = bytes(insn.opcode)
    return 0x70 <= op[0] <= 0x7F or (op[0] == 0x0F and 0x80 <= op[1] <= 0x8F)


STRING = ("movs", "stos", "cmps", "scas", "lods", "ins", "outs")


def stack_effect(insn, kind):
    """How far a translated guest instruction moves ESP (bytes, a pop positive), or None when it may
    store to memory other than by pushing, or move ESP any other way (capstone's operand access and
    implicit registers; string instructions and prefixed ones are all taken as stores)."""
    if kind != "copy" or insn.mnemonic.startswith(STRING) or insn.prefix[0]:
        return None
    if any(op.type == C.X86_OP_MEM and op.access & CS_AC_WRITE for op in insn.operands):
        return None
    if C.X86_REG_ESP not in insn.regs_access()[1]:
        return 0
    size = 2 if insn.prefix[2] == 0x66 else 4
    if insn.mnemonic == "push":
        return -size
    if insn.mnemonic == "pop" and insn.operands[0].type == C.X86_OP_REG and insn.operands[0].reg != C.X86_REG_ESP:
        return size
    return None


@dataclass
class Frame:
    """A call translated in line, while the translator is in its callee: `depth` is ESP's distance
    from the return address the call pushed (below it: negative), `safe` whether that address is
    still certainly there, and ESP's way back to it certain (stack_effect)."""
    ret: int
    depth: int = 0
    safe: bool = True

    def moved(self, by):
        if by is None:
            self.safe = False
        else:
            self.depth += by
            self.safe = self.safe and self.depth <= 0     # a pop past it: a push may overwrite it


def _sensitive_read(insn, vcs):
    """push cs, mov r, cs: the virtual CS. push gs, mov r, gs: the guest's GS from the data page."""
    first = bytes(insn.opcode)[0]
    if first == 0x0E:
        return emit.push_imm32(vcs)
    if first == 0x0F:
        return emit.push_gs(VGS)
    reg = insn.reg_name(insn.operands[0].reg)
    bits = insn.operands[0].size * 8
    name = {16: {"ax": "eax", "cx": "ecx", "dx": "edx", "bx": "ebx", "sp": "esp", "bp": "ebp",
                 "si": "esi", "di": "edi"}}.get(bits, {}).get(reg, reg)
    if _reg_field(insn) == 1:
        return emit.mov_imm(name, vcs, bits)
    return emit.gs_load_reg(name, VGS, bits)


def _operand_to_eax(insn):
    """jmp/call r/m32 (FF /4, FF /2) -> mov eax, r/m32 (8B /0): the same ModRM, SIB and
    displacement with the reg field set to EAX, behind the same prefixes."""
    raw = bytes(insn.bytes)
    at = raw.index(0xFF, len([p for p in insn.prefix if p]))
    modrm = raw[at + 1] & ~0x38
    return raw[:at] + bytes([0x8B, modrm]) + raw[at + 2:]


def dispatcher(at):
    """The lookup code every ret and indirect branch jumps to, with the guest target in EAX and the
    guest's EAX in SAVED_EAX. It must not change EFLAGS, so it masks without `and` (a byte table of
    i & 0xF) and compares without `cmp`: the table
    holds each guest address negated, and `lea ecx, [ecx + eax]` is 0 exactly on a match, which
    `jecxz` tests. A hit jumps to the translation; a miss calls out (GUEST_TARGET)."""
    restore = emit.gs_load_reg("eax", SAVED_EAX) + emit.gs_load_reg("ecx", SAVED_ECX)
    index = emit.movzx_ecx_ah() + emit.mov_ch_gs_table(NIBBLE) + emit.mov_cl_al()   # ecx = eax & 0xFFF
    miss = emit.gs_store_reg(GUEST_TARGET, "eax") + restore
    head = (emit.gs_store_reg(SAVED_ECX, "ecx") + index + emit.load_table_ecx(LOOKUP)
            + emit.lea_ecx_ecx_eax() + emit.jecxz(len(miss) + 1))
    hit = (index + emit.load_table_ecx(LOOKUP + 4) + emit.gs_store_reg(TARGET, "ecx")
           + restore + emit.jmp_gs(TARGET))
    code = head + miss + emit.int3() + hit
    return code, at + len(head + miss)          # the code, and where its int3 is
