"""Binary translation against trap-and-emulate and native, measured side by side in one run.

    python tests/benchmarks/binary_translation.py      (also part of `python3 course.py bench`)

1. A cli/sti-heavy kernel loop: two traps a round under trap-and-emulate, none under binary
   translation, where cli and sti are stores to the virtual IF in the translation cache.
   Target: binary translation >= 10x faster than trap-and-emulate.
2. CPU-bound kernels (a sieve; a loop of calls and returns): binary translation against native,
   counting the guest's own instructions (the default) and without those counts (count_guest=False).
   Target: <= 2x native time. Calls and returns cost a translator more (Adams & Agesen's "callret"
   case: every `ret` is an indirect jump); here a call and its ret are translated in line (a push
   and a `lea esp`), and a loop back to its unit's start is unrolled, with one count a pass.
3. Translation cost: a kernel of many small blocks each run once, so nearly all of binary
   translation's extra time is translating them (and chaining their exits); per block.
4. A timer kernel whose ring-3 program increments a counter on the page of kernel code the
   translator has translated (CODE_PAGE_COUNTER, about a million instructions). Each of its writes
   lands on a page with translated code; only writes to the translated bytes themselves may reach
   the VMM. Target: <= 3x native time.
"""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import vmkit                                                             # noqa: E402

CALLS = """
    mov ecx, {rounds}
again:
    call add_twice
    loop again
    hlt
add_twice:
    add eax, ecx
    call add_once
    ret
add_once:
    add eax, 1
    ret
"""

BLOCKS = 2000

# A kernel as a course user writes it (the vmkit PC's platform contract, docs/architecture.md): a GDT
# with ring-3 segments, a TSS, an IDT, the PIC and the PIT at 1000 Hz (a tick every 100,000
# instructions). Its user program counts in `counter`, a few bytes after its own code and on the
# same page as the kernel's, until the timer has ticked TICKS times; then int 0x80 prints what the
# kernel's function `digit` returns, patches `digit` (a store into code that has been translated:
# the timer handler calls it at every tick) and prints what it returns now: "57".
CODE_PAGE_COUNTER = """
bits 32
org 0x100000
    lgdt [gdt_descriptor]
    jmp 0x08:.cs
.cs:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, kernel_stack_top
    mov dword [tss + 4], kernel_stack_top       ; the ring-0 stack for interrupts from ring 3
    mov dword [tss + 8], 0x10
    mov word [tss + 102], 104                   ; no I/O bitmap
    mov eax, tss
    mov [gdt_tss + 2], ax
    shr eax, 16
    mov [gdt_tss + 4], al
    mov [gdt_tss + 7], ah
    mov ax, 0x28
    ltr ax
    mov eax, timer
    mov ebx, 0x20
    mov cl, 0x8E                                ; interrupt gate, DPL 0
    call set_gate
    mov eax, syscall
    mov ebx, 0x80
    mov cl, 0xEE                                ; interrupt gate, DPL 3
    call set_gate
    lidt [idt_descriptor]
    mov al, 0x11                                ; the PIC: IRQ0 -> vector 0x20, only IRQ0 unmasked
    out 0x20, al
    mov al, 0x20
    out 0x21, al
    mov al, 4
    out 0x21, al
    mov al, 1
    out 0x21, al
    mov al, 0xFE
    out 0x21, al
    mov al, 0x34                                ; the PIT: channel 0, mode 2, 1000 Hz
    out 0x43, al
    mov ax, 1193
    out 0x40, al
    mov al, ah
    out 0x40, al
    push 0x23                                   ; to ring 3 with IF=1
    push user_stack_top
    push 0x202
    push 0x1B
    push user
    iretd
set_gate:                                       ; IDT entry ebx -> handler eax, type cl
    lea edi, [idt + ebx * 8]
    mov [edi], ax
    mov word [edi + 2], 0x08
    mov byte [edi + 4], 0
    mov [edi + 5], cl
    shr eax, 16
    mov [edi + 6], ax
    ret
digit:
    mov al, '5'
    ret
timer:
    push eax
    call digit
    inc dword [ss:ticks]
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd
syscall:
    mov dx, 0x3f8
    call digit
    out dx, al
    mov byte [digit + 1], '7'                   ; the kernel rewrites its translated code
    call digit
    out dx, al
    mov al, 10
    out dx, al
    mov al, 0
    out 0xf4, al
user:
    inc dword [counter]
    cmp dword [ticks], {ticks}
    jb user
    int 0x80
counter: dd 0
ticks: dd 0
align 8
gdt:
    dq 0
    dq 0x00CF9A000000FFFF                       ; 0x08 kernel code
    dq 0x00CF92000000FFFF                       ; 0x10 kernel data
    dq 0x00CFFA000000FFFF                       ; 0x18 user code
    dq 0x00CFF2000000FFFF                       ; 0x20 user data
gdt_tss:
    dw 103, 0                                   ; 0x28 the TSS
    db 0, 0x89, 0, 0
gdt_end:
gdt_descriptor:
    dw gdt_end - gdt - 1
    dd gdt
align 8
idt: times 256 dq 0
idt_descriptor:
    dw 256 * 8 - 1
    dd idt
tss: times 104 db 0
align 16
    times 1024 db 0
user_stack_top:
    times 1024 db 0
kernel_stack_top:
"""


def many_blocks(n):
    """n blocks, each a few instructions ending in a jump to the next: every one runs once."""
    body = "\n".join(f"b{i}: add eax, {i}\n xor ebx, eax\n jmp b{i + 1}" for i in range(n))
    return vmkit.assemble(f"{body}\nb{n}: hlt\n")


def seconds(image, technique, **options):
    t0 = time.perf_counter()
    result = vmkit.run(image, technique, max_instructions=10 ** 10, timeout=600, **options)
    elapsed = time.perf_counter() - t0
    assert result.halted or result.exit_code is not None, result
    return elapsed, result


def median_of(n, image, technique, **options):
    runs = [seconds(image, technique, **options) for _ in range(n)]
    return statistics.median(t for t, _ in runs), runs[-1][1]


def cli_sti(rounds=20_000, repeats=5):
    from run import CLI_STI_LOOP           # the loop the trap-and-emulate benchmark measures
    print(f"6. binary translation: a kernel loop of cli/sti ({rounds:,} rounds), median of {repeats} runs")
    image = vmkit.assemble(CLI_STI_LOOP.format(rounds=rounds))
    rows = {}
    for technique in ("native", "trap-and-emulate", "binary-translation"):
        t, result = median_of(repeats, image, technique)
        rows[technique] = t
        print(f"   {technique:<20}{t:8.3f} s   traps {result.stats['traps']:>7,}")
    ratio = rows["trap-and-emulate"] / rows["binary-translation"]
    print(f"   binary translation is {ratio:.0f}x faster than trap-and-emulate "
          f"({rows['native'] / rows['binary-translation']:.1f}x native's speed)")
    return ratio


def cpu_bound(repeats=3):
    from run import SIEVE
    print(f"   CPU-bound kernels, binary translation against native, median of {repeats} runs; uncounted: "
          f"count_guest=False, the cache code without its counts of guest instructions")
    ratios = {}
    for name, source in (("sieve", SIEVE.format(rounds=4)), ("calls", CALLS.format(rounds=300_000))):
        image = vmkit.assemble(source)
        native, expected = median_of(repeats, image, "native")
        bt, result = median_of(repeats, image, "binary-translation")
        uncounted, _ = median_of(repeats, image, "binary-translation", count_guest=False)
        assert result.stats["instructions"] == expected.stats["instructions"]
        ratios[name], ratios[name + " uncounted"] = bt / native, uncounted / native
        print(f"   {name:<8} native {native:6.3f} s   binary translation {bt:6.3f} s   {bt / native:5.2f}x native"
              f"   uncounted {uncounted:6.3f} s {uncounted / native:5.2f}x   ({result.stats['blocks_translated']} blocks, "
              f"{result.stats.get('cache_misses', 0)} cache misses; {result.stats['instructions']:,} guest instructions, "
              f"{result.stats['cpu_instructions']:,} run by the CPU)")
    return ratios


def translation_cost(repeats=3):
    print(f"   translation cost: {BLOCKS:,} blocks, each run once, median of {repeats} runs")
    image = many_blocks(BLOCKS)
    native, _ = median_of(repeats, image, "native")
    bt, result = median_of(repeats, image, "binary-translation")
    per_block = (bt - native) / result.stats["blocks_translated"] * 1e6
    print(f"   native {native:.3f} s   binary translation {bt:.3f} s   "
          f"{result.stats['blocks_translated']:,} blocks translated: {per_block:.0f} us per block "
          f"(decode, rewrite, write to the cache, chain)")
    return per_block


def code_page_counter(repeats=3, ticks=10):
    print(f"   ring 3 counting on a page of translated kernel code ({ticks} timer ticks), median of {repeats} runs")
    image = vmkit.assemble(CODE_PAGE_COUNTER.format(ticks=ticks))
    native, expected = median_of(repeats, image, "native")
    bt, result = median_of(repeats, image, "binary-translation")
    assert result.serial_bytes == expected.serial_bytes == b"57\n", (result.serial_bytes, expected.serial_bytes)
    print(f"   native {native:.3f} s   binary translation {bt:.3f} s   {bt / native:5.2f}x native   "
          f"({expected.stats['instructions']:,} instructions natively)")
    return bt / native


def main():
    """Measure; returns what targets() reports on."""
    return {"cli_sti": cli_sti(), "cpu_bound": cpu_bound(), "per_block": translation_cost(),
            "code_page": code_page_counter()}


def targets(measured):
    ratio, worst, per_block = measured["cli_sti"], measured["cpu_bound"], measured["per_block"]
    return [f"   binary translation: cli/sti loop >= 10x faster than trap-and-emulate: {ratio:.0f}x "
            f"{'met' if ratio >= 10 else 'MISSED'}",
            f"   binary translation: CPU-bound kernels <= 2x native time: sieve {worst['sieve']:.2f}x "
            f"{'met' if worst['sieve'] <= 2 else 'MISSED'}; calls and returns {worst['calls']:.2f}x "
            f"{'met' if worst['calls'] <= 2 else 'MISSED'} (calls and rets translated in line); without "
            f"counting guest instructions: sieve {worst['sieve uncounted']:.2f}x, calls {worst['calls uncounted']:.2f}x",
            f"   binary translation: {per_block:.0f} us to translate a block (no target)",
            f"   binary translation: ring 3 writing on a page of translated code <= 3x native time: "
            f"{measured['code_page']:.2f}x {'met' if measured['code_page'] <= 3 else 'MISSED'}"]


if __name__ == "__main__":
    print("\n".join(targets(main())))
