"""Lab 4 (paravirtualization): guests under vmkit's own hypervisor and hypercalls, and the
paravirtualized routines of parts 4 and 5 as the reference writes them."""
from vmkit.asm import assemble
from vmkit.grading.lab4 import PV_MAX_INSTRUCTIONS, pv_facts
from vmkit.xen import Paravirt

# Part 4: console_write on Xen's console, one console_io for the whole message.
PV_CONSOLE_WRITE = r"""
console_write:
    pushad
    mov ebx, CONSOLEIO_write
    mov edx, esi
    hypercall __HYPERVISOR_console_io
    popad
    ret
"""

# Part 5: log_append with the mask byte for cli and sti, and the pending check after the copy.
PV_LOG_APPEND = r"""
log_append:
    pushad
    mov ebx, [shared_info]
    mov byte [ebx + UPCALL_MASK], 1
    mov edx, [log_head]
.copy:
    lodsb
    mov [log + edx], al
    inc edx
    and edx, LOG_SIZE - 1
    loop .copy
    mov [log_head], edx
    inc dword [records]
    mov byte [ebx + UPCALL_MASK], 0
    cmp byte [ebx + UPCALL_PENDING], 0
    je .done
    xor ebx, ebx
    hypercall __HYPERVISOR_xen_version
.done:
    popad
    ret
"""


def pv_run(source, modules=()):
    """The guest under vmkit's own hypervisor and hypercalls: pv_facts."""
    dom0 = Paravirt(assemble(source), modules=modules, max_instructions=PV_MAX_INSTRUCTIONS, timeout=30)
    return pv_facts(dom0.run())


def pv_runs(cases):
    """pv_run for each [source, modules], in one process."""
    return [pv_run(source, modules) for source, modules in cases]


FACTS = {f.__name__: f for f in (pv_run, pv_runs)}
