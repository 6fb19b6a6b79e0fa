"""The kernel's own counters for a VM or a vCPU: the binary statistics file (KVM_GET_STATS_FD).

Since Linux 5.14 every VM and vCPU fd hands out a read-only file laid out as: a header, an id
string ("kvm-<pid>/vcpu-<n>"), one descriptor per statistic (flags, exponent, size, offset, name),
and a data block of u64 values. The descriptors never change, so they are read once; reading the
values is then one pread of the data block. These are the numbers `kvm_stat` and the debugfs
files show: how many exits the kernel took (`exits`), how many went out to user space for I/O
(`io_exits`) or MMIO (`mmio_exits`), how many were hlt (`halt_exits`), and so on.
"""
import os
import struct
from dataclasses import dataclass

from . import api

HEADER = struct.Struct("<IIIIII")      # flags, name_size, num_desc, id_offset, desc_offset, data_offset
DESCRIPTOR = struct.Struct("<IhHII")   # flags, exponent, size, offset, bucket_size; the name follows
KVM_STATS_TYPE_MASK = 0xF
STATS_TYPES = {0: "cumulative", 1: "instant", 2: "peak", 3: "linear histogram", 4: "log histogram"}


@dataclass(frozen=True)
class Statistic:
    name: str
    kind: str          # cumulative, instant, peak, linear histogram, log histogram
    size: int          # how many u64 values (1 for a counter, the buckets of a histogram)
    offset: int        # in the data block


class StatsFd:
    """One VM's or vCPU's statistics file. `read()` gives every value; `[name]` one of them."""

    def __init__(self, fd):
        self.fd = fd
        flags, name_size, count, id_offset, desc_offset, self.data_offset = HEADER.unpack(os.pread(fd, HEADER.size, 0))
        self.id = os.pread(fd, name_size, id_offset).split(b"\0")[0].decode()
        step = DESCRIPTOR.size + name_size
        raw = os.pread(fd, step * count, desc_offset)
        self.statistics = {}
        for i in range(count):
            flags, _exponent, size, offset, _ = DESCRIPTOR.unpack_from(raw, i * step)
            name = raw[i * step + DESCRIPTOR.size:(i + 1) * step].split(b"\0")[0].decode()
            self.statistics[name] = Statistic(name, STATS_TYPES.get(flags & KVM_STATS_TYPE_MASK, "unknown"),
                                              size, offset)
        self.data_size = max((s.offset + 8 * s.size for s in self.statistics.values()), default=0)

    def read(self):
        """name -> value (an int, or a tuple for a histogram), all read at one instant."""
        data = os.pread(self.fd, self.data_size, self.data_offset)
        values = {}
        for s in self.statistics.values():
            numbers = struct.unpack_from(f"<{s.size}Q", data, s.offset)
            values[s.name] = numbers[0] if s.size == 1 else numbers
        return values

    def __getitem__(self, name):
        s = self.statistics[name]
        numbers = struct.unpack(f"<{s.size}Q", os.pread(self.fd, 8 * s.size, self.data_offset + s.offset))
        return numbers[0] if s.size == 1 else numbers

    def __contains__(self, name):
        return name in self.statistics

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_stats(fd):
    """The statistics file of a VM or vCPU fd (KVM_GET_STATS_FD)."""
    return StatsFd(api.ioctl(fd, api.KVM_GET_STATS_FD))
