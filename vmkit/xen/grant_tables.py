"""Grant tables: how a domain lets another one map a page of its memory.

A domain cannot touch another's memory, not even dom0 (short of being the domain builder). To
share a page, the owner writes an entry in its grant table, a page it shares with the hypervisor:
{flags = GTF_permit_access, domid = who may map it, frame = which page, a machine frame number};
the index of the entry is the *grant reference* it then tells the other domain. The other domain
asks the hypervisor to map (owner, reference) at a virtual address of its own
(GNTTABOP_map_grant_ref); the hypervisor checks the entry and that the owner owns the frame, takes
references on it (a writable one unless the mapping is read-only: a page table cannot be granted
writable), points the mapper's PTE for that address at the frame (the old entry goes), and marks
the entry in use (GTF_reading, GTF_writing) so the owner knows not to take it back. Unmapping
clears the PTE and lets the references go. This is how a split driver's ring is shared.
(xen/common/grant_table.c, __gnttab_map_grant_ref and __gnttab_unmap_common; the PTE work is
create_grant_va_mapping and destroy_grant_va_mapping in xen/arch/x86/mm.c.)
"""
from dataclasses import dataclass

from . import abi as xen
from . import mm as frames
from .layout import GRANT_TABLE, SHARED_INFO, START_INFO

NR_GRANT_ENTRIES = xen.PAGE_SIZE // xen.GRANT_ENTRY.size      # one frame of version-1 entries: 512


@dataclass
class Mapping:
    """A grant mapping the hypervisor keeps track of (Xen's maptrack entry)."""
    handle: int
    mapper: object
    granter: object
    ref: int
    host_addr: int
    readonly: bool
    frame: int = 0               # the machine frame mapped
    uses: int = 1                # host map, device map: the references held on the frame, a set each


def entry_address(domain, ref):
    return GRANT_TABLE + ref * xen.GRANT_ENTRY.size


def read_entry(domain, ref):
    """(flags, domid, frame) of grant `ref` in `domain`'s table (the hypervisor's own view of it)."""
    return xen.GRANT_ENTRY.unpack(domain.xen_read(entry_address(domain, ref), xen.GRANT_ENTRY.size))


def grant(domain, ref, domid, frame, readonly=False):
    """Write a grant entry as the guest would (domid and machine frame first, then the flags): used by
    the domain builder to seed the store page's grant, as Xen's toolstack does."""
    address = entry_address(domain, ref)
    domain.xen_write(address + 2, xen.GRANT_ENTRY.pack(0, domid, frame)[2:])
    domain.xen_write(address, (xen.GTF_permit_access | (xen.GTF_readonly if readonly else 0)).to_bytes(2, "little"))


def _set_flags(domain, ref, set_bits=0, clear_bits=0):
    address = entry_address(domain, ref)
    flags = int.from_bytes(domain.xen_read(address, 2), "little")
    domain.xen_write(address, ((flags | set_bits) & ~clear_bits).to_bytes(2, "little"))


def _hypervisor_page(address):
    return address in (SHARED_INFO, START_INFO, GRANT_TABLE)


def map_grant_ref(mapper, host_addr, flags, ref, domid):
    """Map grant `ref` of domain `domid` at `host_addr` in `mapper`: (GNTST_* status, handle, frame)."""
    xen_ = mapper.xen
    granter = mapper if domid == xen.DOMID_SELF else xen_.domains.get(domid)
    if granter is None:
        return xen.GNTST_bad_domain, 0, 0
    if ref >= NR_GRANT_ENTRIES:
        return xen.GNTST_bad_gntref, 0, 0
    if not flags & (xen.GNTMAP_host_map | xen.GNTMAP_device_map):
        return xen.GNTST_general_error, 0, 0
    gflags, gdomid, frame = read_entry(granter, ref)
    if gflags & xen.GTF_type_mask != xen.GTF_permit_access or gdomid != mapper.domid:
        return xen.GNTST_general_error, 0, 0              # not granted, or granted to someone else
    readonly = bool(flags & xen.GNTMAP_readonly)
    if gflags & xen.GTF_readonly and not readonly:
        return xen.GNTST_permission_denied, 0, 0
    if flags & xen.GNTMAP_host_map and (
            host_addr % xen.PAGE_SIZE or host_addr < xen.PAGE_SIZE or host_addr >= xen.HYPERVISOR_VIRT_START
            or _hypervisor_page(host_addr) or any(m.host_addr == host_addr for m in xen_.mappings_of(mapper))):
        return xen.GNTST_bad_virt_addr, 0, 0
    mm = xen_.mm
    uses = [flag for flag in (xen.GNTMAP_host_map, xen.GNTMAP_device_map) if flags & flag]
    for taken, _ in enumerate(uses):           # a reference for each use, on a frame the granter owns
        if not (mm.get_page(frame, granter) if readonly else mm.get_page_and_type(frame, granter, frames.WRITABLE)):
            mapper.note(refused=mm.why)
            for _ in range(taken):
                _put(mm, frame, readonly)
            return xen.GNTST_general_error, 0, 0
    if flags & xen.GNTMAP_host_map and not mm.create_grant_va_mapping(mapper, host_addr, frame, readonly):
        mapper.note(refused=mm.why)
        for _ in uses:
            _put(mm, frame, readonly)
        return xen.GNTST_general_error, 0, 0
    handle = xen_.new_mapping(Mapping(0, mapper, granter, ref, host_addr if flags & xen.GNTMAP_host_map else 0,
                                      readonly, frame, len(uses)))
    _set_flags(granter, ref, xen.GTF_reading | (0 if readonly else xen.GTF_writing))
    return xen.GNTST_okay, handle, frame


def _put(mm, frame, readonly):
    if readonly:
        mm.put_page(frame)
    else:
        mm.put_page_and_type(frame)


def unmap_grant_ref(mapper, host_addr, handle):
    """Undo a mapping: the mapper's page is its own again, and the granter may reuse the entry."""
    mapping = mapper.xen.maptrack.get((mapper.domid, handle))
    if mapping is None or mapping.mapper is not mapper:
        return xen.GNTST_bad_handle
    if host_addr and host_addr != mapping.host_addr:
        return xen.GNTST_bad_virt_addr
    release(mapping)
    return xen.GNTST_okay


def release(mapping):
    xen_ = mapping.mapper.xen
    del xen_.maptrack[(mapping.mapper.domid, mapping.handle)]
    if mapping.host_addr:
        xen_.mm.destroy_grant_va_mapping(mapping.mapper, mapping.host_addr, mapping.frame)
    for _ in range(mapping.uses):
        _put(xen_.mm, mapping.frame, mapping.readonly)
    granter = mapping.granter
    if not granter.dying and not any(m.granter is granter and m.ref == mapping.ref for m in xen_.maptrack.values()):
        _set_flags(granter, mapping.ref, clear_bits=xen.GTF_reading | xen.GTF_writing)


# --- the hypercall -------------------------------------------------------------------------------------------
def grant_table_op(domain, cmd, uop, count):
    """grant_table_op(cmd, uop, count): `count` structures at `uop`, each with its own status."""
    domain.note(op=xen.GNTTABOP_NAMES.get(cmd, cmd))
    if count >= 1 << 31:
        return -xen.EINVAL
    if cmd == xen.GNTTABOP_map_grant_ref:
        layout = xen.GNTTAB_MAP_GRANT_REF
        for i in range(count):
            address = uop + i * layout.size
            host_addr, flags, ref, dom, _, _, _ = domain.unpack(layout, address)
            status, handle, frame = map_grant_ref(domain, host_addr, flags, ref, dom)
            bus = frame * xen.PAGE_SIZE if status == xen.GNTST_okay and flags & xen.GNTMAP_device_map else 0
            domain.pack(layout, address, host_addr, flags, ref, dom, status, handle, bus)
            domain.note(ref=ref, dom=dom, host_addr=host_addr, status=status)
        return 0
    if cmd == xen.GNTTABOP_unmap_grant_ref:
        layout = xen.GNTTAB_UNMAP_GRANT_REF
        for i in range(count):
            address = uop + i * layout.size
            host_addr, bus, handle, _ = domain.unpack(layout, address)
            status = unmap_grant_ref(domain, host_addr, handle)
            domain.pack(layout, address, host_addr, bus, handle, status)
            domain.note(handle=handle, status=status)
        return 0
    if cmd == xen.GNTTABOP_setup_table:
        layout = xen.GNTTAB_SETUP_TABLE
        for i in range(count):
            address = uop + i * layout.size
            dom, nr_frames, _, frame_list = domain.unpack(layout, address)
            status = xen.GNTST_okay
            if dom not in (xen.DOMID_SELF, domain.domid) and not domain.privileged:
                status = xen.GNTST_permission_denied
            elif dom not in (xen.DOMID_SELF, domain.domid) and dom not in domain.xen.domains:
                status = xen.GNTST_bad_domain
            elif nr_frames > 1:
                status = xen.GNTST_general_error          # this hypervisor's tables are one frame
            elif nr_frames == 1:
                target = domain if dom in (xen.DOMID_SELF, domain.domid) else domain.xen.domains[dom]
                domain.put_u32(frame_list, target.pfn_to_mfn(GRANT_TABLE // xen.PAGE_SIZE))
            domain.pack(layout, address, dom, nr_frames, status, frame_list)
        return 0
    if cmd == xen.GNTTABOP_query_size:
        layout = xen.GNTTAB_QUERY_SIZE
        for i in range(count):
            address = uop + i * layout.size
            dom = domain.unpack(layout, address)[0]
            domain.pack(layout, address, dom, 1, 1, xen.GNTST_okay)
        return 0
    return -xen.ENOSYS
