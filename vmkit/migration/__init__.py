"""Live migration: move a running guest to another VM with nothing lost.

    from vmkit import migration
    result = migration.migrate(migration.workload("steady"), where="model", link=migration.Link(mbit=1000))
    result.rounds, result.downtime, result.verified

Files, one idea each:
    link.py       the network between the hosts: bandwidth, latency, Clark's adaptive rate, failures
    dirty_log.py  write tracking on the emulated machine (write protection, as KVM does it)
    vms.py        the two ends: a VM on the model or on the real KVM (KVM_GET_DIRTY_LOG)
    precopy.py    the pre-copy loop (peek and skip); Xen's, Clark's and QEMU's stop conditions;
                  the stop-and-copy; verification
    workloads.py  the guests to migrate: idle, steady, diabolical, random
"""
from .link import Link, LinkDown
from .precopy import (CLARK, PEEK_EVERY, PRESETS, QEMU, XEN, XEN_MAX_BATCH, Migration, MigrationAborted,
                      MigrationResult, Round, StopConditions, migrate, sequence)
from .vms import MODEL_IPS, GuestEnded, KvmVm, ModelVm
from .workloads import WORKLOADS, workload

__all__ = ["Link", "LinkDown", "XEN", "CLARK", "QEMU", "PRESETS", "PEEK_EVERY", "XEN_MAX_BATCH", "Migration",
           "MigrationAborted", "MigrationResult", "Round", "StopConditions", "migrate", "sequence", "MODEL_IPS", "GuestEnded", "KvmVm", "ModelVm", "WORKLOADS", "workload"]
