"""The shared ring of a split driver, read out of a domain's memory (Xen's io/ring.h, io/blkif.h).

A ring is one page: four indices, then 32 slots. The frontend produces requests (req_prod) and the
backend consumes them; the backend produces responses (rsp_prod) in the same slots and the
frontend consumes them. Each side sets its *event* index to say when it wants to be notified, so
that a busy ring needs no event per request. Indices only grow; a slot is index % 32.

    ring = read_ring(domain, 0x200000)     # the frontend's page, or dom0's mapping of it
    ring.req_prod, ring.rsp_prod, ring.requests(), ring.responses()

(The ring is shared memory: read it at the frontend's address in the domU, or at the address where
dom0 mapped the grant; it is the same page.)

Visual code renders this; nothing here changes the ring.
"""
from dataclasses import dataclass

from . import abi as xen

OPERATIONS = {xen.BLKIF_OP_READ: "read", xen.BLKIF_OP_WRITE: "write"}


@dataclass(frozen=True)
class BlkRequest:
    slot: int
    operation: str
    id: int
    sector: int
    gref: int            # the grant reference of the data page of the first segment
    first_sect: int
    last_sect: int


@dataclass(frozen=True)
class BlkResponse:
    slot: int
    id: int
    operation: str
    status: int          # BLKIF_RSP_OKAY (0) or BLKIF_RSP_ERROR (-1)


@dataclass(frozen=True)
class SharedRing:
    address: int
    req_prod: int
    req_event: int
    rsp_prod: int
    rsp_event: int
    page: bytes

    def _slot(self, index):
        offset = xen.SRING_HEADER.size + (index % xen.BLKIF_RING_SIZE) * xen.BLKIF_REQUEST_SIZE
        return self.page[offset:offset + xen.BLKIF_REQUEST_SIZE]

    def requests(self, since=None):
        """Requests from index `since` to req_prod; by default the ones not answered yet (from
        rsp_prod): an answered request's slot holds its response."""
        decoded = []
        for index in range(self.rsp_prod if since is None else since, self.req_prod):
            operation, _, _, id_, sector, gref, first, last = xen.BLKIF_REQUEST.unpack_from(self._slot(index))
            decoded.append(BlkRequest(index % xen.BLKIF_RING_SIZE, OPERATIONS.get(operation, str(operation)),
                                      id_, sector, gref, first, last))
        return decoded

    def responses(self, since=None):
        """Responses from index `since` to rsp_prod; by default every one whose slot has not been
        taken by a newer request."""
        oldest = max(self.req_prod - xen.BLKIF_RING_SIZE, 0)
        decoded = []
        for index in range(oldest if since is None else max(since, oldest), self.rsp_prod):
            id_, operation, status = xen.BLKIF_RESPONSE.unpack_from(self._slot(index))
            decoded.append(BlkResponse(index % xen.BLKIF_RING_SIZE, id_, OPERATIONS.get(operation, str(operation)),
                                       status))
        return decoded


def read_ring(domain, address):
    """The ring in the page at `address` of `domain`'s memory, as it is now."""
    page = domain.read(address, xen.PAGE_SIZE)
    return SharedRing(address, *xen.SRING_HEADER.unpack_from(page), page)
