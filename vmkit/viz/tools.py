"""One notice at the top of a lesson when a program the course needs is missing.

A lesson should never greet a student with a traceback about PATH. check_tools() looks for the
programs once and, if any is missing, shows what it is for, what still works without it, and the
one command that installs it. Everything that does not need the program runs as usual.

Used by lessons 00, 01, 02, 03, 04, 05, 06, 07, 08, 09 and 10: the first cell of each.
"""
import html
import shutil

import IPython.display

# program -> (Debian/conda package, what it does for the course, what happens without it)
TOOLS = {
    "nasm": ("nasm", "assembles the guest kernels",
             "no guest can be built, so the cells that run one stop with an error"),
    "dot": ("graphviz", "graphviz's program that draws the diagrams",
            "every diagram is shown in its text form instead; everything else works"),
}


def missing_tools():
    """The programs of TOOLS that are not on PATH, in TOOLS' order."""
    return [name for name in TOOLS if shutil.which(name) is None]


class ToolNotice:
    """What is missing and how to install it; HTML in Jupyter, plain text elsewhere."""

    def __init__(self, missing):
        self.missing = list(missing)

    def lines(self):
        out = []
        for name in self.missing:
            package, purpose, without = TOOLS[name]
            out.append(f"{name} is missing ({purpose}): {without}. Install it with: "
                       f"sudo apt-get install {package}   (conda: conda install -c conda-forge {package}; "
                       f"macOS: brew install {package})")
        return out

    @property
    def text(self):
        return "\n".join(["This machine lacks a program the course uses."] + self.lines() +
                         ["Then restart the kernel and run the lesson again."])

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.lines())
        box = ("<div class='vmkit-tool-notice' role='alert' style='border-left:5px solid #e65100;"
               "background:#fff3e0;color:#000;padding:6px 10px'>"
               "<b>This machine lacks a program the course uses.</b>"
               f"<ul style='margin:4px 0'>{items}</ul>Then restart the kernel and run the lesson again.</div>")
        return {"text/plain": self.text, "text/html": box}

    def __repr__(self):
        return self.text


def check_tools():
    """Show one notice if nasm or graphviz's dot is missing (and nothing when all is there)."""
    missing = missing_tools()
    if missing:
        IPython.display.display(ToolNotice(missing))      # looked up when called, as a test replaces it
