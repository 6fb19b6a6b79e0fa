"""nbgrader's configuration for this course: labs/<lab>/<lab>.ipynb are the source notebooks.

Instructors: see labs/README.md for the whole cycle (generate, release, collect, autograde,
feedback, export). Students never need this file: `python3 course.py release` writes their
versions of the labs into release/.
"""
c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.source_directory = "labs"
c.CourseDirectory.release_directory = "release"

# Files beside a lab that never reach students: each lab's fixtures/ holds the wrong, looping and
# tampering submissions that tests/test_grading.py grades, with the scores they must get.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "fixtures"]

# The slowest cell of a lab's solution takes about a second. A submission stuck in a loop costs the
# grader this many seconds per cell; the kernel is then interrupted, the cell scores 0 and the
# remaining cells are graded as usual.
c.Execute.timeout = 20
c.Execute.interrupt_on_timeout = True

# What replaces a solution region in the students' version.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Grading decides each graded cell in the grader's process, not in the student's kernel: after a
# graded cell runs, graders/probing.py asks the kernel for the student's answers on the cell's cases
# (graders/<lab>.py, PROBES) and compares them with the reference answers it computes itself.
# nbgrader's own steps otherwise, in nbgrader's order (nbgrader/converters/autograde.py).
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))      # the course directory: graders/
c.Autograde.autograde_preprocessors = [
    "graders.probing.ProbingExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
