"""The guests the course migrates: one kernel (vmkit/guests/dirty_writer.asm) in four patterns.

    workload("idle")                      spins; writes only its line counter and stack
    workload("steady", wws_pages=32)      rewrites a writable working set of wws_pages pages
    workload("diabolical")                writes every page of 2.9 MiB as fast as it can
    workload("random", seed=7, pages=64)  writes dwords at places a seeded generator picks

Each returns NASM source (the %defines, then the guest), ready for migrate() or vmkit.run.
`work` is how many steps of work come between two "seq n" lines; `pace` spins that many times
after each store, for a writer slow enough that shorter rounds leave fewer dirty pages.
"""
from .. import guests
from ..errors import VmkitError

PATTERNS = {"idle": 0, "steady": 1, "diabolical": 2, "random": 3}
WORKLOADS = {
    "idle": "spins without writing memory; only its line counter and stack change",
    "steady": "rewrites one dword in each page of a small writable working set, round and round",
    "diabolical": "writes every page of 2.9 MiB as fast as it can: it never converges",
    "random": "writes dwords at places a seeded generator picks among `pages` pages",
}
DATA_PAGES = 736                  # the pages between the kernel and the stack that the writers use


def workload(name, *, wws_pages=32, pages=256, seed=1, work=20000, pace=0):
    if name not in PATTERNS:
        raise VmkitError(f"no workload named {name!r}; the course has {', '.join(PATTERNS)}")
    if not 1 <= wws_pages <= DATA_PAGES or not 1 <= pages <= DATA_PAGES:
        raise VmkitError(f"a working set is 1 to {DATA_PAGES} pages (got wws_pages={wws_pages}, pages={pages})")
    if work < 1 or pace < 0:
        raise VmkitError(f"work must be at least 1 and pace at least 0 (got work={work}, pace={pace})")
    defines = {"PATTERN": PATTERNS[name], "WWS_PAGES": wws_pages, "PAGES": pages,
               "SEED": seed & 0xFFFFFFFF, "WORK": work, "PACE": pace}
    return "".join(f"%define {k} {v}\n" for k, v in defines.items()) + guests.source("dirty_writer")
