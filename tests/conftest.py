import os

import pytest

import vmkit


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
