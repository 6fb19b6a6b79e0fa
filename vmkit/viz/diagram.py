"""A graphviz diagram that also carries its content as plain text.

Jupyter shows the SVG; `text` holds the same facts in words, for screen readers, for tests and
for anyone reading a notebook without the images. In JupyterLab the picture is an <img> whose
`alt` is that text, with the text itself one click away beneath it. Without graphviz's `dot` the
text is all there is, with one line saying how to get the picture.
"""
import base64
import html

import graphviz

NO_DOT = "Shown as text: graphviz's dot is not installed (sudo apt-get install graphviz, then restart the kernel)."


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

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        text = self.text or self.caption
        try:
            svg = self.svg()
        except graphviz.ExecutableNotFound:
            return {"text/plain": f"{text}\n({NO_DOT})",
                    "text/html": f"<pre>{html.escape(text)}</pre><div><i>{html.escape(NO_DOT)}</i></div>"}
        picture = base64.b64encode(svg.encode()).decode()
        figure = (f'<figure class="vmkit-diagram" style="margin:0">'
                  f'<img src="data:image/svg+xml;base64,{picture}" alt="{html.escape(text)}">'
                  f'<details><summary>the diagram as text</summary><pre>{html.escape(text)}</pre></details>'
                  f'</figure>')
        # frontends that prefer HTML get the picture with its alt text; the others the bare SVG
        return {"image/svg+xml": svg, "text/html": figure, "text/plain": text}

    def __str__(self):
        return self.text
