#!/usr/bin/env python3
"""The course's readable edition: every lesson run and written out as a static site.

    python3 course.py book [DIR]      (DIR defaults to book/ beside this file)

Each lesson runs top to bottom in a fresh kernel, as `python3 course.py test` runs it, and becomes
DIR/lessons/<lesson>.html with its outputs: the diagrams (SVG in the page), the plots, and the
widgets with their state, drawn by the widget manager's own JavaScript from the state nbclient keeps
in the notebook (metadata "widgets", application/vnd.jupyter.widget-state+json, which nbconvert's
lab template writes into the page). The kernels run with VMKIT_BOOK=1, so every stepper records a
walk through its guest (vmkit.viz.tape) that the page replays without a kernel. Each lab becomes
DIR/labs/<lab>.html as students get it: nbgrader's own preprocessors take out the solutions, the
hidden tests and the outputs (those that `nbgrader generate_assignment` applies; a students' copy of
the course holds its labs that way already). DIR/index.html lists them in the course's order.

Nothing is fetched when a page is viewed: nbconvert's lab template would load require.js, MathJax
and the widget manager (@jupyter-widgets/html-manager's embed-amd.js) from CDNs; the template below
drops those and loads DIR/_static/embed.js instead, the html-manager's stand-alone bundle (it draws
every <script type="application/vnd.jupyter.widget-view+json"> on the page once it has loaded),
which `course.py book` takes from the npm registry once (WIDGET_MANAGER). The site is plain files:
open DIR/index.html, or publish DIR on any static host.
"""
import glob
import html
import os
import re
import shutil
import subprocess
import sys
import time

import jinja2
import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from vmkit.viz import tape

HERE = os.path.dirname(os.path.abspath(__file__))
# Where course.py puts the widget manager's files (dist/ of @jupyter-widgets/html-manager).
WIDGET_MANAGER = os.path.join(sys.prefix, "share", "vmkit-course", "html-manager")
STATIC = "_static"
TIMEOUT = 300
BOOK_ENV = {"VMKIT_BOOK": "1"}            # vmkit.viz.tape: steppers record their walk

TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}
<script src="{{ resources.book_static }}/embed.js"></script>
<script src="{{ resources.book_static }}/tape.js"></script>
{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block body_header -%}
{{ super() }}
<nav class="vmkit-book-nav" style="padding:8px 16px;font-family:sans-serif">{{ resources.book_nav }}</nav>
{%- endblock body_header -%}
{% block body_footer %}
<nav class="vmkit-book-nav" style="padding:8px 16px;font-family:sans-serif">{{ resources.book_nav }}</nav>
{{ super() }}
{% endblock body_footer %}
"""


def say(message):
    print(f"[book] {message}", flush=True)


def lessons(course=HERE):
    return sorted(glob.glob(os.path.join(course, "lessons", "*.ipynb")))


def labs(course=HERE):
    """labs/<lab>/<lab>.ipynb in the course's order (lab1 ... lab10)."""
    found = [p for p in glob.glob(os.path.join(course, "labs", "*", "*.ipynb"))
             if os.path.basename(p) == os.path.basename(os.path.dirname(p)) + ".ipynb"]
    return sorted(found, key=lambda p: int(re.search(r"lab(\d+)", os.path.basename(p)).group(1)))


def execute(path, timeout=TIMEOUT):
    """The lesson at `path` run top to bottom in a fresh kernel (with the widgets' state kept). What
    the kernel process itself writes to stderr (ipykernel's warning about its TCP transport, once a
    kernel) is dropped: the lesson's own output is in its cells."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute(
        env=dict(os.environ, **BOOK_ENV), stderr=subprocess.DEVNULL)
    return nb


def errors(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def student_version(path):
    """A lab as students get it: no solutions, no hidden tests, no outputs (nbgrader's preprocessors)."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme, ClearOutput, ClearSolutions  # the book's only use of nbgrader
    nb = nbformat.read(path, as_version=4)
    stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}      # as nbgrader_config.py says
    for step in (ClearSolutions(code_stub=stub), ClearOutput(), ClearHiddenTests(), ClearMarkScheme()):
        nb, _ = step.preprocess(nb, {})
    return nb


def title(nb, fallback):
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#+\s+(.+)$", cell.source, re.M)
            if m:
                return re.sub(r"[`*_]", "", m.group(1)).strip()
    return fallback


def exporter():
    return HTMLExporter(template_name="lab", template_file="book.j2",
                        extra_loaders=[jinja2.DictLoader({"book.j2": TEMPLATE})])


def write_page(nb, target, nav, static):
    body, _ = exporter().from_notebook_node(nb, resources={"book_nav": nav, "book_static": static})
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w", encoding="utf-8") as f:
        f.write(body)


def navigation(pages, k):
    """Links to the index and to the pages before and after pages[k] (paths relative to the book)."""
    up = "../"
    links = [f"<a href='{up}index.html'>contents</a>"]
    if k > 0:
        links.append(f"<a href='{up}{pages[k - 1][0]}'>&larr; {html.escape(pages[k - 1][1])}</a>")
    if k + 1 < len(pages):
        links.append(f"<a href='{up}{pages[k + 1][0]}'>{html.escape(pages[k + 1][1])} &rarr;</a>")
    return " &middot; ".join(links)


def static_files(out):
    """The widget manager's bundle (and the fonts it refers to) and the steppers' player."""
    folder = os.path.join(out, STATIC)
    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(os.path.join(WIDGET_MANAGER, "embed.js")):
        raise SystemExit(f"the widget manager's JavaScript is missing ({WIDGET_MANAGER}/embed.js): "
                         f"`python3 course.py book` fetches it once with npm")
    for name in os.listdir(WIDGET_MANAGER):
        shutil.copy(os.path.join(WIDGET_MANAGER, name), folder)
    with open(os.path.join(folder, "tape.js"), "w") as f:
        f.write(tape.PLAYER)
    # GitHub Pages, publishing from a branch, runs Jekyll, which leaves out folders whose names start
    # with an underscore (_static) unless the site's root holds a .nojekyll file
    open(os.path.join(out, ".nojekyll"), "w").close()


def build(out, course=HERE, executed=None):
    """Write the site into `out`. `executed(path)` gives a lesson's executed notebook (default:
    execute it here); the tests pass one that reuses the runs they make anyway."""
    executed = executed or execute
    started = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    static_files(out)
    lesson_nbs, failed = [], []
    for k, path in enumerate(lessons(course), 1):
        t = time.monotonic()
        nb = executed(path)
        name = os.path.relpath(path, course)
        if errors(nb):
            failed.append(name)
        lesson_nbs.append((path, nb))
        say(f"[{k}/{len(lessons(course))}] ran {name} in {time.monotonic() - t:.0f} s"
            + (" (it raised: the page shows the error)" if errors(nb) else ""))
    lab_nbs = [(path, student_version(path)) for path in labs(course)]
    pages = ([(f"lessons/{os.path.basename(p)[:-6]}.html", title(nb, os.path.basename(p)), nb) for p, nb in lesson_nbs]
             + [(f"labs/{os.path.basename(p)[:-6]}.html", title(nb, os.path.basename(p)), nb) for p, nb in lab_nbs])
    order = [(href, name) for href, name, _ in pages]
    for k, (href, name, nb) in enumerate(pages):
        write_page(nb, os.path.join(out, href), navigation(order, k), f"../{STATIC}")
    write_index(out, pages[:len(lesson_nbs)], pages[len(lesson_nbs):])
    say(f"wrote {len(pages)} pages ({len(lesson_nbs)} lessons, {len(lab_nbs)} labs) to {out} "
        f"in {time.monotonic() - started:.0f} s; open {os.path.join(out, 'index.html')}")
    return failed


def write_index(out, lesson_pages, lab_pages):
    items = lambda pages: "\n".join(f"<li><a href='{href}'>{html.escape(name)}</a></li>" for href, name, _ in pages)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>How hypervisors really work</title>
<style>body{{font-family:sans-serif;max-width:48em;margin:2em auto;padding:0 1em;line-height:1.5}}</style></head>
<body><h1>How hypervisors really work</h1>
<p>An interactive course on x86 virtualization, as it reads without installing it: each lesson as
it ran, with its outputs, diagrams and plots, and its steppers replaying a recorded walk through the
guest. To run the guests yourself, get the course and open it with <code>python3 course.py open</code>.</p>
<h2>Lessons, in order</h2>
<ol class="vmkit-book-lessons">
{items(lesson_pages)}
</ol>
<h2>Labs</h2>
<p>As students get them: the code to write is left out, and the hidden checks are the grader's.</p>
<ol class="vmkit-book-labs">
{items(lab_pages)}
</ol>
</body></html>
"""
    with open(os.path.join(out, "index.html"), "w", encoding="utf-8") as f:
        f.write(page)


def main(argv):
    out = os.path.abspath(argv[1] if len(argv) > 1 else os.path.join(HERE, "book"))
    failed = build(out)
    if failed:
        say(f"FAILED to run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
