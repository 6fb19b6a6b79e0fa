import os

import pytest

import vmkit


# --- which worker runs what -------------------------------------------------------------------------
# `python3 course.py test` runs the suite on pytest-xdist's workers with --dist loadgroup: the tests
# of one xdist_group go to one worker, a group at a time, in the order of the collection. A module is
# one group, so that its module-scoped fixtures are built once. A module whose fixtures take minutes
# names finer groups with xdist_group marks of its own, so that they spread over the workers:
# test_grading.py one a lab (a graded course each), test_browser.py one a JupyterLab server, and the
# lessons' runs, which the notebook tier and the book share (run_lesson below). Those groups go
# first, the modules after them, so that the short ones even out the workers at the end.

@pytest.hookimpl(tryfirst=True)            # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    named = {item.nodeid for item in items if any(item.iter_markers("xdist_group"))}
    for item in items:
        if item.nodeid not in named:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=lambda item: item.nodeid not in named)       # stable: each group keeps its order


@pytest.fixture
def build():
    """Assemble a test kernel (see guestkit.kernel) into an Image."""
    from guestkit import kernel

    def _build(**parts):
        return vmkit.assemble(kernel(**parts))
    return _build


def load_script(name):
    """A script beside tests/ (book.py, course.py) as a module."""
    import importlib.util  # only the tiers that use the course's scripts need this
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_book():
    """book.py, the course's static edition."""
    return load_script("book")


def load_course():
    """course.py, the set-up and the commands."""
    return load_script("course")


@pytest.fixture(scope="session")
def run_lesson():
    """run(path): the lesson run top to bottom in a fresh kernel as the book runs it (book.execute),
    once per test session: the notebook tier checks the run the browser tier's book is built from."""
    book, done = load_book(), {}

    def run(path):
        if path not in done:
            done[path] = book.execute(path)
        return done[path]
    return run
