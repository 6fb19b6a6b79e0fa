"""NASM in, an Image out; capstone for reading machine code back.

Guests are assembled with NASM (`nasm -f bin`). Its listing gives the map from each address to the
source line that produced it, which is how the stepper shows the line a guest is on, and its map
file gives the labels. Unicorn's sibling assembler, keystone, silently drops memory operands that
name a later label, so it is not used.
"""
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import capstone

from .errors import AsmError, ToolMissing

LOAD_ADDRESS = 0x100000       # where the platform loads every image (vmkit.machine.platform; docs/architecture.md, 2.1)
SOURCE_NAME = "guest.asm"     # the name NASM's messages use for the student's source

_cache = {}


@dataclass
class Image:
    """An assembled guest: its bytes, where they go, and how they map back to the source."""
    code: bytes
    origin: int = LOAD_ADDRESS
    symbols: dict = field(default_factory=dict)   # label -> address
    lines: dict = field(default_factory=dict)     # address of an instruction or datum -> source line
    source: str = ""
    # (load address, length, linked address) of each section linked elsewhere than it is loaded
    # (NASM's `section name start=... vstart=...`: a higher-half kernel's code runs at vstart)
    relocated: list = field(default_factory=list)

    def linked(self, address):
        """Where the byte loaded at `address` runs: its section's vstart-relative address."""
        for start, length, vstart in self.relocated:
            if start <= address < start + length:
                return vstart + address - start
        return address

    def runs_at(self, eip):
        """Whether `eip` is an address the image's code runs at (loaded, or linked elsewhere)."""
        if any(vstart <= eip < vstart + length for _, length, vstart in self.relocated):
            return True
        return self.origin <= eip < self.end and not any(
            start <= eip < start + length for start, length, _ in self.relocated)

    @property
    def entry(self):
        return self.origin

    @property
    def end(self):
        return self.origin + len(self.code)

    def line_of(self, address):
        """The source line (1-based) that produced the byte at `address`, or None."""
        best = None
        for a, n in self.lines.items():
            if a <= address and (best is None or a > best[0]):
                best = (a, n)
        return best[1] if best and self.runs_at(address) else None

    def source_line(self, number):
        lines = self.source.splitlines()
        return lines[number - 1] if number and 0 < number <= len(lines) else ""

    def disassemble(self, address=None, count=None):
        """Instructions from `address` (default: the entry) to the end of the image, or `count` of them."""
        start = self.origin if address is None else address
        return disassemble(self.code[start - self.origin:], start, count)


@dataclass
class Instruction:
    address: int
    size: int
    mnemonic: str
    op_str: str
    bytes: bytes

    @property
    def text(self):
        return f"{self.mnemonic} {self.op_str}".strip()

    def __str__(self):
        return f"{self.address:08x}  {self.bytes.hex(' '):<24} {self.text}"


def nasm_path():
    path = shutil.which("nasm")
    if not path:
        raise ToolMissing("NASM, the assembler for the course's guests, is not installed.\n"
                          "    Debian/Ubuntu: sudo apt-get install nasm    conda: conda install -c conda-forge nasm\n"
                          "    (the course's setup command installs it for you when it can)")
    return path


def _prelude(source):
    """NASM directives the source left out: 32-bit code loaded at the platform's address."""
    lines = []
    if not re.search(r"^\s*\[?\s*bits\s+\d+", source, re.I | re.M):
        lines.append("bits 32")
    if not re.search(r"^\s*\[?\s*org\s", source, re.I | re.M):
        lines.append(f"org {LOAD_ADDRESS:#x}")
    return lines


def assemble(source):
    """Assemble NASM source into an Image. Raises AsmError naming the offending line."""
    if isinstance(source, Image):
        return source
    if not isinstance(source, str):
        raise TypeError(f"a guest is NASM source (a str) or an Image from vmkit.assemble, not "
                        f"{type(source).__name__} {source!r:.60}")
    key = hashlib.sha256(source.encode()).hexdigest()
    if key not in _cache:
        _cache[key] = _assemble(source)
    return _cache[key]


def _assemble(source):
    nasm = nasm_path()
    with tempfile.TemporaryDirectory(prefix="vmkit-asm-") as tmp:
        src, out, lst, mapf = (os.path.join(tmp, n) for n in ("in.asm", "out.bin", "out.lst", "out.map"))
        # %line makes NASM number its messages and listing by the student's own lines.
        prelude = _prelude(source) + [f"[map sections symbols {mapf}]", f"%line 0+1 {SOURCE_NAME}"]
        with open(src, "w") as f:
            f.write("\n".join(prelude) + "\n" + source + "\n")
        proc = subprocess.run([nasm, "-f", "bin", "-o", out, "-l", lst, src],
                              capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            raise _asm_error(proc.stderr, source)
        code, listing = _read(out, "rb"), _read(lst, "r")
        origin = _origin(source)
        mapped = _read(mapf, "r") if os.path.exists(mapf) else ""
        lines = _listing_lines(listing, origin, len(prelude), _map_sections(mapped))
    return Image(code=code, origin=origin, symbols=_map_symbols(mapped), lines=lines, source=source,
                 relocated=_map_relocated(mapped))


def _read(path, mode):
    with open(path, mode) as f:
        return f.read()


def _origin(source):
    m = re.search(r"^\s*\[?\s*org\s+([0-9a-fx]+h?)", source, re.I | re.M)
    if not m:
        return LOAD_ADDRESS
    text = m.group(1).lower()
    return int(text[:-1], 16) if text.endswith("h") else int(text, 0)


def _asm_error(stderr, source):
    lines = source.splitlines()
    for msg in stderr.splitlines():
        m = re.match(rf".*?{re.escape(SOURCE_NAME)}:(\d+):\s*(?:error|fatal):\s*(.*)", msg)
        if m:
            n = int(m.group(1))
            return AsmError(n, lines[n - 1] if 0 < n <= len(lines) else "", m.group(2))
    return AsmError(None, "", stderr.strip() or "nasm failed without a message")


_LISTING = re.compile(r"^\s*(\d+) ([0-9A-F]{8}) ([0-9A-F]+|\([0-9A-F]+\)|\[[0-9A-F]+\])")


def _listing_lines(listing, origin, prelude_lines, sections=None):
    """address -> source line, at the address the code runs at. Lines a macro expanded (marked <n>)
    belong to the line that invoked it. The listing counts each section's offsets from 0: a
    `section` line moves the base to that section's vstart (`sections`, from the map file)."""
    result, current, base = {}, None, origin
    for row in listing.splitlines()[prelude_lines:]:
        head = re.match(r"^\s*(\d+)", row)
        if not head:
            continue
        in_macro = re.search(r"\s<\d+>\s", row[:48]) is not None
        if not in_macro:
            current = int(head.group(1))
        directive = re.match(r"^\s*\d+\s+(?:<\d+>\s+)?\[?\s*section\s+([^\s\]]+)", row, re.I)
        if directive and sections and directive.group(1) in sections:
            base = sections[directive.group(1)]
        m = _LISTING.match(row)
        if m and current is not None:
            result.setdefault(base + int(m.group(2), 16), current)
    return result


def _map_symbols(text):
    symbols = {}
    for m in re.finditer(r"^\s*([0-9A-F]+)\s+([0-9A-F]+)\s+(\S+)\s*$", text, re.M):
        symbols[m.group(3)] = int(m.group(2), 16)
    return symbols


def _map_sections(text):
    """{section name: the address it runs at (vstart)}, from the map's section summary."""
    rows = re.finditer(r"^\s*([0-9A-F]+)\s+([0-9A-F]+)\s+([0-9A-F]+)\s+([0-9A-F]+)\s+\w+\s+(\S+)\s*$", text, re.M)
    return {m.group(5): int(m.group(1), 16) for m in rows}


def _map_relocated(text):
    """The rows of the map's section summary (Vstart, Start, Stop, Length, Class, Name) whose
    vstart differs from their start."""
    rows = re.finditer(r"^\s*([0-9A-F]+)\s+([0-9A-F]+)\s+([0-9A-F]+)\s+([0-9A-F]+)\s+\w+\s+\S+\s*$", text, re.M)
    return [(int(m.group(2), 16), int(m.group(4), 16), int(m.group(1), 16)) for m in rows
            if m.group(1) != m.group(2)]


_capstone = None


def disassemble(code, address=0, count=None):
    """Decode 32-bit x86 machine code with capstone into Instructions."""
    global _capstone
    if _capstone is None:
        _capstone = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    out = []
    for insn in _capstone.disasm(bytes(code), address, count or 0):
        out.append(Instruction(insn.address, insn.size, insn.mnemonic, insn.op_str, bytes(insn.bytes)))
    return out
