"""How long nbgrader takes to autograde a class's submissions of lab 1, on this machine.

    .venv/bin/python tests/benchmarks/grading.py [submissions]

A temporary course (nbgrader's configuration, lab 1 and graders/) gets lab 1's release and
`submissions` (default 30) students: half hand in the solution, half the plausible wrong answers of
labs/lab1_rings/fixtures/wrong.ipynb. One `nbgrader autograde` grades them all, as an instructor
would after collecting. Reported: seconds per submission (target: at most 10) and for the whole
class. Each submission runs in its own fresh kernel, one after the other: the time grows linearly
with the class.
"""
import os
import sys
import tempfile
import time

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from test_grading import LABS_DIR, Course, make_course, nbgrader, submission_from_fixture  # noqa: E402

LAB = "lab1_rings"
TARGET_SECONDS = 10.0


def main(argv):
    count = int(argv[1]) if len(argv) > 1 else 30
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
            course.submit(student, solution if i % 2 == 0 else wrong)

        start = time.perf_counter()
        nbgrader(root, "autograde", LAB, "--force", timeout=60 * count)
        seconds = time.perf_counter() - start

        scores = sorted({course.grades(student)[1] for student in students})
    per = seconds / count
    print(f"autograded {count} submissions of {LAB} on {os.cpu_count()} cores")
    print(f"  whole class:     {seconds:6.1f} s")
    print(f"  per submission:  {per:6.2f} s   (target <= {TARGET_SECONDS:g} s: "
          f"{'met' if per <= TARGET_SECONDS else 'MISSED'})")
    print(f"  scores seen:     {', '.join(f'{s:g}' for s in scores)} (solution 20, wrong answers 9)")
    return 0 if per <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
