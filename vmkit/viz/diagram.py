"""A graphviz diagram that also carries its content as plain text.

Jupyter shows the SVG; `text` holds the same facts in words, for screen readers, for tests and
for anyone reading a notebook without the images.
"""
import graphviz


class Diagram(graphviz.Digraph):
    """A graphviz.Digraph with a `caption` (one line, drawn under the picture) and a `text` form."""

    def __init__(self, *args, caption="", text="", **kwargs):
        super().__init__(*args, **kwargs)
        self.caption = caption
        self.text = text
        if caption:
            self.attr(label=caption, labelloc="b", labeljust="l", fontsize="12")

    def svg(self):
        """The rendered picture as an SVG string, to embed in an HTML widget."""
        svg = self.pipe(format="svg", encoding="utf-8")
        return svg[svg.find("<svg"):]           # drop the XML prologue and doctype

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        bundle = super()._repr_mimebundle_(include, exclude, **kwargs)
        bundle["text/plain"] = self.text or self.caption
        return bundle

    def __str__(self):
        return self.text
