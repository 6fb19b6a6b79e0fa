"""The grading round trip: every lab in labs/ goes through nbgrader the way a course would take it.

For each lab, in a temporary course directory with the repository's nbgrader_config.py and graders/
(the reference answers and facts, which the hidden tests load from the course directory):
generate the students' version, validate it inverted (it must pass no test), then autograde, in
one nbgrader run, six submissions and read their scores from nbgrader's gradebook:

    solution      the source notebook itself                 -> full marks
    release       the students' version, untouched           -> 0
    wrong         fixtures/wrong.ipynb: plausible mistakes   -> every visible point, no hidden one
    loops         fixtures/loops.ipynb: `while True`, `jmp $` -> the looping parts 0, the rest graded
    monkeypatch   fixtures/monkeypatch.ipynb: tampers with vmkit -> no more than the wrong answers

A fixture notebook holds a submission's answers: cells whose nbgrader grade_id names a solution
cell replace that cell's code; cells without one are added, before the next answer. Its metadata
`grading_fixture.expected_score` is the exact score it must get. A new lab is covered as soon as
it has labs/<lab>/<lab>.ipynb and these three fixtures.
"""
import os
import shutil
import subprocess
import sys
import time

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABS_DIR = os.path.join(REPO, "labs")
GRADERS = os.path.join(REPO, "graders")
BIN = os.path.dirname(sys.executable)
NBGRADER = os.path.join(BIN, "nbgrader")
FIXTURES = ("wrong", "loops", "monkeypatch")
HIDDEN = "### BEGIN HIDDEN TESTS"


def labs():
    return sorted(name for name in os.listdir(LABS_DIR)
                  if os.path.isfile(os.path.join(LABS_DIR, name, f"{name}.ipynb")))


def nbgrader(root, *args, timeout=600):
    """Run nbgrader in the course directory `root`; its log comes back for failure messages."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    done = subprocess.run([NBGRADER, *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def nbgrader_cells(nb):
    return [cell for cell in nb.cells if "nbgrader" in cell.metadata]


def submission_from_fixture(release, fixture):
    """The released notebook with the fixture's answers put in (see the module docstring)."""
    nb = nbformat.from_dict(release)
    position = {cell.metadata.nbgrader["grade_id"]: i for i, cell in enumerate(nb.cells)
                if "nbgrader" in cell.metadata}
    pending = []                                    # added cells, waiting for the next answer
    for cell in fixture.cells:
        if cell.cell_type != "code":
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is None:
            pending.append(nbformat.v4.new_code_cell(cell.source))
            continue
        assert grade_id in position, f"the fixture answers {grade_id!r}, which the lab does not have"
        target = nb.cells[position[grade_id]]
        assert target.metadata.nbgrader.get("solution"), f"{grade_id!r} is not a solution cell"
        target.source = cell.source
        if pending:
            index = position[grade_id]
            nb.cells[index:index] = pending
            position = {k: (v + len(pending) if v >= index else v) for k, v in position.items()}
            pending = []
    nb.cells.extend(pending)
    return nb


def make_course(root, lab):
    """A course directory at `root` as an instructor keeps one: nbgrader's configuration, the lab's
    source folder, and the graders package beside labs/, where the hidden tests look for it."""
    shutil.copy(os.path.join(REPO, "nbgrader_config.py"), root)
    shutil.copytree(os.path.join(LABS_DIR, lab), os.path.join(root, "labs", lab))
    shutil.copytree(GRADERS, os.path.join(root, "graders"), ignore=shutil.ignore_patterns("__pycache__"))


class Course:
    """A temporary nbgrader course holding one lab, its release, and the graded submissions."""

    def __init__(self, root, lab):
        self.root, self.lab = root, lab
        self.fixtures = {}

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def notebook(self, folder, student=None):
        parts = [folder] + ([student] if student else []) + [self.lab, f"{self.lab}.ipynb"]
        return nbformat.read(self.path(*parts), as_version=4)

    def submit(self, student, nb):
        folder = self.path("submitted", student, self.lab)
        os.makedirs(folder, exist_ok=True)
        nbformat.write(nb, os.path.join(folder, f"{self.lab}.ipynb"))

    def grades(self, student):
        """{grade_id: (score, max_score)} and the total, as the gradebook has them."""
        from nbgrader.api import Gradebook
        with Gradebook(f"sqlite:///{self.path('gradebook.db')}") as gradebook:
            submission = gradebook.find_submission_notebook(self.lab, self.lab, student)
            cells = {grade.name: (grade.score, grade.max_score) for grade in submission.grades}
            return cells, submission.score

    def hidden_cells(self):
        source = nbformat.read(self.path("labs", self.lab, f"{self.lab}.ipynb"), as_version=4)
        return {cell.metadata.nbgrader["grade_id"] for cell in nbgrader_cells(source)
                if cell.metadata.nbgrader.get("grade") and HIDDEN in cell.source}


@pytest.fixture(scope="module", params=labs())
def course(request, tmp_path_factory):
    lab = request.param
    root = str(tmp_path_factory.mktemp(f"course-{lab}"))
    make_course(root, lab)
    c = Course(root, lab)
    nbgrader(root, "generate_assignment", lab, "--force")
    c.validate_log = nbgrader(root, "validate", "--invert", c.path("release", lab, f"{lab}.ipynb"))

    release = c.notebook("release")
    c.submit("solution", c.notebook("labs"))
    c.submit("release", release)
    for name in FIXTURES:
        path = os.path.join(LABS_DIR, lab, "fixtures", f"{name}.ipynb")
        if os.path.exists(path):
            fixture = nbformat.read(path, as_version=4)
            c.fixtures[name] = fixture
            c.submit(name, submission_from_fixture(release, fixture))
    start = time.perf_counter()
    nbgrader(root, "autograde", lab, "--force")
    c.autograde_seconds = time.perf_counter() - start
    return c


def expected_score(course, name):
    if name not in course.fixtures:
        pytest.fail(f"labs/{course.lab}/fixtures/{name}.ipynb is missing: every lab keeps a {name!r} "
                    f"submission with metadata grading_fixture.expected_score (see tests/test_grading.py)")
    return course.fixtures[name].metadata["grading_fixture"]["expected_score"]


def test_every_grade_cell_carries_points_and_schema_3(course):
    """Is the source notebook well-formed for nbgrader: schema_version 3 everywhere, points on
    every grade cell, solution regions in the solution cells and at least one hidden test?"""
    source = nbformat.read(course.path("labs", course.lab, f"{course.lab}.ipynb"), as_version=4)
    for cell in nbgrader_cells(source):
        meta = cell.metadata.nbgrader
        assert meta.get("schema_version") == 3, f"{meta.get('grade_id')}: schema_version is not 3"
        if meta.get("grade"):
            assert meta.get("points", 0) > 0, f"{meta['grade_id']}: a grade cell without points"
        if meta.get("solution") and cell.cell_type == "code":
            assert "### BEGIN SOLUTION" in cell.source, f"{meta['grade_id']}: no solution region"
    assert course.hidden_cells(), "the lab has no hidden tests"
    assert not any(cell.get("outputs") for cell in source.cells if cell.cell_type == "code"), \
        "the source notebook is committed with outputs"


def test_release_holds_no_solutions_hidden_tests_or_fixtures(course):
    """Does the students' version leave out the solutions, the hidden tests and the fixtures?"""
    release = course.notebook("release")
    text = "\n".join(cell.source for cell in release.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "_grading", "graders"):
        assert marker not in text, f"the release still contains {marker!r}"
    assert not os.path.exists(course.path("release", course.lab, "fixtures")), "fixtures were released"


def test_release_passes_no_test(course):
    """Does `nbgrader validate --invert` find that the untouched release passes no test?"""
    assert "Success! The notebook does not pass any tests." in course.validate_log, course.validate_log


def test_solution_gets_full_marks(course):
    """Does the source notebook, graded as a student's submission, get every point?"""
    cells, total = course.grades("solution")
    lost = {name: score for name, score in cells.items() if score[0] != score[1]}
    assert not lost, f"the solution loses points in {lost}"
    assert total == sum(max_score for _, max_score in cells.values())


def test_untouched_release_gets_zero(course):
    """Does a student who hands in the release untouched get nothing?"""
    cells, total = course.grades("release")
    assert total == 0, f"the untouched release scores {total}: {cells}"


def test_wrong_answers_lose_exactly_the_hidden_points(course):
    """Does the plausible wrong submission keep every visible point, lose every hidden one, and
    get exactly the score its fixture promises?"""
    want = expected_score(course, "wrong")
    cells, total = course.grades("wrong")
    hidden = course.hidden_cells()
    for name, (score, max_score) in cells.items():
        assert score == (0 if name in hidden else max_score), f"{name}: {score} of {max_score}"
    assert total == want


def test_looping_submission_is_stopped_and_the_rest_graded(course):
    """Does a submission with a Python `while True` and a guest in `jmp $` end within the per-cell
    timeout, score 0 where it loops and still get its points everywhere else?"""
    want = expected_score(course, "loops")
    cells, total = course.grades("loops")
    assert total == want, f"scored {total}, expected {want}: {cells}"
    graded = course.notebook("autograded", "loops")
    timed_out = [cell for cell in graded.cells if cell.cell_type == "code" and any(
        out.get("ename") in ("CellTimeoutError", "KeyboardInterrupt") for out in cell.get("outputs", []))]
    assert timed_out, "no cell was stopped by the per-cell timeout"
    assert any(score == max_score > 0 for score, max_score in cells.values()), "nothing after the loop was graded"
    # every submission ran in this one autograde; only the looping cell may wait for the timeout
    assert course.autograde_seconds < 120, f"autograde took {course.autograde_seconds:.0f} s"


def test_tampering_with_vmkit_does_not_fool_the_hidden_tests(course):
    """Does a submission that replaces vmkit.run, edits result objects and patches vmkit.grading and
    graders still lose every hidden point, scoring what its wrong answers deserve?"""
    want = expected_score(course, "monkeypatch")
    cells, total = course.grades("monkeypatch")
    for name in course.hidden_cells():
        assert cells[name][0] == 0, f"{name}: the tampering earned {cells[name][0]} hidden points"
    assert total == want, f"scored {total}, expected {want}: {cells}"


# --- the messages a student reads ---------------------------------------------------------------------
def test_a_failed_check_says_what_was_expected_what_happened_and_where_to_look():
    """Does a failing check name the check, the expected value, the actual one and a hint?"""
    from vmkit.grading import check_equal
    with pytest.raises(AssertionError) as failure:
        check_equal(0x1b, 0x18, what="the user code selector", hint="RPL is the low two bits")
    message = str(failure.value)
    for part in ("the user code selector", "expected: 0x18", "got:      0x1b", "where to look: RPL"):
        assert part in message, message


def test_check_cases_lists_the_misses_and_reports_exceptions_as_answers():
    """Does check_cases show the first wrong cases, count them, and report a crash as the answer?"""
    from vmkit.grading import check_cases

    def rpl(value):
        if value == 0:
            raise ValueError("no zero")
        return value & 1                            # a wrong rule: RPL has two bits
    with pytest.raises(AssertionError) as failure:
        check_cases(rpl, [(0x1b, 3), (0x08, 0), (0x2b, 3), (0, 0)], what="RPL")
    message = str(failure.value)
    assert "3 of 4 cases wrong" in message and "rpl(0x1b)" in message and "ValueError: no zero" in message


def test_a_guest_that_never_ends_or_does_not_assemble_fails_with_a_message():
    """Does run_guest turn a `jmp $` guest and a NASM error into AssertionErrors that explain them?"""
    from vmkit.grading import run_guest
    start = time.perf_counter()
    with pytest.raises(AssertionError, match="did not finish within 2,000,000 instructions"):
        run_guest("jmp $")
    assert time.perf_counter() - start < 5
    with pytest.raises(AssertionError, match="does not assemble: NASM stops at line"):
        run_guest("mov eax, ebx, ecx")


def test_visible_checks_never_claim_the_whole_grade(capsys):
    """Does a passing cell of visible checks say that the hidden checks are still to come?"""
    from vmkit.grading import visible_checks_passed
    visible_checks_passed("decode_selector")
    out = capsys.readouterr().out
    assert "hidden checks run when the lab is graded" in out and "all tests passed" not in out.lower()


def test_reference_facts_come_from_a_fresh_interpreter(monkeypatch, tmp_path):
    """Is a reference fact immune to a patched vmkit or graders in the calling process, and to a fake
    vmkit or graders planted in the notebook's folder or on PYTHONPATH?"""
    import vmkit
    from vmkit.machine import x86
    monkeypatch.syspath_prepend(REPO)
    import graders
    import graders.lab1
    for name in ("vmkit", "graders"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / "graders" / "lab1.py").write_text("FACTS = {'selector_fields': lambda values: [[0, 0, 0]] * len(values)}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(x86, "decode_selector", lambda value: x86.Selector(0, 0, 0))
    monkeypatch.setattr(vmkit, "run", lambda *args, **kwargs: None)
    monkeypatch.setitem(graders.lab1.FACTS, "ring3_census", lambda template, instructions: {})
    assert graders.reference("lab1.selector_fields", [0x2b]) == [[5, 0, 3]]
    assert graders.reference("lab1.ring3_census", ring3_test_kernel(), ["nop", "cli"]) == {"nop": "runs", "cli": "#GP"}
    with pytest.raises(ValueError, match="unknown reference fact 'lab1.census'; known: lab1.selector_fields"):
        graders.reference("lab1.census", ring3_test_kernel(), ["nop"])


def ring3_test_kernel():
    """tests/guestkit.py's kernel with every exception leading to exit code 3 and int 0x80 (DPL 3) to
    exit code 1, and an {instruction} slot in ring 3: the shape of lab 1's RING3_TEST."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from guestkit import kernel
    gates = {vector: ("fault", 0x8E) for vector in range(32)}
    gates[0x80] = ("survived", 0xEE)
    source = kernel(body="mov eax, user\nmov ebx, 0x2\njmp to_ring3", gates=gates,
                    handlers={"fault": "mov al, 1\nout 0xf4, al", "survived": "mov al, 0\nout 0xf4, al",
                              "user": "INSTRUCTION\nint 0x80\njmp $"})
    return source.replace("{", "{{").replace("}", "}}").replace("INSTRUCTION", "{instruction}")
