"""Domains: dom0, the domUs it creates, and the hypervisor that shares one CPU among them.

Xen itself runs no drivers and no management tools. The first domain it boots, dom0, is
privileged: it creates, pauses, unpauses and destroys the others (the domUs) through a management
hypercall (domctl), and it owns the real devices. A domU reaches a device through a *split driver*:
its frontend puts requests in a ring in a page it grants to dom0, notifies dom0's backend through
an event channel, and the backend does the I/O and puts the responses in the same ring.

`Xen` is the hypervisor's state shared by all domains: the domain table, the scheduler (round robin
with Xen's 30 ms time slice; a blocked or paused domain does not run; when none can run, time
jumps to the next timer, or the run ends if nothing can ever wake them), system time, the timers
behind VIRQ_TIMER, grant mappings and the console. Time is one clock for the whole machine: one
instruction of any domain is one cycle of the 100 MHz CPU.

Memory is one machine memory for all domains, with Xen's frame table (vmkit.xen.mm): dom0's
frames are taken when the machine is built, a domU's when it is created, and they go back when it is
destroyed (and no other domain maps them any more).

Building a domU is dom0's work, as in Xen, where the toolstack in dom0 does it: XEN_DOMCTL_createdomain
makes a paused, empty domain (after Xen's own fields its union carries vmkit's: the kernel's address
and length in dom0's memory, which vmkit's trace watches and shows but Xen does not load, and the
domain's pages, which Xen gives it at once, standing in for XENMEM_populate_physmap). dom0 then learns
the frames (XEN_DOMCTL_getmemlist), maps them into its own address space (mmu_update or
update_va_mapping_otherdomain with the domU as foreign domain), writes the kernel, start_info, the
mfn_list and the page tables, has Xen pin the page directory (mmuext_op on the domU's behalf), and
gives the vcpu its context (XEN_DOMCTL_setvcpucontext); see vmkit/guests/pv_dom0.asm. For tests that
want a domU without a dom0 to build it, Xen.create_domain(code) runs vmkit's domain builder in Python.

One thing Xen's toolstack does is done here by the builder: the store, where a frontend tells its
backend which grant reference holds its ring and which port to bind (XenStore, in Xen). Every domU
has a store page (start_info store_mfn), granted to dom0 at GNTTAB_RESERVED_XENSTORE, and an unbound
event channel offered to dom0 (store_evtchn). The course's frontend writes its ring-ref and
event-channel there; see vmkit/guests/pv_domu.asm.
"""
import time

from ..asm import Image
from ..errors import GuestError
from ..machine.platform import LOAD_ADDRESS
from . import abi as xen
from . import event_channels, grant_tables
from .domain_build import OutOfMemory
from .layout import SHARED_INFO, STORE_PAGE
from .mm import FrameTable

QUANTUM = 3_000_000             # cycles: the credit scheduler's 30 ms time slice at 100 MHz
CYCLE_NS = 10                   # one instruction, one cycle of the 100 MHz CPU
DEFAULT_DOMU_PAGES = 1024       # 4 MiB
MAX_DOMU_PAGES = 8192
FREE_MEMORY = 64 << 20          # machine memory beyond dom0's, for domUs (host memory only once used)
XEN_MEMORY = 1 << 20            # Xen's own frames: the machine-to-physical table, its page tables, its GDT


class Timers:
    """Each domain's periodic timer (Xen starts one at 100 Hz for every PV vcpu) and single-shot
    timer. An expiry raises VIRQ_TIMER, if the domain has bound it to a port."""

    def __init__(self, xen_):
        self.xen = xen_
        self.periodic = {}          # domain -> (period in cycles, next expiry)
        self.singleshot = {}        # domain -> expiry

    def start(self, domain):
        self.set_periodic(domain, xen.DEFAULT_PERIODIC_NS)

    def set_periodic(self, domain, period_ns):
        if period_ns is None:
            self.periodic.pop(domain, None)
        else:
            period = max(period_ns // CYCLE_NS, 1)
            self.periodic[domain] = (period, self.xen.clock() + period)

    def set_singleshot(self, domain, timeout_ns):
        if timeout_ns == 0:
            self.singleshot.pop(domain, None)
        else:
            self.singleshot[domain] = -(-timeout_ns // CYCLE_NS)

    def _listening(self, domain):
        return not domain.finished and xen.VIRQ_TIMER in domain.ports.virqs

    def next_expiry(self):
        times = [t for d, (_, t) in self.periodic.items() if self._listening(d)]
        times += [t for d, t in self.singleshot.items() if self._listening(d)]
        return min(times) if times else None

    def cycles_to_next(self, now):
        expiry = self.next_expiry()
        return max(expiry - now, 1) if expiry is not None else 1 << 62

    def fire(self, now):
        for domain, (period, expiry) in list(self.periodic.items()):
            if expiry <= now:
                self.periodic[domain] = (period, expiry + period * ((now - expiry) // period + 1))
                self._expire(domain, now)
        for domain, expiry in list(self.singleshot.items()):
            if expiry <= now:
                del self.singleshot[domain]
                self._expire(domain, now)

    def _expire(self, domain, now):
        if self._listening(domain):
            update_time(domain, now)
            event_channels.send_virq(domain, xen.VIRQ_TIMER)


def update_time(domain, now):
    """vcpu_info[0].time: system time in ns and the TSC scale (10 ns a cycle = (delta << 4) * 0xA0000000 >> 32),
    written between two increments of `version`, as Xen does."""
    address = SHARED_INFO + xen.VI_TIME
    version = domain.xen_u32(address)
    domain.xen_put_u32(address, version + 1)
    domain.xen_write(address, xen.VCPU_TIME_INFO.pack(version + 1, 0, now, now * CYCLE_NS, 0xA0000000, 4))
    domain.xen_put_u32(address, version + 2)


class Xen:
    """The hypervisor: the domains and the one CPU they share."""

    def __init__(self, dom0, dom0_memory, page_table_rules=None):
        self.dom0 = dom0
        self.mm = FrameTable(XEN_MEMORY + dom0_memory + FREE_MEMORY, page_table_rules)   # machine memory, frame table
        self.mm.flush = self._flush_tlb
        self.domains = {}            # domid -> Paravirt, the live ones
        self.every_domain = []       # every domain ever built, for the run's statistics
        self.now = 0                 # system time, in cycles
        self.quantum = QUANTUM       # how long a domain runs before the next runnable one gets the CPU
        self.current = dom0
        self.quantum_left = QUANTUM
        self.switches = 0
        self.wall, self.step_started = 0.0, None     # real seconds of scheduling steps; the running step's start
        self.idle_cycles = 0
        self.timers = Timers(self)
        self.maptrack = {}           # (mapper domid, handle) -> grant_tables.Mapping
        self._yielded = False
        self._line_start = {}        # domid -> whether its console output is at the start of a line

    def attach(self, domain):
        """A new domain joins: its table of ports, its timer, and the one event log of the machine."""
        domain.ports = event_channels.Ports()
        if domain is not self.dom0:
            domain.events = self.dom0.events
        self.domains[domain.domid] = domain
        self.every_domain.append(domain)
        self.timers.start(domain)
        update_time(domain, self.clock())

    def _flush_tlb(self, domain):
        """Xen changed `domain`'s page tables (or a frame's type): the CPU must not use a stale
        translation (Unicorn's TLB, which vmkit keeps no copy of)."""
        cpu = getattr(domain, "cpu", None)
        if cpu is not None:
            cpu.flush_tlb()

    # --- running -------------------------------------------------------------------------------------
    def clock(self):
        """System time, in cycles. Inside a slice (in a hypercall) the running domain's clock is ahead
        of the time at which the slice began."""
        current = self.current
        return max(self.now, current.clock) if current is not None else self.now

    def runnable(self, domain):
        return (domain.initialised and not domain.finished and not domain.blocked and not domain.paused
                and self.domains.get(domain.domid) is domain)

    def state(self, domain):
        if domain.dying:
            return "dying"
        if domain.shutdown_code is not None:
            return "shutdown"
        if domain.paused:
            return "paused"
        if domain.blocked:
            return "blocked"
        return "running" if domain is self.current else "runnable"

    def advance(self, limit, until=None):
        """One scheduling step: pick a domain and run it until the next thing the hypervisor must see
        (its slice ends, a timer expires, or it enters the hypervisor)."""
        dom0 = self.dom0
        if dom0.finished:
            return
        dom0.check_budget()
        self.step_started = time.perf_counter()
        try:
            self._step(limit, until)
        finally:
            self.wall += time.perf_counter() - self.step_started
            self.step_started = None

    def _step(self, limit, until):
        dom0 = self.dom0
        self.timers.fire(self.now)
        domain = self._pick()
        if domain is None:
            self._idle()
            return
        n = min(limit, self.quantum_left, self.timers.cycles_to_next(self.now))
        if dom0.max_instructions is not None:
            n = min(n, dom0.max_instructions - self.instructions())
        n = max(n, 1)
        domain.clock = self.now
        before = domain.instructions
        if domain is dom0:
            dom0.run_slice(n, until)
        else:
            domain.run_slice(n, watched_by=dom0)      # run_until(event=...) on dom0 watches every domain's events
        self.now = domain.clock
        self.quantum_left -= domain.instructions - before
        self.timers.fire(self.now)

    def _pick(self):
        current = self.current
        if (current is not None and self.runnable(current) and self.quantum_left > 0
                and not self._yielded):
            return current
        self._yielded = False
        ids = sorted(self.domains)
        after = current.domid if current is not None else -1
        for domid in [d for d in ids if d > after] + [d for d in ids if d <= after]:
            candidate = self.domains[domid]
            if self.runnable(candidate):
                if candidate is not current:
                    self.switches += 1
                    candidate.hypervisor_had_control()    # it comes back from the hypervisor: pending events first
                self.current, self.quantum_left = candidate, self.quantum
                return candidate
        return None

    def _idle(self):
        """No domain can run: the CPU idles until the next timer, or the machine can never go on."""
        expiry = self.timers.next_expiry()
        if expiry is None:
            dom0 = self.dom0
            dom0.record("halt", why="every domain is blocked, paused or shut down, and no timer is armed: "
                                   "nothing can ever wake them")
            dom0.halted = dom0.finished = True
            return
        self.idle_cycles += max(expiry - self.now, 0)
        self.now = max(self.now, expiry)
        self.timers.fire(self.now)

    def yield_cpu(self, domain):
        if domain is self.current:
            self._yielded = True

    def instructions(self):
        return sum(d.instructions for d in self.every_domain)

    def elapsed(self):
        """Real seconds the system has run: every scheduling step, the domains' slices and the
        hypervisor's own work between them, the step under way included."""
        return self.wall + (time.perf_counter() - self.step_started if self.step_started is not None else 0.0)

    def stats(self):
        total = {}
        for domain in self.every_domain:
            for key, value in domain.stats.items():
                total[key] = total.get(key, 0) + value
        total.update(domain_switches=self.switches, idle_cycles=self.idle_cycles, instructions=self.instructions())
        dropped = sum(d.events_dropped for d in self.every_domain)
        if dropped:
            total["events_dropped"] = dropped
        return total

    # --- the console ------------------------------------------------------------------------------------
    def console_write(self, domain, data):
        """The hypervisor's console is the machine's serial output; a domU's lines start with "(dN) "."""
        out = self.dom0.serial.output
        if domain is self.dom0:
            out += data
            return
        at_start = self._line_start.get(domain.domid, True)
        for byte in data:
            if at_start:
                out += f"(d{domain.domid}) ".encode()
            out.append(byte)
            at_start = byte == 0x0A
        self._line_start[domain.domid] = at_start

    # --- what dom0 asks for ---------------------------------------------------------------------------------
    def create_domain(self, code, pages=DEFAULT_DOMU_PAGES, domid=0, handle=bytes(16), build=True):
        """A paused PV domain of `pages` pages (a machine of dom0's kind, vmkit.xen.paravirt.Paravirt)
        that will run `code`, or a negative errno. With `build` vmkit's domain builder, the one that
        builds dom0, does the toolstack's work here: the kernel, start_info, page tables and vcpu, and
        the store (a page granted to dom0, an unbound event channel for it). Without it the domain is
        empty, as createdomain leaves it: frames and shared_info only, for dom0 to build (getmemlist,
        mmu_update, mmuext_op, setvcpucontext); `code` is then what vmkit's trace watches in it."""
        if domid == 0:
            domid = next(d for d in range(1, xen.DOMID_FIRST_RESERVED) if d not in self.domains)
        elif domid >= xen.DOMID_FIRST_RESERVED:
            return -xen.EINVAL
        elif domid in self.domains:
            return -xen.EEXIST
        if pages > MAX_DOMU_PAGES:
            return -xen.ENOMEM
        known = [m for m in self.dom0.modules if m.code == bytes(code)]        # keep the source for the stepper
        image = known[0] if known else Image(code=bytes(code), origin=LOAD_ADDRESS)
        dom0 = self.dom0
        try:
            domain = type(dom0)(image, pages * xen.PAGE_SIZE, domid=domid, hypervisor=self, hypercalls=dom0.hypercalls,
                              built=build, max_instructions=None, timeout=None)
        except OutOfMemory:
            return -xen.ENOMEM                        # machine memory has not that many free frames
        except (GuestError, ValueError):
            return -xen.EINVAL                        # the kernel does not fit the memory asked for, or no memory
        domain.handle = bytes(handle)
        domain.paused = True                          # Xen creates domains paused; the toolstack unpauses them
        if build:
            domain.store_port = domain.ports.allocate(state=event_channels.UNBOUND, remote_domid=0)
            store_mfn = domain.pfn_to_mfn(STORE_PAGE // xen.PAGE_SIZE)
            domain.write_start_info(store_mfn=store_mfn, store_evtchn=domain.store_port)
            grant_tables.grant(domain, xen.GNTTAB_RESERVED_XENSTORE, 0, store_mfn)
        return domain

    def pause(self, domain):
        """The controller's pause: the domain keeps its state but gets no CPU until unpaused."""
        domain.paused = True

    def unpause(self, domain):
        domain.paused = False

    def destroy_domain(self, domain):
        """Tear a domain down: its ports close (their peers become unbound), the mappings it holds
        go, and it leaves the table. Pages others still map stay alive until they unmap them."""
        event_channels.close_all(domain)
        for mapping in list(self.mappings_of(domain)):
            grant_tables.release(mapping)
        domain.dying = domain.finished = True
        domain.blocked = False
        self.mm.relinquish(domain)
        del self.domains[domain.domid]
        self.timers.set_periodic(domain, None)
        self.timers.set_singleshot(domain, 0)
        if self.current is domain:
            self.current = None
        event_channels.send_virq(self.dom0, xen.VIRQ_DOM_EXC)

    def domain_shut_down(self, domain):
        if domain is not self.dom0:
            event_channels.send_virq(self.dom0, xen.VIRQ_DOM_EXC)

    # --- grant mappings ----------------------------------------------------------------------------------------
    def new_mapping(self, mapping):
        used = {handle for (domid, handle) in self.maptrack if domid == mapping.mapper.domid}
        mapping.handle = next(h for h in range(len(used) + 1) if h not in used)
        self.maptrack[(mapping.mapper.domid, mapping.handle)] = mapping
        return mapping.handle

    def mappings_of(self, mapper):
        return [m for m in self.maptrack.values() if m.mapper is mapper]


# --- the management hypercall --------------------------------------------------------------------------------
def domctl(caller, address):
    """domctl(struct xen_domctl *): cmd, interface_version, domain, then the command's union at +16."""
    if not caller.privileged:
        return -xen.EPERM
    cmd, version, domid = caller.unpack(xen.DOMCTL_HEADER, address)
    caller.note(op=xen.DOMCTL_NAMES.get(cmd, cmd), target=domid)
    if version != xen.XEN_DOMCTL_INTERFACE_VERSION:
        return -xen.EACCES
    hypervisor = caller.xen
    u = address + xen.DOMCTL_UNION
    if cmd == xen.XEN_DOMCTL_createdomain:
        ssidref, handle, flags, kernel, kernel_len, pages = caller.unpack(xen.CREATEDOMAIN, u)
        if flags & 1:                                     # XEN_DOMCTL_CDF_hvm_guest: not this hypervisor
            return -xen.EINVAL
        code = caller.read(kernel, kernel_len)
        domain = hypervisor.create_domain(code, pages or DEFAULT_DOMU_PAGES, domid, handle, build=False)
        if isinstance(domain, int):
            return domain
        caller.pack(xen.CREATEDOMAIN, u, ssidref, handle, flags, kernel, kernel_len, domain.memory // xen.PAGE_SIZE)
        caller.write(address + 8, domain.domid.to_bytes(2, "little"))
        caller.note(created=domain.domid, pages=domain.memory // xen.PAGE_SIZE)
        return 0
    if cmd == xen.XEN_DOMCTL_getmemlist:
        target = hypervisor.domains.get(domid)
        if target is None:
            return -xen.EINVAL
        max_pfns, _, buffer, _ = caller.unpack(xen.GETMEMLIST, u)
        frames = target.p2m[:max_pfns]                # the domain's page list: vmkit keeps it in pfn order
        caller.write(buffer & 0xFFFFFFFF, b"".join(mfn.to_bytes(8, "little") for mfn in frames))
        caller.pack(xen.GETMEMLIST, u, max_pfns, 0, buffer, len(frames))
        caller.note(frames=len(frames))
        return 0
    if cmd == xen.XEN_DOMCTL_setvcpucontext:
        target = hypervisor.domains.get(domid)
        if target is None:
            return -xen.ESRCH
        vcpu, context = caller.unpack(xen.VCPUCONTEXT, u)
        if vcpu != 0:
            return -xen.EINVAL
        result, detail = target.set_vcpu_context(caller.read(context & 0xFFFFFFFF, xen.VCPU_GUEST_CONTEXT_SIZE))
        caller.note(**detail)
        return result
    if cmd == xen.XEN_DOMCTL_getdomaininfo:
        found = [d for d in sorted(hypervisor.domains) if d >= domid]
        if not found:
            return -xen.ESRCH
        target = hypervisor.domains[found[0]]
        caller.pack(xen.GETDOMAININFO, u, *domain_info(hypervisor, target))
        caller.write(address + 8, target.domid.to_bytes(2, "little"))
        return 0
    target = hypervisor.domains.get(domid)
    if target is None:
        return -xen.ESRCH
    if target is caller:
        return -xen.EINVAL                                 # dom0 cannot pause or destroy itself
    if cmd == xen.XEN_DOMCTL_pausedomain:
        hypervisor.pause(target)
    elif cmd == xen.XEN_DOMCTL_unpausedomain:
        hypervisor.unpause(target)
    elif cmd == xen.XEN_DOMCTL_destroydomain:
        hypervisor.destroy_domain(target)
    else:
        return -xen.ENOSYS
    return 0


def domain_info(hypervisor, domain):
    """The fields of xen_domctl_getdomaininfo, in order."""
    state = hypervisor.state(domain)
    flags = {"dying": xen.XEN_DOMINF_dying, "paused": xen.XEN_DOMINF_paused, "blocked": xen.XEN_DOMINF_blocked,
             "running": xen.XEN_DOMINF_running}.get(state, 0)
    if domain.shutdown_code is not None:
        flags |= xen.XEN_DOMINF_shutdown | domain.shutdown_code << xen.XEN_DOMINF_shutdownshift
    pages = domain.memory // xen.PAGE_SIZE
    return (domain.domid, flags, pages, pages, 0, 0, domain.pfn_to_mfn(SHARED_INFO // xen.PAGE_SIZE),
            domain.instructions * CYCLE_NS, 1, 0, 0, getattr(domain, "handle", bytes(16)), 0)
