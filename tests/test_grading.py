"""The grading round trip: every lab in labs/ goes through nbgrader the way a course would take it.

For each lab, in a temporary course directory with the repository's nbgrader_config.py and graders/
(the reference answers and facts, which the hidden tests load from the course directory):
generate the students' version, validate it inverted (it must pass no test), then grade with
`python3 course.py grade`, which autogrades each submission through nbgrader with its kernel in a
sandbox (autograde.py), and read the scores from nbgrader's gradebook:

    solution      the source notebook itself                 -> full marks
    release       the students' version, untouched           -> 0
    wrong         fixtures/wrong.ipynb: plausible mistakes   -> every visible point, no hidden one
    loops         fixtures/loops.ipynb: `while True`, `jmp $` -> the looping parts 0, the rest graded
    monkeypatch   fixtures/monkeypatch.ipynb: tampers with vmkit -> no more than the wrong answers

A fixture notebook holds a submission's answers: cells whose nbgrader grade_id names a solution
cell replace that cell's code; cells without one are added, before the next answer. Its metadata
`grading_fixture.expected_score` is the exact score it must get. A new lab is covered as soon as
it has labs/<lab>/<lab>.ipynb and these three fixtures.

Then, into the same gradebook, a second `course.py grade` runs the attacks (tests/attacks/, one cell
each, put after the lab's set-up cell of the untouched release). On every lab, stubs that return an
object equal to anything (each lab's runners must hand back plain data). On the first lab, the
attacks on what every lab shares: from inside the kernel, on the grader's executor, an input
transformer, a value before every cell, an import hook, `builtins.__import__` replaced; on the
sandbox, writing the gradebook with sqlite3, rewriting vmkit and graders/ on disk, running the solution cells of the
source notebook found through vmkit.__file__, allocating without bound, and a guest run with no
budget at all on the solution (it costs the per-cell timeout; interrupted, it leaves the solution
its full marks). Each scores 0, nothing is reported as tampering, a blank graded after them still
scores 0, and the package, labs/, graders/ and every gradebook row of the first round are
byte-identical afterwards.
"""
import hashlib
import json
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
COURSE_PY = os.path.join(REPO, "course.py")
ATTACKS = os.path.join(REPO, "tests", "attacks")
# attack -> what it is put into; every one scores what that base earns without it
# the attacks on the sandbox, which every lab's kernel shares: tried on the first lab, by name
ATTACKS_ON_THE_SANDBOX = {"gradebook": "release", "package": "release", "source_notebook": "release",
                          "memory": "release", "unbounded_guest": "solution"}
# the attacks from inside the kernel on the grader's executor, which every lab shares: the first lab
ATTACKS_IN_THE_KERNEL = {"input_transformer": "release", "partial_credit": "release", "import_hook": "release",
                         "builtins_import": "release"}
# the attack that reaches each lab's own answers (its runners must hand back plain data): every lab
ATTACKS_ON_EVERY_LAB = {"always_equal": "release"}
FIRST_LAB = "lab1_rings"


def other_fixtures(lab):
    """A lab's fixtures beyond the three every lab has: attacks of its own, each with its expected score."""
    folder = os.path.join(LABS_DIR, lab, "fixtures")
    return tuple(sorted(name[:-len(".ipynb")] for name in os.listdir(folder)
                        if name.endswith(".ipynb") and name[:-len(".ipynb")] not in FIXTURES))


def probes(lab):
    """graders/<lab>.py's PROBES ({grade_id: Probe}), or None for a lab still decided in its kernel."""
    sys.path.insert(0, REPO)
    try:
        import importlib
        return getattr(importlib.import_module(f"graders.{lab.split('_')[0]}"), "PROBES", None)
    finally:
        sys.path.remove(REPO)


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

    def hand_in(self, folder, student, nb):
        """Put `student`'s notebook where `course.py grade` takes it from: <folder>/<student>/<lab>.ipynb."""
        os.makedirs(self.path(folder, student), exist_ok=True)
        nbformat.write(nb, self.path(folder, student, f"{self.lab}.ipynb"))

    def grade(self, folder):
        """`python3 course.py grade` on <folder>: {student: result}, the lines it printed, and the seconds."""
        env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
        results = self.path(f"{folder}.json")
        start = time.perf_counter()
        done = subprocess.run([sys.executable, COURSE_PY, "grade", self.lab, self.path(folder), "--course", self.root,
                               "--json", results], env=env, capture_output=True, text=True, timeout=1200)
        seconds = time.perf_counter() - start
        assert done.returncode == 0, f"course.py grade {folder} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        with open(results) as f:
            return {result["student"]: result for result in json.load(f)}, done.stdout, seconds

    def grades(self, student):
        """{grade_id: (score, max_score)} and the total, as the gradebook has them."""
        from nbgrader.api import Gradebook
        with Gradebook(f"sqlite:///{self.path('gradebook.db')}") as gradebook:
            submission = gradebook.find_submission_notebook(self.lab, self.lab, student)
            cells = {grade.name: (grade.score, grade.max_score) for grade in submission.grades}
            return cells, submission.score

    def hidden_cells(self):
        """The graded cells whose cases the student has not seen: those named part<n>_hidden (their
        cases live in graders/<lab>.py), or, in a lab still decided in its kernel, those with hidden tests."""
        source = nbformat.read(self.path("labs", self.lab, f"{self.lab}.ipynb"), as_version=4)
        graded = [cell for cell in nbgrader_cells(source) if cell.metadata.nbgrader.get("grade")]
        if probes(self.lab) is not None:
            return {cell.metadata.nbgrader["grade_id"] for cell in graded
                    if cell.metadata.nbgrader["grade_id"].endswith("_hidden")}
        return {cell.metadata.nbgrader["grade_id"] for cell in graded if HIDDEN in cell.source}


def attack_submission(base, attack):
    """`base` with the attack's cell put right after its set-up cell (the first code cell)."""
    nb = nbformat.from_dict(base)
    setup = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
    with open(os.path.join(ATTACKS, f"{attack}.py")) as f:
        nb.cells.insert(setup + 1, nbformat.v4.new_code_cell(f.read()))
    return nb


def untouchable(course):
    """{path: sha256} of what no submission may change: the vmkit package (with its byte code), and
    labs/ and graders/ of both the course and the repository (the attacks look for both)."""
    import vmkit
    hashes = {}
    for top in (os.path.dirname(vmkit.__file__), course.path("labs"), course.path("graders"), LABS_DIR, GRADERS):
        for folder, _, names in os.walk(top):
            for name in names:
                with open(os.path.join(folder, name), "rb") as f:
                    hashes[os.path.join(folder, name)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def gradebook_rows(course, students):
    """Every gradebook row that belongs to `students`' submissions (submission, notebooks, grades, comments)."""
    import sqlite3
    with sqlite3.connect(f"file:{course.path('gradebook.db')}?mode=ro", uri=True) as db:
        marks = ",".join("?" * len(students))
        rows = db.execute(f"select * from submitted_assignment where student_id in ({marks}) order by id", students).fetchall()
        for table in ("submitted_notebook",):
            rows += db.execute(f"select * from {table} where assignment_id in (select id from submitted_assignment "
                               f"where student_id in ({marks})) order by id", students).fetchall()
        for table in ("grade", "comment"):
            rows += db.execute(f"select * from {table} where notebook_id in (select n.id from submitted_notebook n "
                               f"join submitted_assignment a on n.assignment_id = a.id where a.student_id in ({marks})) "
                               f"order by id", students).fetchall()
        return rows


# each lab's course is a group of its own: pytest-xdist's workers grade two labs side by side
@pytest.fixture(scope="module", params=[pytest.param(lab, marks=pytest.mark.xdist_group(f"grading-{lab}"))
                                        for lab in labs()])
def course(request, tmp_path_factory):
    lab = request.param
    root = str(tmp_path_factory.mktemp(f"course-{lab}"))
    make_course(root, lab)
    c = Course(root, lab)
    nbgrader(root, "generate_assignment", lab, "--force")
    c.validate_log = nbgrader(root, "validate", "--invert", c.path("release", lab, f"{lab}.ipynb"))

    release, solution = c.notebook("release"), c.notebook("labs")
    c.hand_in("handed-in", "solution", solution)
    c.hand_in("handed-in", "release", release)
    for name in FIXTURES + other_fixtures(lab):
        path = os.path.join(LABS_DIR, lab, "fixtures", f"{name}.ipynb")
        if os.path.exists(path):
            fixture = nbformat.read(path, as_version=4)
            c.fixtures[name] = fixture
            c.hand_in("handed-in", name, submission_from_fixture(release, fixture))
    c.results, c.printed, c.grade_seconds = c.grade("handed-in")
    c.first_round = sorted(c.results)

    bases = {"release": release, "solution": solution}
    c.attacks = dict(ATTACKS_ON_EVERY_LAB, **(dict(ATTACKS_IN_THE_KERNEL, **ATTACKS_ON_THE_SANDBOX)
                                              if lab == FIRST_LAB else {}))
    for attack, base in c.attacks.items():
        c.hand_in("attacks", f"attack-{attack}", attack_submission(bases[base], attack))
    c.hand_in("attacks", "blank-after-the-attacks", release)
    c.before_attacks = untouchable(c), gradebook_rows(c, c.first_round)
    c.attack_results, c.attack_printed, _ = c.grade("attacks")
    c.after_attacks = untouchable(c), gradebook_rows(c, c.first_round)
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
        assert any(meta.get(role) for role in ("grade", "solution", "locked", "task")), \
            f"{meta.get('grade_id')}: nbgrader metadata with no role (nbgrader warns of every such cell: drop it)"
    assert course.hidden_cells(), "the lab has no hidden tests"
    found = probes(course.lab)
    if found is not None:
        graded = {cell.metadata.nbgrader["grade_id"] for cell in nbgrader_cells(source) if cell.metadata.nbgrader.get("grade")}
        assert graded == set(found), f"graded cells without a probe: {graded - set(found)}; probes without a cell: {set(found) - graded}"
        assert not any(HIDDEN in cell.source for cell in source.cells), \
            "a hidden test region in a lab whose checks live in graders/ (they would run in the student's kernel)"
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
    """Does the source notebook, graded as a student's submission by `course.py grade`, get every
    point, in the gradebook, in what the command prints and in its JSON?"""
    cells, total = course.grades("solution")
    lost = {name: score for name, score in cells.items() if score[0] != score[1]}
    assert not lost, f"the solution loses points in {lost}"
    assert total == sum(max_score for _, max_score in cells.values())
    result = course.results["solution"]
    assert (result["score"], result["max_score"], result["tampering"]) == (total, total, [])
    assert f"solution {total:g}/{total:g}" in course.printed.splitlines()


def test_untouched_release_gets_zero(course):
    """Does a student who hands in the release untouched get nothing?"""
    cells, total = course.grades("release")
    assert total == 0, f"the untouched release scores {total}: {cells}"
    assert course.results["release"]["score"] == 0


def test_honest_submissions_are_graded_without_a_warning(course):
    """Do the solution and the untouched release grade without a note (nbgrader's routine warnings
    gone), so that the first note an instructor sees is a real one?"""
    for student in ("solution", "release"):
        assert course.results[student]["notes"] == [], f"{student}: {course.results[student]['notes']}"


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
    assert any("ran longer than 20 s" in note for note in course.results["loops"]["notes"]), course.results["loops"]
    # only the looping cell may wait for the timeout
    assert course.results["loops"]["seconds"] < 60, course.results["loops"]
    assert course.grade_seconds < 150, f"grading the first round took {course.grade_seconds:.0f} s"


def test_a_labs_own_attacks_get_their_expected_scores(course):
    """Does each of the lab's own attack fixtures (the package's answers called, the notebook's
    templates redefined, ...) get exactly its expected score, nothing reported as tampering?"""
    others = other_fixtures(course.lab)
    if not others:
        pytest.skip(f"labs/{course.lab}/fixtures has only the three every lab has")
    for name in others:
        want = expected_score(course, name)
        cells, total = course.grades(name)
        assert total == want, f"{name}: scored {total}, expected {want}: {cells}"
        assert course.results[name]["tampering"] == [], course.results[name]


def test_tampering_with_vmkit_does_not_fool_the_hidden_tests(course):
    """Does a submission that replaces vmkit.run, edits result objects and patches vmkit.grading and
    graders still lose every hidden point, scoring what its wrong answers deserve?"""
    want = expected_score(course, "monkeypatch")
    cells, total = course.grades("monkeypatch")
    for name in course.hidden_cells():
        assert cells[name][0] == 0, f"{name}: the tampering earned {cells[name][0]} hidden points"
    assert total == want, f"scored {total}, expected {want}: {cells}"


# --- what a sandbox defeats ---------------------------------------------------------------------------
def test_an_attack_scores_only_what_its_honest_work_earns(course):
    """Does each attack (writing the gradebook, rewriting vmkit and graders/, running the source
    notebook's solutions, unbounded memory, a guest with no budget) score what the submission it was
    put into earns without it, and is none of them reported as tampering, since none got through?"""
    full = course.results["solution"]["max_score"]
    for attack, base in course.attacks.items():
        result = course.attack_results[f"attack-{attack}"]
        assert result["score"] == (full if base == "solution" else 0), result
        assert result["tampering"] == [], result
    assert "TAMPERING" not in course.attack_printed, course.attack_printed


def test_the_attacks_leave_the_disk_and_the_gradebook_as_they_were(course):
    """After the attacks: are the vmkit package (byte code included), labs/ and graders/ byte-identical,
    every gradebook row of the students graded before unchanged, no extra credit or manual score
    anywhere, and a blank graded after them still worth 0?"""
    (files_before, rows_before), (files_after, rows_after) = course.before_attacks, course.after_attacks
    changed = sorted(path for path in set(files_before) | set(files_after) if files_before.get(path) != files_after.get(path))
    assert not changed, f"changed by the attacks: {changed}"
    assert rows_after == rows_before
    import sqlite3
    with sqlite3.connect(f"file:{course.path('gradebook.db')}?mode=ro", uri=True) as db:
        assert db.execute("select count(*) from grade where extra_credit is not null or manual_score is not null"
                          ).fetchone() == (0,)
    assert course.attack_results["blank-after-the-attacks"]["score"] == 0


def test_a_kernel_past_its_memory_limit_is_stopped_and_says_so(course):
    """Is the submission that allocates without bound stopped at the memory limit, its line saying
    so, and is the grading carried on with the next student? (The first lab only: the sandbox is the
    same for every lab.)"""
    if "memory" not in course.attacks:
        pytest.skip("the attacks on the sandbox run against the first lab only")
    result = course.attack_results["attack-memory"]
    assert any("GiB of memory, over the limit" in note for note in result["notes"]), result
    assert result["seconds"] < 60, result
    assert "blank-after-the-attacks" in course.attack_results


def test_a_guest_with_no_budget_costs_one_cell_not_the_notebook(course):
    """Is a guest run with max_instructions=None and timeout=None interrupted at the per-cell
    timeout, so that the solution it was put into keeps its full marks? (The first lab only: it
    costs the timeout, and the sandbox stops it the same way in every lab.)"""
    if "unbounded_guest" not in course.attacks:
        pytest.skip("runs against the first lab only")
    result = course.attack_results["attack-unbounded_guest"]
    assert result["score"] == result["max_score"] > 0, result
    assert any("ran longer than 20 s" in note for note in result["notes"]), result
    assert result["seconds"] < 60, result


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
