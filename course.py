#!/usr/bin/env python3
"""Set up the course and use it. Needs only Python 3.11+; everything else it installs.

    python3 course.py open     install what is missing, then open JupyterLab on the first lesson
    python3 course.py test     install what is missing (and the test tools), then run every test on two
                               workers, and say how long they took (pytest's own arguments may follow)
    python3 course.py bench    run the benchmarks and print the ratios they measure
    python3 course.py speed    run every lesson and lab solution in a fresh kernel, time each notebook
    python3 course.py release  write the students' version of every lab (no solutions, no hidden tests) to release/,
                               and the students' copy of the course (no answers, no grader) to vmkit-course-student/
    python3 course.py grade LAB DIR [--json PATH]
                               autograde every DIR/<student>/LAB.ipynb through nbgrader, each in a sandbox
    python3 course.py book [DIR]
                               run every lesson in a fresh kernel and write the course as a static site
                               to DIR (default book/): lessons with their outputs and widgets, labs as
                               students get them; open DIR/index.html, or publish DIR on any static host
    python3 course.py doctor   say what this machine offers (nasm, dot, qemu, /dev/kvm)

Python packages go into a virtual environment in .venv beside this file. System tools come from
apt when this runs as root (or with password-less sudo); otherwise the message names the command.
Each set-up step prints one line, what it does and how long it took; what apt and pip print goes to
.venv/setup.log, shown (its last lines and its path) only when a step fails.
"""
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
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
BOOK_TOOLS = {"npm": ("npm", "fetches the widget manager's JavaScript for the book, once")}
TEST_TOOLS = {"qemu-system-i386": ("qemu-system-x86", "the reference the differential tests compare against"),
              "chromium": ("chromium", "the browser the JupyterLab end-to-end tests drive")}


def say(message):
    print(f"[course] {message}", flush=True)


SETUP_LOG = os.path.join(VENV, "setup.log")
LOG_LINES_SHOWN = 25


class StepFailed(Exception):
    """A set-up step's command failed; its output is in SETUP_LOG."""


def step(what, commands, env=None):
    """One set-up step as one line: `what`, then how long it took. Each command is an argv or a
    function to call. What the commands print goes to SETUP_LOG (appended to, each step under a
    heading); when one fails, the line says so, the last lines this step wrote follow with the
    log's path, and StepFailed is raised."""
    os.makedirs(VENV, exist_ok=True)
    print(f"[course] {what} ...", end="", flush=True)
    started = time.monotonic()
    with open(SETUP_LOG, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {what}\n")
        log.flush()
        began = log.tell()                       # what this step wrote starts here
        for argv in commands:
            if callable(argv):                   # a step done in this process
                argv()
                continue
            log.write(f"\n$ {' '.join(argv)}\n")
            log.flush()
            done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            if done.returncode != 0:
                print(f" FAILED after {time.monotonic() - started:.0f} s (exit status {done.returncode})", flush=True)
                log.flush()
                with open(SETUP_LOG, errors="replace") as f:
                    f.seek(began)
                    tail = f.read().splitlines()[-LOG_LINES_SHOWN:]
                print("\n".join("    " + line for line in tail))
                say(f"the whole log: {SETUP_LOG}")
                raise StepFailed(what)
    print(f" {time.monotonic() - started:.0f} s", flush=True)


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
    failed = False
    if apt and sudo is not None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            step(f"installing {', '.join(packages)} with apt-get",
                 [sudo + [apt, "update", "-qq"],
                  sudo + [apt, "install", "-y", "-qq", "--no-install-recommends"] + packages], env=env)
        except StepFailed:
            failed = True
    for prog, (pkg, why) in missing.items():
        if not shutil.which(prog):
            elsewhere = (f"conda: conda install -c conda-forge {pkg}; macOS: brew install {pkg}"
                         if pkg not in LINUX_ONLY else "Linux only: it builds on Linux namespaces")
            say(f"{prog} is missing ({why}). Install it with:  sudo apt-get install {pkg}   ({elsewhere})")
    if failed:
        raise StepFailed("apt-get")


def stamp_path(part):
    return os.path.join(VENV, f".installed-{part}")


def installed(part, want):
    """Whether `part` (the course's own packages, or one extra) was installed from this pyproject.toml."""
    path = stamp_path(part)
    return os.path.exists(path) and open(path).read() == want


def python_packages(*extras):
    """Create .venv and install the course's packages, and each extra in `extras`, unless its own stamp
    says it was installed from this pyproject.toml already. Every install of an extra installs the
    course's packages too, so it stamps both: no command reinstalls what another installed."""
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    missing = [extra for extra in extras if not installed(extra, want)]
    if os.path.exists(PYTHON) and installed("course", want) and not missing:
        return
    if not os.path.exists(PYTHON):
        step("creating the virtual environment in .venv", [lambda: venv.EnvBuilder(with_pip=True).create(VENV)])
    target = f"{HERE}[{','.join(missing)}]" if missing else HERE
    step("installing the Python packages" + (f" with {', '.join(missing)}" if missing else "")
         + " (once; later runs skip this)",
         [[PYTHON, "-m", "pip", "install", "--upgrade", "--disable-pip-version-check", "pip"],
          [PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-e", target]])
    for part in ("course", *missing):
        with open(stamp_path(part), "w") as f:
            f.write(want)
    jupyterlab_settings()


NATIVE_SOURCES = os.path.join(HERE, "vmkit", "machine")     # its *.c and *.h


def native_helpers():
    """Build vmkit's C helpers (vmkit/machine/*.c: counting instructions per block, delivering
    interrupts; vmkit.machine.native) with the system's C compiler into .venv, once per version of
    their sources. Without them vmkit uses its Python reference, slower, with the same results: a
    failure is reported and set-up goes on."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(NATIVE_SOURCES)):
        if not name.endswith((".c", ".h")):
            continue
        with open(os.path.join(NATIVE_SOURCES, name), "rb") as f:
            digest.update(f.read())
    want = digest.hexdigest()
    if installed("native-helpers", want):
        return
    try:
        step("building vmkit's C helpers (block counter, interrupt delivery) with the system's compiler",
             [[PYTHON, "-m", "vmkit.machine.native", "build"]])
    except StepFailed:
        say("vmkit will count instructions and deliver interrupts the slower way; `python3 course.py doctor` says why")
        return
    with open(stamp_path("native-helpers"), "w") as f:
        f.write(want)


# JupyterLab as the course opens it: no pop-up asking about Jupyter's news, no update check. The
# frontend's settings are @jupyterlab/apputils-extension:notification's fetchNews ("false": never) and
# checkForUpdates (JupyterLab's docs, user/announcements), given as defaults for this environment
# through the app settings directory, <sys.prefix>/share/jupyter/lab/settings, whose overrides.d/*.json
# and overrides.json jupyterlab_server merges over the plugins' schemas (settings_utils.py,
# _get_overrides); a student can still change them. The server side is switched off too, through the
# environment's jupyter_server_config.d: LabApp.news_url and LabApp.check_for_updates_class
# (jupyterlab.NeverCheckForUpdate), the options the same page names.
LAB_OVERRIDES = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}
SERVER_CONFIG = {"LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}}


def jupyterlab_settings(prefix=VENV):
    """Write the course's JupyterLab defaults into the environment at `prefix`."""
    for folder, name, values in ((("share", "jupyter", "lab", "settings", "overrides.d"), "vmkit-course.json", LAB_OVERRIDES),
                                 (("etc", "jupyter", "jupyter_server_config.d"), "vmkit-course.json", SERVER_CONFIG)):
        path = os.path.join(prefix, *folder)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, name), "w") as f:
            json.dump(values, f, indent=2)


# The widget manager that draws the book's widgets from their saved state: the stand-alone bundle of
# @jupyter-widgets/html-manager (the one nbconvert's pages load from a CDN, for ipywidgets 8), taken
# from the npm registry once and kept in the environment, so that the book needs no CDN when viewed.
WIDGET_MANAGER_PACKAGE = "@jupyter-widgets/html-manager@1"
WIDGET_MANAGER = os.path.join(VENV, "share", "vmkit-course", "html-manager")


def widget_manager():
    """Fetch the html-manager's dist/ (embed.js and the icon fonts it refers to) into WIDGET_MANAGER."""
    if os.path.exists(os.path.join(WIDGET_MANAGER, "embed.js")):
        return
    if not shutil.which("npm"):
        say("npm is missing, so the book's widgets cannot be drawn: sudo apt-get install npm")
        return

    def unpack():

        [tgz] = glob.glob(os.path.join(scratch, "*.tgz"))
        os.makedirs(WIDGET_MANAGER, exist_ok=True)
        with tarfile.open(tgz) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.startswith("package/dist/") and not member.name.endswith(".map"):
                    with archive.extractfile(member) as src, open(os.path.join(WIDGET_MANAGER, os.path.basename(member.name)), "wb") as dst:
                        shutil.copyfileobj(src, dst)

    with tempfile.TemporaryDirectory() as scratch:
        step(f"fetching the widget manager's JavaScript ({WIDGET_MANAGER_PACKAGE}) with npm, once",
             [["npm", "pack", "--silent", WIDGET_MANAGER_PACKAGE, "--pack-destination", scratch], unpack])


# `course.py test` runs the suite on two pytest-xdist workers, the cores of the machines it is run on
# (a third would only wait for one). --dist loadgroup sends the tests of one xdist_group to one
# worker, so a fixture they share (a lab's graded course, a JupyterLab server) is built once, and
# --no-loadscope-reorder hands out the groups in the order tests/conftest.py puts them (the longest
# first) rather than by their number of tests. Arguments that choose otherwise (-n, --dist,
# -p no:xdist, --pdb, which needs one process) are left as they are.
TEST_WORKERS = 2


def pytest_arguments(rest):
    """pytest's arguments for `course.py test`: `rest`, on TEST_WORKERS workers unless it says otherwise."""
    chosen = any(arg in ("-n", "--numprocesses", "--dist", "--pdb", "--trace") or
                 arg.startswith(("--numprocesses=", "--dist=", "--max-worker-restart")) or
                 (arg.startswith("-n") and not arg.startswith("--")) or "no:xdist" in arg for arg in rest)
    return list(rest) if chosen else ["-n", str(TEST_WORKERS), "--dist", "loadgroup", "--no-loadscope-reorder", *rest]


def minutes(seconds):
    """'13 min 40 s', or '52 s' under a minute."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s" if whole >= 60 else f"{whole} s"


def run_timed(argv, what):
    """Run `argv` in the environment, in this folder, and say how long it took when it ends (its exit
    status is returned). A Ctrl-C reaches it too: this process waits for it to report and end."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    started = time.monotonic()
    child = subprocess.Popen(argv, cwd=HERE, env=env)
    while True:
        try:
            status = child.wait()
            break
        except KeyboardInterrupt:
            continue
    say(f"{what} took {minutes(time.monotonic() - started)}")
    return status


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
        for k, lab in enumerate(labs, 1):
            started = time.monotonic()
            subprocess.run([os.path.join(BIN, "nbgrader"), "generate_assignment", lab, "--force",
                            f"--db=sqlite:///{os.path.join(scratch, 'gradebook.db')}", "--log-level=WARN"],
                           cwd=course, env=env, check=True)
            say(f"[{k}/{len(labs)}] students' version: {os.path.join('release', lab, lab + '.ipynb')} "
                f"({time.monotonic() - started:.0f} s)")
    bundle = student_bundle(course, labs, bundle or os.path.join(course, STUDENT_BUNDLE))
    say(f"the students' copy of the course: {bundle} (and {bundle}.zip): hand that out; "
        f"labs/README.md says how to collect and grade")


# What students get: the course without what grades it. Not graders/ (the reference answers and the
# hidden cases), labs/'s sources and fixtures, tests/, autograde.py or nbgrader_config.py.
STUDENT_BUNDLE = "vmkit-course-student"
STUDENT_FILES = ("README.md", "course.py", "book.py", "pyproject.toml", "environment.yml")
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
    try:
        return command_line(command, rest)
    except StepFailed:
        say("set-up stopped there: once what the log shows is fixed, run the same command again")
        return 1


def command_line(command, rest):
    if command == "open":
        system_tools(COURSE_TOOLS)
        python_packages()
        native_helpers()
        jupyterlab_settings()
        say(f"opening JupyterLab on {FIRST_LESSON}")
        extra = ["--allow-root"] if os.geteuid() == 0 else []
        run_in_venv([os.path.join(BIN, "jupyter"), "lab", FIRST_LESSON] + extra + rest)
    elif command == "book":
        system_tools({**COURSE_TOOLS, **BOOK_TOOLS})
        python_packages("book")
        widget_manager()
        run_in_venv([PYTHON, "book.py"] + rest)
    elif command in ("test", "bench", "speed", "release", "grade") and not os.path.isdir(os.path.join(HERE, "graders")):
        say(f"this is the students' copy of the course: `{command}` needs the instructor's (with tests/, graders/ "
            f"and the labs' sources)")
        return 2
    elif command == "test":
        system_tools({**COURSE_TOOLS, **GRADE_TOOLS, **TEST_TOOLS, **BOOK_TOOLS})
        python_packages("test", "book")
        native_helpers()
        widget_manager()                                # the browser tier builds the book
        return run_timed([PYTHON, "-m", "pytest", *pytest_arguments(rest)], "tests")
    elif command == "bench":
        system_tools(COURSE_TOOLS)
        python_packages("test")
        native_helpers()
        run_in_venv([PYTHON, os.path.join("tests", "benchmarks", "run.py")] + rest)
    elif command == "speed":
        system_tools(COURSE_TOOLS)
        python_packages("test")
        native_helpers()
        run_in_venv([PYTHON, os.path.join("tests", "benchmarks", "course_speed.py")] + rest)
    elif command == "release":
        python_packages()
        release()
    elif command == "grade":
        system_tools({**COURSE_TOOLS, **GRADE_TOOLS})
        if os.path.realpath(sys.prefix) != os.path.realpath(VENV):     # run by the course's Python: set up already
            python_packages()
            native_helpers()
        run_in_venv([PYTHON, os.path.join(HERE, "autograde.py")] + rest, here=False)     # DIR as the user typed it
    elif command == "doctor":
        python_packages()
        native_helpers()
        run_in_venv([PYTHON, "-c", "import vmkit; print(vmkit.doctor())"])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
