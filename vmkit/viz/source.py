"""Guest source as a student reads it: NASM lines with line numbers and a little colour.

The colouring is deliberately simple (comments, labels, mnemonics, registers, numbers); it is
enough to make a listing scannable and needs no highlighter library.

Used by lessons 01, 02, 03, 04, 05, 06, 07 and 08.
"""
import html
import re

from .. import guests
from ..asm import Image

COLOURS = {"comment": "#6a737d", "label": "#6f42c1", "mnemonic": "#005cc5", "register": "#b31d28",
           "number": "#22863a", "directive": "#e36209"}
REGISTERS = ("eax ebx ecx edx esi edi esp ebp ax bx cx dx si di sp bp al ah bl bh cl ch dl dh "
             "cs ds es fs gs ss cr0 cr2 cr3 cr4 eip eflags").split()
DIRECTIVES = "bits org equ db dw dd dq times align section global extern resb resd".split()
_TOKEN = re.compile(r"(;.*$)|('[^']*'|\"[^\"]*\")|(\b0x[0-9a-fA-F]+\b|\b[0-9][0-9a-fA-F]*h?\b)|([A-Za-z_.$][\w.$]*:?)")


def highlight(line):
    """One NASM line as HTML with coloured spans."""
    out, pos, first_word = [], 0, True
    for m in _TOKEN.finditer(line):
        out.append(html.escape(line[pos:m.start()]))
        text, colour = m.group(0), None
        if m.group(1):
            colour = COLOURS["comment"]
        elif m.group(2):
            colour = COLOURS["number"]
        elif m.group(3):
            colour = COLOURS["number"]
        else:
            word = text.lower()
            if text.endswith(":") and first_word:       # a label definition starts its line
                colour = COLOURS["label"]
            elif word in REGISTERS:
                colour = COLOURS["register"]
            elif word in DIRECTIVES:
                colour = COLOURS["directive"]
            elif first_word:
                colour = COLOURS["mnemonic"]
            first_word = False
        out.append(f'<span style="color:{colour}">{html.escape(text)}</span>' if colour else html.escape(text))
        pos = m.end()
    out.append(html.escape(line[pos:]))
    return "".join(out)


class Excerpt:
    """Some lines of a guest's source; shows as highlighted HTML in Jupyter, `text` otherwise."""

    def __init__(self, lines, first, mark=()):
        self.lines, self.first, self.mark = lines, first, set(mark)

    @property
    def text(self):
        return "\n".join(f"{n:4d}{'>' if n in self.mark else ' '} {line}" for n, line in self.numbered())

    def numbered(self):
        return list(enumerate(self.lines, self.first))

    def _repr_html_(self):
        rows = []
        for n, line in self.numbered():
            style = "background:#fff3b0;" if n in self.mark else ""
            rows.append(f'<div style="{style}white-space:pre"><span style="color:#999">{n:4d}  </span>'
                        f"{highlight(line)}</div>")
        # a light page of its own: the colours above are chosen for one, and a dark theme has none
        return ('<div style="font-family:monospace;font-size:13px;line-height:1.35;border-left:3px solid #ddd;'
                'padding-left:6px;background:#fcfcfc;color:#24292e">' + "".join(rows) + "</div>")

    def __repr__(self):
        return self.text


def excerpt(source, start, end=None, mark=()):
    """Lines of `source` (NASM text, an Image, or a guest's name) from the first line matching `start`
    (a label like "user_main" or any text) through the first later line matching `end`, or
    through `end` lines if it is a number, or to the next blank line. `mark` highlights lines
    containing any of the given strings."""
    if isinstance(source, Image):
        source = source.source
    elif "\n" not in source:
        source = guests.source(source)
    lines = source.splitlines()
    i = _find(lines, start, 0)
    if isinstance(end, int):
        j = min(i + end - 1, len(lines) - 1)
    elif end is not None:
        j = _find(lines, end, i + 1)
    else:
        j = i
        while j + 1 < len(lines) and lines[j + 1].strip():
            j += 1
    marks = (mark,) if isinstance(mark, str) else mark
    chosen = lines[i:j + 1]
    marked = [i + 1 + k for k, line in enumerate(chosen) if any(s in line for s in marks)]
    return Excerpt(chosen, i + 1, marked)


def _find(lines, what, begin):
    # a label's definition first ("user_main:"), since its name also appears where it is used
    for k in range(begin, len(lines)):
        if re.match(rf"\s*{re.escape(what)}:", lines[k]):
            return k
    for k in range(begin, len(lines)):
        if what in lines[k]:
            return k
    raise ValueError(f"no line matching {what!r} in the source")
