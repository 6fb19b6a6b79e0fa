"""Binary translation against trap-and-emulate and native, measured side by side in one run.

    python tests/benchmarks/binary_translation.py      (also part of `python3 course.py bench`)

1. A cli/sti-heavy kernel loop: two traps a round under trap-and-emulate, none under binary
   translation, where cli and sti are stores to the virtual IF in the translation cache.
   Target: binary translation >= 10x faster than trap-and-emulate.
2. CPU-bound kernels (a sieve; a loop of calls and returns): binary translation against native.
   Target: <= 2x native time. Calls and returns cost more: every `ret` is an indirect jump the
   cache code must look up (Adams & Agesen's "callret" case).
3. Translation cost: a kernel of many small blocks each run once, so nearly all of binary
   translation's extra time is translating them (and chaining their exits); per block.
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
    print(f"   CPU-bound kernels, binary translation against native, median of {repeats} runs")
    ratios = {}
    for name, source in (("sieve", SIEVE.format(rounds=4)), ("calls", CALLS.format(rounds=300_000))):
        image = vmkit.assemble(source)
        native, _ = median_of(repeats, image, "native")
        bt, result = median_of(repeats, image, "binary-translation")
        ratios[name] = bt / native
        print(f"   {name:<8} native {native:6.3f} s   binary translation {bt:6.3f} s   {bt / native:5.2f}x native"
              f"   ({result.stats['blocks_translated']} blocks, {result.stats.get('cache_misses', 0)} cache misses)")
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


def main():
    """Measure; returns what targets() reports on."""
    return {"cli_sti": cli_sti(), "cpu_bound": cpu_bound(), "per_block": translation_cost()}


def targets(measured):
    ratio, worst, per_block = measured["cli_sti"], measured["cpu_bound"], measured["per_block"]
    return [f"   binary translation: cli/sti loop >= 10x faster than trap-and-emulate: {ratio:.0f}x "
            f"{'met' if ratio >= 10 else 'MISSED'}",
            f"   binary translation: CPU-bound kernels <= 2x native time: sieve {worst['sieve']:.2f}x "
            f"{'met' if worst['sieve'] <= 2 else 'MISSED'}; calls and returns {worst['calls']:.2f}x "
            f"{'met' if worst['calls'] <= 2 else 'missed'} (every ret is a lookup)",
            f"   binary translation: {per_block:.0f} us to translate a block (no target)"]


if __name__ == "__main__":
    print("\n".join(targets(main())))
