"""Lab 9 (direct paging): a student's page-table rules in Xen's frame table, each call on a budget, the
requests a PV kernel makes tried on them, the course's PV kernels booted on them, and what the frame
table and the page tables hold afterwards as plain data.

Long because: the rules' budget, the request scripts, the kernel runs, the facts of the frame table
and the kernel's side of every probe (lazy MMU mode included) belong to one lab.

The rules are the ones vmkit.xen.mm.PAGE_TABLE_RULES names (get_page_type, get_page_from_l1e,
mod_l1_entry); `Paravirt(page_table_rules=...)` puts them in the hypervisor's frame table from the
start of day on, so the domain builder's tables are validated with them too.
"""
import json
import signal
import threading
from contextlib import contextmanager

import vmkit
from .. import guests
from ..errors import GuestError
from ..xen import BadAddress, Paravirt
from ..xen import abi as xen
from ..xen.mm import ENTRIES, L1, L2, PAGE_TABLE_RULES, XEN
from .checks import check, check_facts, shown
from .runs import explained
from . import answers
from .answers import withheld
from .answers import yours

RULE_SECONDS = 1.0                 # one outermost call of a student's rule; the reference's take milliseconds
XEN_MAX_INSTRUCTIONS = 3_000_000
XEN_TIMEOUT = 5.0                  # a whole guest run; the lab's guests need well under one second
RULE_NAMES = tuple(PAGE_TABLE_RULES)
IDLE_DOM0 = "again:\n    mov ebx, 0\n    mov eax, 29\n    int 0x82\n    jmp again\n"   # yields forever
REQUESTS, DONE = 0x300000, 0x301000    # where LabXen writes a hypercall's arguments in dom0 (never remapped)
XEN_HINTS = {
    "results": "what each request returned: 0, or -22 (-EINVAL) when a rule refused it, and then nothing may change; "
               "0 where Xen's rules give -22 lets through what they refuse, -22 where they give 0 refuses what they "
               "allow (often because of a reference an earlier request kept, or never took); a batch also says how "
               "many of its requests went through",
    "frames": "the frame table afterwards: every frame a domain owns whose owner, reference count, type and type "
              "count are not those of a frame nothing uses (owner, 1 reference, no type)",
    "tables": "the entries of every page table in use afterwards, by machine address",
    "serial": "what the kernels printed: a `refused` line is a request Xen refused, with its errno",
    "exit_code": "dom0's shutdown reason; 3 is a crash",
    "hypercalls": "each hypercall as [domain, name, the value returned in EAX]",
    "pt_updates": "page-table entries changed by mmu_update and update_va_mapping",
}


# --- the budget --------------------------------------------------------------------------------------
class _OverBudget(BaseException):
    """A student's rule ran past its budget (a BaseException: `except Exception` lets it pass). `what`
    is the call that was running when the time ran out."""

    def __init__(self, what):
        super().__init__(what)
        self.what = what


_running = []                      # the student's rule calls in progress, outermost first


@contextmanager
def budget(what, seconds=RULE_SECONDS):
    """Stop the code inside after `seconds` with an AssertionError that names the call, and the rule call
    it was in when the time ran out. Rules call each other (get_page_type validates a table with get_page_from_l1e, which asks
    get_page_type for a writable page), so only the outermost call starts the clock, and the calls
    inside it share its time. A SIGALRM timer, where the code runs on the main thread (a notebook's
    cells do); elsewhere no limit."""
    if _running or threading.current_thread() is not threading.main_thread():
        _running.append(what)
        try:
            yield
        finally:
            _running.pop()
        return

    def expire(signum, frame):
        raise _OverBudget(_running[-1] if _running else what)
    before = signal.signal(signal.SIGALRM, expire)
    left, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    _running.append(what)
    try:
        yield
    except _OverBudget as over:
        inner = "" if over.what == what else f" (when the time ran out, it was in {over.what})"
        raise AssertionError(f"{what} was still running after {seconds:g} s{inner}; the reference takes "
                             f"milliseconds\n  where to look: a loop that never ends: one that waits for a count or "
                             f"a type to change (nothing else runs while Xen decides), or walks entries it keeps "
                             f"adding to") from None
    finally:
        _running.pop()
        signal.setitimer(signal.ITIMER_REAL, left)
        signal.signal(signal.SIGALRM, before)


def _call(name, args):
    """A rule call in words: `your get_page_type(mfn 0x11f5, 'l1_page_table')`."""
    if name == "get_page_type":
        shown_args = f"mfn {args[0]:#x}, {args[1]!r}"
    elif name == "get_page_from_l1e":
        shown_args = f"{args[0]:#010x}, domain {getattr(args[1], 'domid', args[1])}"
    else:
        shown_args = (f"{args[0]:#x}, {args[1]:#010x}, domain {getattr(args[2], 'domid', args[2])}, "
                      f"foreign {getattr(args[3], 'domid', args[3])}" + (", preserve_ad=True" if args[4:5] == (True,) else ""))
    return f"your {name}({shown_args})"


def _budgeted(name, rule):
    """`rule` with each call on the budget, an exception it raises turned into a message that names the
    call, and an answer that is not True or False refused with one."""
    def call(mm, *args):
        what = _call(name, args)
        with budget(what):
            try:
                answer = rule(mm, *args)
            except AssertionError:
                raise
            except Exception as error:          # the student's code: say which call it failed in
                raise AssertionError(f"{what} raised {type(error).__name__}: {error}") from error
        if answer is not True and answer is not False:
            raise AssertionError(f"{what} returned {answer!r}\n  where to look: a rule returns True (allowed: its "
                                 f"references taken) or False (refused: nothing kept; mm.refuse(why) returns False)")
        return answer
    call.__name__ = name
    return call


def budgeted_rules(rules):
    """The student's `rules` ({name: rule}), checked for names Xen has, each call on the budget."""
    check(isinstance(rules, dict) and rules and set(rules) <= set(RULE_NAMES)
          and all(callable(rule) for rule in rules.values()),
          "the page-table rules", expected=f"a dict of functions, named from {', '.join(RULE_NAMES)}",
          got=sorted(rules) if isinstance(rules, dict) else type(rules).__name__)
    return {name: _budgeted(name, rule) for name, rule in rules.items()}


# --- dom0 on the rules, asked by hand --------------------------------------------------------------------
class LabXen:
    """dom0 on vmkit's Xen with `rules` in place of Xen's (None: Xen's own), built but not running: the
    checks make its kernel's hypercalls from Python, as the kernel would make them. dom0 has 4 MiB, mapped
    at virtual = pseudo-physical (page 0 excepted), writable but for its two page-table frames: the page
    directory (pseudo-physical frame 5) and the L1 table (frame 6) that maps all of it."""

    def __init__(self, rules=None):
        self.dom0 = Paravirt(vmkit.assemble(IDLE_DOM0),
                             page_table_rules=None if rules is None else budgeted_rules(rules))
        self.mm = self.dom0.xen.mm
        self.why = None                                 # why Xen refused the last request (its MEM_LOG)
        self.hypercalls = 0                             # hypercalls made through this object
        self.decided = []                               # each request Xen decided, in order: [kind, ...]
        self.largest = 0                                # the most requests one hypercall carried

    # the numbers a request needs
    def mfn(self, pfn, domain=None):
        """The machine frame of pseudo-physical frame `pfn` of `domain` (default dom0)."""
        return (domain or self.dom0).p2m[pfn]

    @property
    def pd(self):
        """dom0's page directory (its CR3), a machine frame."""
        return self.dom0.guest_table

    @property
    def l1(self):
        """The L1 table that maps dom0's first 4 MiB, a machine frame."""
        return self.mm.u32(self.pd << 12) >> 12

    @property
    def xen_frame(self):
        """A frame of Xen's own (its GDT)."""
        return self.mm.gdt

    @property
    def free_frame(self):
        """A frame nobody owns."""
        return self.mm.free[0]

    @property
    def not_ram(self):
        """A frame number past the end of machine memory: I/O space."""
        return self.mm.frames + 0x100

    def pte(self, va, domain=None):
        """The machine address of the PTE that maps `va` in the current tables of `domain` (default dom0)."""
        found = self.mm.guest_map_l1e(domain or self.dom0, va)
        check(found is not None, f"an L1 table that maps {va:#x}", got="none: its PDE is not present")
        return found[0]

    def pde(self, va, domain=None):
        """The machine address of the PDE for `va` in the page directory of `domain` (default dom0)."""
        return ((domain or self.dom0).guest_table << 12) + 4 * (va >> 22)

    # what the frame table and memory say
    def frame(self, mfn):
        """Frame `mfn` in the frame table: {owner (a domid, "xen" or None), count, type (None while its type
        count is 0), type_count, pinned}."""
        page = self.mm.pages[mfn]
        owner = "xen" if page.owner is XEN else getattr(page.owner, "domid", None)
        return {"owner": owner, "count": page.count, "type": page.type if page.type_count else None,
                "type_count": page.type_count, "pinned": page.pinned}

    def entry(self, address):
        """The word at machine address `address` (an entry of a page table, say)."""
        return self.mm.u32(address)

    def mapped(self, va):
        """The machine frame dom0's current tables map at `va`, or None."""
        return self.dom0.mapped_frame(va)

    def read(self, va, size):
        """What dom0 reads at `va`: `size` bytes through its own page tables, or None where they map nothing."""
        try:
            return self.dom0.read(va, size)
        except BadAddress:
            return None

    def write(self, va, data):
        """dom0 stores `data` at `va` through its own tables, as its CPU would (setting accessed and dirty)."""
        self.dom0.write(va, bytes(data))

    # the hypercalls
    def _hypercall(self, number, args):
        self.hypercalls += 1
        result, notes = self.dom0.call(number, args)
        self.why = notes.get("refused")
        return result

    def _decided(self, kind, items, result, done):
        """Note the requests of a batch Xen decided: those that went through, and the one that ended it."""
        decided = items[:done + (result != 0 and done < len(items))]
        self.decided += [[kind, *item] for item in decided]
        self.largest = max(self.largest, len(items))

    def mmu_update(self, *requests, foreigndom=xen.DOMID_SELF):
        """mmu_update with `requests` (ptr, val): (the result, how many went through)."""
        self.dom0.write(REQUESTS, b"".join(xen.MMU_UPDATE.pack(ptr, val) for ptr, val in requests) or bytes(16))
        self.dom0.put_u32(DONE, 0)
        result = self._hypercall(1, (REQUESTS, len(requests), DONE, foreigndom, 0))
        done = self.dom0.u32(DONE)
        self._decided("set_pte", [list(r) for r in requests], result, done)
        return result, done

    def update_va_mapping(self, va, pte, flags=xen.UVMF_INVLPG, foreigndom=None):
        """update_va_mapping(va, pte, flags); with `foreigndom`, update_va_mapping_otherdomain."""
        if foreigndom is None:
            return self._hypercall(14, (va, pte, 0, flags, 0))
        return self._hypercall(22, (va, pte, 0, flags, foreigndom))

    def mmuext_op(self, *ops, foreigndom=xen.DOMID_SELF):
        """mmuext_op with `ops` (cmd, arg1): (the result, how many went through)."""
        self.dom0.write(REQUESTS, b"".join(xen.MMUEXT_OP.pack(cmd, arg1, 0) for cmd, arg1 in ops) or bytes(12))
        self.dom0.put_u32(DONE, 0)
        result = self._hypercall(26, (REQUESTS, len(ops), DONE, foreigndom, 0))
        done = self.dom0.u32(DONE)
        self._decided("mmuext_op", [list(op) for op in ops], result, done)
        return result, done

    def create_domain(self, pages=1024):
        """A domU of `pages` frames, built by vmkit's domain builder on these rules: its Paravirt."""
        domain = self.dom0.xen.create_domain(vmkit.assemble(IDLE_DOM0).code, pages)
        check(not isinstance(domain, int), "Xen built the domU", got=domain,
              hint="the domain builder validates the domU's page tables with the rules, as it did dom0's")
        return domain


def new_xen(rules=None, what="dom0 on your rules"):
    """LabXen(rules), with a domain builder whose tables do not validate turned into a failed check."""
    try:
        return LabXen(rules)
    except GuestError as error:
        raise AssertionError(f"{what}: Xen could not build dom0: {error}\n  where to look: the domain builder "
                             f"validates dom0's page directory with your rules at the start of day; its one L1 "
                             f"table maps every page writable but the two page-table frames, read-only") from None


# --- scripts of requests, as plain data ------------------------------------------------------------------
STEPS = ("mmu_update", "update_va_mapping", "mmuext_op", "create_domain", "write")
LOOKS = ("frame", "read", "mapped", "entry")      # steps that only look: their result is what they saw


def run_requests(rules, steps, what="your rules"):
    """A fresh dom0 on `rules` (None: Xen's), and each step of `steps` made in order: [what it is, "mmu_update",
    [[ptr, val], ...] (, foreigndom)], [what, "update_va_mapping", va, pte (, foreigndom)], [what,
    "mmuext_op", [[cmd, arg1], ...] (, foreigndom)], [what, "create_domain"] or [what, "write", va, hex
    bytes]; or a look, whose result is what it saw: [what, "frame", mfn (, one of its fields)], [what,
    "read", va, size] (hex bytes, or None), [what, "mapped", va], [what, "entry", machine address].
    Returns (the LabXen, each step's result: [result, done] for a batch, the result otherwise)."""
    lab = new_xen(rules, what)
    results = []
    for step in steps:
        _, op, *args = step
        if op == "mmu_update":
            results.append(list(lab.mmu_update(*map(tuple, args[0]), **_foreign(args[1:]))))
        elif op == "mmuext_op":
            results.append(list(lab.mmuext_op(*map(tuple, args[0]), **_foreign(args[1:]))))
        elif op == "update_va_mapping":
            results.append(lab.update_va_mapping(args[0], args[1], foreigndom=args[2] if args[2:] else None))
        elif op == "create_domain":
            results.append(lab.create_domain().domid)
        elif op == "write":
            lab.write(args[0], bytes.fromhex(args[1]))
            results.append(0)
        elif op in LOOKS:
            results.append(_look(lab, op, *args))
        else:
            raise ValueError(f"no step {op!r}; the steps are {', '.join(STEPS)}")
    return lab, results


def _look(lab, op, *args):
    if op == "frame":
        state = lab.frame(args[0])
        return state[args[1]] if args[1:] else state
    if op == "read":
        data = lab.read(args[0], args[1])
        return None if data is None else bytes(data).hex()
    if op == "mapped":
        return lab.mapped(args[0])
    return lab.entry(args[0])


def _foreign(rest):
    return {"foreigndom": rest[0]} if rest else {}


def frame_states(mm):
    """Every frame a domain owns, or nobody owns but something still counts, whose state is not that of a
    frame nothing uses: {"mfn 0x... (domain N's frame 0x...)": [owner, count, type or None, type count,
    pinned]}."""
    states = {}
    for mfn, page in enumerate(mm.pages):
        if page.owner is XEN or (page.owner is None and page.count == 0):
            continue
        owner = getattr(page.owner, "domid", None)
        state = [owner, page.count, page.type if page.type_count else None, page.type_count, page.pinned]
        if state != [owner, 1, None, 0, False]:
            pfn = mm.gpfn_from_mfn(mfn)
            whose = "no domain's" if owner is None or pfn == xen.INVALID_M2P_ENTRY else \
                f"domain {owner}'s frame {pfn:#x}"
            states[f"mfn {mfn:#x} ({whose})"] = state
    return states


def table_entries(mm):
    """The entries of every page table a domain has in use (Xen's own slots of a page directory left out):
    {"0x<machine address>": value}, the non-zero ones."""
    entries = {}
    for mfn, page in enumerate(mm.pages):
        if page.owner in (None, XEN) or page.type not in (L1, L2) or not page.type_count:
            continue
        row = mm.table(mfn)[:ENTRIES if page.type == L1 else xen.L2_PAGETABLE_FIRST_XEN_SLOT]
        entries.update({f"{(mfn << 12) + 4 * i:#x}": value for i, value in enumerate(row) if value})
    return entries


def request_facts(lab, results):
    """What a script of requests did, as plain data: each step's result, then the frame table and the page
    tables in use."""
    return json.loads(json.dumps({"results": results, "frames": frame_states(lab.mm), "tables": table_entries(lab.mm)}))


# --- whole kernels on the rules --------------------------------------------------------------------------
def run_kernel(rules, guest, options=None, modules=(), what=None, max_instructions=XEN_MAX_INSTRUCTIONS,
              timeout=XEN_TIMEOUT):
    """The course's PV kernel `guest` (vmkit.guests, with `options` for its tunables) as dom0, with the
    kernels named in `modules` for it to build domUs from, on `rules` (None: Xen's own) until dom0 shuts
    down: (dom0, result)."""
    what = what or f"{guest} on your rules"
    with explained(what, max_instructions, timeout, ends="shut down", shown="the console's last lines", last=300,
                   look="a request your rules refused that Xen allows: the kernel waits, or retries, or misses "
                        "what it expected",
                   astray=lambda error: f"stopped: {error}", errors=vmkit.VmkitError):
        dom0 = Paravirt(guests.image(guest, **(options or {})), modules=[guests.image(m) for m in modules],
                        page_table_rules=None if rules is None else budgeted_rules(rules),
                        max_instructions=max_instructions, timeout=timeout)
        return dom0, dom0.run()


def kernel_facts(dom0, result):
    """What a PV run did, as plain data: how it ended, what it printed, every hypercall as [domain, name,
    result], the page-table updates, and the frame table and page tables at the end."""
    facts = {"serial": result.serial, "exit_code": result.exit_code,
             "hypercalls": [[e.detail["domain"], e.detail["name"], e.detail["result"]]
                            for e in result.of_kind("hypercall")],
             "pt_updates": result.stats.get("pt_updates", 0),
             "frames": frame_states(dom0.xen.mm), "tables": table_entries(dom0.xen.mm)}
    return json.loads(json.dumps(facts))


# --- lazy MMU mode: a kernel's page-table updates queued and sent in batches ------------------------------
LAZY_SECONDS = 1.0                 # a whole script of a student's lazy mode; the reference's takes milliseconds
LAZY_STEPS = ("set_pte", "get_pte", "mmuext_op")
LAZY_HINTS = {
    "results": "each step's result, as when every request is its own hypercall: a set_pte's is mmu_update's (0, or "
               "-22 when Xen refused it), a get_pte's the entry's value then, an mmuext_op's its own; a refused "
               "update ends Xen's batch, and the ones after it in the batch are not made at all",
    "decided": "the requests Xen decided, in order: every set_pte and mmuext_op of the script exactly once, each "
               "after everything the script asked for before it (a read, a TLB flush or a CR3 load must find the "
               "updates before it made)",
    "largest": "the most requests one hypercall carried: a batch holds at most `batch` updates",
    "pt_updates": "page-table entries Xen changed: every update it allows is made by a hypercall",
    "hypercalls": "the hypercalls of the run: one per batch, not one per update, so a batch is sent only when "
                  "something needs what it holds (or it is full, or the lazy section ends)",
    "frames": XEN_HINTS["frames"], "tables": XEN_HINTS["tables"],
}


def run_unbatched(steps):
    """The script `steps` on a fresh dom0 on Xen's own rules with no lazy mode, one hypercall per request:
    (the LabXen, each step's result). Steps: ["set_pte", ptr, val] (one mmu_update; its result),
    ["get_pte", ptr] (the entry's value), ["mmuext_op", cmd, arg1] (one mmuext_op; its result)."""
    lab = new_xen(None, "dom0 on Xen's own rules")
    results = []
    for kind, *args in steps:
        if kind == "set_pte":
            results.append(lab.mmu_update(tuple(args))[0])
        elif kind == "get_pte":
            results.append(lab.entry(args[0]))
        elif kind == "mmuext_op":
            results.append(lab.mmuext_op(tuple(args))[0])
        else:
            raise ValueError(f"no step {kind!r}; the steps are {', '.join(LAZY_STEPS)}")
    return lab, results


def run_lazy(lazy, steps, batch, what=None):
    """A student's `lazy(xen, steps, batch)` (a lazy MMU section: the script's steps, each step's result
    returned in a list) on a fresh dom0 on Xen's own rules, on a budget: (the LabXen, what it returned)."""
    what = what or f"your {getattr(lazy, '__name__', 'lazy mode')} on {len(steps)} steps, batches of {batch}"
    lab = new_xen(None, "dom0 on Xen's own rules")
    with budget(what, LAZY_SECONDS):
        try:
            results = lazy(lab, [list(step) for step in steps], batch)
        except AssertionError:
            raise
        except Exception as error:              # the student's code: say where it failed
            raise AssertionError(f"{what} raised {type(error).__name__}: {error}") from error
    return lab, results


def lazy_facts(lab, results):
    """What a script did, as plain data: each step's result, the requests Xen decided in order, the biggest
    batch, the hypercalls made, the entries changed, then the frame table and the page tables in use."""
    facts = {"results": results if isinstance(results, list) else shown(results), "decided": lab.decided,
             "largest": lab.largest, "pt_updates": lab.dom0.stats.get("pt_updates", 0),
             "hypercalls": lab.hypercalls, "frames": frame_states(lab.mm), "tables": table_entries(lab.mm)}
    return json.loads(json.dumps(facts, default=shown))


def check_lazy(got, expected, steps, batch, bound, what):
    """A lazy section's facts against the same script made one request per hypercall (`expected`, with
    Xen's own rules): the same results, requests decided, entries changed, frames and tables; no batch over
    `batch`; and at most `bound` hypercalls."""
    check_facts(got, expected, what, hints=LAZY_HINTS, fields=["results", "decided", "pt_updates"],
                unit="step", end="(no more)", notes={"results": [f" ({step[0]} {', '.join(map(hex, step[1:]))})"
                                                                 for step in steps]})
    check(got.get("largest", 0) <= batch, f"{what}: the most updates in one hypercall",
          expected=f"at most {batch}", got=got.get("largest"), hint=LAZY_HINTS["largest"])
    for field in ("frames", "tables"):
        _check_mapping(got.get(field) or {}, expected[field], what, field)
    check(got.get("hypercalls", bound + 1) <= bound, f"{what}: hypercalls", expected=f"at most {bound}",
          got=got.get("hypercalls"), hint=LAZY_HINTS["hypercalls"])


# --- comparisons -------------------------------------------------------------------------------------------
def check_xen_facts(got, expected, what, fields=None, steps=None):
    """Facts of a run on a student's rules against the reference run's, field by field; `steps` (the script)
    names the request at a differing result, and the frame table and the page tables list their first
    few differences."""
    fields = fields or [f for f in ("serial", "exit_code", "results", "hypercalls", "pt_updates", "frames", "tables")
                        if f in expected]
    notes = {"results": [f" ({step[0]})" for step in steps]} if steps else None
    plain = [f for f in fields if f not in ("frames", "tables")]
    check_facts(got, expected, what, hints=XEN_HINTS, fields=plain, unit="request" if steps else "item",
                end="(no more)", notes=notes)
    for field in fields:
        if field in ("frames", "tables"):
            _check_mapping(got.get(field) or {}, expected[field], what, field)


def _check_mapping(got, expected, what, field, show=3):
    keys = [k for k in expected if got.get(k) != expected[k]] + [k for k in got if k not in expected]
    if not keys:
        return
    describe = _frame if field == "frames" else _entry
    noun = ("frame" if field == "frames" else "entry" if len(keys) == 1 else "entries") + \
        ("" if len(keys) == 1 or field != "frames" else "s")
    lines = [f"Check failed: {what}: {field}, {len(keys)} {noun} {'differs' if len(keys) == 1 else 'differ'} "
             f"from Xen's own"]
    for key in sorted(keys, key=_address)[:show]:
        lines.append(f"  {'' if field == 'frames' else 'entry at '}{key}\n"
                     f"      expected: {describe(expected.get(key))}\n      got:      {describe(got.get(key))}")
    if len(keys) > show:
        lines.append(f"  ... and {len(keys) - show} more")
    lines.append(f"  where to look: {XEN_HINTS[field]}")
    raise AssertionError("\n".join(lines))


def _address(key):
    return int(key.split()[1 if key.startswith("mfn") else 0], 16)


def _frame(state):
    if state is None:
        return "nothing uses it (owner, 1 reference, no type), or it is free"
    owner, count, type_, type_count, pinned = state
    whose = "nobody's" if owner is None else f"domain {owner}'s"
    typed = f"{type_} x{type_count}" if type_ else "no type"
    return f"{whose}, {count} reference{'' if count == 1 else 's'}, {typed}{', pinned' if pinned else ''}"


def _entry(value):
    return "0 (not present)" if value is None else shown(value)


# --- the kernel's side of the grader's questions (graders/lab9.py asks them) ------------------------------
# The runs use vmkit as it is on disk (on_disk), so a notebook that patched Xen, its frame table or the
# runners in its own vmkit answers with its own rules all the same. Xen's own versions of the rules a
# student hands in are withheld meanwhile (the frame table's methods, in the notebook's vmkit and in the
# fresh one), so a rule that calls them earns nothing; the rules the student does not hand in stay Xen's.
def on_disk():
    """This module as imported afresh from disk, for the time of the with block (answers.on_disk)."""
    return answers.on_disk(__name__)


@contextmanager
def xens_withheld(names):
    """Xen's own rules named in `names` withheld, in this vmkit's frame table."""
    from ..xen.mm import FrameTable  # here, not at the top: called under on_disk, this is vmkit as installed
    with withheld(FrameTable, *names):
        yield


def _rules_of(rules):
    """A student's rules as a plain dict, the student's own (vmkit.grading.yours), or raise."""
    if not isinstance(rules, dict) or not rules or not set(rules) <= set(RULE_NAMES):
        raise ValueError(f"the rules must be a dict of functions, named from {', '.join(RULE_NAMES)}")
    for name in rules:
        yours(rules[name], name)
    return {name: rules[name] for name in rules}


def _error(error):
    return {"error": f"{type(error).__name__}: {error}"}


def scripts_facts(scripts, rules):
    """request_facts of each script on a fresh dom0 on `rules`, or {"error": ...} (the message names why)."""
    answers = []
    with xens_withheld(list(rules)):
        for steps in scripts:
            try:
                answers.append(request_facts(*run_requests(rules, steps)))
            except Exception as error:          # the student's rules: their error is their answer
                answers.append(_error(error))
    return answers


def request_cases(scripts, rules):
    """scripts_facts under vmkit as on disk: a student's rules ({name: rule}) on each script, as plain data."""
    try:
        rules = _rules_of(rules)
    except Exception as error:
        return [_error(error)] * len(scripts)
    with xens_withheld(list(rules)), on_disk() as fresh:
        return fresh.scripts_facts(scripts, rules)


def kernels_facts(cases, rules):
    """kernel_facts of each [guest, options, modules] on `rules`, or {"error": ...}."""
    answers = []
    with xens_withheld(list(rules)):
        for guest, options, modules in cases:
            try:
                answers.append(kernel_facts(*run_kernel(rules, guest, options, modules)))
            except Exception as error:          # the student's rules: their error is their answer
                answers.append(_error(error))
    return answers


def table_cases(cases, table, *named):
    """kernels_facts of each [guest, options, modules] under a student's whole table (vmkit as on disk);
    {"error": ...} for each unless `table` holds the student's own three rules, `named` in RULE_NAMES's
    order, each under its name."""
    try:
        if not isinstance(table, dict) or sorted(table) != sorted(RULE_NAMES):
            raise ValueError(f"RULES must be a dict with a rule for each of {', '.join(RULE_NAMES)}")
        if any(table[name] is not rule for name, rule in zip(RULE_NAMES, named)):
            raise ValueError(f"RULES must hold your {', '.join(RULE_NAMES)}, each under its name")
        table = _rules_of(table)
    except Exception as error:
        return [_error(error)] * len(cases)
    with xens_withheld(list(table)), on_disk() as fresh:
        return fresh.kernels_facts(cases, table)


def lazies_facts(cases, lazy):
    """lazy_facts of each [steps, batch] with the student's `lazy`, or {"error": ...}."""
    answers = []
    for steps, batch in cases:
        try:
            answers.append(lazy_facts(*run_lazy(lazy, steps, batch)))
        except Exception as error:              # the student's code: their error is their answer
            answers.append(_error(error))
    return answers


def lazy_cases(cases, lazy):
    """lazies_facts under vmkit as on disk: a student's lazy MMU section on each [steps, batch], plain data."""
    try:
        yours(lazy, "lazy_updates")
    except Exception as error:
        return [_error(error)] * len(cases)
    with on_disk() as fresh:
        return fresh.lazies_facts(cases, lazy)
