"""What a student can reach: nothing of the course's reference answers through vmkit.

The labs' reference answers and the facts their hidden checks expect live in graders/, beside labs/
in the course directory and outside the vmkit package (pyproject.toml installs vmkit* only). These
tests try what a student would: import every module of vmkit and look for any name graders/ defines,
and try `import graders` from a student's folder with the course's Python.
"""
import ast
import glob
import importlib
import importlib.util
import os
import pkgutil
import shutil
import subprocess
import sys
import types

import vmkit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRADERS = os.path.join(REPO, "graders")


def graders_names():
    """Every name a lab module of graders/ defines at the top (functions, classes, constants), by module
    (probing.py, the grading machinery, holds no answer)."""
    names = {}
    for path in sorted(glob.glob(os.path.join(GRADERS, "lab*.py"))):
        tree = ast.parse(open(path).read())
        defined = set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                defined.update(t.id for t in targets if isinstance(t, ast.Name))
        names[os.path.basename(path)] = {name for name in defined if not name.startswith("__")}
    return names


def vmkit_modules():
    """Every module of the vmkit package, imported as a student's kernel would."""
    modules = [vmkit]
    for info in pkgutil.walk_packages(vmkit.__path__, "vmkit."):
        modules.append(importlib.import_module(info.name))
    return modules


def test_graders_defines_the_reference_answers():
    """Does graders/ hold each lab's module and the answers the labs' hidden checks compare with?"""
    names = graders_names()
    assert {f"lab{n}.py" for n in range(1, 8)} <= set(names), sorted(names)
    assert {"stop_and_copy_seconds", "precopy_to_target", "xen_precopy"} <= names["lab6.py"]
    assert "outcome_in_ring3" in names["lab1.py"]


def test_no_name_graders_defines_is_an_attribute_of_a_vmkit_module():
    """Can a student who imports every module of vmkit reach a reference answer, or anything else
    graders/ defines, by its name or as an object that came from graders?"""
    defined = {name: module for module, names in graders_names().items() for name in names}
    reachable = []
    for module in vmkit_modules():
        for name, value in vars(module).items():
            origin = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
            if name in defined and not isinstance(value, types.ModuleType):     # a submodule is no answer
                reachable.append(f"{module.__name__}.{name} (graders/{defined[name]} defines {name})")
            elif isinstance(origin, str) and origin.split(".")[0] == "graders":
                reachable.append(f"{module.__name__}.{name} (from {origin})")
    assert not reachable, "reachable through import vmkit:\n  " + "\n  ".join(reachable)


def test_graders_cannot_be_imported_from_a_students_folder(tmp_path):
    """In a course directory (graders/ beside release/), does `import graders` fail in a fresh Python
    started in each student's folder release/<lab>/, with the course's Python and vmkit importable?"""
    shutil.copytree(GRADERS, tmp_path / "graders", ignore=shutil.ignore_patterns("__pycache__"))
    labs = sorted(name for name in os.listdir(os.path.join(REPO, "labs"))
                  if os.path.isfile(os.path.join(REPO, "labs", name, f"{name}.ipynb")))
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    for lab in labs:
        folder = tmp_path / "release" / lab
        folder.mkdir(parents=True)
        done = subprocess.run([sys.executable, "-c", "import vmkit, vmkit.grading\nimport graders"], cwd=folder,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "No module named 'graders'" in done.stderr, \
            f"release/{lab}: import graders worked (or vmkit failed):\n{done.stdout}{done.stderr[-2000:]}"


def test_the_students_copy_of_the_course_holds_no_answer(tmp_path):
    """Does `course.py release` write a students' copy (and its zip) with the lessons, the package and
    every lab as released, and nothing that grades: no graders/, no tests, no lab sources or fixtures,
    no solution or hidden test in any notebook, no grading machinery; and does its course.py say so
    when asked to test, while its vmkit imports and graders does not?"""
    import zipfile
    spec = importlib.util.spec_from_file_location("course", os.path.join(REPO, "course.py"))
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    instructor = tmp_path / "course"
    instructor.mkdir()
    for name in (*course.STUDENT_FILES, "nbgrader_config.py", "autograde.py"):
        shutil.copy(os.path.join(REPO, name), instructor)
    for name in (*course.STUDENT_FOLDERS, "labs", "graders", "tests"):
        shutil.copytree(os.path.join(REPO, name), instructor / name, ignore=shutil.ignore_patterns("__pycache__"))
    bundle = tmp_path / "handout" / course.STUDENT_BUNDLE
    course.release(str(instructor), str(bundle))

    labs = sorted(os.listdir(instructor / "release"))
    files = sorted(os.path.relpath(os.path.join(folder, name), bundle)
                   for folder, _, names in os.walk(bundle) for name in names)
    assert sorted(os.listdir(bundle)) == sorted([*course.STUDENT_FILES, *course.STUDENT_FOLDERS, "labs"])
    assert [f for f in files if f.startswith("labs")] == [os.path.join("labs", lab, f"{lab}.ipynb") for lab in labs]
    for path in files:
        assert not path.startswith(("graders", "tests")) and "fixtures" not in path, path
        if path.endswith(".ipynb"):
            text = open(bundle / path).read()
            for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "import graders"):
                assert marker not in text, f"{path} holds {marker!r}"
    for path in [f for f in files if f.startswith("vmkit")]:
        assert open(bundle / path, "rb").read() == open(os.path.join(REPO, path), "rb").read(), path
    with zipfile.ZipFile(f"{bundle}.zip") as archive:
        assert sorted(os.path.relpath(n, course.STUDENT_BUNDLE) for n in archive.namelist() if not n.endswith("/")) == files

    done = subprocess.run([sys.executable, str(bundle / "course.py"), "test"], capture_output=True, text=True)
    assert done.returncode == 2 and "students' copy" in done.stdout, done.stdout + done.stderr
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONPATH"] = str(bundle)
    done = subprocess.run([sys.executable, "-c", "import vmkit; print(vmkit.__file__)\nimport graders"],
                          cwd=bundle / "labs" / labs[0], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith(str(bundle / "vmkit")), done.stdout + done.stderr
    assert "No module named 'graders'" in done.stderr, done.stderr


# Names a lab asks for that vmkit must keep, because the engine itself needs them, and how grading
# keeps them from earning points: {(lab, name): why}.
KEPT_FOR_THE_ENGINE = {
    ("lab1_rings", "decode_selector"): "the machine's decoder, which every ring-transition event uses; "
                                       "withheld while the grader asks for answers, refused if handed in",
    ("lab1_rings", "decode_descriptor"): "the machine's decoder; withheld while the grader asks, refused if handed in",
    ("lab3_binary_translation", "pushfd"): "vmkit.vmm.emit's encoder of the instruction's bytes, which the rules "
                                           "emit code with; not a rewrite rule",
    ("lab3_binary_translation", "popfd"): "vmkit.vmm.emit's encoder of the instruction's bytes; not a rewrite rule",
    ("lab9_direct_paging", "RULES"): "vmkit.vmm.translator's RULES is the binary translator's rewrite rules, "
                                     "another table under the same name; handed in, it is refused",
}


def graded_names(lab):
    """The names a lab's solution cells define at the top (functions, classes, tables, strings): what
    a student writes and the grader asks for."""
    import nbformat
    nb = nbformat.read(os.path.join(REPO, "labs", lab, f"{lab}.ipynb"), as_version=4)
    names = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
            for node in ast.parse(cell.source).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_no_vmkit_module_provides_what_a_lab_asks_for():
    """Does any module of vmkit offer, under the name a lab's solution defines, a function, class or
    table a student could hand in or call as the answer (outside the few the engine needs, which
    grading withholds)?"""
    labs = sorted(name for name in os.listdir(os.path.join(REPO, "labs"))
                  if os.path.isfile(os.path.join(REPO, "labs", name, f"{name}.ipynb")))
    modules = vmkit_modules()
    provided = []
    for lab in labs:
        names = graded_names(lab)
        assert names, f"{lab}: no name defined in a solution cell"
        for name in sorted(names):
            where = [m.__name__ for m in modules                  # a submodule of that name is no answer
                     if name in vars(m) and not isinstance(vars(m)[name], types.ModuleType)]
            if where and (lab, name) not in KEPT_FOR_THE_ENGINE:
                provided.append(f"{lab}: {name} is in {', '.join(where)}")
    assert not provided, "vmkit provides what a lab asks for:\n  " + "\n  ".join(provided)
