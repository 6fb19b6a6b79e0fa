"""Event channels: Xen's virtual interrupts, between domains and from the hypervisor itself.

A channel has an end in each of two domains; each end is a *port*, a small number in that domain's
table. A domain offers a port to another with alloc_unbound, the other connects with
bind_interdomain, and from then on `send` on either end makes the other end pending. Ports can
also be bound to a virtual IRQ (VIRQ_TIMER, VIRQ_DOM_EXC) or to the domain itself (bind_ipi).

Pending is the two-level scheme of shared_info (Xen's 2-level ABI): one bit per port in
evtchn_pending, one in evtchn_mask; a port that becomes pending while unmasked sets its word's
bit in vcpu_info.evtchn_pending_sel and then evtchn_upcall_pending, and wakes the domain. The
guest's callback walks the selector, then the words, clearing what it handles. An event carries no
data: it says "look at the ring".
"""
from dataclasses import dataclass

from . import abi as xen
from .layout import SHARED_INFO

FREE, RESERVED, UNBOUND, INTERDOMAIN, VIRQ, IPI = "free", "reserved", "unbound", "interdomain", "virq", "ipi"
STATUS = {FREE: xen.EVTCHNSTAT_closed, RESERVED: xen.EVTCHNSTAT_closed, UNBOUND: xen.EVTCHNSTAT_unbound,
          INTERDOMAIN: xen.EVTCHNSTAT_interdomain, VIRQ: xen.EVTCHNSTAT_virq, IPI: xen.EVTCHNSTAT_ipi}


@dataclass
class Channel:
    """One port of one domain."""
    state: str = FREE
    remote_domid: int = None     # UNBOUND: who may bind; INTERDOMAIN: the other end's domain
    remote_port: int = None      # INTERDOMAIN: the other end's port
    virq: int = None             # VIRQ: which virtual IRQ


class Ports:
    """A domain's event-channel table. Port 0 is reserved, as in Xen."""

    def __init__(self):
        self.channels = {0: Channel(RESERVED)}
        self.virqs = {}                              # virq -> port

    def get(self, port):
        return self.channels.get(port) if 0 <= port < xen.NR_EVENT_CHANNELS else None

    def allocate(self, **channel):
        """The lowest free port, now in use; -ENOSPC when every port is taken."""
        for port in range(1, xen.NR_EVENT_CHANNELS):
            if self.channels.get(port, Channel()).state == FREE:
                self.channels[port] = Channel(**channel)
                return port
        return -xen.ENOSPC

    def bound(self):
        return {port: c for port, c in self.channels.items() if c.state not in (FREE, RESERVED)}


# --- the shared_info bits ------------------------------------------------------------------------------------
def _bit(domain, array, port):
    word = SHARED_INFO + array + 4 * (port // xen.BITS_PER_EVTCHN_WORD)
    return word, 1 << (port % xen.BITS_PER_EVTCHN_WORD)


def _test_and_set(domain, address, bit):
    value = domain.xen_u32(address)
    domain.xen_put_u32(address, value | bit)
    return bool(value & bit)


def set_pending(domain, port):
    """Xen's evtchn_set_pending for the 2-level ABI."""
    if domain.finished:
        return
    word, bit = _bit(domain, xen.SH_EVTCHN_PENDING, port)
    if _test_and_set(domain, word, bit):
        return                                        # already pending: nothing new to say
    mask_word, mask_bit = _bit(domain, xen.SH_EVTCHN_MASK, port)
    if domain.xen_u32(mask_word) & mask_bit:
        return                                        # masked: the guest will find it when it looks
    if _test_and_set(domain, SHARED_INFO + xen.VI_PENDING_SEL, 1 << (port // xen.BITS_PER_EVTCHN_WORD)):
        return
    mark_events_pending(domain)


def mark_events_pending(domain):
    pending = SHARED_INFO + xen.VI_UPCALL_PENDING
    if domain.xen_read(pending, 1)[0]:
        return
    domain.xen_write(pending, b"\x01")
    domain.kick()


def clear_pending(domain, port):
    word, bit = _bit(domain, xen.SH_EVTCHN_PENDING, port)
    domain.xen_put_u32(word, domain.xen_u32(word) & ~bit)


def pending_ports(domain):
    """The ports pending and unmasked now, as the guest's callback will find them."""
    words = domain.xen_read(SHARED_INFO + xen.SH_EVTCHN_PENDING, 2 * 32 * 4)
    ports = []
    for index in range(32):
        pending = int.from_bytes(words[4 * index:4 * index + 4], "little")
        masked = int.from_bytes(words[128 + 4 * index:128 + 4 * index + 4], "little")
        bits = pending & ~masked
        ports += [index * 32 + b for b in range(32) if bits >> b & 1]
    return ports


def send_virq(domain, virq):
    port = domain.ports.virqs.get(virq)
    if port is not None:
        set_pending(domain, port)


# --- the operations -----------------------------------------------------------------------------------------
def _domain(caller, domid):
    return caller if domid == xen.DOMID_SELF or domid == caller.domid else caller.xen.domains.get(domid)


def alloc_unbound(caller, dom, remote_dom):
    """A fresh port in `dom`, waiting for `remote_dom` to bind it. Only dom0 may allocate in another domain."""
    target = _domain(caller, dom)
    if target is None:
        return -xen.ESRCH
    if target is not caller and not caller.privileged:
        return -xen.EPERM
    remote = caller.domid if remote_dom == xen.DOMID_SELF else remote_dom
    return target.ports.allocate(state=UNBOUND, remote_domid=remote)


def bind_interdomain(caller, remote_dom, remote_port):
    """Connect a new local port to `remote_port` of `remote_dom`, which must be unbound and offered to us."""
    remote = _domain(caller, remote_dom)
    if remote is None:
        return -xen.ESRCH
    theirs = remote.ports.get(remote_port)
    if theirs is None or theirs.state != UNBOUND or theirs.remote_domid != caller.domid:
        return -xen.EINVAL
    port = caller.ports.allocate(state=INTERDOMAIN, remote_domid=remote.domid, remote_port=remote_port)
    if port < 0:
        return port
    theirs.state, theirs.remote_domid, theirs.remote_port = INTERDOMAIN, caller.domid, port
    # Xen: notifications sent to the unbound port may have been lost, so the new port starts pending
    set_pending(caller, port)
    return port


def bind_virq(caller, virq, vcpu):
    if virq >= xen.NR_VIRQS or (virq in xen.GLOBAL_VIRQS and vcpu != 0):
        return -xen.EINVAL
    if vcpu != 0:
        return -xen.ENOENT
    if virq in caller.ports.virqs:
        return -xen.EEXIST
    port = caller.ports.allocate(state=VIRQ, virq=virq)
    if port >= 0:
        caller.ports.virqs[virq] = port
    return port


def bind_ipi(caller, vcpu):
    if vcpu != 0:
        return -xen.ENOENT
    return caller.ports.allocate(state=IPI)


def send(caller, port):
    """Make the other end pending (and wake its domain). Sending on an unbound port is silently dropped."""
    channel = caller.ports.get(port)
    if channel is None:
        return -xen.EINVAL
    if channel.state == INTERDOMAIN:
        remote = caller.xen.domains.get(channel.remote_domid)
        if remote is not None:
            set_pending(remote, channel.remote_port)
        return 0
    if channel.state == IPI:
        set_pending(caller, port)
        return 0
    if channel.state == UNBOUND:
        return 0
    return -xen.EINVAL


def close(caller, port):
    """Free a port; the other end of an interdomain channel goes back to unbound, offered to us again."""
    channel = caller.ports.get(port)
    if channel is None or channel.state in (FREE, RESERVED):
        return -xen.EINVAL
    if channel.state == INTERDOMAIN:
        remote = caller.xen.domains.get(channel.remote_domid)
        theirs = remote.ports.get(channel.remote_port) if remote is not None else None
        if theirs is not None and theirs.state == INTERDOMAIN:
            theirs.state, theirs.remote_domid, theirs.remote_port = UNBOUND, caller.domid, None
    elif channel.state == VIRQ:
        caller.ports.virqs.pop(channel.virq, None)
    caller.ports.channels[port] = Channel()
    if not caller.dying:
        clear_pending(caller, port)
    return 0


def close_all(domain):
    for port in list(domain.ports.bound()):
        close(domain, port)


def unmask(caller, port):
    """Clear the port's mask bit; if it is pending, raise the upcall the mask held back."""
    if caller.ports.get(port) is None:
        return -xen.EINVAL
    mask_word, bit = _bit(caller, xen.SH_EVTCHN_MASK, port)
    masked = caller.xen_u32(mask_word)
    caller.xen_put_u32(mask_word, masked & ~bit)
    word, _ = _bit(caller, xen.SH_EVTCHN_PENDING, port)
    if masked & bit and caller.xen_u32(word) & bit and not _test_and_set(
            caller, SHARED_INFO + xen.VI_PENDING_SEL, 1 << (port // xen.BITS_PER_EVTCHN_WORD)):
        mark_events_pending(caller)
    return 0


def status(caller, dom, port):
    """(status, vcpu, u0, u1) for EVTCHNOP_status, or a negative errno."""
    target = _domain(caller, dom)
    if target is None:
        return -xen.ESRCH
    if target is not caller and not caller.privileged:
        return -xen.EPERM
    channel = target.ports.get(port)
    if channel is None:
        return -xen.EINVAL
    if channel.state == VIRQ:
        return STATUS[VIRQ], 0, channel.virq, 0
    return STATUS[channel.state], 0, channel.remote_domid or 0, channel.remote_port or 0


# --- the hypercall -------------------------------------------------------------------------------------------
def event_channel_op(domain, cmd, arg):
    """event_channel_op(cmd, arg): arg points at the command's structure (event_channel.h)."""
    domain.note(op=xen.EVTCHNOP_NAMES.get(cmd, cmd))
    if cmd == xen.EVTCHNOP_alloc_unbound:
        dom, remote_dom, _ = domain.unpack(xen.EVTCHN_ALLOC_UNBOUND, arg)
        port = alloc_unbound(domain, dom, remote_dom)
        return _out(domain, port, xen.EVTCHN_ALLOC_UNBOUND, arg, dom, remote_dom, port)
    if cmd == xen.EVTCHNOP_bind_interdomain:
        remote_dom, remote_port, _ = domain.unpack(xen.EVTCHN_BIND_INTERDOMAIN, arg)
        port = bind_interdomain(domain, remote_dom, remote_port)
        return _out(domain, port, xen.EVTCHN_BIND_INTERDOMAIN, arg, remote_dom, remote_port, port)
    if cmd == xen.EVTCHNOP_bind_virq:
        virq, vcpu, _ = domain.unpack(xen.EVTCHN_BIND_VIRQ, arg)
        domain.note(virq=virq)
        port = bind_virq(domain, virq, vcpu)
        return _out(domain, port, xen.EVTCHN_BIND_VIRQ, arg, virq, vcpu, port)
    if cmd == xen.EVTCHNOP_bind_ipi:
        vcpu, _ = domain.unpack(xen.EVTCHN_BIND_IPI, arg)
        port = bind_ipi(domain, vcpu)
        return _out(domain, port, xen.EVTCHN_BIND_IPI, arg, vcpu, port)
    if cmd in (xen.EVTCHNOP_send, xen.EVTCHNOP_close, xen.EVTCHNOP_unmask):
        (port,) = domain.unpack(xen.EVTCHN_PORT, arg)
        domain.note(port=port)
        return {xen.EVTCHNOP_send: send, xen.EVTCHNOP_close: close, xen.EVTCHNOP_unmask: unmask}[cmd](domain, port)
    if cmd == xen.EVTCHNOP_status:
        dom, port = domain.unpack(xen.EVTCHN_STATUS, arg)[:2]
        answer = status(domain, dom, port)
        if isinstance(answer, int):
            return answer
        state, vcpu, u0, u1 = answer
        domain.write(arg + 8, xen.EVTCHN_PORT.pack(state) + xen.EVTCHN_PORT.pack(vcpu))
        domain.write(arg + 16, xen.EVTCHN_PORT.pack(u0) + xen.EVTCHN_PORT.pack(u1))
        return 0
    return -xen.ENOSYS


def _out(domain, port, layout, address, *values):
    """Write the structure back with its OUT port, or return the error."""
    if port < 0:
        return port
    domain.note(port=port)
    domain.pack(layout, address, *values)
    return 0
