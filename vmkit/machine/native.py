"""vmkit's C helpers: one library built from the C files beside this module, with the system's compiler.

Two hot paths of the machine are written in C as well as in Python, and the Python is the reference
each is tested against:

* blockcount.c counts a slice's instructions per translated block (vmkit.machine.counting);
* delivery.c delivers an interrupt or exception through the IDT, and reads the frame an iret or far
  return will pop (vmkit.machine.delivery);
* hooks.c handles the vmkit PC's commonest events inside Unicorn's hooks, `int n` and the iret back,
  with delivery.c and the block counter's count (vmkit.machine.hooks).

Why C: both run inside Unicorn's hooks, many thousand times a second, and from Python each access to
the engine is a call through ctypes; measured on a 2-core machine, an `int 0x80` round trip spent most
of its time in the Python around the CPU's work (README, Benchmarks).

The library is built from source (`cc -O2 -shared -fPIC`) into the Python environment's own directory
(never into the repository), by `python3 course.py`'s set-up or on first use. Where it cannot be built
or loaded (no compiler, a read-only environment), `available()` says why and the machine uses the
reference: the same results, more slowly. `vmkit.doctor()` reports which one this machine uses.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from unicorn import UcError

from . import quirks

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = tuple(os.path.join(HERE, name) for name in ("blockcount.c", "delivery.c", "hooks.c"))
HEADERS = tuple(os.path.join(HERE, name) for name in ("blockcount.h", "delivery.h"))

_digest = None


def digest():
    """A hash of the sources: the library is named by it, so an edited source is built again."""
    global _digest
    if _digest is None:
        h = hashlib.sha256()
        for source in SOURCES + HEADERS:
            with open(source, "rb") as f:
                h.update(f.read())
        _digest = h.hexdigest()[:12]
    return _digest


def library_path():
    """Where the library for these sources and this Python goes: the directory VMKIT_LIBDIR names, or
    lib/vmkit under the environment's prefix (.venv in the course's set-up)."""
    directory = os.environ.get("VMKIT_LIBDIR") or os.path.join(sys.prefix, "lib", "vmkit")
    return os.path.join(directory, f"vmkit-{digest()}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}")


def build(path=None):
    """Compile the sources with the system's C compiler into `path` (default library_path()).
    Returns the path, or raises OSError / subprocess.CalledProcessError saying why not."""
    path = path or library_path()
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise OSError("no C compiler (cc) on this machine")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    try:
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", partial, *SOURCES], check=True,
                       capture_output=True, text=True, timeout=120)
        os.replace(partial, path)          # atomic: two processes building at once both succeed
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return path


_library = None
_why_not = None


def library():
    """The loaded library (a ctypes.CDLL), built first if need be; None when it cannot be (why_not())."""
    global _library, _why_not
    if _library is not None or _why_not is not None:
        return _library
    path = library_path()
    try:
        if not os.path.exists(path):
            build(path)
        _library = ctypes.CDLL(path)
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        _why_not = f"vmkit's C helpers could not be built or loaded ({detail.strip().splitlines()[-1] if detail.strip() else e})"
    return _library


def hook_add(uc, kind, function, user, begin=1, end=0):
    """Add a hook written in C (`function`, a pointer into the library) to the engine `uc`, with
    `user` as its data: uc_hook_add called directly, since the binding only takes Python callables."""
    handle = ctypes.c_size_t()
    error = quirks.engine_library().uc_hook_add(uc._uch, ctypes.byref(handle), kind, function, user,
                                                ctypes.c_uint64(begin), ctypes.c_uint64(end))
    if error:
        raise UcError(error)


def why_not():
    library()
    return _why_not


def reset_for_tests():
    """Forget what library() found (a test changes VMKIT_LIBDIR or CC)."""
    global _library, _why_not
    _library = _why_not = None


if __name__ == "__main__":
    # python -m vmkit.machine.native build: what `python3 course.py` runs in its set-up
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m vmkit.machine.native build")
    try:
        print(build())
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"vmkit's C helpers were not built: {getattr(e, 'stderr', None) or e}")
