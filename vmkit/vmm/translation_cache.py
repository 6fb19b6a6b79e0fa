"""The translation cache: where translated guest code lives, and how its pieces find each other.

It owns a region of the VMM's memory the guest cannot address (its segments are truncated below
it). It keeps

    units       guest address -> the live translation unit that starts there
    callouts    cache address of every int3 -> what the VMM must do there
    boundaries  cache address -> guest address, wherever the guest is between two instructions
                (where an interrupt may be delivered, or a fault reported to the guest)
    lookup      an in-memory table (guest address -> cache address) the `ret` and indirect-jump
                code searches without the VMM

and it chains exits to their targets, un-chains them when a target dies, invalidates units whose
guest code was written to, and flushes everything when the cache is full.

Writes to translated code are caught by write hooks on the guest's pages, and a write kills only
the units whose guest bytes it overlaps. A page starts with one hook over all of it (cheap to keep
while its code is being translated). A page that keeps taking writes that touch none of its
translated bytes (a kernel's variables next to its code, a user program's counter on a page of
kernel code) switches to hooks over just the byte ranges its units were translated from, so that
its other writes never reach the VMM. This is QEMU's scheme (accel/tcg/translate-all.c,
tb_invalidate_phys_page_fast: a page's code bitmap is built once SMC_BITMAP_USE_THRESHOLD writes have
hit it, and from then on a write invalidates translations only where the bitmap has code);
Unicorn checks a hook's address range in C, so a write outside the ranges costs no Python at all.
"""
import bisect

from unicorn import UC_HOOK_MEM_WRITE

from .emit import jmp
from .translator import LOOKUP, LOOKUP_ENTRIES, NIBBLE, chain_jump, dispatcher

UNIT_ROOM = 2048          # more than the largest unit the translator can make
PAGE = 4096
# Writes that touch no translated code a page takes before its hook narrows to the code's ranges:
# QEMU's SMC_BITMAP_USE_THRESHOLD (accel/tcg/translate-all.c), the same number.
NARROW_AFTER = 10
# Unicorn runs a write hook when the write's first byte is in the hook's range (qemu/accel/tcg/cputlb.c,
# store_helper: HOOK_BOUND_CHECK on the address alone), so a range's hook starts this many bytes early:
# a store of up to 16 bytes (movdqu) that begins before the code and reaches into it is still seen.
WIDEST_STORE = 16


def empty_slot(index):
    """A lookup entry no guest address with this index matches: it holds -(index + 1)."""
    return (-(index + 1) & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4)


class TranslationCache:
    def __init__(self, uc, base, size, data, translator, on_code_written):
        self.uc, self.base, self.size, self.data = uc, base, size, data
        self.translator = translator
        self.on_code_written = on_code_written     # called with the units a guest write killed, and
                                                    # the write's address and size
        self.flushes = 0
        self.writes_seen = 0                        # guest writes that reached a write hook
        self._hooks = {}
        self._reset()

    def _reset(self):
        self.units, self.callouts, self.boundaries = {}, {}, {}
        self._by_cache = []                         # (cache address, unit) in address order
        self._starts = set()                        # the cache address of every unit's first byte
        self._pages = {}                            # guest page -> units with code on it
        for handles in self._hooks.values():
            for handle in handles:
                self.uc.hook_del(handle)
        self._hooks = {}                            # guest page -> its write hooks
        self._quiet = {}                            # guest page -> writes to it that touched no code
        self.narrowed = set()                       # pages hooked over their code's ranges only
        code, self.dispatcher_callout = dispatcher(self.base)
        self.uc.mem_write(self.base, code + b"\xCC")
        self.uc.ctl_remove_cache(self.base, self.base + self.size)
        self.translator.dispatcher = self.base
        self.free = self.base + len(code) + 1
        self.uc.mem_write(self.data + NIBBLE, bytes(i & 0xF for i in range(256)))
        self.uc.mem_write(self.data + LOOKUP, b"".join(empty_slot(i) for i in range(LOOKUP_ENTRIES)))

    @property
    def used(self):
        return self.free - self.base

    def __contains__(self, address):
        return self.base <= address < self.base + self.size

    # --- finding and making translations ----------------------------------------------------------
    def lookup(self, guest, vcs):
        unit = self.units.get(guest)
        return unit if unit is not None and unit.vcs == vcs else None

    def translate(self, guest, vcs, limit=None):
        """Translate the guest code at `guest` (at most `limit` guest instructions); the new unit, and
        whether the cache was flushed."""
        flushed = False
        if self.free + UNIT_ROOM > self.base + self.size:
            self.flush()
            flushed = True
        unit = self.translator.translate(guest, self.free, vcs, self.callouts, limit)
        self._patch(unit.cache, unit.code)
        self.free += len(unit.code)
        old = self.units.get(guest)
        if old is not None:
            self.kill(old)
        self.units[guest] = unit
        self._by_cache.append((unit.cache, unit))
        self._starts.add(unit.cache)
        for piece in unit.pieces:
            if piece.size:
                self.boundaries[piece.cache] = piece.guest
        self.boundaries.update(unit.checks)
        for way in unit.exits:
            self.boundaries[way.site] = way.target
        self._remember(guest, unit.cache)
        self._trace(unit)
        return unit, flushed

    def _remember(self, guest, cache):
        slot = self.data + LOOKUP + 8 * (guest & (LOOKUP_ENTRIES - 1))
        self.uc.mem_write(slot, (-guest & 0xFFFFFFFF).to_bytes(4, "little") + cache.to_bytes(4, "little"))

    def predict(self, way, target, check):
        """Aim a ret's exit `way` at the guest address `target`: its check (at `check`: mov ecx, [esp];
        lea ecx, [ecx - target]) now compares with it, and its exit is unchained from the old one."""
        if way.chained_to is not None:
            way.chained_to.chained_from = [w for w in way.chained_to.chained_from if w is not way]
            self._unchain(way)
        way.target = target
        self.boundaries[way.site] = target
        self._patch(check + 5, (-target & 0xFFFFFFFF).to_bytes(4, "little"))

    def patch(self, address, code):
        """Write cache code over the code at `address` (see _patch)."""
        self._patch(address, code)

    def _patch(self, address, code):
        """Write cache code where the CPU may have run older code: Unicorn keeps its own
        translations of what it ran, so those must go too."""
        self.uc.mem_write(address, bytes(code))
        self.uc.ctl_remove_cache(address, address + len(code))

    def chain(self, way, unit):
        """Aim the exit `way` straight at `unit`'s translation, with the translator's chain rule; and
        the jcc whose taken way is that exit alone (Exit.branch), with the built-in rule, so that a
        taken branch goes straight on too (QEMU's goto_tb does the same for both ways of a jcc)."""
        self._patch(way.site, self.translator.chain(way.site, unit.cache))
        if way.branch is not None and self.translator.chain is chain_jump:
            self._aim_branch(way, unit.cache)
        way.chained_to = unit
        unit.chained_from.append(way)

    def _aim_branch(self, way, target):
        """jcc rel32 (0F 8x cd) at way.branch: the same condition, to `target`."""
        opcode = bytes(self.uc.mem_read(way.branch, 2))
        self._patch(way.branch, opcode + ((target - (way.branch + 6)) & 0xFFFFFFFF).to_bytes(4, "little"))

    def _unchain(self, way):
        self._patch(way.site, jmp(way.site, way.site + 5))
        if way.branch is not None:
            self._aim_branch(way, way.site)
        way.chained_to = None

    # --- where the guest is -------------------------------------------------------------------------
    def guest_address(self, cache):
        """The guest address the guest is at when the CPU is at `cache`, or None mid-instruction."""
        return self.boundaries.get(cache)

    def locate(self, cache):
        """The unit and the piece whose cache code contains `cache` (dead units included)."""
        i = bisect.bisect_right(self._by_cache, cache, key=lambda pair: pair[0]) - 1
        if i < 0:
            return None, None
        unit = self._by_cache[i][1]
        for piece in unit.pieces:
            if piece.cache <= cache < piece.cache + len(piece.code):
                return unit, piece
        return unit, None

    def uncounted(self, cache, after_int3=False, ecx=lambda: 0):
        """The guest instructions started but not yet added to ICOUNT by the unit the CPU is in at
        `cache` (Unit.uncounted); 0 outside every unit (the lookup code runs after a unit's count).
        `after_int3`: the CPU stopped on a call-out's int3, and Unicorn left EIP after it: the CPU is
        still at the int3 (the next byte may be another exit's, or the next unit's first). `ecx`: the
        CPU's ECX (a function: read only at a rep instruction counted ahead, Unit.rep_uncounted)."""
        at = cache - 1 if after_int3 else cache
        if not after_int3 and cache in self._starts:
            return 0                                    # before a unit's first instruction: the most common
        unit, _ = self.locate(at)
        if unit is None or not unit.cache <= at < unit.cache + unit.size:
            return 0
        return unit.uncounted(cache, at) + (unit.rep_uncounted(cache, ecx()) if cache in unit.reps else 0)

    # --- guest writes to translated code -------------------------------------------------------------
    def _trace(self, unit):
        """A write to the unit's guest bytes must kill it: trace every page they are on."""
        pages = {page for start, end in unit.spans for page in range(start // PAGE, (end - 1) // PAGE + 1)}
        for page in sorted(pages):
            self._pages.setdefault(page, []).append(unit)
            if page in self.narrowed:
                self._hook_ranges(page)
            elif page not in self._hooks:
                self._hooks[page] = [self.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write, None,
                                                      page * PAGE, page * PAGE + PAGE - 1)]

    def code_ranges(self, page):
        """The byte ranges [start, end) of the page that live units were translated from, merged."""
        start, end = page * PAGE, page * PAGE + PAGE
        spans = sorted((max(lo, start), min(hi, end)) for u in self._pages.get(page, ()) if u.alive
                       for lo, hi in u.spans if lo < end and start < hi)
        merged = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return [tuple(span) for span in merged]

    def _hook_ranges(self, page):
        """The page's write hooks, one over each range of its translated bytes."""
        for handle in self._hooks.pop(page, ()):
            self.uc.hook_del(handle)
        self._hooks[page] = [self.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write, None, lo - WIDEST_STORE + 1, hi - 1)
                             for lo, hi in self.code_ranges(page)]

    def _on_write(self, uc, access, address, size, value, _):
        self.writes_seen += 1
        page = address // PAGE
        dead = {id(unit): unit for p in {page, (address + size - 1) // PAGE} for unit in self._pages.get(p, ())
                if unit.alive and any(lo < address + size and address < hi for lo, hi in unit.spans)}.values()
        dead = list(dead)                           # a unit on both pages of the write, once
        if dead:
            self.on_code_written(dead, address, size)
        elif page not in self.narrowed:
            quiet = self._quiet[page] = self._quiet.get(page, 0) + 1
            if quiet >= NARROW_AFTER:
                self.narrowed.add(page)
                self._hook_ranges(page)

    def kill(self, unit):
        """Invalidate a unit: nothing may enter it any more."""
        if not unit.alive:
            return
        unit.alive = False
        if self.units.get(unit.guest) is unit:
            del self.units[unit.guest]
        for way in unit.chained_from:
            if way.chained_to is unit:
                self._unchain(way)
        unit.chained_from.clear()
        for way in unit.exits:
            if way.chained_to is not None:
                way.chained_to.chained_from = [w for w in way.chained_to.chained_from if w is not way]
        for piece in unit.pieces:
            self.boundaries.pop(piece.cache, None)
        for way in unit.exits:
            self.boundaries.pop(way.site, None)
        for cache, _ in unit.checks:
            self.boundaries.pop(cache, None)
        index = unit.guest & (LOOKUP_ENTRIES - 1)
        slot = self.data + LOOKUP + 8 * index
        if int.from_bytes(self.uc.mem_read(slot + 4, 4), "little") == unit.cache:
            self.uc.mem_write(slot, empty_slot(index))
        for page, units in self._pages.items():
            if unit in units:
                units.remove(unit)

    def flush(self):
        """The cache is full: throw every translation away and start again."""
        self.flushes += 1
        self._reset()

    def __repr__(self):
        return (f"<TranslationCache {len(self.units)} units, {self.used:,} of {self.size:,} bytes, "
                f"{self.flushes} flushes>")


