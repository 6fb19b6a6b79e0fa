"""Binary translation against trap-and-emulate and native, measured side by side in one run.

    python tests/benchmarks/binary_translation.py      (also part of `python3 course.py bench`)

1. A cli/sti-heavy kernel loop: two traps a round under trap-and-emulate, none under binary
   translation, where cli and sti are stores to the virtual IF in the translation cache.
   Target: binary translation >= 10x faster than trap-and-emulate.
2. CPU-bound kernels (a sieve; a loop of calls and returns): binary translation against native.
   Target: <= 2x native time.
3. Translation cost: a kernel of many small blocks each run once, so nearly all of binary
   translation's extra time is translating them (and chaining their exits); per block.
"""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import vmkit                                                             # noqa: E402
from run import CLI_STI_LOOP, SIEVE                                      # noqa: E402

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


def many_blocks(n):
    """n blocks, each a few instructions ending in a jump to the next: every one runs once."""
    body = "\n".join(f"b{i}: add eax, {i}\n xor ebx, eax\n jmp b{i + 1}" for i in range(n))
    return vmkit.assemble(f"{body}\nb{n}: hlt\n")


def seconds(image, technique):
    t0 = time.perf_counter()
    result = vmkit.run(image, technique, max_instructions=10 ** 10, timeout=600)
    elapsed = time.perf_counter() - t0
    assert result.halted or result.exit_code is not None, result
    return elapsed, result


def median_of(n, image, technique):
    runs = [seconds(image, technique) for _ in range(n)]
    return statistics.median(t for t, _ in runs), runs[-1][1]


def cli_sti(rounds=20_000, repeats=5):
    print(f"1. a kernel loop of cli/sti ({rounds:,} rounds), median of {repeats} runs")
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
    print(f"2. CPU-bound kernels, binary translation against native, median of {repeats} runs")
    worst = 0
    for name, source in (("sieve", SIEVE.format(rounds=4)), ("calls", CALLS.format(rounds=300_000))):
        image = vmkit.assemble(source)
        native, _ = median_of(repeats, image, "native")
        bt, result = median_of(repeats, image, "binary-translation")
        worst = max(worst, bt / native)
        print(f"   {name:<8} native {native:6.3f} s   binary translation {bt:6.3f} s   {bt / native:5.2f}x native"
              f"   ({result.stats['blocks_translated']} blocks, {result.stats.get('cache_misses', 0)} cache misses)")
    return worst


def translation_cost(repeats=3):
    print(f"3. translation cost: {BLOCKS:,} blocks, each run once, median of {repeats} runs")
    image = many_blocks(BLOCKS)
    native, _ = median_of(repeats, image, "native")
    bt, result = median_of(repeats, image, "binary-translation")
    per_block = (bt - native) / result.stats["blocks_translated"] * 1e6
    print(f"   native {native:.3f} s   binary translation {bt:.3f} s   "
          f"{result.stats['blocks_translated']:,} blocks translated: {per_block:.0f} us per block "
          f"(decode, rewrite, write to the cache, chain)")
    return per_block


def main():
    print(f"binary translation benchmarks (Python {sys.version.split()[0]}); wall-clock seconds on this machine\n")
    ratio = cli_sti()
    worst = cpu_bound()
    per_block = translation_cost()
    print("\nTargets:")
    print(f"   cli/sti loop >= 10x faster than trap-and-emulate: {ratio:.0f}x {'met' if ratio >= 10 else 'MISSED'}")
    print(f"   CPU-bound kernel <= 2x native time: {worst:.2f}x {'met' if worst <= 2 else 'MISSED'}")
    print(f"   translation cost: {per_block:.0f} us per block (no target; it is what adaptive translation amortizes)")


if __name__ == "__main__":
    main()
