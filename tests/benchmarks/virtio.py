"""The paravirtual device against the emulated one: the same console lines (vmkit's virtio_console
guest) through COM1, one exit a byte, and through the virtio console, one QueueNotify a request or a
batch, under "hardware-assist" (with external-interrupt exiting, KVM's user-space PIC) and "kvm"
(where the local KVM runs it), and on KVM with KVM_IOEVENTFD on QueueNotify against the same run
without it.

    .venv/bin/python tests/benchmarks/virtio.py [--repeat N]

A request's cost is the difference between a run of LONG and a run of SHORT requests, over LONG -
SHORT: exits and interrupts exactly (user-space exits; on KVM also the kernel's own count), time as
the median of N interleaved repeats. The ratios are taken within this one run.
"""
import statistics
import sys

import vmkit
from vmkit import guests
from vmkit.vtx import VmcsControls

SHORT, LONG = 32, 64
CASES = (                                   # (name, guest constants, kvm options)
    ("COM1, byte by byte", {"EMULATED": 1}, {}),
    ("virtio, polling", {}, {}),
    ("virtio, batches of 8", {"BATCH": 8}, {}),
    ("virtio, interrupt", {"INTERRUPTS": 1}, {}),
    ("virtio, polling, ioeventfd", {}, {"ioeventfd": True}),
)


def one(technique, equ, options, requests):
    source = guests.source("virtio_console", REQUESTS=requests, **equ)
    if technique == "hardware-assist":
        options = {"controls": VmcsControls(external_interrupt_exiting=True)}
    result = vmkit.run(source, technique, **options)
    return result, result.seconds                 # the run's own time: no VM set-up, no assembly


def measure(technique, equ, options, repeat):
    """Per request: exits, kernel exits (kvm), IRQs taken, notifications the device saw, µs."""
    longs, shorts = [], []
    for _ in range(repeat):
        long_, t_long = one(technique, equ, options, LONG)
        short, t_short = one(technique, equ, options, SHORT)
        longs.append(t_long)
        shorts.append(t_short)
    n = LONG - SHORT
    delta = lambda key: (long_.stats.get(key, 0) - short.stats.get(key, 0)) / n
    return {"exits": delta("vmexits"), "kernel_exits": delta("kernel_exits") if technique == "kvm" else None,
            "irqs": delta("irqs"), "signals": delta("ioeventfd_signals") if options.get("ioeventfd") else None,
            "us": (statistics.median(longs) - statistics.median(shorts)) / n * 1e6, "same": long_.serial == one(technique, {"EMULATED": 1}, {}, LONG)[0].serial}


def main(repeat=5):
    print(f"virtio against COM1: the same {LONG} console lines, a request's cost from {LONG} - {SHORT} requests")
    report = vmkit.kvm.probe()
    rows = {}
    for technique in ("hardware-assist", "kvm"):
        for name, equ, options in CASES:
            if technique == "hardware-assist" and options:
                continue
            if technique == "kvm" and not report.can("protected-mode"):
                rows[technique, name] = f"not run: {report.why_not('protected-mode')}"
                continue
            try:
                rows[technique, name] = measure(technique, equ, options, repeat)
            except vmkit.KvmUnavailable as e:
                rows[technique, name] = f"not run: {e}"
    print(f"   {'technique':<16}{'device':<30}{'exits':>7}{'kernel':>8}{'irqs':>6}{'signals':>9}{'us':>8}")
    for (technique, name), row in rows.items():
        if isinstance(row, str):
            print(f"   {technique:<16}{name:<30}{row}")
            continue
        kernel = "" if row["kernel_exits"] is None else f"{row['kernel_exits']:.2f}"
        signals = "" if row["signals"] is None else f"{row['signals']:.2f}"
        print(f"   {technique:<16}{name:<30}{row['exits']:7.2f}{kernel:>8}{row['irqs']:6.2f}{signals:>9}"
              f"{row['us']:8.1f}{'' if row['same'] else '  OUTPUT DIFFERS'}")
    return rows


def targets(rows):
    lines = []
    for technique in ("hardware-assist", "kvm"):
        com1, virtio = rows.get((technique, "COM1, byte by byte")), rows.get((technique, "virtio, polling"))
        if isinstance(com1, dict) and isinstance(virtio, dict):
            ok = virtio["exits"] == 1 and com1["exits"] == 19 and com1["same"] and virtio["same"]
            lines.append(f"   virtio under {technique}: {virtio['exits']:.0f} exit a request against COM1's "
                         f"{com1['exits']:.0f}, {com1['us'] / virtio['us']:.1f}x the time "
                         f"{'met' if ok else 'MISSED'} (1 against 19, same output)")
    fd, plain = rows.get(("kvm", "virtio, polling, ioeventfd")), rows.get(("kvm", "virtio, polling"))
    if isinstance(fd, dict) and isinstance(plain, dict):
        lines.append(f"   KVM_IOEVENTFD: {fd['exits']:.2f} user-space exits a request against {plain['exits']:.2f} "
                     f"{'met' if fd['exits'] == 0 else 'MISSED'} (0); {plain['us'] / fd['us']:.1f}x the time")
    elif fd is not None:
        lines.append(f"   KVM_IOEVENTFD: {fd}")
    return lines


if __name__ == "__main__":
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 5
    print("\n".join(targets(main(repeat))))
