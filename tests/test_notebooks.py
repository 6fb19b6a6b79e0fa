"""Every lesson runs top to bottom in a fresh kernel, offline, without an error, and reaches vmkit.viz
one way. The runs are the ones the book is built from (conftest.run_lesson): a session that builds
it in the browser tier runs each lesson once."""
import ast
import glob
import os
import pkgutil

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSONS = sorted(glob.glob(os.path.join(ROOT, "lessons", "*.ipynb")))


@pytest.mark.notebook
@pytest.mark.xdist_group("lessons")      # with the book's tests (test_browser.py), which reuse these runs
@pytest.mark.parametrize("path", LESSONS, ids=[os.path.basename(p) for p in LESSONS])
def test_lesson_runs_top_to_bottom(path, run_lesson):
    nb = run_lesson(path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors


def test_lessons_are_committed_without_outputs():
    for path in LESSONS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path



def _viz_modules():
    import vmkit.viz
    return {m.name for m in pkgutil.iter_modules(vmkit.viz.__path__)}


@pytest.mark.parametrize("path", LESSONS, ids=[os.path.basename(p) for p in LESSONS])
def test_a_lesson_reaches_viz_one_way_and_calls_it_without_patching(path):
    """`from vmkit import viz`, then viz.<module>.<name>: no other import of vmkit.viz, no alias, no
    bare viz.<name>; and no assignment to an attribute (a lesson calls vmkit, it never patches it)."""
    name, modules = os.path.basename(path), _viz_modules()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("vmkit.viz") for a in node.names), \
                    f"{name}: import vmkit.viz...: write 'from vmkit import viz' and call viz.<module>.<name>"
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("vmkit.viz"), \
                    f"{name}: from {node.module} import ...: write 'from vmkit import viz' and call viz.<module>.<name>"
                assert not any(a.name == "viz" and a.asname for a in node.names) or node.module != "vmkit", \
                    f"{name}: viz imported under another name"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "viz":
                assert node.attr in modules, f"{name}: viz.{node.attr}: name its module, viz.<module>.{node.attr}"
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    assert not isinstance(target, ast.Attribute), \
                        f"{name}: '{ast.unparse(target)} = ...' patches an object: pass what it needs to a call"
