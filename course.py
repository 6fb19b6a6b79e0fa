#!/usr/bin/env python3
"""Set up the course and use it. Needs only Python 3.11+; everything else it installs.

    python3 course.py open     install what is missing, then open JupyterLab on the first lesson
    python3 course.py test     install what is missing (and the test tools), then run every test
    python3 course.py bench    run the benchmarks and print the ratios they measure
    python3 course.py speed    run every lesson and lab solution in a fresh kernel, time each notebook
    python3 course.py release  write the students' version of every lab (no solutions, no hidden tests) to release/,
                               and the students' copy of the course (no answers, no grader) to vmkit-course-student/
    python3 course.py grade LAB DIR [--json PATH]
                               autograde every DIR/<student>/LAB.ipynb through nbgrader, each in a sandbox
    python3 course.py doctor   say what this machine offers (nasm, dot, qemu, /dev/kvm)

Python packages go into a virtual environment in .venv beside this file. System tools come from
apt when this runs as root (or with password-less sudo); otherwise the message names the command.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
BIN = os.path.join(VENV, "bin")
PYTHON = os.path.join(BIN, "python")
FIRST_LESSON = os.path.join("lessons", "00_why_virtualize.ipynb")

# program -> (Debian package, why the course needs it)
COURSE_TOOLS = {"nasm": ("nasm", "assembles the guest kernels"),
                "dot": ("graphviz", "draws the lessons' diagrams")}
GRADE_TOOLS = {"bwrap": ("bubblewrap", "the sandbox `course.py grade` runs each submission in")}
LINUX_ONLY = {"bubblewrap"}
TEST_TOOLS = {"qemu-system-i386": ("qemu-system-x86", "the reference the differential tests compare against"),
              "chromium": ("chromium", "the browser the JupyterLab end-to-end tests drive")}


def say(message):
    print(f"[course] {message}", flush=True)


def system_tools(tools):
    """Install missing programs with apt where this process may; otherwise explain how."""
    missing = {prog: info for prog, info in tools.items() if not shutil.which(prog)}
    if not missing:
        return
    packages = sorted({pkg for pkg, _ in missing.values()})
    apt = shutil.which("apt-get")
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") and
                                         subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
                                         else None)
    if apt and sudo is not None:
        say(f"installing {', '.join(packages)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(sudo + [apt, "update", "-qq"], env=env)
        subprocess.run(sudo + [apt, "install", "-y", "-qq", "--no-install-recommends"] + packages, env=env)
    for prog, (pkg, why) in missing.items():
        if not shutil.which(prog):
            elsewhere = (f"conda: conda install -c conda-forge {pkg}; macOS: brew install {pkg}"
                         if pkg not in LINUX_ONLY else "Linux only: it builds on Linux namespaces")
            say(f"{prog} is missing ({why}). Install it with:  sudo apt-get install {pkg}   ({elsewhere})")


def python_packages(extras):
    """Create .venv and install the course (with `extras`) when pyproject.toml changed since last time."""
    if not os.path.exists(PYTHON):
        say("creating the virtual environment in .venv")
        venv.EnvBuilder(with_pip=True).create(VENV)
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as f:
        want = hashlib.sha256(f.read() + extras.encode()).hexdigest()
    stamp = os.path.join(VENV, f".installed-{extras or 'course'}")
    if os.path.exists(stamp) and open(stamp).read() == want:
        return
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as f:
        with_tests = hashlib.sha256(f.read() + b"test").hexdigest()
    test_stamp = os.path.join(VENV, ".installed-test")
    if not extras and os.path.exists(test_stamp) and open(test_stamp).read() == with_tests:
        return                                      # the test tools' install holds the course's
    say("installing the Python packages (once; later runs skip this)")
    target = f"{HERE}[{extras}]" if extras else HERE
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "-e", target], check=True)
    with open(stamp, "w") as f:
        f.write(want)


def run_in_venv(argv, here=True):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    if here:
        os.chdir(HERE)
    os.execve(argv[0], argv, env)


def release(course=HERE, bundle=None):
    """nbgrader generate_assignment for every lab in labs/, into release/<lab>/<lab>.ipynb (nbgrader's
    release folder), then the students' copy of the course: student_bundle()."""
    labs = sorted(name for name in os.listdir(os.path.join(course, "labs"))
                  if os.path.isfile(os.path.join(course, "labs", name, f"{name}.ipynb")))
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    with tempfile.TemporaryDirectory() as scratch:      # a throw-away gradebook: nothing is graded here
        for lab in labs:
            subprocess.run([os.path.join(BIN, "nbgrader"), "generate_assignment", lab, "--force",
                            f"--db=sqlite:///{os.path.join(scratch, 'gradebook.db')}", "--log-level=WARN"],
                           cwd=course, env=env, check=True)
    for lab in labs:
        say(f"students' version: {os.path.join('release', lab, lab + '.ipynb')}")
    bundle = student_bundle(course, labs, bundle or os.path.join(course, STUDENT_BUNDLE))
    say(f"the students' copy of the course: {bundle} (and {bundle}.zip): hand that out; "
        f"labs/README.md says how to collect and grade")


# What students get: the course without what grades it. Not graders/ (the reference answers and the
# hidden cases), labs/'s sources and fixtures, tests/, autograde.py or nbgrader_config.py.
STUDENT_BUNDLE = "vmkit-course-student"
STUDENT_FILES = ("README.md", "course.py", "pyproject.toml", "environment.yml")
STUDENT_FOLDERS = ("vmkit", "lessons", "docs")


def student_bundle(course, labs, target):
    """Copy the students' course to `target` (replacing it) and zip it beside: the files and folders
    above, and each lab as released, labs/<lab>/<lab>.ipynb."""
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    for name in STUDENT_FILES:
        shutil.copy(os.path.join(course, name), target)
    for name in STUDENT_FOLDERS:
        shutil.copytree(os.path.join(course, name), os.path.join(target, name),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints"))
    for lab in labs:
        os.makedirs(os.path.join(target, "labs", lab))
        shutil.copy(os.path.join(course, "release", lab, f"{lab}.ipynb"), os.path.join(target, "labs", lab))
    shutil.make_archive(target, "zip", os.path.dirname(target), os.path.basename(target))
    return target


def main(argv):
    command = argv[1] if len(argv) > 1 else "open"
    rest = argv[2:]
    if command == "open":
        system_tools(COURSE_TOOLS)
        python_packages("")
        say(f"opening JupyterLab on {FIRST_LESSON}")
        extra = ["--allow-root"] if os.geteuid() == 0 else []
        run_in_venv([os.path.join(BIN, "jupyter"), "lab", FIRST_LESSON] + extra + rest)
    elif command in ("test", "bench", "speed", "release", "grade") and not os.path.isdir(os.path.join(HERE, "graders")):
        say(f"this is the students' copy of the course: `{command}` needs the instructor's (with tests/, graders/ "
            f"and the labs' sources)")
        return 2
    elif command == "test":
        system_tools({**COURSE_TOOLS, **GRADE_TOOLS, **TEST_TOOLS})
        python_packages("test")
        run_in_venv([PYTHON, "-m", "pytest"] + rest)
    elif command == "bench":
        system_tools(COURSE_TOOLS)
        python_packages("test")
        run_in_venv([PYTHON, os.path.join("tests", "benchmarks", "run.py")] + rest)
    elif command == "speed":
        system_tools(COURSE_TOOLS)
        python_packages("test")
        run_in_venv([PYTHON, os.path.join("tests", "benchmarks", "course_speed.py")] + rest)
    elif command == "release":
        python_packages("")
        release()
    elif command == "grade":
        system_tools({**COURSE_TOOLS, **GRADE_TOOLS})
        if os.path.realpath(sys.prefix) != os.path.realpath(VENV):     # run by the course's Python: set up already
            python_packages("")
        run_in_venv([PYTHON, os.path.join(HERE, "autograde.py")] + rest, here=False)     # DIR as the user typed it
    elif command == "doctor":
        python_packages("")
        run_in_venv([PYTHON, "-c", "import vmkit; print(vmkit.doctor())"])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
