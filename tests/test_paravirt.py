"""Paravirtualization: PV guests written to Xen's x86_32 ABI, as docs/architecture.md (section 2.5)
gives it, on vmkit's hypervisor. Most guests here are written inline against that contract only:
the selectors, the start_info and shared_info offsets, `int 0x82` with Xen's hypercall numbers."""
import struct

import pytest

import vmkit
import vmkit.guests
from vmkit.xen import HYPERCALLS, Paravirt
from vmkit.xen import abi as xen

PV = "paravirt"

ABI = """
FLAT_RING1_CS equ 0xe019
FLAT_RING1_DS equ 0xe021
FLAT_RING3_CS equ 0xe02b
FLAT_RING3_DS equ 0xe033
SI_NR_PAGES    equ 32
SI_SHARED_INFO equ 36
SI_FLAGS       equ 40

%macro hypercall 1-6                    ; number, then EBX, ECX, EDX, ESI, EDI
%if %0 > 5
    mov edi, %6
%endif
%if %0 > 4
    mov esi, %5
%endif
%if %0 > 3
    mov edx, %4
%endif
%if %0 > 2
    mov ecx, %3
%endif
%if %0 > 1
    mov ebx, %2
%endif
    mov eax, %1
    int 0x82
%endmacro

%macro shutdown 1                       ; sched_op(SCHEDOP_shutdown, &{reason})
    jmp %%over
%%reason: dd %1
%%over:
    hypercall 29, 2, %%reason
%endmacro
"""


def pv(body):
    return ABI + body


def words(machine, label, count):
    return list(struct.unpack(f"<{count}i", machine.read(machine.image.symbols[label], 4 * count)))


# --- the start of day --------------------------------------------------------------------------------------
def test_a_pv_guest_starts_in_ring_1_on_xens_flat_segments_with_start_info_in_esi():
    m = vmkit.machine("nop", PV)
    regs = m.cpu.regs(("eip", "esp", "cs", "ss", "ds", "es", "fs", "gs", "esi"))
    assert regs["eip"] == 0x100000 and regs["esp"] == 0x400000
    assert regs["cs"] == 0xE019 and m.cpu.cpl == 1
    assert {regs[s] for s in ("ss", "ds", "es", "fs", "gs")} == {0xE021}
    start_info = regs["esi"]
    magic, nr_pages, shared_info, flags = struct.unpack("<32sIII", m.read(start_info, 44))
    assert magic.rstrip(b"\0") == b"xen-3.0-x86_32"
    assert nr_pages == 1024 and flags == xen.SIF_PRIVILEGED | xen.SIF_INITDOMAIN
    pending, mask = m.read(shared_info, 2)
    assert (pending, mask) == (0, 1)                       # events masked until the guest is ready


def test_hello_prints_through_console_io_and_shuts_down_with_its_reason():
    result = vmkit.run(vmkit.guests.image("pv_hello"), PV)
    assert result.serial == ("hello from a paravirtualized guest\nstart_info magic: xen-3.0-x86_32\n"
                             "running on Xen 4.2\nmemory: 4 MiB\n")
    assert result.exit_code == 0 and not result.shutdown
    calls = result.of_kind("hypercall")
    assert result.stats["hypercalls"] == len(calls) == 13
    assert {(e.detail["name"], e.detail["number"]) for e in calls} == {
        ("console_io", 18), ("xen_version", 17), ("sched_op", 29)}
    assert all(e.cpl == 1 for e in calls)
    assert result.events[-1].kind == "exit" and result.events[-1].detail["reason"] == "poweroff"
    assert result.stats["io"] == 0                       # no port was touched: the console is a hypercall


@pytest.mark.parametrize("reason", [0, 1, 3, 42])
def test_the_shutdown_reason_is_the_exit_code(reason):
    result = vmkit.run(pv(f"shutdown {reason}\njmp $"), PV)
    assert result.exit_code == reason
    shutdown = result.of_kind("hypercall")[-1]
    assert shutdown.detail["op"] == "shutdown" and shutdown.detail["result"] == 0


def test_each_hypercall_is_an_event_with_its_arguments_and_result():
    image = vmkit.assemble(pv("hypercall 17, 0, 0\nhypercall 17, 7, 0x1234\nshutdown 0"))
    result = vmkit.run(image, PV)
    first, second = result.of_kind("hypercall")[:2]
    assert first.detail["args"][:2] == (0, 0) and first.detail["result"] == 4 << 16 | 2
    assert second.detail["args"][:2] == (7, 0x1234) and second.detail["result"] == xen.PAGE_SIZE
    at = first.eip - image.origin
    assert image.code[at:at + 2] == b"\xcd\x82"           # the event is at the int 0x82 itself


# --- errors: a hypercall fails with a negative errno in EAX and the guest carries on -----------------------
ERRORS = """
    hypercall 99                              ; no such hypercall
    mov [results + 0], eax
    hypercall 18, 7, 1, msg                   ; console_io: no command 7
    mov [results + 4], eax
    hypercall 18, 0, 4, 0x7ffff000            ; console_io: a buffer outside the guest
    mov [results + 8], eax
    hypercall 29, 9, 0                        ; sched_op: no command 9
    mov [results + 12], eax
    hypercall 29, 2, 0x7ffff000               ; sched_op shutdown: the reason is unreadable
    mov [results + 16], eax
    mov dword [port], 5
    hypercall 32, 4, port                     ; event_channel_op send: port 5 is not in use
    mov [results + 20], eax
    hypercall 32, 99, port                    ; event_channel_op: no command 99
    mov [results + 24], eax
    mov dword [alloc], 0x7ff00009             ; alloc_unbound in domain 9, which does not exist
    hypercall 32, 6, alloc
    mov [results + 28], eax
    mov dword [bind], 0x7ff0                  ; bind_interdomain to our port 3, which was never offered
    mov dword [bind + 4], 3
    hypercall 32, 0, bind
    mov [results + 32], eax
    hypercall 0, 0x7ffff000                   ; set_trap_table from an unreadable table
    mov [results + 36], eax
    hypercall 17, 99, 0                       ; xen_version: no command 99
    mov [results + 40], eax
    hypercall 24, 6, 40, 0                    ; vcpu_op on vcpu 40
    mov [results + 44], eax
    hypercall 36, domctl                      ; domctl with the wrong interface version
    mov [results + 48], eax
    hypercall 20, 99, 0, 0                    ; grant_table_op: no command 99
    mov [results + 52], eax
    hypercall 29, 2, 3                        ; sched_op shutdown given the reason, not a pointer to it
    mov [results + 56], eax
    hypercall 18, 0, 0, 0                     ; console_io: nothing to write, and no buffer needed
    mov [results + 60], eax
    shutdown 0
msg: db "abcd"
align 4
port: dd 0
alloc: dd 0, 0
bind: dd 0, 0, 0
domctl: dd 1, 7, 0, 0
    times 128 db 0
results: times 16 dd 0x55555555
"""


def test_bad_hypercalls_return_negative_errnos_and_the_guest_carries_on():
    m = vmkit.machine(pv(ERRORS), PV)
    result = m.run()
    assert result.exit_code == 0
    assert words(m, "results", 16) == [-xen.ENOSYS, -xen.ENOSYS, -xen.EFAULT, -xen.ENOSYS, -xen.EFAULT,
                                       -xen.EINVAL, -xen.ENOSYS, -xen.ESRCH, -xen.EINVAL, -xen.EFAULT,
                                       -xen.ENOSYS, -xen.EINVAL, -xen.EACCES, -xen.ENOSYS, -xen.EFAULT, 0]
    errors = [e.detail.get("error") for e in result.of_kind("hypercall")]
    assert errors[:3] == ["-ENOSYS", "-ENOSYS", "-EFAULT"]
    assert result.of_kind("hypercall")[0].detail["name"] == "hypercall 99"


def test_xen_version_fills_the_buffers_it_is_given():
    m = vmkit.machine(pv("hypercall 17, 3, caps\nhypercall 17, 5, params\nhypercall 17, 1, extra\nshutdown 0\n"
                         "caps: times 1024 db 0\nparams: dd 0\nextra: times 16 db 0"), PV)
    m.run()
    caps = m.read(m.image.symbols["caps"], 32)
    assert caps.rstrip(b"\0") == b"xen-3.0-x86_32"
    assert m.u32(m.image.symbols["params"]) == xen.HYPERVISOR_VIRT_START
    assert m.read(m.image.symbols["extra"], 8) == b".0-vmkit"


# --- the virtual IF: a byte in shared_info ---------------------------------------------------------------------
EVENTS = """
    mov eax, [esi + SI_SHARED_INFO]
    mov [shared], eax
    hypercall 4, FLAT_RING1_CS, callback, FLAT_RING1_CS, callback
    mov dword [alloc], 0x7ff07ff0             ; alloc_unbound(DOMID_SELF, remote DOMID_SELF)
    hypercall 32, 6, alloc
    mov eax, [alloc + 4]
    mov dword [bind], 0x7ff0
    mov [bind + 4], eax
    hypercall 32, 0, bind                     ; a second port, bound to the first: a loopback channel
    mov eax, [bind + 8]
    mov [send], eax
    mov esi, [shared]
    mov byte [esi + 1], 0                     ; unmask: nothing is delivered until we enter Xen
    mov ecx, 100
    loop $
    mov eax, [upcalls]
    mov [seen], eax
    hypercall 17, 0, 0                        ; enter Xen: the pending event is delivered on the way out
    mov eax, [upcalls]
    mov [seen + 4], eax
    mov byte [esi + 1], 1                     ; mask, send, nothing
    hypercall 32, 4, send
    mov eax, [upcalls]
    mov [seen + 8], eax
    movzx eax, byte [esi]
    mov [seen + 12], eax                      ; ... but the pending byte is set
    mov byte [esi + 1], 0                     ; the paravirtual sti
    cmp byte [esi], 0
    je .done
    hypercall 17, 0, 0
.done:
    mov eax, [upcalls]
    mov [seen + 16], eax
    shutdown 0

callback:
    inc dword [upcalls]
    push esi
    mov esi, [shared]
    mov byte [esi], 0                         ; acknowledge: upcall_pending, the selector, the ports
    mov dword [esi + 4], 0
    mov dword [esi + 2048], 0
    test dword [esp + 4 + 8], 0x200           ; the frame's IF: were events on where we came from?
    jz .out
    mov byte [esi + 1], 0
.out:
    pop esi
    iretd
align 4
shared: dd 0
upcalls: dd 0
alloc: dd 0, 0
bind: dd 0, 0, 0
send: dd 0
seen: times 5 dd 0
"""


def test_events_are_delivered_only_when_unmasked_and_only_on_the_way_out_of_xen():
    m = vmkit.machine(pv(EVENTS), PV)
    result = m.run()
    assert result.exit_code == 0
    # binding starts the new port pending (Xen's "lost notification" rule); unmasking alone does nothing
    assert words(m, "seen", 5) == [0, 1, 1, 1, 2]
    interrupts = result.of_kind("interrupt")
    assert len(interrupts) == result.stats["upcalls"] == 2
    for upcall in interrupts:
        before = result.events[result.events.index(upcall) - 1]
        assert before.kind == "hypercall" and before.detail["name"] == "xen_version"
    delivery = result.events[result.events.index(interrupts[0]) + 1]
    assert delivery.kind == "ring-transition" and delivery.detail["gate"] == "event callback"
    assert delivery.detail["handler"] == m.image.symbols["callback"] and delivery.detail["events_masked"]


def test_a_masked_critical_section_costs_no_hypercall_but_cli_traps_under_trap_and_emulate():
    rounds = 500
    pv_loop = pv(f"""
        mov esi, [esi + SI_SHARED_INFO]
        mov ecx, {rounds}
    again:
        mov byte [esi + 1], 1        ; cli
        add eax, ecx
        mov byte [esi + 1], 0        ; sti ...
        cmp byte [esi], 0            ; ... and only if something is pending, a hypercall
        jne force
    back:
        loop again
        shutdown 0
    force:
        hypercall 17, 0, 0
        jmp back""")
    native_loop = f"mov ecx, {rounds}\nagain:\ncli\nadd eax, ecx\nsti\nloop again\ncli\nhlt"
    para = vmkit.run(pv_loop, PV)
    trapped = vmkit.run(native_loop, "trap-and-emulate")
    assert para.stats["hypercalls"] == 1 and para.stats["traps"] == 0       # only the shutdown
    assert trapped.stats["traps"] == 2 * rounds + 2                        # and the final cli, hlt


def test_the_events_guest_tells_its_story():
    result = vmkit.run(vmkit.guests.image("pv_events"), PV)
    assert result.serial.splitlines() == [
        "callbacks, trap table and kernel stack registered",
        "loopback channel: ports 1 and 2",
        "sent while masked: upcall pending = 1, callbacks so far = 0",
        "event on port 1",
        "event on port 2",
        "after sti: callbacks = 1",
        "multicall: one entry into Xen, three console writes",
        "#GP bounced to the kernel: cli is privileged in ring 1",
        "back after the #GP",
        "hello from ring 3, through int 0x80 and Xen's trap bounce"]
    assert result.exit_code == 7


# --- traps: bounced through the guest's trap table --------------------------------------------------------------
def test_int_0x80_from_ring_3_is_bounced_to_the_handler_in_the_trap_table_on_the_stack_switch_stack():
    m = vmkit.machine(vmkit.guests.image("pv_events"), PV)
    result = m.run()
    symbols = m.image.symbols
    syscalls = [e for e in result.of_kind("ring-transition") if e.detail.get("cause") == "int 0x80"]
    assert len(syscalls) == 2
    first = syscalls[0]
    assert (first.cpl, first.detail["from_ring"], first.detail["to_ring"]) == (3, 3, 1)
    assert first.detail["bounced"] and first.detail["gate"] == "trap table" and first.detail["stack_switch"]
    assert first.detail["handler"] == symbols["syscall_handler"]
    assert first.detail["ss"] == 0xE021 and first.detail["esp"] == symbols["kernel_stack_top"] - 20
    frame = dict(first.detail["frame"])
    assert frame["CS"] == 0xE02B and frame["SS"] == 0xE033 and frame["EIP"] == first.eip + 2
    traps = [e for e in result.of_kind("trap") if e.detail["cause"] == "int 0x80"]
    assert len(traps) == 2 and result.stats["bounces"] == 3       # two system calls and the #GP


def test_int_n_not_open_to_ring_3_becomes_a_gp_naming_the_vector():
    source = pv("""
        hypercall 0, traps
        hypercall 3, FLAT_RING1_DS, 0x3f0000
        push FLAT_RING3_DS
        push 0x3e0000
        push 0x202
        push FLAT_RING3_CS
        push user
        iretd
    user:
        int 0x80
        jmp $
    syscall:
        shutdown 1
    gp:
        pop eax
        mov [error], eax
        shutdown 2
    align 4
    traps:
        db 0x80, 1                   ; DPL 1: the kernel may int 0x80, user code may not
        dw FLAT_RING1_CS
        dd syscall
        db 13, 0
        dw FLAT_RING1_CS
        dd gp
        dd 0, 0
    error: dd 0""")
    m = vmkit.machine(source, PV)
    result = m.run()
    assert result.exit_code == 2
    assert m.u32(m.image.symbols["error"]) == 0x80 * 8 + 2
    gp = result.of_kind("ring-transition")[-1]
    assert gp.detail["vector"] == 13 and gp.eip == m.image.symbols["user"]
    frame = dict(gp.detail["frame"])
    # events were masked (as at boot): EFLAGS.IF clear in the frame, the mask byte in CS's upper half
    assert frame["CS"] == 1 << 16 | 0xE02B and not frame["EFLAGS"] & 0x200


def test_without_stack_switch_a_trap_from_ring_3_lands_on_the_stack_the_guest_booted_with():
    source = pv("""
        hypercall 0, traps
        push FLAT_RING3_DS
        push 0x3e0000
        push 0x202
        push FLAT_RING3_CS
        push user
        iretd
    user:
        int 0x80
    syscall:
        mov [where], esp
        shutdown 0
    align 4
    traps:
        db 0x80, 3
        dw FLAT_RING1_CS
        dd syscall
        dd 0, 0
    where: dd 0""")
    m = vmkit.machine(source, PV)
    m.run()
    assert m.u32(m.image.symbols["where"]) == 0x400000 - 20      # EIP, CS, EFLAGS, ESP, SS below the boot ESP


def test_a_handler_in_a_segment_that_is_not_ring_1_code_crashes_the_domain_when_used():
    result = vmkit.run(pv("hypercall 0, traps\nmov [result], eax\ncli\n"
                          "traps: db 13, 0\ndw 0x08\ndd 0x100000\ndd 0, 0\nresult: dd 0"), PV)
    assert result.of_kind("hypercall")[0].detail["result"] == 0       # Xen checks the selector only when used
    assert result.exit_code == xen.SHUTDOWN_crash
    assert "not a ring-1 code segment" in result.of_kind("shutdown")[0].detail["why"]


def test_an_exception_without_a_handler_crashes_the_domain():
    result = vmkit.run(pv("nop\ncli\nshutdown 0"), PV)
    assert result.exit_code == xen.SHUTDOWN_crash and result.shutdown
    trap, crash = result.of_kind("trap")[0], result.of_kind("shutdown")[0]
    assert trap.detail["instruction"] == "cli" and trap.detail["cause"] == "#GP"
    assert "trap table" in crash.detail["why"]


@pytest.mark.parametrize("instruction", ["out 0xf4, al", "in al, 0x60", "hlt", "mov eax, cr0", "lidt [0]"])
def test_ports_and_privileged_instructions_fault_and_are_bounced_to_the_guest(instruction):
    source = pv(f"""
        hypercall 0, traps
        mov al, 1
    bad:
        {instruction}
        shutdown 0
    gp:
        pop eax
        mov [error], eax
        shutdown 9
    align 4
    traps:
        db 13, 0
        dw FLAT_RING1_CS
        dd gp
        dd 0, 0
    error: dd 0xffffffff""")
    m = vmkit.machine(source, PV)
    result = m.run()
    assert result.exit_code == 9 and m.u32(m.image.symbols["error"]) == 0
    assert result.stats["io"] == 0 and not result.of_kind("io")
    assert result.of_kind("trap")[0].eip == m.image.symbols["bad"]


def test_touching_xens_memory_is_a_page_fault_with_the_address_in_cr2():
    source = pv("""
        mov eax, [esi + SI_SHARED_INFO]
        mov [shared], eax
        hypercall 0, traps
        mov dword [0xfc000000], 1      ; HYPERVISOR_VIRT_START: the machine-to-physical table, read-only
        shutdown 0
    pf:
        pop eax
        mov [error], eax
        mov eax, [shared]
        mov eax, [eax + 8]             ; vcpu_info[0].arch.cr2
        mov [fault_address], eax
        shutdown 14
    align 4
    traps:
        db 14, 0
        dw FLAT_RING1_CS
        dd pf
        dd 0, 0
    shared: dd 0
    error: dd 0
    fault_address: dd 0""")
    m = vmkit.machine(source, PV)
    assert m.run().exit_code == 14
    assert m.u32(m.image.symbols["fault_address"]) == xen.HYPERVISOR_VIRT_START
    assert m.u32(m.image.symbols["error"]) == 3          # present, write, from the kernel


# --- multicall ----------------------------------------------------------------------------------------------------
def test_a_multicall_runs_each_entry_writes_each_result_and_enters_xen_once():
    source = pv("""
        hypercall 13, batch, 4
        mov [result], eax
        shutdown 0
    align 4
    batch:
        dd 17, 0x99, 0, 0, 0, 0, 0, 0               ; xen_version(XENVER_version)
        dd 18, 0x99, 0, 2, text, 0, 0, 0            ; console_io(write, 2, text)
        dd 99, 0x99, 0, 0, 0, 0, 0, 0               ; no such hypercall
        dd 13, 0x99, batch, 1, 0, 0, 0, 0           ; multicalls do not nest
    text: db "ok"
    result: dd 0x55""")
    m = vmkit.machine(source, PV)
    result = m.run()
    results = [m.u32(m.image.symbols["batch"] + 32 * i + 4) for i in range(4)]
    assert results == [0x40002, 0, (-xen.ENOSYS) & 0xFFFFFFFF, (-xen.EINVAL) & 0xFFFFFFFF]
    assert m.u32(m.image.symbols["result"]) == 0 and result.serial == "ok"
    assert result.stats["hypercalls"] == 2 and result.stats["multicall_entries"] == 4
    batch = result.of_kind("hypercall")[0]
    assert batch.detail["name"] == "multicall"
    assert [c["name"] for c in batch.detail["calls"]] == ["xen_version", "console_io", "hypercall 99", "multicall"]


# --- the pv_ops kernel --------------------------------------------------------------------------------------------
def test_cpuid_names_xen_only_under_the_hypervisor():
    probe = "mov eax, 0x40000000\ncpuid\nmov esi, ebx\nmov edi, ecx\nmov ebp, edx\n"
    native = vmkit.run(probe + "mov al, 0\nout 0xf4, al")
    para = vmkit.run(pv(probe + "shutdown 0"), PV)
    signature = lambda r: struct.pack("<3I", r.regs["esi"], r.regs["edi"], r.regs["ebp"])
    assert signature(para) == b"XenVMMXenVMM"
    assert signature(native) != b"XenVMMXenVMM"
    assert para.of_kind("emulate")[0].detail["instruction"] == "cpuid"


def test_the_pv_ops_kernel_boots_natively_and_paravirtualized_with_the_same_output():
    image = vmkit.guests.image("pv_ops")
    native, para = vmkit.run(image), vmkit.run(image, PV)
    assert native.serial == para.serial == ("pv_ops kernel: up\ntimer: 3 ticks\ncritical sections: 1000\n"
                                            "paging: the window shows page A\npaging: the window shows page B\n"
                                            "user: hello from ring 3\nkernel: the user program exited with 0\n")
    assert native.exit_code == 1 and para.exit_code == 0          # isa-debug-exit 0; SHUTDOWN_poweroff
    # natively: ring 0, the PIC's IRQ0, COM1; paravirtualized: ring 1, VIRQ_TIMER events, console_io
    assert native.stats["hypercalls"] == 0 and native.stats["irqs"] == 3 and native.of_kind("io")
    assert para.stats["irqs"] == 0 and not para.of_kind("io") and para.stats["upcalls"] == 3
    assert {e.cpl for e in para.of_kind("hypercall")} == {1}
    # paging: natively the kernel's own tables and invlpg; on Xen, the builder's tables and a validated
    # update_va_mapping for each change of the window
    remaps = [e for e in para.of_kind("hypercall") if e.detail["name"] == "update_va_mapping"]
    assert [e.detail["result"] for e in remaps] == [0, 0] and para.stats["pt_updates"] == 2
    assert {e.detail["flush"] for e in remaps} == {"invlpg"}
    # a thousand critical sections: two traps each under trap-and-emulate, no hypercall at all here
    assert para.stats["hypercalls"] < 30
    assert vmkit.run(image, "trap-and-emulate").stats["traps"] > 2000


def test_stepping_and_running_a_pv_guest_give_the_same_events():
    image = vmkit.guests.image("pv_events")
    straight = vmkit.run(image, PV)
    m = vmkit.machine(image, PV)
    while not m.finished:
        m.step()
    assert [(e.kind, e.eip, e.icount) for e in m.result().events] == \
        [(e.kind, e.eip, e.icount) for e in straight.events]
    assert m.result().stats == straight.stats


def test_run_until_stops_at_a_hypercall():
    m = vmkit.machine(vmkit.guests.image("pv_hello"), PV)
    events = m.run_until(event=lambda e: e.kind == "hypercall" and e.detail["name"] == "xen_version")
    assert events[-1].detail["result"] == 0x40002 and not m.finished


# --- a lab's own hypercall table --------------------------------------------------------------------------------------
def test_a_lab_can_pass_its_own_hypercall_handlers():
    def shouting_console_io(domain, cmd, count, buffer, *_):
        domain.console_write(domain.read(buffer, count).upper())
        return 0
    table = dict(HYPERCALLS)
    table[18] = shouting_console_io
    result = Paravirt(vmkit.guests.image("pv_hello"), hypercalls=table).run()
    assert result.serial.startswith("HELLO FROM A PARAVIRTUALIZED GUEST")
    table = {number: handler for number, handler in HYPERCALLS.items() if number != 17}
    result = Paravirt(vmkit.guests.image("pv_hello"), hypercalls=table).run()
    assert "running on Xen 65535.65498" in result.serial                  # -ENOSYS, printed as a version


def test_a_handler_that_returns_nothing_is_named_in_the_error():
    table = dict(HYPERCALLS)
    table[18] = lambda domain, *args: None
    with pytest.raises(vmkit.VmkitError, match="hypercall 18 .console_io. returned None"):
        Paravirt(vmkit.guests.image("pv_hello"), hypercalls=table).run()


def test_a_guest_that_never_shuts_down_runs_out_of_budget():
    with pytest.raises(vmkit.GuestTimeout) as caught:
        vmkit.run(pv("jmp $"), PV, max_instructions=10_000)
    assert caught.value.result.stats["instructions"] == 10_000


@pytest.mark.parametrize("instruction", ["syscall", "sysret"])
def test_syscall_and_sysret_are_undefined_and_bounced_to_the_guest(instruction):
    """On the 32-bit Intel CPU the domain runs on, syscall and sysret raise #UD (SDM vol. 2B): Xen
    bounces it to the handler of vector 6 in the guest's trap table, with EIP at the instruction."""
    source = pv(f"""
        hypercall 0, traps
        mov ecx, bad
    bad:
        {instruction}
        shutdown 0
    ud:
        mov eax, [esp]
        mov [where], eax
        shutdown 9
    align 4
    traps:
        db 6, 0
        dw FLAT_RING1_CS
        dd ud
        dd 0, 0
    where: dd 0""")
    m = vmkit.machine(source, PV)
    result = m.run()
    assert result.exit_code == 9 and m.u32(m.image.symbols["where"]) == m.image.symbols["bad"]
    assert result.of_kind("trap")[0].eip == m.image.symbols["bad"]
