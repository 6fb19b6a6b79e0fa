"""The two ways into the course name the same packages, CI runs what the README says, and that command
runs the suite on two workers, the tests that share a fixture on one."""
import os
import re
import shutil
import subprocess
import tomllib

import pytest

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


# --- course.py's set-up: one line a step, the log shown on failure, each stamp on its own -------------

def course_module(tmp_path, monkeypatch):
    """course.py loaded as a module, its environment (.venv, the set-up log) moved into tmp_path."""
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("course", os.path.join(ROOT, "course.py"))
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    venv = tmp_path / "venv"
    monkeypatch.setattr(course, "VENV", str(venv))
    monkeypatch.setattr(course, "SETUP_LOG", str(venv / "setup.log"))
    monkeypatch.setattr(course, "PYTHON", sys.executable)
    return course


def test_a_set_up_step_is_one_line_and_a_failing_one_shows_the_end_of_its_log(tmp_path, monkeypatch, capsys):
    import sys
    course = course_module(tmp_path, monkeypatch)
    course.step("unpacking something", [[sys.executable, "-c", "print('Unpacking libfoo (1.2) ...\\n' * 50)"]])
    shown = capsys.readouterr().out
    assert re.fullmatch(r"\[course\] unpacking something \.\.\. \d+ s\n", shown), shown
    assert "Unpacking libfoo" in open(course.SETUP_LOG).read()

    with pytest.raises(course.StepFailed):
        course.step("building a wheel", [[sys.executable, "-c",
                                          "import sys\nfor k in range(100): print('warning', k)\n"
                                          "sys.exit('error: the last words')"]])
    shown = capsys.readouterr().out
    first, *rest = shown.splitlines()
    assert re.fullmatch(r"\[course\] building a wheel \.\.\. FAILED after \d+ s \(exit status 1\)", first), first
    assert "error: the last words" in shown and "warning 99" in shown and "warning 10\n" not in shown
    assert "Unpacking libfoo" not in shown, "the failure shows an earlier step's output"
    assert rest[-1] == f"[course] the whole log: {course.SETUP_LOG}"


def test_each_install_stamp_is_checked_on_its_own(tmp_path, monkeypatch):
    """The course's packages, the test tools and the book's tools each have a stamp: a command never
    reinstalls what another installed, and installs only the extras it lacks."""
    course = course_module(tmp_path, monkeypatch)
    steps = []
    monkeypatch.setattr(course, "step", lambda what, commands, env=None: steps.append(commands[-1][-1]))
    monkeypatch.setattr(course, "jupyterlab_settings", lambda prefix=None: None)
    os.makedirs(course.VENV)
    course.python_packages("test")                       # a fresh environment: everything once
    assert steps == [f"{ROOT}[test]"]
    course.python_packages("test")
    course.python_packages()                             # doctor, open, release: the test install holds them
    assert len(steps) == 1
    course.python_packages("book", "test")               # only what is missing
    assert steps[-1] == f"{ROOT}[book]"
    course.python_packages("book")
    assert len(steps) == 2


def test_jupyterlab_opens_without_news_or_update_checks(tmp_path, monkeypatch):
    """The environment's defaults name settings JupyterLab has, with values its schema allows."""
    import json
    import sys
    from jupyterlab.labapp import LabApp
    course = course_module(tmp_path, monkeypatch)
    course.jupyterlab_settings(str(tmp_path))
    settings = json.load(open(tmp_path / "share/jupyter/lab/settings/overrides.d/vmkit-course.json"))
    schemas = os.path.join(sys.prefix, "share", "jupyter", "lab", "schemas")
    for plugin, values in settings.items():
        package, name = plugin.rsplit(":", 1)
        schema = json.load(open(os.path.join(schemas, package, f"{name}.json")))["properties"]
        for key, value in values.items():
            allowed = [choice["const"] for choice in schema[key].get("oneOf", [])] or [True, False]
            assert value in allowed, (plugin, key, value)
    assert settings["@jupyterlab/apputils-extension:notification"] == {"fetchNews": "false", "checkForUpdates": False}
    server = json.load(open(tmp_path / "etc/jupyter/jupyter_server_config.d/vmkit-course.json"))
    assert set(server["LabApp"]) <= set(LabApp.class_trait_names())


def test_the_c_helpers_are_built_once_and_a_failed_build_does_not_stop_the_set_up(tmp_path, monkeypatch, capsys):
    """course.py builds vmkit's C helpers (vmkit/machine/*.c) with the system's compiler once per version
    of their sources; without a compiler it says so and goes on (vmkit then uses its Python reference)."""
    course = course_module(tmp_path, monkeypatch)
    os.makedirs(course.VENV)
    monkeypatch.setenv("VMKIT_LIBDIR", str(tmp_path / "lib"))
    monkeypatch.setenv("CC", "false")                   # a compiler that fails
    course.native_helpers()
    assert "slower way" in capsys.readouterr().out and not os.path.exists(course.stamp_path("native-helpers"))
    monkeypatch.delenv("CC")
    course.native_helpers()
    assert [p.name for p in (tmp_path / "lib").iterdir() if p.suffix == ".so"]
    first = capsys.readouterr().out
    assert "building vmkit's C helpers" in first
    course.native_helpers()                              # built already: no step at all
    assert capsys.readouterr().out == ""


# --- course.py test: the suite on two workers, the tests of a group on one ---------------------------------

def test_the_test_command_runs_two_workers_unless_told_otherwise(tmp_path, monkeypatch):
    course = course_module(tmp_path, monkeypatch)
    assert course.pytest_arguments(["-q"]) == ["-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder", "-q"]
    for chosen in (["-n", "0"], ["-n4"], ["--numprocesses=3"], ["-p", "no:xdist"], ["--pdb"], ["--dist", "load"]):
        assert course.pytest_arguments(chosen) == chosen
    assert (course.minutes(820), course.minutes(52.4)) == ("13 min 40 s", "52 s")


GROUPED_TEST = """import os, pytest
{mark}
@pytest.mark.parametrize("k", range(6))
def test_{name}(k):
    with open(os.path.join(os.path.dirname(__file__), "ran"), "a") as f:
        f.write("{group} " + os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""


def test_the_tests_of_a_group_run_on_one_worker(tmp_path, monkeypatch):
    """Under `course.py test`'s arguments and tests/conftest.py, do a module's tests share one worker,
    and the tests of one xdist_group mark across modules? (pytest-xdist's loadgroup ignores the marks,
    without a word, under a pytest it does not know: then this fails.)"""
    import sys
    pytest.importorskip("xdist", reason="pytest-xdist is not installed (python3 course.py test installs it)")
    course = course_module(tmp_path, monkeypatch)
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), suite)
    for name, group, mark in (("alone", "alone", ""), ("also_alone", "also_alone", ""),
                              ("shared_a", "shared", "@pytest.mark.xdist_group('shared')"),
                              ("shared_b", "shared", "@pytest.mark.xdist_group('shared')")):
        (suite / f"test_{name}.py").write_text(GROUPED_TEST.format(name=name, group=group, mark=mark))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                           *course.pytest_arguments([]), str(suite)],
                          cwd=suite, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    workers = {}
    for line in (suite / "ran").read_text().split("\n")[:-1]:
        group, worker = line.split()
        workers.setdefault(group, set()).add(worker)
    assert sum(1 for _ in (suite / "ran").read_text().splitlines()) == 24
    assert all(len(used) == 1 for used in workers.values()), workers
