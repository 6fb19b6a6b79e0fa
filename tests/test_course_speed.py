"""`python3 course.py speed` times real notebooks in fresh kernels and fails when one of them raises."""
import json
import os
import subprocess
import sys

import nbformat
import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks", "course_speed.py")


def notebook(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# a notebook to time")]
                                  + [nbformat.v4.new_code_cell(source) for source in sources])
    nbformat.write(nb, str(path))
    return str(path)


def speed(tmp_path, *notebooks):
    out = tmp_path / "speed.json"
    done = subprocess.run([sys.executable, SCRIPT, *notebooks, "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    return done, json.loads(out.read_text())


@pytest.mark.notebook
def test_times_each_notebook_and_names_its_slowest_cell(tmp_path):
    path = notebook(tmp_path / "slow.ipynb",
                    "import time\nx = 1",
                    "\n# the slow cell\ntime.sleep(0.6)",
                    "y = x + 1")
    done, numbers = speed(tmp_path, path)
    assert done.returncode == 0, done.stdout + done.stderr
    [report] = numbers["notebooks"]
    assert report["status"] == "OK" and report["cells"] == 3
    assert 0.6 < report["seconds"] < 20
    assert 0 < report["kernel_seconds"] < report["seconds"]
    slowest = numbers["slowest_cells"][0]
    assert (slowest["cell"], slowest["first_line"]) == (2, "# the slow cell")
    assert 0.6 <= slowest["seconds"] < report["seconds"]
    assert numbers["total_seconds"] == pytest.approx(report["seconds"])
    assert "# the slow cell" in done.stdout and "met: target 180 s for the course" in done.stdout


@pytest.mark.notebook
def test_a_cell_that_raises_fails_the_run(tmp_path):
    path = notebook(tmp_path / "broken.ipynb", "x = 1", "raise ValueError('the guest did not halt')", "x = 2")
    done, numbers = speed(tmp_path, path)
    assert done.returncode == 1
    [report] = numbers["notebooks"]
    assert report["status"] == "error" and report["cells"] == 2
    assert report["error"] == "cell 2: ValueError: the guest did not halt"
    assert numbers["errors"] == [report["notebook"]]
    assert "FAILED to run" in done.stdout


def test_a_pattern_that_matches_nothing_says_what_would():
    done = subprocess.run([sys.executable, SCRIPT, "no_such_lesson*"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "lab's name" in done.stderr
