"""How long grading a class's submissions of lab 1 takes on this machine, in the sandbox and without;
and how long one submission of each lab takes.

    .venv/bin/python tests/benchmarks/grading.py [submissions]
    .venv/bin/python tests/benchmarks/grading.py --every-lab

A temporary course (nbgrader's configuration, lab 1 and graders/) gets lab 1's release and
`submissions` (default 10) students: half hand in the solution, half the plausible wrong answers of
labs/lab1_rings/fixtures/wrong.ipynb. `python3 course.py grade` grades them all, each kernel in its
sandbox (autograde.py); then one plain `nbgrader autograde` grades the same submissions again, each
kernel as this user, side by side. Reported: seconds per submission in the sandbox (target: at most
15) and plainly, their ratio, and the seconds for the whole class. Submissions are graded one after
the other: the time grows linearly with the class.

With --every-lab, each lab's solution is handed in once, in a course of its own, and graded in the
sandbox: the seconds nbgrader's autograde took for it (the lab's probes and their runs included),
against the same target.
"""
import json
import os
import sys
import tempfile
import time

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from test_grading import LABS_DIR, Course, make_course, nbgrader, submission_from_fixture  # noqa: E402

LAB = "lab1_rings"
TARGET_SECONDS = 15.0


def main(argv):
    count = int(argv[1]) if len(argv) > 1 else 10
    with tempfile.TemporaryDirectory() as root:
        make_course(root, LAB)
        course = Course(root, LAB)
        nbgrader(root, "generate_assignment", LAB, "--force")
        release = course.notebook("release")
        solution = course.notebook("labs")
        wrong = submission_from_fixture(release, nbformat.read(
            os.path.join(LABS_DIR, LAB, "fixtures", "wrong.ipynb"), as_version=4))
        students = [f"student{i:02d}" for i in range(count)]
        for i, student in enumerate(students):
            course.hand_in("handed-in", student, solution if i % 2 == 0 else wrong)

        results, _, sandboxed = course.grade("handed-in")
        sandboxed_scores = sorted({result["score"] for result in results.values()})
        start = time.perf_counter()
        nbgrader(root, "autograde", LAB, "--force", timeout=60 * count)
        plain = time.perf_counter() - start
        plain_scores = sorted({course.grades(student)[1] for student in students})
    wrong_score = json.dumps(nbformat.read(os.path.join(LABS_DIR, LAB, "fixtures", "wrong.ipynb"), as_version=4)
                             .metadata["grading_fixture"]["expected_score"])
    per, per_plain = sandboxed / count, plain / count
    print(f"graded {count} submissions of {LAB} on {os.cpu_count()} cores")
    print(f"  in the sandbox (course.py grade): {sandboxed:6.1f} s, {per:5.2f} s per submission "
          f"(target <= {TARGET_SECONDS:g} s: {'met' if per <= TARGET_SECONDS else 'MISSED'})")
    print(f"  plain nbgrader autograde:         {plain:6.1f} s, {per_plain:5.2f} s per submission")
    print(f"  sandbox / plain:                  {per / per_plain:6.2f}x")
    print(f"  scores seen: sandbox {', '.join(f'{s:g}' for s in sandboxed_scores)}; plain "
          f"{', '.join(f'{s:g}' for s in plain_scores)} (solution 20, wrong answers {wrong_score})")
    return 0 if per <= TARGET_SECONDS and sandboxed_scores == plain_scores else 1


def every_lab():
    """One solution of each lab graded in the sandbox: seconds per lab against the target."""
    labs = sorted((name for name in os.listdir(LABS_DIR) if os.path.isdir(os.path.join(LABS_DIR, name))),
                  key=lambda name: int(name[3:].split("_")[0]))
    print(f"one solution of each lab, graded in the sandbox on {os.cpu_count()} cores (target <= {TARGET_SECONDS:g} s)")
    missed = []
    for lab in labs:
        with tempfile.TemporaryDirectory() as root:
            make_course(root, lab)
            course = Course(root, lab)
            course.hand_in("handed-in", "solution", course.notebook("labs"))
            results, _, _ = course.grade("handed-in")
            result = results["solution"]
        ok = result["seconds"] <= TARGET_SECONDS and result["score"] == result["max_score"]
        missed += [] if ok else [lab]
        print(f"  {lab:26} {result['seconds']:6.1f} s  {result['score']:g}/{result['max_score']:g}"
              f"{'' if ok else '  MISSED'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(every_lab() if sys.argv[1:] == ["--every-lab"] else main(sys.argv))
