"""What one VM exit costs, measured side by side in one run on this machine.

    .venv/bin/python tests/benchmarks/kvm.py        (also part of: python3 course.py bench)

The guest is the same few bytes everywhere: `out 0x80, al` in a loop, then hlt, so every round is
one exit to user space and back (an exit round trip). Measured:

1. KVM from Python through vmkit's binding (vmkit.kvm.Vm/Vcpu: KVM_RUN, read kvm_run, loop);
2. KVM from Python through the whole of vmkit.run(image, "kvm") (decoding, the device model, events);
3. the same KVM loop written in C against linux/kvm.h, compiled now with the system compiler into
   a temporary directory: the baseline (target: Python within 2x of C);
4. vmkit's model of the same exits, "hardware-assist" on Unicorn.

Without /dev/kvm the KVM rows say why and only the model is measured; without a C compiler the
baseline says so.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import vmkit
from vmkit.kvm import Kvm
from vmkit.kvm.machine import KvmMachine
from vmkit.kvm.probe import probe

GUEST = """
    mov ecx, {rounds}
    jecxz done
again:
    out 0x80, al
    loop again
done:
    hlt
"""
TARGET = 2.0            # Python's exit round trip at most this many times C's

C_LOOP = r"""
/* The KVM run loop in C: the baseline for vmkit's Python binding. Same guest, same boot state. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "rb");
    static uint8_t image[1 << 16];
    size_t size = fread(image, 1, sizeof image, f);
    fclose(f);
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    size_t ram_size = 4 << 20;
    uint8_t *ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct kvm_userspace_memory_region region = {0, 0, 0, ram_size, (uint64_t)(uintptr_t)ram};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) { perror("memory"); return 1; }
    memcpy(ram + 0x100000, image, size);
    uint64_t gdt[3] = {0, 0x00cf9a000000ffffULL, 0x00cf92000000ffffULL};
    memcpy(ram + 0x500, gdt, sizeof gdt);
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    struct kvm_run *run = mmap(NULL, ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), PROT_READ | PROT_WRITE,
                               MAP_SHARED, vcpu, 0);
    struct kvm_sregs sregs;
    ioctl(vcpu, KVM_GET_SREGS, &sregs);
    struct kvm_segment code = {.base = 0, .limit = 0xffffffff, .selector = 0x08, .type = 0xb, .present = 1,
                               .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1};
    struct kvm_segment data = code;
    data.selector = 0x10;
    data.type = 0x3;
    sregs.cs = code;
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    sregs.gdt.base = 0x500;
    sregs.gdt.limit = 23;
    sregs.idt.base = sregs.idt.limit = 0;
    sregs.cr0 = 0x11;
    ioctl(vcpu, KVM_SET_SREGS, &sregs);
    struct kvm_regs regs = {0};
    regs.rip = 0x100000;
    regs.rsp = 0x400000;
    regs.rflags = 2;
    ioctl(vcpu, KVM_SET_REGS, &regs);

    long exits = 0;
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) { perror("KVM_RUN"); return 1; }
        exits++;
        if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x80)
            continue;
        if (run->exit_reason == KVM_EXIT_HLT)
            break;
        fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    printf("%ld %lld\n", exits, (end.tv_sec - start.tv_sec) * 1000000000LL + (end.tv_nsec - start.tv_nsec));
    return 0;
}
"""


def python_binding_us(image, rounds):
    """µs per exit: KVM_RUN and a look at kvm_run, from Python through vmkit.kvm's binding."""
    kvm = Kvm()
    try:
        vm = kvm.create_vm()
        ram = vm.add_memory(0, 4 << 20)
        ram[image.origin:image.end] = image.code
        ram[0x500:0x518] = bytes.fromhex("0000000000000000ffff0000009acf00ffff00000092cf00")
        vcpu = vm.create_vcpu()
        vcpu.enter_protected_mode(image.entry, 0x400000, 0x500)
        run, kvm_run, io = vcpu.run, vcpu.kvm_run, vcpu.kvm_run.u.io
        exits = 0
        started = time.perf_counter()
        while True:
            reason = run()
            exits += 1
            if reason == 2 and io.port == 0x80:          # KVM_EXIT_IO
                continue
            if reason == 5:                              # KVM_EXIT_HLT
                break
            raise RuntimeError(f"unexpected exit {reason}")
        seconds = time.perf_counter() - started
        assert kvm_run.exit_reason == 5 and exits == rounds + 1
        vm.close()
    finally:
        kvm.close()
    return seconds / exits * 1e6


def vmkit_kvm_us(image, rounds):
    """µs per exit through vmkit.run(image, "kvm"): the same loop plus decoding, devices, events."""
    with KvmMachine(image, timeout=120) as m:
        started = time.perf_counter()
        result = m.run()
        seconds = time.perf_counter() - started
    assert result.halted and result.stats["vmexits"] == rounds + 1
    return seconds / result.stats["vmexits"] * 1e6


def c_us(image, rounds):
    """µs per exit of the C loop, or None (and why) when there is no compiler."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None, "no C compiler (cc) on this machine"
    with tempfile.TemporaryDirectory(prefix="vmkit-bench-") as tmp:
        source, binary, guest = (os.path.join(tmp, n) for n in ("loop.c", "loop", "guest.bin"))
        with open(source, "w") as f:
            f.write(C_LOOP)
        with open(guest, "wb") as f:
            f.write(image.code)
        built = subprocess.run([cc, "-O2", "-o", binary, source], capture_output=True, text=True, check=False)
        if built.returncode != 0:
            return None, f"{cc} could not build the loop: {built.stderr.strip()[:200]}"
        ran = subprocess.run([binary, guest], capture_output=True, text=True, check=False, timeout=300)
        if ran.returncode != 0:
            return None, f"the C loop failed: {ran.stderr.strip()[:200]}"
    exits, nanoseconds = map(int, ran.stdout.split())
    assert exits == rounds + 1, (exits, rounds)
    return nanoseconds / exits / 1000, ""


def model_us(rounds):
    """µs per exit under vmkit's model (the run with 0 rounds subtracted: start-up is not an exit)."""
    busy, idle = (vmkit.assemble(GUEST.format(rounds=n)) for n in (rounds, 0))
    times = {}
    for name, image in (("busy", busy), ("idle", idle)):
        started = time.perf_counter()
        result = vmkit.run(image, "hardware-assist", max_instructions=10 ** 9)
        times[name] = time.perf_counter() - started
        assert result.halted
    return (times["busy"] - times["idle"]) / rounds * 1e6


def main(kvm_rounds=100_000, model_rounds=20_000, repeats=3):
    print(f"4. VM exit round trip (a guest looping on `out 0x80, al`): KVM from Python, KVM from C, "
          f"and vmkit's model; median of {repeats} runs")
    rows = {}
    report = probe()
    image = vmkit.assemble(GUEST.format(rounds=kvm_rounds))
    if report.usable:
        rows["binding"] = statistics.median(python_binding_us(image, kvm_rounds) for _ in range(repeats))
        rows["vmkit"] = statistics.median(vmkit_kvm_us(image, kvm_rounds) for _ in range(repeats))
        measured = [c_us(image, kvm_rounds) for _ in range(repeats)]
        if measured[0][0] is None:
            print(f"   C baseline: not measured: {measured[0][1]}")
        else:
            rows["c"] = statistics.median(us for us, _ in measured)
        print(f"   KVM here: {report.module or 'kvm'}; {kvm_rounds:,} exits per run")
        if "c" in rows:
            _row("KVM, C loop (the baseline)", rows["c"])
        _row("KVM, Python: the vmkit.kvm binding loop", rows["binding"], rows.get("c"))
        _row('KVM, Python: vmkit.run(image, "kvm")', rows["vmkit"], rows.get("c"))
    else:
        print(f"   KVM: not measured: {report.why_not()}")
    rows["model"] = statistics.median(model_us(model_rounds) for _ in range(repeats))
    _row('model: vmkit.run(image, "hardware-assist")', rows["model"], note=f"({model_rounds:,} exits per run)")
    return rows


def _row(name, us, c=None, note=""):
    ratio = f"{us / c:.2f}x C" if c else ""
    print(f"   {name:<46}{us:8.2f} us per exit   {ratio}{note}")


def targets(rows):
    """The lines for run.py's summary of targets."""
    if "c" not in rows or "binding" not in rows:
        return ["   KVM exit round trip, Python within 2x of C: not measured here"]
    ratio = rows["binding"] / rows["c"]
    line = (f"   KVM exit round trip from Python <= {TARGET:g}x C: {ratio:.2f}x ({rows['binding']:.1f} us "
            f"against {rows['c']:.1f} us) {'met' if ratio <= TARGET else 'MISSED'}; through vmkit.run "
            f"{rows['vmkit'] / rows['c']:.2f}x")
    return [line]


if __name__ == "__main__":
    print(f"vmkit KVM benchmark (Python {sys.version.split()[0]}); wall-clock times measured on this machine\n")
    results = main()
    print("\nTarget:")
    print("\n".join(targets(results)))
