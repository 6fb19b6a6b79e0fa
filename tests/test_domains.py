"""Domains: dom0 builds, pauses and destroys domUs; the hypervisor shares the CPU among them; grant
tables share pages; event channels connect them; a split block driver carries data both ways."""
import struct

import pytest

import vmkit
import vmkit.guests
from vmkit.xen import BadAddress, Paravirt
from vmkit.xen import abi as xen
from vmkit.xen import event_channels, grant_tables
from vmkit.xen.io_ring import BlkRequest, BlkResponse, read_ring

PV = "paravirt"
SPIN = vmkit.assemble("spin:\ninc dword [count]\njmp spin\ncount: dd 0")
YIELD_FOREVER = vmkit.assemble("again:\nmov ebx, 0\nmov eax, 29\nint 0x82\njmp again")   # sched_op(yield)


def split_driver_run():
    return vmkit.run(vmkit.guests.image("pv_dom0"), PV, modules=[vmkit.guests.image("pv_domu")])


# --- the whole story: dom0, a domU, a split block driver ---------------------------------------------------------
def test_dom0_creates_a_domu_whose_split_driver_carries_data_both_ways_then_destroys_it():
    m = vmkit.machine(vmkit.guests.image("pv_dom0"), PV, modules=[vmkit.guests.image("pv_domu")])
    result = m.run()
    domu = m.xen.every_domain[1]
    assert result.serial.splitlines() == [
        "dom0: creating a domain from the boot module (3280 bytes)",
        "dom0: created domain 1 (paused): 1024 pages, nothing in them",
        "dom0: built it as Xen's toolstack does: its kernel, start_info, mfn_list and page tables",
        f"dom0: Xen validated and pinned its page directory, machine frame {domu.p2m[5]:#x}",
        "dom0: unpaused it",
        "(d1) blkfront: granted the ring (ref 8) and a data page (ref 9) to dom0",
        "dom0: blkback connected: ring-ref 8, event channel 2",
        "(d1) blkfront: the backend is connected",
        'dom0: blkback: domain 1 wrote sector 0: "hello, disk, from domain 1"',     # domU -> dom0
        "(d1) blkfront: wrote sector 0, status 0",
        "(d1) blkfront: read sector 1, status 0",
        "(d1) blkfront: sector 1 says: dom0's disk says hello back",                # dom0 -> domU
        "dom0: domain 1 shut down with code 0",
        "dom0: destroyed it; shutting down"]
    assert result.exit_code == 0
    calls = result.of_kind("hypercall")
    ops = [(e.detail["domain"], e.detail.get("op")) for e in calls if e.detail["name"] == "domctl"]
    assert ops == [(0, "createdomain"), (0, "getmemlist"), (0, "setvcpucontext"), (0, "unpausedomain"),
                   (0, "getdomaininfo"), (0, "destroydomain")]
    domu = [e for e in calls if e.detail["domain"] == 1]
    assert {e.detail["name"] for e in domu} >= {"grant_table_op", "event_channel_op", "sched_op", "console_io"}
    assert result.stats["domain_switches"] > 4


def test_the_domains_after_the_run():
    m = Paravirt(vmkit.guests.image("pv_dom0"), modules=[vmkit.guests.image("pv_domu")])
    m.run()
    dom0, domu = m.xen.every_domain
    assert domu.domid == 1 and domu.shutdown_code == xen.SHUTDOWN_poweroff and domu.dying
    assert list(m.xen.domains) == [0] and not m.xen.maptrack        # destroyed, nothing left mapped
    assert domu.image is m.modules[0]                               # the stepper can show its source
    assert domu.stats["hypercalls"] + dom0.stats["hypercalls"] == m.result().stats["hypercalls"]


def test_stepping_and_running_several_domains_give_the_same_events():
    straight = split_driver_run()
    m = vmkit.machine(vmkit.guests.image("pv_dom0"), PV, modules=[vmkit.guests.image("pv_domu")])
    while not m.finished:
        m.step()
    stepped = m.result()
    key = lambda r: [(e.kind, e.eip, e.icount, e.detail["domain"]) for e in r.events]
    assert key(stepped) == key(straight) and stepped.serial == straight.serial
    assert stepped.stats == straight.stats


def test_the_ring_can_be_read_from_either_side_while_the_driver_runs():
    m = vmkit.machine(vmkit.guests.image("pv_dom0"), PV, modules=[vmkit.guests.image("pv_domu")])
    request_sent = lambda e: e.detail["domain"] == 1 and e.kind == "hypercall" and e.detail.get("op") == "send" \
        and e.detail.get("port") == 2
    m.run_until(event=request_sent)                   # the frontend notifies dom0 of its first request
    domu = m.xen.domains[1]
    ring = read_ring(domu, 0x200000)
    assert (ring.req_prod, ring.rsp_prod) == (1, 0)
    assert ring.requests() == [BlkRequest(slot=0, operation="write", id=1, sector=0, gref=9, first_sect=0,
                                          last_sect=0)]
    assert read_ring(m, 0x301000).page == ring.page                    # dom0's mapping: the same page
    m.run_until(event=lambda e: e.detail["domain"] == 1 and e.kind == "exit")
    ring = read_ring(domu, 0x200000)
    assert ring.responses() == [BlkResponse(0, 1, "write", 0), BlkResponse(1, 2, "read", 0)]
    assert ring.requests() == []


# --- scheduling ------------------------------------------------------------------------------------------------------
def two_spinning_domus(quantum=10_000):
    m = Paravirt(YIELD_FOREVER)
    m.xen.quantum = m.xen.quantum_left = quantum
    domus = [m.xen.create_domain(SPIN.code) for _ in range(2)]
    return m, domus


def count(domain):
    return domain.u32(SPIN.symbols["count"])


def test_new_domains_are_paused_until_unpaused_then_share_the_cpu_round_robin():
    m, (a, b) = two_spinning_domus()
    assert (a.domid, b.domid) == (1, 2) and a.paused and b.paused
    m.run_until(instructions=50)
    assert count(a) == count(b) == 0                 # paused: never scheduled
    m.xen.unpause(a)
    m.xen.unpause(b)
    m.run_until(instructions=40)                     # ten rounds: dom0 yields, domain 1, domain 2
    assert a.instructions == b.instructions == 10 * 10_000          # a time slice each, in turn
    assert count(a) == count(b) > 10_000
    m.xen.pause(b)
    m.run_until(instructions=40)
    assert b.instructions == 10 * 10_000 and a.instructions == 20 * 10_000


def test_a_domain_that_blocks_gives_up_the_cpu_and_wakes_on_an_event():
    source = "mov ebx, 1\nmov ecx, 0\nmov eax, 29\nint 0x82\nspin:\ninc dword [count]\njmp spin\ncount: dd 0"
    sleeper = vmkit.assemble(source)
    m = Paravirt(YIELD_FOREVER)
    m.xen.quantum = m.xen.quantum_left = 10_000
    domu = m.xen.create_domain(sleeper.code)
    m.xen.unpause(domu)
    m.run_until(instructions=100)
    assert domu.blocked and domu.u32(sleeper.symbols["count"]) == 0
    port = event_channels.alloc_unbound(domu, xen.DOMID_SELF, 0)
    mine = event_channels.bind_interdomain(m, domu.domid, port)
    assert event_channels.send(m, mine) == 0
    assert not domu.blocked and domu.upcall_pending
    m.run_until(instructions=100)
    assert domu.u32(sleeper.symbols["count"]) > 0


def test_when_every_domain_is_blocked_and_no_timer_is_armed_the_machine_halts():
    result = vmkit.run("mov ebx, 1\nmov eax, 29\nint 0x82\njmp $", PV)      # dom0 blocks; nothing can wake it
    assert result.halted and result.exit_code is None
    assert "nothing can ever wake them" in result.events[-1].detail["why"]


def test_a_blocked_domain_wakes_on_its_timer_and_the_idle_time_is_counted():
    source = """
        mov eax, [esi + 36]
        mov [shared], eax
        mov ebx, 0xe019
        mov ecx, tick
        mov edx, 0xe019
        mov esi, tick
        mov eax, 4
        int 0x82                   ; set_callbacks
        mov ebx, 1
        mov ecx, virq
        mov eax, 32
        int 0x82                   ; bind_virq(VIRQ_TIMER)
        mov ebx, 1
        mov eax, 29
        int 0x82                   ; block: Xen's default 100 Hz timer wakes us
        mov ebx, 2
        mov ecx, reason
        mov eax, 29
        int 0x82
    tick:
        mov eax, [shared]
        mov byte [eax], 0
        iretd
    align 4
    virq: dd 0, 0, 0
    shared: dd 0
    reason: dd 5"""
    result = vmkit.run(source, PV)
    assert result.exit_code == 5
    assert 9_990_000 // 10 < result.stats["idle_cycles"] <= 10_000_000 // 10        # 10 ms at 100 MHz
    assert result.of_kind("interrupt")[0].detail["ports"] == [1]


# --- grant tables --------------------------------------------------------------------------------------------------
def test_a_granted_page_is_the_same_memory_in_both_domains_while_it_is_mapped():
    dom0 = Paravirt(YIELD_FOREVER)
    domu = dom0.xen.create_domain(SPIN.code)
    frame = domu.pfn_to_mfn(0x200)                               # a grant names a machine frame
    page = dom0.xen.mm.pages[frame]
    assert (page.owner, page.count, page.type, page.type_count) == (domu, 2, "writable_page", 1)   # its PTE's
    grant_tables.grant(domu, 8, 0, frame)                        # domU page 0x200000, for dom0
    dom0.write(0x300000, b"dom0's own")
    status, handle, mapped = grant_tables.map_grant_ref(dom0, 0x300000, xen.GNTMAP_host_map, 8, domu.domid)
    assert (status, mapped) == (xen.GNTST_okay, frame)
    assert dom0.mapped_frame(0x300000) == frame                  # dom0's PTE points at the domU's frame
    domu.write(0x200000, b"ping")
    assert dom0.read(0x300000, 4) == b"ping"
    dom0.write(0x300004, b"pong")
    assert domu.read(0x200004, 4) == b"pong"
    flags = grant_tables.read_entry(domu, 8)[0]
    assert flags == xen.GTF_permit_access | xen.GTF_reading | xen.GTF_writing      # in use: not to be reused
    assert (page.count, page.type_count) == (3, 2)               # the grant holds a writable reference too
    assert grant_tables.unmap_grant_ref(dom0, 0x300000, handle) == xen.GNTST_okay
    assert dom0.mapped_frame(0x300000) is None                   # Xen clears the PTE, as Xen's unmap does
    with pytest.raises(BadAddress):
        dom0.read(0x300000, 4)
    assert dom0.xen_read(0x300000, 10) == b"dom0's own"          # dom0's own frame is untouched
    assert grant_tables.read_entry(domu, 8)[0] == xen.GTF_permit_access
    assert (page.count, page.type_count) == (2, 1)
    assert grant_tables.unmap_grant_ref(dom0, 0x300000, handle) == xen.GNTST_bad_handle


def test_the_hypervisor_checks_every_grant_before_mapping_it():
    dom0 = Paravirt(YIELD_FOREVER)
    domu = dom0.xen.create_domain(SPIN.code)
    other = dom0.xen.create_domain(SPIN.code)
    grant_tables.grant(domu, 8, other.domid, domu.pfn_to_mfn(0x200))     # granted to domain 2, not to dom0
    grant_tables.grant(domu, 9, 0, domu.pfn_to_mfn(0x201), readonly=True)
    host_map = xen.GNTMAP_host_map

    def status(*args):
        return grant_tables.map_grant_ref(dom0, *args)[0]
    assert status(0x300000, host_map, 8, domu.domid) == xen.GNTST_general_error
    assert status(0x300000, host_map, 7, domu.domid) == xen.GNTST_general_error   # never granted
    assert status(0x300000, host_map, 9, domu.domid) == xen.GNTST_permission_denied
    assert status(0x300000, host_map | xen.GNTMAP_readonly, 9, domu.domid) == xen.GNTST_okay
    assert status(0x301000, host_map, 600, domu.domid) == xen.GNTST_bad_gntref
    assert status(0x301000, host_map, 8, 99) == xen.GNTST_bad_domain
    readonly = host_map | xen.GNTMAP_readonly
    assert status(0x301234, readonly, 9, domu.domid) == xen.GNTST_bad_virt_addr   # not page-aligned
    assert status(0x300000, readonly, 9, domu.domid) == xen.GNTST_bad_virt_addr   # already mapped there
    assert grant_tables.map_grant_ref(other, 0x1000, host_map, 8, domu.domid)[0] == xen.GNTST_bad_virt_addr
    assert grant_tables.map_grant_ref(other, 0x301000, host_map, 8, domu.domid)[0] == xen.GNTST_okay


def test_the_store_page_is_granted_to_dom0_by_the_domain_builder():
    dom0 = Paravirt(YIELD_FOREVER)
    domu = dom0.xen.create_domain(SPIN.code)
    fields = xen.START_INFO.unpack(domu.read(0x2000, xen.START_INFO.size))
    nr_pages, flags, store_mfn, store_evtchn = fields[1], fields[3], fields[4], fields[5]
    assert (nr_pages, flags) == (1024, 0)                        # a domU is not privileged
    assert grant_tables.read_entry(domu, xen.GNTTAB_RESERVED_XENSTORE) == (xen.GTF_permit_access, 0, store_mfn)
    assert event_channels.status(dom0, domu.domid, store_evtchn) == (xen.EVTCHNSTAT_unbound, 0, 0, 0)


# --- event channels between domains ------------------------------------------------------------------------------
def test_an_interdomain_channel_makes_the_other_end_pending_and_closing_unbinds_it():
    dom0 = Paravirt(YIELD_FOREVER)
    domu = dom0.xen.create_domain(SPIN.code)
    offered = event_channels.alloc_unbound(domu, xen.DOMID_SELF, 0)
    assert event_channels.bind_interdomain(domu, 0, 1) == -xen.EINVAL      # dom0 offered nothing
    mine = event_channels.bind_interdomain(dom0, domu.domid, offered)
    assert event_channels.status(dom0, domu.domid, offered)[:4] == (xen.EVTCHNSTAT_interdomain, 0, 0, mine)
    assert not domu.upcall_pending
    event_channels.send(dom0, mine)
    assert event_channels.pending_ports(domu) == [offered] and domu.upcall_pending
    assert domu.upcall_mask == 1                                 # pending, but the domU has events masked
    assert event_channels.close(dom0, mine) == 0
    assert event_channels.status(domu, xen.DOMID_SELF, offered)[:3] == (xen.EVTCHNSTAT_unbound, 0, 0)
    assert event_channels.send(domu, offered) == 0               # an unbound port drops the event


def test_only_dom0_may_act_on_other_domains():
    dom0 = Paravirt(YIELD_FOREVER)
    domu = dom0.xen.create_domain(SPIN.code)
    assert event_channels.alloc_unbound(domu, 0, domu.domid) == -xen.EPERM
    assert event_channels.alloc_unbound(dom0, domu.domid, 0) > 0            # dom0 may, as the toolstack does
    domu.write(0x300000, xen.DOMCTL_HEADER.pack(xen.XEN_DOMCTL_pausedomain, xen.XEN_DOMCTL_INTERFACE_VERSION, 0))
    assert domu.call(36, (0x300000, 0, 0, 0, 0))[0] == -xen.EPERM


# --- the management hypercall ----------------------------------------------------------------------------------------
def domctl(domain, cmd, domid=0, union=b""):
    address = 0x300000
    domain.write(address, xen.DOMCTL_HEADER.pack(cmd, xen.XEN_DOMCTL_INTERFACE_VERSION, domid)
                 + union.ljust(128, b"\0"))
    result = domain.call(36, (address, 0, 0, 0, 0))[0]
    return result, domain.read(address, xen.DOMCTL_SIZE)


def test_domctl_creates_pauses_reports_and_destroys_domains():
    dom0 = Paravirt(YIELD_FOREVER)
    dom0.write(0x200000, SPIN.code)
    create = xen.CREATEDOMAIN.pack(0, b"\x11" * 16, 0, 0x200000, len(SPIN.code), 512)
    result, out = domctl(dom0, xen.XEN_DOMCTL_createdomain, 0, create)
    assert result == 0
    domid = struct.unpack_from("<H", out, 8)[0]
    domain = dom0.xen.domains[domid]
    assert domain.memory == 512 * xen.PAGE_SIZE and domain.paused and xen.CREATEDOMAIN.unpack_from(out, 16)[-1] == 512
    assert not domain.initialised and domain.guest_table == 0            # empty: dom0 builds it
    assert dom0.xen.mm.read(domain.p2m[0x100] << 12, 16) == bytes(16)    # Xen loaded nothing
    info = xen.GETDOMAININFO.unpack_from(domctl(dom0, xen.XEN_DOMCTL_getdomaininfo, domid)[1], 16)
    assert info[0] == domid and info[1] & xen.XEN_DOMINF_paused and info[2] == 512 and info[-2] == b"\x11" * 16
    assert domctl(dom0, xen.XEN_DOMCTL_unpausedomain, domid)[0] == 0 and not domain.paused
    assert not dom0.xen.runnable(domain)                                 # no vcpu context yet
    assert domctl(dom0, xen.XEN_DOMCTL_pausedomain, domid)[0] == 0 and domain.paused
    assert domctl(dom0, xen.XEN_DOMCTL_createdomain, domid, create)[0] == -xen.EEXIST
    too_big = xen.CREATEDOMAIN.pack(0, bytes(16), 0, 0x200000, len(SPIN.code), 1 << 20)
    assert domctl(dom0, xen.XEN_DOMCTL_createdomain, 0, too_big)[0] == -xen.ENOMEM
    unreadable = xen.CREATEDOMAIN.pack(0, bytes(16), 0, 0x7FFFF000, 100, 0)
    assert domctl(dom0, xen.XEN_DOMCTL_createdomain, 0, unreadable)[0] == -xen.EFAULT
    assert domctl(dom0, 99, domid)[0] == -xen.ENOSYS
    assert domctl(dom0, xen.XEN_DOMCTL_destroydomain, 0)[0] == -xen.EINVAL        # not itself
    assert domctl(dom0, xen.XEN_DOMCTL_destroydomain, domid)[0] == 0
    assert domid not in dom0.xen.domains and domain.dying
    assert domctl(dom0, xen.XEN_DOMCTL_destroydomain, domid)[0] == -xen.ESRCH
    assert domctl(dom0, xen.XEN_DOMCTL_getdomaininfo, domid)[0] == -xen.ESRCH


def test_getmemlist_gives_the_frames_and_setvcpucontext_wants_a_page_directory_that_validates():
    dom0 = Paravirt(YIELD_FOREVER)
    dom0.write(0x200000, SPIN.code)
    create = xen.CREATEDOMAIN.pack(0, bytes(16), 0, 0x200000, len(SPIN.code), 512)
    result, out = domctl(dom0, xen.XEN_DOMCTL_createdomain, 0, create)
    domain = dom0.xen.domains[struct.unpack_from("<H", out, 8)[0]]
    domid = domain.domid
    assert result == 0 and domid == 1
    dom0.write(0x302000, bytes(16 * 8))
    result, out = domctl(dom0, xen.XEN_DOMCTL_getmemlist, domid, xen.GETMEMLIST.pack(16, 0, 0x302000, 0))
    assert result == 0 and xen.GETMEMLIST.unpack_from(out, 16)[-1] == 16                  # the first 16 of 512
    assert list(struct.unpack("<16Q", dom0.read(0x302000, 16 * 8))) == domain.p2m[:16]
    assert domctl(dom0, xen.XEN_DOMCTL_getmemlist, 77, xen.GETMEMLIST.pack(16, 0, 0x302000, 0))[0] == -xen.EINVAL
    context = bytearray(xen.VCPU_GUEST_CONTEXT_SIZE)
    xen.CPU_USER_REGS.pack_into(context, xen.VGC_USER_REGS, 0, 0, 0, 0x2000, 0, 0, 0, 0, 0, 0x100000, xen.FLAT_RING1_CS,
                                0, 0x200, 0x10000, xen.FLAT_RING1_SS, *[xen.FLAT_RING1_DS] * 4)
    struct.pack_into("<I", context, xen.VGC_CTRLREG + 12, domain.p2m[5] << 12)     # an empty page: it validates
    dom0.write(0x303000, bytes(context))
    vcpu = xen.VCPUCONTEXT.pack(0, 0x303000)
    dom0.write(0x302000, b"x")                                          # a frame of dom0's own: not the domU's
    bad = bytearray(context)
    struct.pack_into("<I", bad, xen.VGC_CTRLREG + 12, dom0.p2m[0x302] << 12)
    dom0.write(0x304000, bytes(bad))
    assert domctl(dom0, xen.XEN_DOMCTL_setvcpucontext, domid, xen.VCPUCONTEXT.pack(0, 0x304000))[0] == -xen.EINVAL
    assert not domain.initialised
    assert domctl(dom0, xen.XEN_DOMCTL_setvcpucontext, domid, vcpu)[0] == 0
    assert domain.initialised and domain.guest_table == domain.p2m[5] and domain.cpu["cr3"] == domain.p2m[5] << 12
    assert domain.cpu["eip"] == 0x100000 and domain.cpu["esi"] == 0x2000 and domain.cpu.cpl == 1
    assert dom0.xen.mm.pages[domain.p2m[5]].type == "l2_page_table"
    assert domctl(dom0, xen.XEN_DOMCTL_setvcpucontext, domid, vcpu)[0] == -xen.EEXIST


def test_a_domu_that_shuts_down_raises_virq_dom_exc_in_dom0():
    dom0 = Paravirt(YIELD_FOREVER)
    port = event_channels.bind_virq(dom0, xen.VIRQ_DOM_EXC, 0)
    domu = dom0.xen.create_domain(SPIN.code)
    domu.shut_down(xen.SHUTDOWN_reboot)
    assert event_channels.pending_ports(dom0) == [port]
    assert dom0.xen.state(domu) == "shutdown" and domu.shutdown_code == xen.SHUTDOWN_reboot
    exits = [e for e in dom0.events if e.kind == "exit"]
    assert exits[-1].detail == {"exit_code": 1, "reason": "reboot", "domain": domu.domid}


@pytest.mark.parametrize("pages", [16, 100])
def test_a_kernel_that_does_not_fit_the_memory_asked_for_is_refused(pages):
    dom0 = Paravirt(YIELD_FOREVER)
    assert dom0.xen.create_domain(SPIN.code, pages) == -xen.EINVAL
