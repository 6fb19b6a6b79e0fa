"""The hypercalls: what the hypervisor does when a paravirtual guest executes `int 0x82`.

A hypercall is to a hypervisor what a system call is to a kernel. The guest puts the number in
EAX and up to five arguments in EBX, ECX, EDX, ESI and EDI; the result comes back in EAX, a
negative errno on failure (-ENOSYS for a number the hypervisor does not know, -EFAULT for a
pointer it cannot follow, -EINVAL for a bad argument, -EPERM for what only dom0 may do).

Each handler is named after Xen's and takes the calling domain and the five argument registers:

    handler(domain, ebx, ecx, edx, esi, edi) -> int          # the value for EAX

A handler reads and writes guest memory through the domain (domain.read, domain.write,
domain.unpack, domain.pack: a bad pointer raises BadAddress, which becomes -EFAULT) and may say
what it did with domain.note(...), which lands in the hypercall's event. HYPERCALLS maps Xen's
numbers to the handlers; a lab can pass its own table to Paravirt(hypercalls=...).
"""
from . import abi as xen
from . import mm as _mm
from .abi import TrapInfo
from .domains import domctl as _domctl
from .event_channels import event_channel_op as _event_channel_op
from .grant_tables import grant_table_op as _grant_table_op


class BadAddress(Exception):
    """A guest pointer the hypervisor cannot follow: the hypercall returns -EFAULT."""

    def __init__(self, address, size, write=False):
        where = "in Xen's part of the address space" if address + size > xen.HYPERVISOR_VIRT_START else \
            "mapped writable in the domain's page tables" if write else "mapped in the domain's page tables"
        super().__init__(f"{size} bytes at {address:#x} are not {where}"
                         + (" (the first page is never mapped)" if 0 <= address < 4096 else ""))
        self.address, self.size = address, size


def _ring1_selector(selector):
    """Xen raises a guest selector's RPL to the guest kernel's ring, 1. Like Xen it checks nothing
    more here: a selector that is no ring-1 code segment crashes the domain when it is used."""
    selector &= 0xFFFF
    return selector | 1 if selector & 3 == 0 else selector


# --- the virtual CPU: traps, stacks, callbacks --------------------------------------------------------
def set_trap_table(domain, table, *_):
    """Register handlers for exceptions and `int n`: an array of trap_info {vector, flags, cs,
    address} ended by an entry with address 0. A null table clears them all."""
    if table == 0:
        domain.trap_table.clear()
        domain.note(cleared=True)
        return 0
    vectors = []
    for index in range(256):
        vector, flags, cs, address = domain.unpack(xen.TRAP_INFO, table + index * xen.TRAP_INFO.size)
        if address == 0:
            break
        domain.trap_table[vector] = TrapInfo(vector, flags, _ring1_selector(cs), address)
        vectors.append(vector)
    domain.note(vectors=vectors)
    return 0


def stack_switch(domain, ss, esp, *_):
    """The ring-1 stack Xen switches to when a trap or event arrives while user code runs."""
    domain.kernel_stack = (_ring1_selector(ss), esp)
    domain.note(stack=f"{domain.kernel_stack[0]:#x}:{esp:#x}")
    return 0


def set_callbacks(domain, event_selector, event_address, failsafe_selector, failsafe_address, *_):
    """Where events are delivered (the upcall), and where Xen goes when it cannot return to the guest."""
    domain.event_callback = (_ring1_selector(event_selector), event_address)
    domain.failsafe_callback = (_ring1_selector(failsafe_selector), failsafe_address)
    domain.note(event_callback=event_address)
    return 0


# The two handlers lab 4 asks students to write carry the names of Xen's own (do_multicall in
# xen/common/multicall.c, do_console_io in xen/drivers/char/console.c): the hypervisor reaches them
# through HYPERCALLS, by number, and a notebook's console_io and multicall stay its own.
def do_multicall(domain, call_list, nr_calls, *_):
    """Run `nr_calls` hypercalls from an array of multicall_entry {op, result, args[6]} for the price
    of one trap into the hypervisor. Each entry's result is written back into it."""
    calls = []
    for index in range(nr_calls):
        address = call_list + index * xen.MULTICALL_ENTRY.size
        op, _, *args = domain.unpack(xen.MULTICALL_ENTRY, address)
        if op == xen.HYPERCALL_NUMBERS["multicall"]:
            result, notes = -xen.EINVAL, {"error": "-EINVAL"}       # Xen does not nest multicalls
        else:
            result, notes = domain.call(op, args[:5])
        domain.put_u32(address + 4, result)
        domain.stats["multicall_entries"] += 1
        calls.append(dict(name=xen.hypercall_name(op), number=op, args=tuple(args[:5]), result=result, **notes))
        if domain.finished:
            break                                    # the batch shut the domain down
    domain.note(calls=calls)
    return 0


# --- information and the console ----------------------------------------------------------------------
def xen_version(domain, cmd, arg, *_):
    """XENVER_version returns major << 16 | minor; other commands fill a buffer. A guest with events
    pending calls this with cmd 0 just to enter the hypervisor, which then delivers them."""
    major, minor = xen.XEN_VERSION
    domain.note(cmd=cmd)
    if cmd == xen.XENVER_version:
        return major << 16 | minor
    if cmd == xen.XENVER_extraversion:
        domain.write(arg, xen.XEN_EXTRAVERSION.ljust(16, b"\0"))
    elif cmd == xen.XENVER_compile_info:
        domain.write(arg, b"vmkit".ljust(64, b"\0") + b"vmkit".ljust(16, b"\0") + bytes(64))
    elif cmd == xen.XENVER_capabilities:
        domain.write(arg, xen.XEN_CAPABILITIES.ljust(1024, b"\0"))
    elif cmd == xen.XENVER_changeset:
        domain.write(arg, b"vmkit".ljust(64, b"\0"))
    elif cmd == xen.XENVER_platform_parameters:
        domain.put_u32(arg, xen.HYPERVISOR_VIRT_START)
    elif cmd == xen.XENVER_get_features:
        if domain.u32(arg) != 0:
            return -xen.EINVAL
        domain.put_u32(arg + 4, 0)                   # no optional features
    elif cmd == xen.XENVER_pagesize:
        return xen.PAGE_SIZE
    else:
        return -xen.ENOSYS
    return 0


def do_console_io(domain, cmd, count, buffer, *_):
    """CONSOLEIO_write: `count` bytes from `buffer` to the hypervisor's console (the serial output;
    a domU's lines are prefixed "(dN) " as Xen's debug builds do). CONSOLEIO_read: no input here."""
    if cmd == xen.CONSOLEIO_write:
        if count >= 1 << 31:
            return -xen.EINVAL
        data = domain.read(buffer, count)
        domain.note(text=data.decode("latin-1"))
        domain.console_write(data)
        return 0
    if cmd == xen.CONSOLEIO_read:
        return 0
    return -xen.ENOSYS


# --- scheduling and time ----------------------------------------------------------------------------------
def sched_op(domain, cmd, arg, *_):
    """SCHEDOP_yield (let another domain run), SCHEDOP_block (enable events and sleep until one
    arrives: the paravirtual `sti; hlt`), SCHEDOP_shutdown (arg -> sched_shutdown {reason}; the
    domain stops and the reason is its exit code), SCHEDOP_remote_shutdown (dom0 only)."""
    if cmd == xen.SCHEDOP_yield:
        domain.note(op="yield")
        domain.xen.yield_cpu(domain)
        return 0
    if cmd == xen.SCHEDOP_block:
        domain.note(op="block")
        domain.block()
        return 0
    if cmd == xen.SCHEDOP_shutdown:
        (reason,) = domain.unpack(xen.SCHED_SHUTDOWN, arg)
        domain.note(op="shutdown", reason=xen.SHUTDOWN_NAMES.get(reason & 0xFF, reason & 0xFF))
        domain.shut_down(reason)
        return 0
    if cmd == xen.SCHEDOP_remote_shutdown:
        if not domain.privileged:
            return -xen.EPERM
        domid, reason = domain.unpack(xen.SCHED_REMOTE_SHUTDOWN, arg)
        target = domain.xen.domains.get(domid)
        domain.note(op="remote_shutdown", target=domid)
        if target is None:
            return -xen.ESRCH
        target.shut_down(reason)
        return 0
    return -xen.ENOSYS


def set_timer_op(domain, timeout_lo, timeout_hi, *_):
    """A single-shot VIRQ_TIMER at system time `timeout` (nanoseconds since boot); 0 cancels it."""
    domain.xen.timers.set_singleshot(domain, timeout_hi << 32 | timeout_lo)
    return 0


def vcpu_op(domain, cmd, vcpu, arg, *_):
    """The timer commands of vcpu_op: VCPUOP_set_periodic_timer {period_ns}, stop_periodic_timer,
    set_singleshot_timer {timeout_abs_ns, flags}, stop_singleshot_timer. One vcpu per domain."""
    if vcpu >= xen.XEN_LEGACY_MAX_VCPUS:
        return -xen.EINVAL
    if vcpu != 0:
        return -xen.ENOENT
    timers = domain.xen.timers
    if cmd == xen.VCPUOP_set_periodic_timer:
        (period,) = domain.unpack(xen.U64, arg)
        if period < xen.MIN_PERIODIC_NS:
            return -xen.EINVAL
        timers.set_periodic(domain, period)
        domain.note(op="set_periodic_timer", period_ns=period)
    elif cmd == xen.VCPUOP_stop_periodic_timer:
        timers.set_periodic(domain, None)
        domain.note(op="stop_periodic_timer")
    elif cmd == xen.VCPUOP_set_singleshot_timer:
        (timeout,) = domain.unpack(xen.U64, arg)
        timers.set_singleshot(domain, timeout)
        domain.note(op="set_singleshot_timer")
    elif cmd == xen.VCPUOP_stop_singleshot_timer:
        timers.set_singleshot(domain, 0)
        domain.note(op="stop_singleshot_timer")
    else:
        return -xen.ENOSYS
    return 0


# --- direct paging, event channels, grant tables, domains: in their own modules ---------------------------------
def mmu_update(domain, reqs, count, done, foreigndom, *_):
    return _mm.mmu_update(domain, reqs, count, done, foreigndom)


def update_va_mapping(domain, va, val_lo, val_hi, flags, *_):
    return _mm.update_va_mapping(domain, va, val_lo, val_hi, flags)


def update_va_mapping_otherdomain(domain, va, val_lo, val_hi, flags, domid, *_):
    return _mm.update_va_mapping(domain, va, val_lo, val_hi, flags, domid)


def mmuext_op(domain, ops, count, done, foreigndom, *_):
    return _mm.mmuext_op(domain, ops, count, done, foreigndom)


def event_channel_op(domain, cmd, arg, *_):
    return _event_channel_op(domain, cmd, arg)


def grant_table_op(domain, cmd, uop, count, *_):
    return _grant_table_op(domain, cmd, uop, count)


def domctl(domain, u_domctl, *_):
    return _domctl(domain, u_domctl)


HYPERCALLS = {
    0: set_trap_table,
    1: mmu_update,
    3: stack_switch,
    4: set_callbacks,
    13: do_multicall,
    14: update_va_mapping,
    15: set_timer_op,
    17: xen_version,
    18: do_console_io,
    20: grant_table_op,
    22: update_va_mapping_otherdomain,
    24: vcpu_op,
    26: mmuext_op,
    29: sched_op,
    32: event_channel_op,
    36: domctl,
}
