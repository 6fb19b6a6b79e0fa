"""Self-checks: the student commits to an answer and gets feedback at once. Nothing is graded or
stored; the feedback explains, so a wrong answer is a step in the lesson, not a dead end.

Used by lessons 00, 01, 02, 03, 04, 05, 06, 07, 08, 09 and 10: every lesson's self-checks.
"""
import html

import ipywidgets as w

# JupyterLab's own success and error colours, so feedback stays legible in a dark theme too
RIGHT, WRONG = "var(--jp-success-color0, #1b5e20)", "var(--jp-error-color0, #b71c1c)"


def _feedback(ok, message):
    colour, mark = (RIGHT, "✔ Right.") if ok else (WRONG, "✘ Not quite.")
    return f"<div style='color:{colour}'><b>{mark}</b> {html.escape(message)}</div>"


class Choice(w.VBox):
    """A multiple-choice question. `explain` is one text for everything, or a dict giving each
    option its own explanation (the place to meet a misconception head on)."""

    def __init__(self, question, options, answer, explain=""):
        self.options, self.answer, self.explain = list(options), answer, explain
        self.choices = w.RadioButtons(options=self.options, value=None, layout=w.Layout(width="auto"))
        self.button = w.Button(description="Check", button_style="primary", layout=w.Layout(width="90px"))
        self.result = w.HTML()
        self.button.on_click(lambda _: self.check())
        super().__init__([w.HTML(f"<b>{html.escape(question)}</b>"), self.choices, self.button, self.result])

    def check(self):
        choice = self.choices.value
        if choice is None:
            self.result.value = "<i>Pick an answer first.</i>"
            return None
        ok = choice == self.answer
        why = self.explain.get(choice, "") if isinstance(self.explain, dict) else self.explain
        self.result.value = _feedback(ok, why)
        return ok


class Number(w.VBox):
    """A question whose answer is a number; the student may type decimal or hex (0x...)."""

    def __init__(self, question, answer, explain="", hint=""):
        self.answer, self.explain, self.hint = answer, explain, hint
        self.field = w.Text(placeholder="your number", continuous_update=False, layout=w.Layout(width="160px"))
        self.button = w.Button(description="Check", button_style="primary", layout=w.Layout(width="90px"))
        self.result = w.HTML()
        self.button.on_click(lambda _: self.check())
        self.field.observe(lambda _: self.check(), names="value")     # Enter checks too
        super().__init__([w.HTML(f"<b>{html.escape(question)}</b>"), w.HBox([self.field, self.button]), self.result])

    def check(self):
        try:
            value = int(self.field.value.strip(), 0)
        except ValueError:
            self.result.value = "<i>Type a number, in decimal (27) or hex (0x1b).</i>"
            return None
        ok = value == self.answer
        self.result.value = _feedback(ok, self.explain if ok else
                                      f"You said {value} ({value:#x}). " + (self.hint or self.explain))
        return ok
