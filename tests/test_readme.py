"""The README's figures about the course stay true: each count it states is checked against the
repository (the notebooks, lessons and labs, the lessons' table, the labs it names, the comparison's
workloads and orderings, the memory benchmark's cells, the benchmarks it lists), so a lesson, a lab, a
workload or a benchmark added without the README fails here, naming the sentence to correct."""
import glob
import importlib.util
import os
import re

import pytest

from vmkit import compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
WORDS = {w: n for n, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                    "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}
LESSONS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "lessons", "*.ipynb")))
LABS = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(ROOT, "labs", "*", "*.ipynb"))
              if os.path.basename(p) == os.path.basename(os.path.dirname(p)) + ".ipynb")


def number(word):
    """12, "twelve" or "twenty-one"."""
    if word.isdigit():
        return int(word)
    return sum(WORDS[part] if part != "twenty" else 20 for part in word.lower().split("-"))


def stated(pattern):
    """The numbers the README states where `pattern` (a regex with one group per number) matches."""
    found = re.search(pattern, " ".join(README.split()))
    assert found, f"the README no longer says {pattern!r}: update this test with the sentence that replaced it"
    return [number(g) for g in found.groups()]


def section(title):
    """The text under the heading `## title` exactly, up to the next heading of its level."""
    text = re.split(rf"^## {re.escape(title)}$", README, maxsplit=1, flags=re.M)[1]
    return text.split("\n## ", 1)[0]


def test_the_counts_of_notebooks_lessons_and_labs():
    notebooks, lessons, labs = stated(r"The course has ([\w-]+) notebooks, ([\w-]+) lessons and ([\w-]+) labs")
    assert (lessons, labs) == (len(LESSONS), len(LABS)), "README, `course.py speed`'s paragraph: the course's counts"
    assert notebooks == lessons + labs


def test_the_lessons_table_lists_every_lesson_in_order():
    table = re.findall(r"^\| `lessons/([^`]+)` \|", section("The course"), re.M)
    assert table == LESSONS, "README, The course: one row per lesson, in order"


def test_the_labs_paragraph_names_every_lab():
    named = sorted(set(re.findall(r"`labs/(lab\d+_\w+)`", section("The course"))))
    assert named == LABS, "README, The course: the paragraph on the labs names each lab"


def test_the_comparison_counts():
    [workloads] = stated(r"the course's (\w+) workloads")
    assert workloads == len(compare.WORKLOADS)
    held, claims = stated(r"the orderings lesson 10 claims \| (\d+) of (\d+) hold")
    assert claims == len(compare.CLAIMS) and held <= claims


def benchmark(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tests", "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_memory_benchmark_cells():
    exact, cells = stated(r"memory: events a round exact \| (\d+) of (\d+) cells")
    assert cells == len(benchmark("memory").EXPECTED) and exact <= cells


def test_the_benchmarks_listed_are_those_bench_runs():
    """One numbered item of the README's list for each part `course.py bench` runs (run.py's PARTS)."""
    items = re.findall(r"^(\d+)\. ", section("Benchmarks"), re.M)
    source = open(os.path.join(ROOT, "tests", "benchmarks", "run.py")).read()
    body = source.split("\nPARTS = (", 1)[1].split("\n)\n", 1)[0]
    parts = re.findall(r'^    \("[^"]+", [\w.]+\),$', body, re.M)
    assert [int(k) for k in items] == list(range(1, len(parts) + 1)), \
        f"README, Benchmarks: {len(items)} items for the {len(parts)} parts bench runs"


@pytest.mark.parametrize("word, value", [("ten", 10), ("twenty", 20), ("14", 14)])
def test_number_reads_words_and_digits(word, value):
    assert number(word) == value
