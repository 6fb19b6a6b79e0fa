"""A stepper's walk recorded, so that the course's static edition can replay it without a kernel.

Used by the book only, through every stepper that a lesson shows; no notebook names it.

`python3 course.py book` runs every lesson in a fresh kernel with VMKIT_BOOK=1 in its environment.
Then, as a stepper (any viz.stepper.Walker: Stepper and its subclasses, viz.kvm.ExitStepper,
viz.paging.ShadowStepper, viz.io's InterruptStepper and RingStepper) is displayed, record() presses its own buttons, as a reader would, from the
guest's entry: the walker's RECORDED buttons, the first once and the second until PRESSES presses or
the guest's end (Stepper: step, then next event; by default its first button every time: next exit,
next shadow event); after each press it keeps what every HTML panel of the widget shows and which
buttons are enabled. Reset brings the guest back to its entry, so the lesson shows what it showed.

The frames travel in the widget's own state, in one more HTML panel (a <script type=
"application/json"> that the browser does not run), which the notebook keeps like any widget state
and nbconvert embeds in the page. The book's player, tape.js (PLAYER below, written beside the pages),
answers the widget's buttons from those frames: the button pressed at that point of the recording
goes on one frame, reset goes back to the first, and every other button stays disabled, since the
recording holds no answer for it. In JupyterLab nothing of this runs: without VMKIT_BOOK a stepper
is the live widget it always was.
"""
import html
import json
import os
import weakref

import ipywidgets as w

BOOK = "VMKIT_BOOK"
PRESSES = 16
RESET = "reset"
_recorded = weakref.WeakSet()


def recording():
    """Whether this kernel runs for the book (VMKIT_BOOK=1 in its environment)."""
    return os.environ.get(BOOK) == "1"


def panels(widget):
    """The HTML panels of a widget tree, depth first, in the order the browser lays them out."""
    if isinstance(widget, w.HTML):
        return [widget]
    return [p for child in getattr(widget, "children", ()) for p in panels(child)]


def frame(walker, shown):
    return {"panels": [p.value for p in shown],
            "enabled": {b.description: not b.disabled for b in walker.buttons.values()}}


def record(walker, presses=PRESSES):
    """Press `walker`'s buttons from the guest's entry and keep every frame (see the module's
    docstring); add the recording to the widget as its last panel, once. Returns the frames."""
    if walker.widget in _recorded:
        return None
    _recorded.add(walker.widget)
    keys = [key for key in walker.buttons if key != RESET]
    first, then = (walker.buttons[key] for key in getattr(walker, "RECORDED", (keys[0], keys[0])))
    reset = walker.buttons[RESET]
    reset.click()
    shown = panels(walker.widget)
    frames, pressed = [frame(walker, shown)], []
    for k in range(presses):
        button = first if k == 0 else then
        if button.disabled:
            break
        button.click()
        pressed.append(button.description)
        frames.append(frame(walker, shown))
    reset.click()
    tape = {"reset": reset.description, "pressed": pressed, "frames": frames}
    note = (f"<div style='font-size:11px;color:#666'>A recording: in this page the buttons replay the "
            f"{len(pressed)} presses made when the page was built ({html.escape(', '.join(dict.fromkeys(pressed)))}), "
            f"and reset. Open the lesson in JupyterLab to drive the guest yourself.</div>")
    data = json.dumps(tape).replace("</", "<\\/")
    panel = w.HTML(note + f"<script type='application/json' class='vmkit-tape-data'>{data}</script>")
    panel.add_class("vmkit-tape-panel")
    walker.widget.add_class("vmkit-tape")
    walker.widget.children = (*walker.widget.children, panel)
    return frames


# The player, written as tape.js beside the book's pages. It finds each recorded widget (.vmkit-tape)
# once the widget manager has drawn it, shows the first frame, and answers clicks on its buttons.
PLAYER = r"""
(function () {
  function panelsOf(root) {
    return [...root.querySelectorAll('.widget-html-content')].filter(p => !p.closest('.vmkit-tape-panel'));
  }
  function tapeOf(root) {
    if (!root._vmkitTape) {
      const data = root.querySelector('script.vmkit-tape-data');
      root._vmkitTape = data && JSON.parse(data.textContent);
    }
    return root._vmkitTape;
  }
  function label(button) { return button.textContent.trim(); }
  function show(root, at) {
    const tape = tapeOf(root), frame = tape.frames[at];
    root.dataset.frame = at;
    panelsOf(root).forEach((p, k) => { if (k < frame.panels.length) p.innerHTML = frame.panels[k]; });
    const next = tape.pressed[at];
    root.querySelectorAll('button').forEach(b => {
      const name = label(b);
      b.disabled = !(name === tape.reset || (name === next && frame.enabled[name]));
      b.title = name === tape.reset ? 'back to the guest\'s entry' :
                name === next ? 'replay the next recorded press' : 'not in the recording: open the lesson in JupyterLab';
    });
  }
  function start() {
    document.querySelectorAll('.vmkit-tape:not([data-frame])').forEach(root => {
      if (tapeOf(root) && panelsOf(root).length) show(root, 0);
    });
  }
  document.addEventListener('click', event => {
    const button = event.target.closest('button');
    const root = button && button.closest('.vmkit-tape');
    if (!root || !tapeOf(root)) return;
    event.stopPropagation();
    const tape = tapeOf(root), at = Number(root.dataset.frame || 0), name = label(button);
    if (name === tape.reset) show(root, 0);
    else if (name === tape.pressed[at]) show(root, at + 1);
  }, true);
  let looks = 0;
  const timer = setInterval(() => { start(); if (++looks > 300) clearInterval(timer); }, 100);
})();
"""
