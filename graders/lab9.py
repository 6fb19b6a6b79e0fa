"""Lab 9 (direct paging): what vmkit's Xen, on its own page-table rules (vmkit.xen.mm, after Xen's
mm.c), answers to scripts of page-table requests, and how the course's PV kernels run on them."""
from vmkit.grading.lab9 import kernel_facts, request_facts, run_kernel, run_requests


def requests(steps):
    """The script `steps` (vmkit.grading.lab9.run_requests) on a fresh dom0 on Xen's own rules: request_facts."""
    return request_facts(*run_requests(None, steps))


def requests_many(scripts):
    """requests for each script, in one process."""
    return [requests(steps) for steps in scripts]


def guest_runs(cases):
    """For each [guest, options, modules], the kernel on Xen's own rules: kernel_facts."""
    return [kernel_facts(*run_kernel(None, guest, options, modules, timeout=30)) for guest, options, modules in cases]


FACTS = {f.__name__: f for f in (requests, requests_many, guest_runs)}
