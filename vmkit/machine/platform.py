"""The vmkit PC's platform facts: where an image goes and what state it starts in.

Every technique's guest runs against the same contract (docs/architecture.md, 2.1), so each fact is
defined once and imported from here by whatever needs it: the emulated machine, the software VMMs,
Xen's domain builder, the KVM machine and its probe. The load address is defined in vmkit.asm, which
sits below the machine and gives every image that origin; this module re-exports it.

    RAM            DEFAULT_MEMORY at physical address 0 (a run's memory= changes it)
    the image      loaded and entered at LOAD_ADDRESS; it must fit between IMAGE_FLOOR and the end
                   of RAM (check_fits)
    entry state    flat code and data segments (BOOT_CS, BOOT_DS) from a three-entry GDT the
                   platform leaves at BOOT_GDT (boot_gdt()), ESP = STACK_TOP
"""
from ..asm import LOAD_ADDRESS  # noqa: F401
from ..errors import GuestError
from .x86 import encode_descriptor

DEFAULT_MEMORY = 4 << 20           # 4 MiB of RAM at physical address 0
IMAGE_FLOOR = 0x1000               # the lowest address an image may start at
STACK_TOP = 0x400000               # ESP at entry: the top of the default RAM
BOOT_GDT = 0x500                   # where the platform leaves its flat GDT for the boot state
BOOT_CS, BOOT_DS = 0x08, 0x10      # its two flat 4 GiB segments, ring 0: code, then data
BOOT_GDT_LIMIT = 3 * 8 - 1         # the null descriptor and the two segments


def boot_gdt():
    """The boot GDT's bytes: a null descriptor, flat code (execute/read), flat data (read/write)."""
    return encode_descriptor(0, 0, 0) + encode_descriptor(0, 0xFFFFF, 0x9A) + encode_descriptor(0, 0xFFFFF, 0x92)


def check_fits(image, memory):
    """Raise GuestError unless `image` lies between IMAGE_FLOOR and the end of `memory` bytes of RAM."""
    if image.origin + len(image.code) > memory or image.origin < IMAGE_FLOOR:
        raise GuestError(f"the image ({len(image.code)} bytes at {image.origin:#x}) "
                         f"does not fit the guest's RAM ({IMAGE_FLOOR:#x}-{memory:#x})", None)
