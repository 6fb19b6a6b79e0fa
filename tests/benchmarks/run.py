"""Benchmarks of the model machine, measured side by side in one run on this machine.

    python3 course.py bench

1. A CPU-bound guest under vmkit "native" against the same bytes on bare Unicorn with no hooks
   (target: vmkit at >= 0.5x bare speed). vmkit is measured twice: with the default instruction
   budget (every instruction counted, so time and budgets are exact) and with max_instructions=None
   (nothing observes time, so vmkit lets Unicorn run uncounted).
2. The cost of one `int 0x80` round trip from ring 3 (ring 3 -> 0 -> 3: the exception hook, the
   delivery vmkit does for the CPU, the handler, iretd). Target: <= 20 us median.
3. Trap-and-emulate: the cost of one trap round trip (a privileged instruction in the guest
   kernel -> the VMM decodes and emulates it -> the guest resumes; target <= 10 us median), and
   the slowdown of a cli/sti-heavy kernel loop against native.
4. The VM exit round trip on real KVM from Python, against the same loop in C compiled at benchmark
   time (target: Python within 2x of C), and under vmkit's hardware-assist model (tests/benchmarks/kvm.py).
5. Paravirtualization: a loop of critical sections with the mask byte under paravirt against the same
   loop with cli/sti under trap-and-emulate (target: at least 10x faster), and the multicall
   amortization curve (tests/benchmarks/paravirt.py).
6. Binary translation: a cli/sti-heavy kernel loop against trap-and-emulate, CPU-bound kernels
   against native, the cost of translating a block, and ring 3 writing on a page of translated
   kernel code against native (tests/benchmarks/binary_translation.py).
7. The comparison suite: every course workload under every technique, its table (CSV, Markdown)
   and plots written to a temporary directory, and the orderings lesson 10 claims checked
   (tests/benchmarks/compare.py).
8. Adaptive binary translation on ptemod: the trace faults and the time of every round with
   adaptive translation on against off, a figure and a table written to a temporary directory
   (target: no more than one trace fault in 100 rounds after the warm-up; tests/benchmarks/adaptive.py).
9. Memory virtualization: ptemod under binary translation against the VT-x model without EPT (Adams &
   Agesen's order: binary translation faster) and with EPT, pgfault under shadow paging against EPT,
   one round each, a figure and a table written to a temporary directory (targets: the events a round
   exact, ptemod with EPT at least 10x cheaper than without, pgfault with EPT cheaper than under every
   shadow-paging technique; tests/benchmarks/memory.py).
10. The budgets under floods of exits: how far past its timeout an I/O flood and a serial flood run,
   and how soon Ctrl-C stops a run, under every technique (targets: at most 0.5 s each;
   tests/benchmarks/budgets.py).
11. The paravirtual device against the emulated one: the same console lines through virtio and COM1
   under the VT-x model and KVM, exits, interrupts and µs a request, and KVM_IOEVENTFD on QueueNotify
   against the same run without it (targets: 1 exit a request against 19; no user-space exit with
   the ioeventfd; tests/benchmarks/virtio.py).
"""
import gc
import statistics
import sys
import time

from unicorn import Uc, UC_ARCH_X86, UC_MODE_32

import kvm as kvm_benchmark              # tests/benchmarks/kvm.py, beside this file
import paravirt as paravirt_benchmark    # tests/benchmarks/paravirt.py
import binary_translation as bt_benchmark    # tests/benchmarks/binary_translation.py
import compare as compare_benchmark      # tests/benchmarks/compare.py
import adaptive as adaptive_benchmark    # tests/benchmarks/adaptive.py
import memory as memory_benchmark        # tests/benchmarks/memory.py
import budgets as budgets_benchmark      # tests/benchmarks/budgets.py
import virtio as virtio_benchmark        # tests/benchmarks/virtio.py
import vmkit

SIEVE = """
    mov esi, {rounds}
again:
    mov edi, 0x200000
    mov ecx, 0x40000
    xor eax, eax
clear:
    mov [edi], eax
    add edi, 4
    dec ecx
    jnz clear
    mov ebx, 2
outer:
    mov eax, ebx
    imul eax, ebx
    cmp eax, 0x100000
    jae done
    cmp byte [0x200000 + ebx], 0
    jne next
mark:
    mov byte [0x200000 + eax], 1
    add eax, ebx
    cmp eax, 0x100000
    jb mark
next:
    inc ebx
    jmp outer
done:
    dec esi
    jnz again
    hlt
"""

ARITHMETIC = """
    mov ecx, {rounds}
    xor eax, eax
    mov ebx, 12345
spin:
    imul ebx, ebx, 1103515245
    add ebx, 12345
    xor eax, ebx
    rol eax, 5
    dec ecx
    jnz spin
    hlt
"""

SYSCALLS = """
    lidt [idtr]
    mov eax, handler
    mov [idt + 0x80 * 8], ax
    mov word [idt + 0x80 * 8 + 2], 0x08
    mov word [idt + 0x80 * 8 + 4], 0xEE00
    shr eax, 16
    mov [idt + 0x80 * 8 + 6], ax
    lgdt [gdtr]
    mov dword [tss + 4], 0x3F0000
    mov dword [tss + 8], 0x10
    mov eax, tss
    mov [gdt_tss + 2], ax
    shr eax, 16
    mov [gdt_tss + 4], al
    mov [gdt_tss + 7], ah
    mov ax, 0x28
    ltr ax
    push 0x23
    push 0x3E0000
    push 0x2
    push 0x1B
    push user
    iretd
user:
    mov ecx, {calls}
    jecxz finish
call_kernel:
    int 0x80
    loop call_kernel
finish:
    int 0x81
handler:
    iretd
align 8
gdt: dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0x00CFFA000000FFFF, 0x00CFF2000000FFFF
gdt_tss: dw 103, 0
    db 0, 0x89, 0, 0
gdtr: dw $ - gdt - 1
    dd gdt
align 8
idt: times 256 dq 0
idtr: dw 256 * 8 - 1
    dd idt
tss: times 104 db 0
"""


def bare_unicorn_seconds(image):
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 4 << 20)
    uc.mem_write(image.origin, image.code)
    t0 = time.perf_counter()
    uc.emu_start(image.origin, image.origin + len(image.code) - 1)     # stops at the final hlt
    return time.perf_counter() - t0


def vmkit_seconds(image, **budget):
    t0 = time.perf_counter()
    result = vmkit.run(image, max_instructions=10 ** 10, **budget) if not budget else vmkit.run(image, **budget)
    assert result.halted, result
    return time.perf_counter() - t0


def best_of(n, f, *args, **kw):
    return min(f(*args, **kw) for _ in range(n))


def cpu_bound():
    print("1. CPU-bound guests: vmkit native vs bare Unicorn (no hooks), best of 3, same run")
    print(f"   {'guest':<12}{'bare s':>9}{'counted s':>11}{'uncounted s':>13}{'counted x':>11}{'uncounted x':>13}")
    rows = []
    for name, source, rounds in (("sieve", SIEVE, 6), ("arithmetic", ARITHMETIC, 30_000_000)):
        image = vmkit.assemble(source.format(rounds=rounds))
        bare = best_of(3, bare_unicorn_seconds, image)
        counted = best_of(3, vmkit_seconds, image)
        uncounted = best_of(3, vmkit_seconds, image, max_instructions=None, timeout=120)
        rows.append((name, bare / counted, bare / uncounted))
        print(f"   {name:<12}{bare:9.3f}{counted:11.3f}{uncounted:13.3f}{bare / counted:10.2f}x{bare / uncounted:12.2f}x")
    return rows


def syscall_round_trip(calls=20_000, repeats=7):
    print(f"2. int 0x80 round trip from ring 3 ({calls} calls per run, {repeats} runs, same guest with 0 calls as baseline)")
    with_calls = vmkit.assemble(SYSCALLS.format(calls=calls))
    without = vmkit.assemble(SYSCALLS.format(calls=0))
    per_call = []
    for _ in range(repeats):
        for image in (with_calls, without):
            vmkit.run(image, max_instructions=10 ** 9)          # warm the translation cache
        t_with = _time_run(with_calls)
        t_without = _time_run(without)
        per_call.append((t_with - t_without) / calls * 1e6)
    median = statistics.median(per_call)
    print(f"   median {median:.1f} us per round trip (runs: {', '.join(f'{x:.1f}' for x in per_call)})")
    return median


CLI_STI_LOOP = """
    mov ecx, {rounds}
    jecxz done
again:
    cli
    add eax, ecx
    sti
    xor ebx, eax
    loop again
done:
    cli
    hlt
"""


def trap_and_emulate(rounds=20_000, repeats=5):
    print(f"3. trap-and-emulate: a kernel loop of cli/sti ({rounds} rounds, 2 traps each), {repeats} runs")
    busy, idle = (vmkit.assemble(CLI_STI_LOOP.format(rounds=n)) for n in (rounds, 0))
    per_trap, slowdown = [], []
    for _ in range(repeats):
        native = _time_run(busy)
        t_busy, t_idle = _time_run(busy, "trap-and-emulate"), _time_run(idle, "trap-and-emulate")
        per_trap.append((t_busy - t_idle) / (2 * rounds) * 1e6)
        slowdown.append(t_busy / native)
    median = statistics.median(per_trap)
    print(f"   median {median:.1f} us per trap round trip (guest -> VMM -> emulate -> guest);"
          f" the loop runs {statistics.median(slowdown):.0f}x slower than native")
    return median


def _time_run(image, technique="native"):
    gc.collect()                           # the last run's garbage is collected now, not inside this one
    t0 = time.perf_counter()
    result = vmkit.run(image, technique, max_instructions=10 ** 9)
    assert result.shutdown or result.halted or result.events, result
    return time.perf_counter() - t0


# The parts `course.py bench` runs, in the README's order (its list under Benchmarks has one item each).
PARTS = (
    ("CPU-bound guests against bare Unicorn", cpu_bound),
    ("the int 0x80 round trip", syscall_round_trip),
    ("trap-and-emulate", trap_and_emulate),
    ("VM exits on KVM and the hardware-assist model", kvm_benchmark.main),
    ("paravirtualization", paravirt_benchmark.main),
    ("binary translation", bt_benchmark.main),
    ("the comparison suite", compare_benchmark.main),
    ("adaptive binary translation", adaptive_benchmark.main),
    ("memory virtualization", memory_benchmark.main),
    ("budgets under floods of exits", budgets_benchmark.main),
    ("virtio against an emulated device", virtio_benchmark.main),
)


def run_part(k, title, part):
    """One part, between a line that says which (k of all) and one that says how long it took."""
    print(f"\n[bench] part {k} of {len(PARTS)}: {title} ...", flush=True)
    started = time.perf_counter()
    result = part()
    print(f"[bench] part {k} of {len(PARTS)}: {title}: {time.perf_counter() - started:.0f} s", flush=True)
    return result


def main():
    print(f"vmkit benchmarks (Python {sys.version.split()[0]}); times are wall-clock seconds measured on this machine\n")
    (rows, median, trap, exits, paravirt, translation, comparison, adaptive, memory, floods,
     devices) = [run_part(k, title, part) for k, (title, part) in enumerate(PARTS, 1)]
    print("\nTargets:")
    for name, counted, uncounted in rows:
        print(f"   {name}: vmkit >= 0.5x bare: uncounted {uncounted:.2f}x {'met' if uncounted >= 0.5 else 'MISSED'};"
              f" counted {counted:.2f}x {'met' if counted >= 0.5 else 'missed'}")
    print(f"   int 0x80 round trip <= 20 us: {median:.1f} us {'met' if median <= 20 else 'MISSED'}")
    print(f"   trap round trip <= 10 us: {trap:.1f} us {'met' if trap <= 10 else 'MISSED'}")
    print("\n".join(kvm_benchmark.targets(exits)))
    print("\n".join(paravirt_benchmark.targets(paravirt)))
    print("\n".join(bt_benchmark.targets(translation)))
    print("\n".join(compare_benchmark.targets(comparison)))
    print("\n".join(adaptive_benchmark.targets(adaptive)))
    print("\n".join(memory_benchmark.targets(memory)))
    print("\n".join(budgets_benchmark.targets(floods)))
    print("\n".join(virtio_benchmark.targets(devices)))


if __name__ == "__main__":
    main()
