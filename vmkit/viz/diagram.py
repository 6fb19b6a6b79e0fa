"""What every picture in vmkit.viz is made of: a graphviz Diagram, a Table of rows, a matplotlib Plot.

Each one carries its content as plain text too. Jupyter shows the picture; `text` holds the same
facts in words, for screen readers, for tests and for anyone reading a notebook without the
images. In JupyterLab a Diagram or a Plot is an <img> whose `alt` is that text, with the text
itself one click away beneath it. Without graphviz's `dot` a Diagram's text is all there is, with
one line saying how to get the picture.

    Diagram(name, caption=..., text=...)    a graphviz.Digraph with a caption and a text form
    Table(header, rows, caption, groups)    rows under a header: HTML in Jupyter, aligned text elsewhere
    Plot(figure, text)                      a matplotlib figure with a text form

Used by lessons 08 and 10 (their own tables); every other viz module draws with these.
"""
import base64
import html
import io
import re

import graphviz

NO_DOT = "Shown as text: graphviz's dot is not installed (sudo apt-get install graphviz, then restart the kernel)."


def figure_html(kind, mime, data, text):
    """A picture (`data`, base64 of `mime`) with `text` as its alt and, one click away, beneath it."""
    return (f'<figure class="vmkit-{kind}" style="margin:0">'
            f'<img src="data:{mime};base64,{data}" alt="{html.escape(text)}">'
            f'<details><summary>the {kind} as text</summary><pre>{html.escape(text)}</pre></details>'
            f'</figure>')


def table_label(title, rows, colour):
    """A graphviz HTML label: a table under a bold title, one row per (port, text), each row a port
    that an edge can start or end at (node:port)."""
    cells = "".join(f'<TR><TD PORT="{port}" ALIGN="LEFT" BALIGN="LEFT">{html.escape(text)}</TD></TR>'
                    for port, text in rows)
    return (f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4" BGCOLOR="{colour}">'
            f'<TR><TD><B>{html.escape(title)}</B></TD></TR>{cells}</TABLE>>')


class Diagram(graphviz.Digraph):
    """A graphviz.Digraph with a `caption` (one line, drawn under the picture) and a `text` form."""

    def __init__(self, *args, caption="", text="", **kwargs):
        super().__init__(*args, **kwargs)
        self.caption = caption
        self.text = text
        if caption:
            self.attr(label=caption, labelloc="b", labeljust="l", fontsize="12")
        self.attr(bgcolor="white")              # dark ink needs its light page, in a dark theme too

    def svg(self):
        """The rendered picture as an SVG string, to embed in an HTML widget."""
        svg = self.pipe(format="svg", encoding="utf-8")
        return svg[svg.find("<svg"):]           # drop the XML prologue and doctype

    def pane_html(self, stretch=True):
        """The picture as HTML for a widget's pane: as wide as the pane (`stretch`) or at its own
        size, never wider than graphviz drew it nor than the pane; its text when dot is missing."""
        try:
            svg = self.svg()
        except graphviz.ExecutableNotFound:
            return f"<pre>{html.escape(self.text)}</pre><i>{html.escape(NO_DOT)}</i>"
        size = r'style="width:100%;max-width:\1pt;height:auto"' if stretch else r'width="\1pt" style="max-width:100%;height:auto"'
        return re.sub(r'width="([\d.]+)pt" height="[\d.]+pt"', size, svg, count=1)

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        text = self.text or self.caption
        try:
            svg = self.svg()
        except graphviz.ExecutableNotFound:
            return {"text/plain": f"{text}\n({NO_DOT})",
                    "text/html": f"<pre>{html.escape(text)}</pre><div><i>{html.escape(NO_DOT)}</i></div>"}
        figure = figure_html("diagram", "image/svg+xml", base64.b64encode(svg.encode()).decode(), text)
        # frontends that prefer HTML get the picture with its alt text; the others the bare SVG
        return {"image/svg+xml": svg, "text/html": figure, "text/plain": text}

    def __str__(self):
        return self.text


class Table:
    """Rows under a header, with a caption: HTML in Jupyter, aligned text elsewhere."""

    def __init__(self, header, rows, caption="", groups=None):
        self.header, self.rows, self.caption, self.groups = list(header), [list(r) for r in rows], caption, groups

    def _numeric(self, column):
        return all(str(row[column])[:1].isdigit() or str(row[column]) in ("", "—") or str(row[column]).startswith("≈")
                   for row in self.rows)

    @property
    def text(self):
        cells = [self.header] + [[str(c) for c in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.header))]
        lines = ["  ".join(c.rjust(w) if self._numeric(i) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                 for row in cells]
        if self.groups:
            spans, at = [], 0
            for name, n in self.groups:
                width = sum(widths[at:at + n]) + 2 * (n - 1)
                spans.append(name.center(width, "-") if name else " " * width)
                at += n
            lines.insert(0, "  ".join(spans))
        return "\n".join([line.rstrip() for line in lines] + ([self.caption] if self.caption else []))

    def _repr_html_(self):
        cell = "<{0} style='padding:2px 10px;text-align:{1};border-bottom:1px solid #ddd'>{2}</{0}>".format
        align = ["right" if self._numeric(i) else "left" for i in range(len(self.header))]
        groups = ""
        if self.groups:
            groups = "<tr>" + "".join(f"<th colspan='{n}' style='padding:2px 10px;text-align:center;"
                                      f"border-bottom:1px solid #999'>{html.escape(name)}</th>"
                                      for name, n in self.groups) + "</tr>"
        head = "<tr>" + "".join(cell("th", align[i], html.escape(h)) for i, h in enumerate(self.header)) + "</tr>"
        body = "".join("<tr>" + "".join(cell("td", align[i], html.escape(str(c))) for i, c in enumerate(row))
                       + "</tr>" for row in self.rows)
        return (f"<div style='background:#fcfcfc;color:#24292e;padding:4px;display:inline-block'>"
                f"<table style='border-collapse:collapse;font-size:13px'>{groups}{head}{body}</table>"
                f"<div style='font-size:12px;color:#555;margin-top:4px'>{html.escape(self.caption)}</div></div>")

    def __repr__(self):
        return self.text


class Plot:
    """A matplotlib figure with a `text` form: a PNG with that text as its alt in JupyterLab, the
    text itself one click away beneath it, as a Diagram does for graphviz pictures."""

    def __init__(self, figure, text):
        self.figure, self.text = figure, text
        import matplotlib.pyplot as plt      # here, not at the top: lessons without plots never load matplotlib
        plt.close(figure)               # shown once, where the cell returns it

    def png(self):
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=96, facecolor="white")
        return buffer.getvalue()

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        picture = base64.b64encode(self.png()).decode()
        return {"image/png": picture, "text/html": figure_html("plot", "image/png", picture, self.text),
                "text/plain": self.text}

    def __repr__(self):
        return self.text
