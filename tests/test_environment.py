"""The two ways into the course name the same packages, and CI runs what the README says."""
import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_environment_yml_lists_exactly_the_pyproject_dependencies():
    project = tomllib.loads(read("pyproject.toml"))["project"]["dependencies"]
    pip_block = read("environment.yml").split("- pip:", 1)[1]
    listed = [m.group(1).strip() for m in re.finditer(r"^\s+-\s+(.+)$", pip_block, re.M)]
    assert sorted(p for p in listed if not p.startswith("-e")) == sorted(project)
    conda = read("environment.yml").split("- pip:", 1)[0]
    for tool in ("graphviz", "nasm", "python"):
        assert re.search(rf"^\s+-\s+{tool}\b", conda, re.M), f"environment.yml lacks {tool}"


def test_ci_runs_the_readme_test_command():
    command = [line for line in read(".ci/run").splitlines() if line and not line.startswith(("#", "set ", "cd "))][-1]
    assert command == "python3 course.py test"
    assert command in read("README.md")
    assert "python3 course.py open" in read("README.md")
