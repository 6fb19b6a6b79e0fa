"""Autograde a lab's submissions through nbgrader, each submission's kernel in a bubblewrap sandbox.

    python3 course.py grade LAB DIR [--json PATH] [--course COURSE] [--memory 2G] [--cpu 600] [--unsandboxed]

DIR holds one folder per student with the notebook in it: DIR/<student>/<LAB>.ipynb, or nbgrader's
own layout DIR/<student>/<LAB>/<LAB>.ipynb (so `nbgrader collect` followed by
`course.py grade LAB submitted` grades in place). Each is copied to the course's
submitted/<student>/<LAB>/ and autograded by nbgrader into the course's gradebook, one student at a
time; then one line per student is printed, `<student> <score>/<max>`, with `TAMPERING: ...` lines
under it where something changed that no submission may change, and the same is written as JSON
with --json. The course directory is the instructor's own (the folder of this file, or --course):
the one `nbgrader generate_feedback` and `nbgrader export` read afterwards.

How the sandbox fits nbgrader. nbgrader, its gradebook, graders/ (the reference answers, the hidden
cases and the probes that decide every graded cell: graders/probing.py) stay in this process,
outside the sandbox; only the kernel that runs the notebook's code goes in. nbgrader's autograde
executes a notebook by starting the kernel named by `Execute.kernel_name` from its kernel spec
(nbclient's NotebookClient, through jupyter_client), so this module writes a kernel spec whose argv
starts `python autograde.py kernel SPEC`: that small launcher (`kernel()` below) sets the CPU-time
limits, starts `bwrap ... python -m ipykernel_launcher -f CONNECTION_FILE` and watches the
sandbox's memory from outside. The kernel talks to nbgrader over jupyter's IPC transport (Unix
sockets in a per-submission folder, the only folder bound writable), so it needs no network: it
runs in new user, PID, network, IPC and UTS namespaces. Interrupts go as messages
(`interrupt_mode: message`), since a signal to the launcher does not cross into the sandbox; so
nbgrader's per-cell timeout (`c.Execute.timeout` in nbgrader_config.py) interrupts a cell as
before. The other design, running all of `nbgrader autograde` for one submission inside a sandbox
with a copy of the notebook with its hidden tests and a throw-away gradebook, would put both in
reach of the student's code and make this process trust scores computed in there; here a
submission's code sees a hidden case only when the grader asks for its answer on it, never sees a
reference answer or a gradebook, and nbgrader writes the scores itself, as it always does.

What the kernel sees: the system's /usr (and /bin, /lib, ... as on the host), a few files of /etc,
the Python installation and virtual environment and the vmkit package, all read-only; an empty
course directory (read-only) around them, so the gradebook, graders/ (the reference answers and
the hidden cases), labs/ (the solutions), the fixtures, submitted/, autograded/ and every
other submission are not there; its own working folder autograded/<student>/<LAB>/, empty and
writable, like /tmp (both small tmpfs that vanish with the sandbox); no /dev/kvm (lab 5's checks
on a real KVM then skip, as on a CI runner: the model decides every point). Limits: CPU time per
process (RLIMIT_CPU, --cpu), file size, no core files, the memory of all the sandbox's processes
together (--memory, watched by the launcher: a limit on address space cannot work here, since
every Unicorn machine reserves a large translation buffer it never touches), at most 64 processes,
and nbgrader's wall-clock limit per cell. A kernel stopped by a limit dies with its sandbox; nbgrader
then records no grade for that submission and its line says why.

After each submission this process checks, from outside, that nothing that no submission may change
has changed: every file of the vmkit package, graders/, labs/ and nbgrader_config.py (SHA-256), and
every row of the gradebook outside this submission's own grades; inside them, that no manual score
or extra credit appeared and that each cell's score is the one nbgrader's own rule gives the
autograded notebook. Anything else is reported as TAMPERING and grading stops, since the students
after would be graded against changed files. With the sandbox, these checks are a tripwire: the
sandbox has no way to write any of it.

Where bubblewrap is missing or cannot create namespaces here, grading stops with the reason;
`--unsandboxed` grades anyway, each kernel as this user with the same limits and checks.
"""
import argparse
import glob
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_NAME = "vmkit-sandbox"
MEMORY = 2 << 30                # bytes, all the sandbox's processes together
CPU_SECONDS = 300               # all the sandbox's processes together; nbgrader's per-cell timeout comes first
FILE_BYTES = 64 << 20           # the largest file a kernel may write, and the size of its tmpfs
MAX_PROCESSES = 64
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "passwd", "group",
       "nsswitch.conf", "fonts")


def say(message):
    print(message, flush=True)


# --- the sandbox ----------------------------------------------------------------------------------
def kernel_python(python):
    """Where the kernel's Python, its packages, vmkit and nasm live, asked of a clean interpreter."""
    probe = ("import importlib.util, json, os, shutil, sys\n"
             "spec = importlib.util.find_spec('vmkit')\n"
             "print(json.dumps({'executable': sys.executable, 'real': os.path.realpath(sys.executable),\n"
             "  'prefix': sys.prefix, 'base_prefix': sys.base_prefix, 'path': sys.path,\n"
             "  'package': spec and list(spec.submodule_search_locations)[0],\n"
             "  'tools': [shutil.which(t) for t in ('nasm', 'dot')]}))\n")
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd="/", env=kernel_environment())
    if done.returncode != 0:
        raise SystemExit(f"cannot start the kernel's Python {python}:\n{done.stderr}")
    found = json.loads(done.stdout)
    if not found["package"]:
        raise SystemExit(f"{python} cannot import vmkit: run `python3 course.py open` once to install it")
    return found


def kernel_environment():
    """What a sandboxed kernel keeps of this process's environment: PATH and PYTHONPATH (the
    sandbox's own PATH comes first)."""
    return {key: os.environ[key] for key in ("PATH", "PYTHONPATH") if key in os.environ}


def inside(path, folder):
    return os.path.commonpath([path, folder]) == folder


def sandbox_command(course, python, workdir, runtime):
    """bwrap's argv up to the kernel's command: what the submission's kernel can see, in order."""
    allowed = [os.path.realpath(python["prefix"]), os.path.realpath(python["package"])]   # may sit in the course
    read_only = []
    for path in [python["prefix"], python["base_prefix"], os.path.dirname(python["real"]), python["package"],
                 *python["path"], *(os.path.dirname(os.path.realpath(tool)) for tool in python["tools"] if tool)]:
        path = os.path.realpath(path) if path else ""
        if (not path or not os.path.exists(path) or inside(path, "/usr") or inside(course, path)
                or (inside(path, course) and not any(inside(path, folder) for folder in allowed))
                or any(inside(path, kept) for kept in read_only) or holds_a_course(path)):
            continue            # nothing, the system's, the course or a folder above it, bound already, or a course
        read_only = [kept for kept in read_only if not inside(kept, path)] + [path]
    # --disable-userns (bubblewrap 0.8) and --size (0.7) where this bwrap has them and is not setuid
    has = bwrap_options()
    size = (lambda: ["--size", str(FILE_BYTES)]) if "--size" in has else (lambda: [])
    command = ["bwrap", "--unshare-all", "--unshare-user", *(["--disable-userns"] if "--disable-userns" in has else []),
               "--uid", "65534", "--gid", "65534", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
               "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    for name in ETC:
        command += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    command += ["--proc", "/proc", "--dev", "/dev", *size(), "--tmpfs", "/tmp"]
    mounts = [(path, ["--ro-bind", path, path]) for path in read_only]
    mounts.append((course, ["--tmpfs", course]))
    mounts.append((runtime, ["--bind", runtime, runtime]))
    mounts.append((workdir, [*size(), "--tmpfs", workdir]))
    for _, args in sorted(mounts, key=lambda mount: mount[0].count(os.sep)):    # parents first
        command += args
    command += ["--remount-ro", course, "--chdir", workdir, "--clearenv"]
    path = ":".join(dict.fromkeys([os.path.dirname(python["executable"]), "/usr/local/bin", "/usr/bin", "/bin",
                                   *(os.path.dirname(t) for t in python["tools"] if t)]))
    for key, value in {**kernel_environment(), "PATH": path, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
                       "PYTHONDONTWRITEBYTECODE": "1", "NBGRADER_EXECUTION": "autograde"}.items():
        command += ["--setenv", key, value]
    return command + ["--", python["executable"]]


def holds_a_course(path):
    """Is `path` a course checkout (a folder with labs/ or graders/ in it), for example the course's own
    folder on PYTHONPATH? Its answers must stay out of the sandbox: only the vmkit package is bound."""
    return any(os.path.isdir(os.path.join(path, name)) for name in ("labs", "graders"))


def bwrap_options():
    """The options this machine's bwrap takes, from its --help (an empty set if it is setuid: then
    only the options every version has are used)."""
    path = shutil.which("bwrap")
    if not path or os.stat(path).st_mode & 0o4000:
        return set()
    done = subprocess.run([path, "--help"], capture_output=True, text=True)
    return {word for word in (done.stdout + done.stderr).split() if word.startswith("--")}


def sandbox_problem(course, python):
    """Why this machine cannot run the sandbox (None if it can), tried with a kernel's own set-up."""
    if not shutil.which("bwrap"):
        return ("bubblewrap (bwrap) is not installed. Install it with:  sudo apt-get install bubblewrap"
                "   (or run `python3 course.py grade ...` as root, which installs it)")
    with tempfile.TemporaryDirectory() as runtime:
        workdir = os.path.join(course, "autograded", "probe", "probe")
        check = ("import os, socket, sys, vmkit, ipykernel\n"
                 f"course = {course!r}\n"
                 "seen = [n for n in ('gradebook.db', 'graders', 'labs', 'submitted', 'nbgrader_config.py')\n"
                 "        if os.path.exists(os.path.join(course, n))]\n"
                 "assert not seen, f'the sandbox shows {seen}'\n"
                 "for folder in (os.path.dirname(vmkit.__file__),):\n"
                 "    try:\n"
                 "        open(os.path.join(folder, 'probe'), 'w')\n"
                 "    except OSError:\n"
                 "        continue\n"
                 "    sys.exit(f'{folder} is writable in the sandbox')\n"
                 "try:\n"
                 "    socket.create_connection(('1.1.1.1', 53), timeout=1)\n"
                 "    sys.exit('the sandbox reaches the network')\n"
                 "except OSError:\n"
                 "    pass\n")
        done = subprocess.run(sandbox_command(course, python, workdir, runtime) + ["-c", check],
                              capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return (f"bubblewrap cannot run a kernel's sandbox here: {done.stderr.strip()[-800:]}\n"
                "(bwrap needs user namespaces: on Debian/Ubuntu `sysctl kernel.unprivileged_userns_clone=1`, "
                "on Ubuntu 24.04 also `sysctl kernel.apparmor_restrict_unprivileged_userns=0`, or run as root; "
                "in a container, allow it to create namespaces)")
    return None


def sandbox_usage(root):
    """(resident bytes, CPU seconds, processes) of `root` and every process below it, from /proc."""
    parent, cpu = {}, {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.split("/")[2])
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    resident = 0
    for pid in found:
        try:
            with open(f"/proc/{pid}/statm") as f:
                resident += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError):
            pass
    return resident, sum(cpu.get(pid, 0) for pid in found), len(found)


def kernel(spec_path, kernel_args):
    """The kernel spec's command: start the kernel (in its sandbox) and keep it within its limits.

    Runs outside the sandbox, as the kernel process jupyter_client starts and stops. It watches the
    memory, CPU time and number of processes of everything below it, stops the kernel past a limit
    and says why in the spec's `verdict` file (outside the sandbox), before stopping it, since
    nbgrader then stops this process too. RLIMIT_CPU, a little above the limit, is the backstop."""
    with open(spec_path) as f:
        spec = json.load(f)

    def stopped(why):
        with open(spec["verdict"], "w") as f:
            f.write(f"its kernel was stopped {why}: nbgrader records no grade for it")
    with open(spec["log"], "ab") as log:     # the kernel's own stderr (the notebook's goes to the notebook)
        code = supervised(spec, ["-m", "ipykernel_launcher", *kernel_args], stopped, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=log, kill_on_signals=True)
    sys.exit(code if code >= 0 else 128 - code)


def clean_run(spec_path, python_args):
    """A fresh process in a sandbox like the kernel's, for the grader's own runs of a student's text
    answers (graders/probing.py, a Probe's `clean`): its standard input and output are this
    process's; a limit it crosses is said on standard error."""
    with open(spec_path) as f:
        spec = json.load(f)
    code = supervised(spec, python_args, lambda why: print(f"the grader's run of your answers was stopped {why}",
                                                           file=sys.stderr, flush=True))
    sys.exit(code if code >= 0 else 128 - code)


def supervised(spec, python_args, stopped, stdin=None, stdout=None, stderr=None, kill_on_signals=False):
    """Run the spec's Python (in its sandbox) with `python_args` within the spec's limits, and its exit
    code; past a limit, `stopped(why)` is called, then the process is killed."""
    def limits():
        resource.setrlimit(resource.RLIMIT_CPU, (spec["cpu"] + 10, spec["cpu"] + 10))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    env = None if spec["sandbox"] else dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    child = subprocess.Popen(spec["command"] + python_args, preexec_fn=limits, env=env, stdin=stdin, stdout=stdout,
                             stderr=stderr)
    if kill_on_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda number, frame: child.kill())
    while child.poll() is None:
        resident, cpu, processes = sandbox_usage(child.pid)
        why = None
        if resident > spec["memory"]:
            why = (f"at {resident / 2**30:.1f} GiB of memory, over the limit of {spec['memory'] / 2**30:.1f} GiB "
                   f"(--memory)")
        elif cpu > spec["cpu"]:
            why = f"after {cpu:.1f} s of CPU time, over the limit of {spec['cpu']} s (--cpu)"
        elif processes > MAX_PROCESSES:
            why = f"with {processes} processes, over the limit of {MAX_PROCESSES}"
        if why:
            stopped(why)
            child.kill()
            break
        time.sleep(0.2 if kill_on_signals else 0.05)
    return child.wait()


# --- what no submission may change ----------------------------------------------------------------
def file_hashes(paths):
    """{path: sha256} of every file under `paths` (folders walked, symlinks not followed)."""
    hashes = {}
    for top in paths:
        files = [top] if os.path.isfile(top) else [os.path.join(folder, name) for folder, _, names in os.walk(top)
                                                   for name in names]
        for path in files:
            with open(path, "rb") as f:
                hashes[path] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def files_tampering(before, after, course, student):
    """What happened to the guarded files while `student`'s submission ran, one line each."""
    def shown(path):
        return os.path.relpath(path, course) if inside(path, course) else path
    found = [f"{shown(path)} was changed while {student}'s submission ran"
             for path in sorted(before) if path in after and after[path] != before[path]]
    found += [f"{shown(path)} was deleted while {student}'s submission ran" for path in sorted(set(before) - set(after))]
    found += [f"{shown(path)} appeared while {student}'s submission ran" for path in sorted(set(after) - set(before))]
    return found


def cell_names(db):
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return dict(connection.execute("select id, name from base_cell"))


def gradebook_rows(db):
    """{table: set of rows} of the whole gradebook, read-only."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [name for (name,) in connection.execute("select name from sqlite_master where type='table'")]
        return {table: set(connection.execute(f'select * from "{table}"')) for table in tables}
    finally:
        connection.close()


def own_ids(rows, lab, student):
    """The gradebook ids of `student`'s submission of `lab`: the submission, its notebooks, grades, comments."""
    labs = {row[0] for row in rows.get("assignment", ()) if row[1] == lab}
    submissions = {row[0] for row in rows.get("submitted_assignment", ()) if row[1] in labs and row[2] == student}
    notebooks = {row[0] for row in rows.get("submitted_notebook", ()) if row[1] in submissions}
    return {"student": {student}, "submitted_assignment": submissions, "submitted_notebook": notebooks,
            "grade": {row[0] for row in rows.get("grade", ()) if row[1] in notebooks},
            "comment": {row[0] for row in rows.get("comment", ()) if row[1] in notebooks}}


def gradebook_tampering(before, after, lab, student, cell_names, graded):
    """What changed in the gradebook that nbgrader's autograde of this one submission does not write."""
    found = []
    mine = own_ids(before, lab, student)
    for table, ids in own_ids(after, lab, student).items():
        mine[table] = mine.get(table, set()) | ids
    for table in sorted(set(before) | set(after)):
        changed = before.get(table, set()) ^ after.get(table, set())
        foreign = {row for row in changed if row[0] not in mine.get(table, ())}
        if foreign:
            found.append(f"the gradebook's table {table!r} changed outside {student}'s grades "
                         f"({len(foreign)} rows, e.g. {sorted(map(str, foreign))[0][:160]})")
    old = {row[2]: row for row in before.get("grade", ()) if row[0] in mine["grade"]}
    for row in after.get("grade", ()):
        if row[0] not in mine["grade"]:
            continue
        name = cell_names.get(row[2], row[2])
        was = old.get(row[2])
        for column, index in (("manual score", 4), ("extra credit", 5)):
            if row[index] != (was[index] if was else None):
                found.append(f"{student}'s {column} of {name} was set to {row[index]} while the submission ran")
        if graded is not None and name in graded and row[3] != graded[name]:
            found.append(f"{student}'s score of {name} in the gradebook is {row[3]}, "
                         f"but the autograded notebook earns {graded[name]}")
    return found


def notebook_scores(path):
    """{grade cell: score} as nbgrader's own rule (nbgrader.utils.determine_grade) reads the autograded notebook."""
    import nbformat
    from nbgrader.utils import determine_grade, is_grade
    import logging
    nb = nbformat.read(path, as_version=4)
    return {cell.metadata.nbgrader["grade_id"]: determine_grade(cell, logging.getLogger("autograde"))[0]
            for cell in nb.cells if is_grade(cell)}


# --- grading --------------------------------------------------------------------------------------
def submissions(lab, directory):
    """{student: notebook} for DIR/<student>/<lab>.ipynb or DIR/<student>/<lab>/<lab>.ipynb."""
    found = {}
    for student in sorted(os.listdir(directory)):
        for path in (os.path.join(directory, student, f"{lab}.ipynb"),
                     os.path.join(directory, student, lab, f"{lab}.ipynb")):
            if os.path.isfile(path):
                found[student] = path
                break
    return found


def quiet_nbgrader():
    """nbgrader 0.9 with SQLAlchemy 2 warns on every new submission that it is not in the session
    yet (api.py's update_or_create_submission reads the assignment's notebooks before adding it;
    it is added right after): not a problem, so not shown."""
    import warnings
    from sqlalchemy.exc import SAWarning
    warnings.filterwarnings("ignore", message=r"Object of type <Submitted\w+> not in session", category=SAWarning)


def nbgrader_config(course, runtime):
    from traitlets.config.loader import PyFileConfigLoader
    config = PyFileConfigLoader("nbgrader_config.py", path=course).load_config()
    config.CourseDirectory.root = course
    config.Execute.kernel_name = KERNEL_NAME
    config.KernelManager.transport = "ipc"              # Unix sockets in `runtime`: no network needed
    config.KernelManager.ip = os.path.join(runtime, "kernel")
    config.KernelManager.connection_file = os.path.join(runtime, "kernel.json")
    config.NbGraderAPI.log_level = "WARN"
    return config


def ensure_assignment(course, lab):
    """The lab's source notebook in the gradebook (nbgrader generate_assignment), once."""
    db = os.path.join(course, "gradebook.db")
    if os.path.exists(db):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            try:
                if connection.execute("select 1 from assignment where name = ?", (lab,)).fetchone():
                    return
            except sqlite3.OperationalError:
                pass
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader
    config = PyFileConfigLoader("nbgrader_config.py", path=course).load_config()
    config.CourseDirectory.root = course
    result = NbGraderAPI(config=config).generate_assignment(lab, force=True)
    if not result["success"]:
        raise SystemExit(f"nbgrader generate_assignment {lab} failed:\n{result.get('error', '')}")


class Grader:
    """One lab of one course: nbgrader's autograde for one student at a time, each kernel in its
    sandbox, with the checks before and after."""

    def __init__(self, course, lab, scratch, unsandboxed=False, memory=MEMORY, cpu=CPU_SECONDS):
        self.course, self.lab, self.scratch = course, lab, scratch
        self.unsandboxed, self.memory, self.cpu = unsandboxed, memory, cpu
        self.python = kernel_python(sys.executable)
        self.db = os.path.join(course, "gradebook.db")
        self.guarded = [self.python["package"], os.path.join(course, "graders"), os.path.join(course, "labs"),
                        os.path.join(course, "nbgrader_config.py")]
        self.spec_dir = os.path.join(scratch, "share", "kernels", KERNEL_NAME)
        os.makedirs(self.spec_dir)
        os.environ["JUPYTER_PATH"] = os.path.join(scratch, "share")    # where jupyter_client finds the kernel spec

    def prepare(self):
        """The lab in the gradebook, and vmkit and graders/ byte-compiled, so that no honest import ever
        writes a .pyc into them (the sandbox could not, and outside it that would read as tampering)."""
        quiet_nbgrader()
        ensure_assignment(self.course, self.lab)
        subprocess.run([sys.executable, "-m", "compileall", "-q", self.python["package"],
                        os.path.join(self.course, "graders")], capture_output=True)
        self.released = released_sources(self.course, self.lab)

    def kernel_spec(self, student, workdir):
        """Write the kernel spec nbgrader starts for `student`; the folder its connection file goes in."""
        runtime = tempfile.mkdtemp(dir=self.scratch, prefix=f"run-")
        command = ([self.python["executable"]] if self.unsandboxed
                   else sandbox_command(self.course, self.python, workdir, runtime))
        self.verdict, self.log = os.path.join(runtime + ".verdict"), os.path.join(runtime + ".log")
        spec = os.path.join(runtime + ".json")
        with open(spec, "w") as f:
            json.dump({"sandbox": not self.unsandboxed, "command": command, "memory": self.memory, "cpu": self.cpu,
                       "verdict": self.verdict, "log": self.log}, f)
        with open(os.path.join(self.spec_dir, "kernel.json"), "w") as f:
            json.dump({"argv": [sys.executable, os.path.abspath(__file__), "kernel", spec, "--", "-f", "{connection_file}"],
                       "display_name": "Python 3 (sandboxed for grading)", "language": "python",
                       "interrupt_mode": "message", "metadata": {"debugger": False}}, f)
        return runtime

    def grade(self, student, notebook):
        """Autograde `student`'s `notebook`: {student, score, max_score, tampering, notes, seconds}."""
        from nbgrader.api import Gradebook
        from nbgrader.apps import NbGraderAPI
        lab, course = self.lab, self.course
        target = os.path.join(course, "submitted", student, lab)
        if os.path.realpath(os.path.dirname(notebook)) != os.path.realpath(target):
            shutil.rmtree(target, ignore_errors=True)
            os.makedirs(target)
            shutil.copy(notebook, os.path.join(target, f"{lab}.ipynb"))
        workdir = os.path.join(course, "autograded", student, lab)
        shutil.rmtree(workdir, ignore_errors=True)          # a grade replaces the last one
        runtime = self.kernel_spec(student, workdir)

        hashes, rows = file_hashes(self.guarded), gradebook_rows(self.db)
        start = time.perf_counter()
        outcome = NbGraderAPI(config=nbgrader_config(course, runtime)).autograde(lab, student, force=True, create=True)
        seconds = time.perf_counter() - start

        notes, error = log_notes(outcome.get("log") or "", os.path.join(target, f"{lab}.ipynb"), self.released)
        if os.path.exists(self.verdict):
            notes.insert(0, open(self.verdict).read())
        elif not outcome["success"]:
            notes.append(f"nbgrader could not grade it: {error or outcome.get('error', '').strip()[-300:]}")
            if os.path.exists(self.log):
                notes += [f"kernel: {line}" for line in open(self.log, errors="replace").read().splitlines()[-5:]]
        tampering = files_tampering(hashes, file_hashes(self.guarded), course, student)
        graded = os.path.join(workdir, f"{lab}.ipynb")
        scores = notebook_scores(graded) if outcome["success"] and os.path.exists(graded) else None
        tampering += gradebook_tampering(rows, gradebook_rows(self.db), lab, student, cell_names(self.db), scores)
        with Gradebook(f"sqlite:///{self.db}") as gradebook:
            submission = gradebook.find_submission(lab, student)
            score, max_score = submission.score, submission.max_score
        return {"student": student, "score": score, "max_score": max_score, "tampering": tampering, "notes": notes,
                "seconds": round(seconds, 1)}


NBGRADER_FAILURE = ("There was an error processing assignment", "Removing failed assignment", "Please see the",
                    "Kernel died while waiting for execute reply", "[ERROR] Interrupting kernel")


def log_notes(log, submitted, released):
    """The lines of nbgrader's log worth an instructor's eye, and the exception that stopped it (or
    None): warnings and errors, without the routine checksum warning (routine_warning) and without
    the lines nbgrader adds to every failure, which the exception says better."""
    import nbformat
    cells = {cell.metadata.nbgrader["grade_id"]: cell for cell in nbformat.read(submitted, as_version=4).cells
             if "grade_id" in cell.metadata.get("nbgrader", {})}
    notes, error, lines = [], None, log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("[ERROR] Traceback"):
            block = []
            for following in lines[i + 1:]:
                if following and not following[0].isspace():
                    break
                block.append(following.strip())
            error = [text for text in block if text][-1] if any(block) else None
        elif timed_out := re.match(r"\[ERROR\] Timeout waiting for execute reply \((\d+)s\)", line):
            notes.append(f"a cell ran longer than {timed_out.group(1)} s (c.Execute.timeout in nbgrader_config.py) "
                         f"and was interrupted, as an error in that cell; the cells after it still ran")
        elif (line.startswith(("[WARNING]", "[ERROR]", "[CRITICAL]")) and not any(text in line for text in NBGRADER_FAILURE)
              and not routine_warning(line, cells, released)):
            notes.append(line)
    return notes, error


def released_sources(course, lab):
    """{grade_id: source as released} of every cell the release had hidden tests cut out of, by
    nbgrader's own ClearHiddenTests on the gradebook's copy of the source."""
    from nbformat import NotebookNode
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import ClearHiddenTests
    from traitlets.config.loader import PyFileConfigLoader
    clear = ClearHiddenTests(config=PyFileConfigLoader("nbgrader_config.py", path=course).load_config())
    released = {}
    with Gradebook(f"sqlite:///{os.path.join(course, 'gradebook.db')}") as gradebook:
        for cell in gradebook.find_notebook(lab, lab).source_cells:
            copy = NotebookNode(source=cell.source)
            if clear._remove_hidden_test_region(copy):
                released[cell.name] = copy.source
    return released


def routine_warning(line, cells, released):
    """Is this warning of nbgrader's one that honest submissions cause? `cells`: the submitted
    notebook's cells by grade_id; `released`: released_sources().

    - "Attribute 'checksum' for cell ... has changed!" on a cell with hidden tests: nbgrader keeps
      the checksum of such a cell as it was before it cut the tests out (nbgrader#1961), so every
      submitted copy looks changed. Routine when the cell is exactly as released; real (a student
      edited a read-only cell, which nbgrader then restores) otherwise.
    - "Cell ... does not exist in the database" for an ordinary cell that carries nbgrader's
      metadata with no role (not a grade, solution, read-only or task cell), as releases of these
      labs before had; real for any other cell."""
    changed = re.match(r"\[WARNING\] Attribute 'checksum' for cell (\S+) has changed!", line)
    if changed:
        cell = cells.get(changed.group(1))
        return changed.group(1) in released and cell is not None and cell.source == released[changed.group(1)]
    unknown = re.match(r"\[WARNING\] Cell '(\S+)' does not exist in the database", line)
    if unknown and unknown.group(1) in cells:
        role = cells[unknown.group(1)].metadata.nbgrader
        return not any(role.get(key) for key in ("grade", "solution", "locked", "task"))
    return False


def grade(lab, directory, course=HERE, unsandboxed=False, memory=MEMORY, cpu=CPU_SECONDS):
    """Autograde every submission of `lab` in `directory`, one after the other, printing each result
    as it comes; the results, one dict per student. Stops at the first tampering."""
    course = os.path.realpath(course)
    source = os.path.join(course, "labs", lab, f"{lab}.ipynb")
    if not os.path.isfile(source):
        raise SystemExit(f"no lab {lab!r}: {source} does not exist")
    found = submissions(lab, directory)
    if not found:
        raise SystemExit(f"no submissions in {directory}: expected {directory}/<student>/{lab}.ipynb")
    # nbgrader runs alembic (its gradebook's migrations) from PATH: this environment's first
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    results = []
    with tempfile.TemporaryDirectory(prefix="autograde-") as scratch:
        grader = Grader(course, lab, scratch, unsandboxed=unsandboxed, memory=memory, cpu=cpu)
        if not unsandboxed:
            problem = sandbox_problem(course, grader.python)
            if problem:
                raise SystemExit(f"{problem}\nNot grading: submissions run students' code. To grade without a "
                                 f"sandbox anyway (each kernel as you, with its limits and the checks), pass "
                                 f"--unsandboxed.")
        say(f"grading {len(found)} submission{'s' if len(found) != 1 else ''} of {lab}, one at a time: a line "
            f"with each student's score as it is graded")
        grader.prepare()
        for student, notebook in found.items():
            results.append(grader.grade(student, notebook))
            report(results[-1])
            if results[-1]["tampering"]:
                say(f"TAMPERING: grading stopped after {student}: the students after would be graded against what "
                    f"changed. Restore it (git status, git checkout), then grade again.")
                break
    return results


def report(result):
    say(f"{result['student']} {result['score']:g}/{result['max_score']:g}")
    for line in result["notes"]:
        say(f"  {line}")
    for line in result["tampering"]:
        say(f"TAMPERING: {line}")


def size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1:].upper() in units else int(text)


def main(argv):
    if argv[1:2] in (["kernel"], ["clean"]):
        split = argv.index("--")
        return (kernel if argv[1] == "kernel" else clean_run)(argv[2], argv[split + 1:])
    parser = argparse.ArgumentParser(prog="course.py grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("lab", help="the lab, as in labs/<lab>/<lab>.ipynb")
    parser.add_argument("directory", help="the submissions: DIR/<student>/<lab>.ipynb")
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
    parser.add_argument("--course", default=HERE, help="the nbgrader course directory (default: %(default)s)")
    parser.add_argument("--memory", type=size, default=MEMORY, help="memory of a submission's kernel (default: 2G)")
    parser.add_argument("--cpu", type=int, default=CPU_SECONDS, help="CPU seconds of a kernel (default: %(default)s)")
    parser.add_argument("--unsandboxed", action="store_true",
                        help="grade without bubblewrap (students' code then runs as you: only where it cannot run)")
    args = parser.parse_args(argv[1:])
    results = grade(args.lab, args.directory, course=args.course, unsandboxed=args.unsandboxed,
                    memory=args.memory, cpu=args.cpu)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if any(result["tampering"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
