"""vmkit's import graph points one way (docs/architecture.md, section 1).

Every module of the package is parsed with `ast`, and every import in it, at module level or inside
a function, becomes an edge of the graph. The tests fail on

* a cycle between modules, or between packages (each top-level package or module of vmkit is one
  unit: vmkit.xen, vmkit.run, ...);
* an import that goes up the layers: machine (with asm, trace, errors, guests) -> techniques (vmm,
  xen, vtx, kvm) -> run (with doctor and vmkit's own __init__) -> the experiments (migration,
  compare, census, isolation, consolidation) -> viz -> grading. A unit may import from its own layer
  or from below, never from above; a new unit must be given a layer in LAYERS;
* an import inside a function without a comment on the same line saying why (an optional heavy
  dependency, a check that must survive a missing package, ...). An import that only breaks a cycle
  has no good reason: the cycle test sees through it, since function-level imports are edges too;
* a module over LONG lines whose docstring does not say why, in a line starting "Long because:";
* a module at an old path (a shim, kept for a while after a move so that notebooks written before
  it still work; SHIMS lists them, none today) that does more than re-export from its new place,
  and a module of vmkit that still imports one.

LET_OFF names the rules a unit does not keep yet (none today); the test warns once one is kept.

The machine and the techniques meet at the machine's VMM interface (docs/architecture.md, 3.5). The
tests fail when

* a technique (every class of vmkit derived from Machine) defines a method with an underscore that
  overrides a method of a class above it, or uses one of the machine's private names on self;
* a Machine method that a technique overrides has no docstring saying when it is called;
* a module outside vmkit.machine imports a private name from it, or reads one off what it imported;
* a method calls `Some.method(self, ...)` where Some is not a direct parent of its class, or is one
  but the calling method has another name, or calls `super().method()` from a method of another
  name: both go past what the class itself says;
* a module outside vmkit.machine reads or writes an underscore attribute of an object other than
  self (directly, or with getattr and its kin), or builds an attribute's name from strings that
  start with an underscore (dispatch by string).
"""
import ast
import io
import pathlib
import re
import tokenize
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vmkit"
LONG = 600
LONG_MARKER = "Long because:"

LAYERS = {
    "vmkit.errors": 0, "vmkit.arguments": 0, "vmkit.trace": 0, "vmkit.asm": 0, "vmkit.guests": 0, "vmkit.machine": 0,
    "vmkit.vmm": 1, "vmkit.xen": 1, "vmkit.vtx": 1, "vmkit.kvm": 1,
    "vmkit": 2, "vmkit.run": 2, "vmkit.doctor": 2,
    "vmkit.migration": 3, "vmkit.compare": 3, "vmkit.census": 3, "vmkit.isolation": 3, "vmkit.consolidation": 3,
    "vmkit.viz": 4,
    "vmkit.grading": 5,
}
LAYER_NAMES = ("machine", "techniques", "run", "experiments", "viz", "grading")

# Old paths kept for the lessons and labs, each re-exporting from its new place. Delete one (and its
# line here) once no notebook imports it.
SHIMS = {}                         # none left: every notebook imports the new homes
# Rules that units not yet brought in line are let off, each with what is left to do. Once a unit
# keeps a rule, test_what_is_let_off_is_still_needed warns: delete that line then.
LET_OFF = {}                       # grading keeps every rule now


# --- the graph -----------------------------------------------------------------------------------------
def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def parse_package():
    """{module name: (path, source, tree)} for every module of vmkit."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        found[module_name(path)] = (path, source, ast.parse(source, str(path)))
    return found


MODULES = parse_package()


class Import:
    """One import statement's edge: who imports what, where, and whether inside a function."""

    def __init__(self, importer, target, node, in_function):
        self.importer, self.target, self.node, self.in_function = importer, target, node, in_function

    @property
    def where(self):
        path = MODULES[self.importer][0].relative_to(ROOT)
        return f"{path}:{self.node.lineno}"

    def __repr__(self):
        return f"{self.where} ({self.importer} -> {self.target})"


def _package_of(name):
    path = MODULES[name][0]
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _targets(importer, node):
    """The vmkit modules an import statement loads by name."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "vmkit" or a.name.startswith("vmkit.")]
    if node.level:
        base = _package_of(importer)
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    if base != "vmkit" and not base.startswith("vmkit."):
        return []
    targets = {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return sorted(targets)


def imports():
    """Every import of a vmkit module by a vmkit module, module-level and function-level."""
    edges = []
    for name, (_, _, tree) in MODULES.items():
        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    edges.extend(Import(name, t, child, in_function) for t in _targets(name, child))
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
        visit(tree, False)
    return edges


EDGES = imports()


def unit(name):
    """The top-level package or module of vmkit that a module belongs to."""
    return ".".join(name.split(".")[:2])


def real_edges():
    """The graph as it runs: a shim's own imports are left out (it is not code), and an import of a
    shim counts as an import of its new place."""
    edges = []
    for e in EDGES:
        if e.importer in SHIMS:
            continue
        for target in SHIMS.get(e.target, (e.target,)):
            edges.append((e, target))
    return edges


def cycles(graph):
    """The strongly connected components with more than one node, or a node importing itself (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def strongconnect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def describe(component, edges, key):
    """The imports that make up a cycle: both ends in it (between two of its packages, for packages)."""
    inside = set(component)
    return "\n".join(f"    {e!r}" for e, target in edges if key(e.importer) in inside and key(target) in inside
                     and (key is not unit or unit(e.importer) != unit(target)))


# --- the tests -------------------------------------------------------------------------------------------
def test_the_graph_is_found():
    """A check that checks nothing passes too: make sure the parser finds the package's imports."""
    assert {"vmkit.machine.machine", "vmkit.xen.paravirt", "vmkit.vtx.hardware_assist", "vmkit.run"} <= set(MODULES)
    pairs = {(e.importer, e.target) for e in EDGES}
    assert ("vmkit.xen.paravirt", "vmkit.xen.hypercalls") in pairs
    assert ("vmkit.kvm.userspace", "vmkit.vtx") in pairs
    assert any(name == "vmkit.compare" for name, _ in _foreign_function_imports())      # numpy, inside fit()


def test_no_cycle_between_modules():
    edges = real_edges()
    graph = {}
    for e, target in edges:
        graph.setdefault(e.importer, set()).add(target)
    found = cycles(graph)
    assert not found, "import cycles between modules:\n" + "\n".join(
        " <-> ".join(c) + "\n" + describe(c, edges, str) for c in found)


def test_no_cycle_between_packages():
    edges = real_edges()
    graph = {}
    for e, target in edges:
        if unit(e.importer) != unit(target):
            graph.setdefault(unit(e.importer), set()).add(unit(target))
    found = cycles(graph)
    assert not found, "import cycles between packages:\n" + "\n".join(
        " <-> ".join(c) + "\n" + describe(c, edges, unit) for c in found)


def test_every_package_has_a_layer():
    missing = sorted({unit(m) for m in MODULES} - set(LAYERS))
    assert not missing, f"give these a layer in LAYERS (tests/test_architecture.py) and docs/architecture.md 1: {missing}"


def test_imports_point_down_the_layers():
    upward = [f"    {e!r}: {LAYER_NAMES[LAYERS[unit(e.importer)]]} imports {LAYER_NAMES[LAYERS[unit(t)]]}"
              for e, t in real_edges()
              if unit(t) in LAYERS and unit(e.importer) in LAYERS and LAYERS[unit(t)] > LAYERS[unit(e.importer)]]
    assert not upward, "imports that go up the layers:\n" + "\n".join(upward)


def _comments(source):
    """{line number: comment text} of a module's source."""
    return {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.COMMENT}


def _reason(comment):
    """What a comment says, without tool pragmas (noqa, type:, pragma)."""
    text = re.sub(r"#\s*(noqa\b[:\w, ]*|type:\s*\S+|pragma:.*)", "", comment or "").strip(" #")
    return text if len(text.split()) >= 3 else ""


def unexplained_function_imports():
    found = {}
    comments = {name: _comments(source) for name, (_, source, _) in MODULES.items()}
    for e in EDGES + [Import(name, None, node, True) for name, node in _foreign_function_imports()]:
        if not e.in_function:
            continue
        lines = range(e.node.lineno, (e.node.end_lineno or e.node.lineno) + 1)
        if not any(_reason(comments[e.importer].get(n)) for n in lines):
            found.setdefault(unit(e.importer), set()).add(f"{e.where}: {ast.unparse(e.node)}")
    return found


def _foreign_function_imports():
    """Function-level imports of modules outside vmkit (numpy, ipywidgets, unicorn's internals...)."""
    for name, (_, _, tree) in MODULES.items():
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(func):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and not _targets(name, node):
                        yield name, node


def test_every_import_inside_a_function_says_why():
    found = {u: lines for u, lines in unexplained_function_imports().items() if (u, "reasons") not in LET_OFF}
    assert not found, ("imports inside functions need a comment on the same line saying why (an import that "
                       "only breaks a cycle should move to the top instead):\n"
                       + "\n".join(f"    {line}" for lines in found.values() for line in sorted(lines)))


def long_modules():
    found = {}
    for name, (path, source, tree) in MODULES.items():
        lines = source.count("\n")
        doc = ast.get_docstring(tree) or ""
        if lines > LONG and not any(line.strip().startswith(LONG_MARKER) for line in doc.splitlines()):
            found.setdefault(unit(name), set()).add(f"{path.relative_to(ROOT)}: {lines} lines")
    return found


def test_a_long_module_says_why_it_is_long():
    found = {u: files for u, files in long_modules().items() if (u, "long") not in LET_OFF}
    assert not found, (f"modules over {LONG} lines need a docstring line starting {LONG_MARKER!r}, or a split:\n"
                       + "\n".join(f"    {f}" for files in found.values() for f in sorted(files)))


def shim_imports():
    found = {}
    for e in EDGES:
        if e.target in SHIMS and e.importer not in SHIMS:
            found.setdefault(unit(e.importer), set()).add(f"{e!r}: use {' or '.join(SHIMS[e.target])}")
    return found


def test_vmkit_itself_imports_no_old_path():
    found = {u: lines for u, lines in shim_imports().items() if (u, "shims") not in LET_OFF}
    assert not found, "modules of vmkit that import an old path:\n" + "\n".join(
        f"    {line}" for lines in found.values() for line in sorted(lines))


def test_an_old_path_only_re_exports_from_the_new_one():
    for shim in sorted(SHIMS):
        path, source, tree = MODULES[shim]
        first = source.splitlines()[0]
        assert first.startswith("# Moved to ") and SHIMS[shim][0] in first, \
            f"{path.relative_to(ROOT)} should start with a comment saying where it moved: '# Moved to {SHIMS[shim][0]}'"
        for node in tree.body:
            assert isinstance(node, ast.ImportFrom), \
                f"{path.relative_to(ROOT)}:{node.lineno} does more than re-export: {ast.unparse(node)}"
            assert set(_targets(shim, node)) <= set(SHIMS[shim]), \
                f"{path.relative_to(ROOT)}:{node.lineno} re-exports from elsewhere than {SHIMS[shim]}"


def test_the_old_names_in_vmkit_vmm_are_the_new_homes_classes():
    """vmkit.vmm re-exports the names labs written before the move used; they are the same objects."""
    import vmkit.vmm
    import vmkit.vtx
    import vmkit.xen
    assert vmkit.vmm.Paravirt is vmkit.xen.Paravirt and vmkit.vmm.HYPERCALLS is vmkit.xen.HYPERCALLS
    assert not hasattr(vmkit.vmm, "HardwareAssist")       # vmkit.vtx imports vmkit.vmm: no name goes back


def test_no_notebook_or_test_imports_a_moved_module():
    """The modules that moved out of vmkit.vmm are gone from it; nothing still names them there."""
    moved = ("census", "domains", "event_channels", "grant_tables", "hardware_assist", "hypercalls", "paravirt",
             "rings", "xen_abi")
    pattern = re.compile(r"vmkit\.vmm\.(%s)\b|from vmkit\.vmm import [^\n\"]*\b(%s)\b" % ("|".join(moved), "|".join(moved)))
    found = [f"{path.relative_to(ROOT)}: {m.group(0)}" for folder in ("lessons", "labs", "tests", "vmkit")
             for path in sorted((ROOT / folder).rglob("*")) if path.suffix in (".py", ".ipynb", ".md")
             and path.name != "test_architecture.py"
             for m in pattern.finditer(path.read_text())]
    assert not found, "old paths still named:\n" + "\n".join(f"    {f}" for f in found)


def test_what_is_let_off_is_still_needed():
    """An entry no longer needed is a warning, not a failure: delete it, but nothing is broken."""
    breaking = {"reasons": unexplained_function_imports(), "long": long_modules(), "shims": shim_imports()}
    kept = [f"{u} ({rule})" for (u, rule) in LET_OFF if u not in breaking[rule]]
    if kept:
        warnings.warn(f"these now keep the rule: delete their lines from LET_OFF in tests/test_architecture.py: {kept}")


# --- the VMM interface (docs/architecture.md, 3.5) ---------------------------------------------------------
# A technique is a subclass of Machine. It overrides and calls only the public methods of the machine's
# VMM interface, calls its own parent through super(), and reaches no other object's private state.
MACHINE_MODULE = "vmkit.machine.machine"
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}
BUILTIN_TYPES = {"object", "type", "dict", "list", "tuple", "set", "int", "str", "bytes", "bytearray"}


def _private(name):
    """A name that says "mine": one leading underscore, not a dunder, not a protocol's _name_."""
    return name.startswith("_") and not name.startswith("__") and not name.endswith("_") \
        and name not in NAMEDTUPLE_API


def machine_classes():
    """Every class of vmkit that derives from Machine: found by name in the source, then imported."""
    import importlib

    bases = {(name, node.name): {ast.unparse(b).rpartition(".")[2] for b in node.bases}
             for name, (_, _, tree) in MODULES.items() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    found = {(MACHINE_MODULE, "Machine")}
    while True:
        names = {cls for _, cls in found}
        more = {key for key, base_names in bases.items() if key not in found and base_names & names}
        if not more:
            break
        found |= more
    machine = importlib.import_module(MACHINE_MODULE).Machine
    classes = [getattr(importlib.import_module(module), cls) for module, cls in sorted(found)]
    return machine, [c for c in classes if c is not machine and issubclass(c, machine)]


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _machine_private_names():
    """The names the machine keeps to itself: its methods and attributes with an underscore."""
    tree = MODULES[MACHINE_MODULE][2]
    machine = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Machine")
    names = {n.name for n in machine.body if isinstance(n, ast.FunctionDef) and _private(n.name)}
    names |= {n.attr for n in ast.walk(machine) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
              and n.value.id == "self" and _private(n.attr)}
    return names


def _class_node(cls):
    tree = MODULES[cls.__module__][2]
    return next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)


def test_every_technique_is_found():
    machine, classes = machine_classes()
    names = {c.__name__ for c in classes}
    assert {"TrapAndEmulate", "BinaryTranslation", "Paravirt", "HardwareAssist", "PagedMachine"} <= names
    loaded = {c for c in _all_subclasses(machine) if c.__module__.startswith("vmkit.")}
    assert loaded <= set(classes), f"subclasses of Machine the source scan missed: {loaded - set(classes)}"


def test_a_technique_overrides_only_public_methods():
    """A VMM overrides the names of the machine's VMM interface, never a private method of a class
    above it: those are the machine's (or the parent technique's) own, and may change."""
    _, classes = machine_classes()
    found = []
    for cls in classes:
        for name, value in vars(cls).items():
            if not _private(name) or not callable(value) and not isinstance(value, (property, staticmethod, classmethod)):
                continue
            for base in cls.__mro__[1:-1]:
                if name in vars(base):
                    found.append(f"    {cls.__module__}.{cls.__name__}.{name} overrides {base.__name__}.{name}")
                    break
    assert not found, ("a technique overrides a private method; give the machine a public method in its VMM "
                       "interface (vmkit/machine/machine.py) and override that:\n" + "\n".join(found))


def test_what_a_technique_overrides_says_when_it_is_called():
    machine, classes = machine_classes()
    overridden = {name for cls in classes for name in vars(cls)
                  if not name.startswith("_") and callable(getattr(machine, name, None))}
    assert {"exception", "port_access", "on_hlt", "on_cpuid", "inject_interrupt", "boot_state"} <= overridden
    undocumented = sorted(n for n in overridden if not (getattr(machine, n).__doc__ or "").strip())
    assert not undocumented, f"Machine methods a technique overrides without a docstring: {undocumented}"


def _self_attributes(node):
    return [n for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "self"]


def test_a_technique_uses_none_of_the_machines_private_names():
    """What the machine keeps private (its stop, its slice, its hooks) a technique reaches only
    through the public methods of the VMM interface."""
    machine, classes = machine_classes()
    private = _machine_private_names()
    assert {"_stop", "_stop_when", "_slice", "_on_interrupt"} <= private
    found = []
    for cls in classes:
        path = MODULES[cls.__module__][0].relative_to(ROOT)
        for n in _self_attributes(_class_node(cls)):
            if n.attr in private:
                found.append(f"    {path}:{n.lineno}: {cls.__name__} uses self.{n.attr}, the machine's own")
    assert not found, "techniques that use the machine's private names:\n" + "\n".join(found)


def _machine_package(name):
    return name == "vmkit.machine" or name.startswith("vmkit.machine.")


def private_imports(modules):
    """Private names a module outside vmkit.machine takes from it: imported by name, or read as an
    attribute of something it imported from there."""
    found = []
    for name, (path, _, tree) in modules.items():
        if _machine_package(name):
            continue
        bound = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and any(_machine_package(t) for t in _targets(name, node)):
                for alias in node.names:
                    if _private(alias.name):
                        found.append(f"    {path.relative_to(ROOT)}:{node.lineno}: imports {alias.name}")
                    bound.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound \
                    and _private(node.attr):
                found.append(f"    {path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_nothing_outside_the_machine_imports_its_private_names():
    found = private_imports(MODULES)
    assert not found, "private names of vmkit.machine used outside it:\n" + "\n".join(found)


def parent_skipping_calls(modules):
    """Calls that go past a method's own class: `Some.method(self, ...)` where Some is not a direct
    parent of the class (or is one, from a method of another name), and `super().method(...)` from a
    method of another name. Either skips what a class between them says (write self.method(...), or
    give the parent a method of its own for what is wanted)."""
    found = []
    for name, (path, _, tree) in modules.items():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            parents = {ast.unparse(b) for b in cls.bases}
            for method in (f for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))):
                for call in ast.walk(method):
                    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                        continue
                    owner, called = call.func.value, call.func.attr
                    where = f"    {path.relative_to(ROOT)}:{call.lineno}: {ast.unparse(call.func)}(...) in {cls.name}.{method.name}"
                    if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                        if called != method.name:
                            found.append(where)
                        continue
                    if not (isinstance(owner, (ast.Name, ast.Attribute)) and call.args
                            and isinstance(call.args[0], ast.Name) and call.args[0].id == "self"):
                        continue
                    text = ast.unparse(owner)
                    last = text.rpartition(".")[2]
                    if not (last[:1].isupper() or last in BUILTIN_TYPES):
                        continue                             # a module's function, given self as an argument
                    if text not in parents or called != method.name:
                        found.append(f"{where}, whose parents are {sorted(parents) or 'none'}")
    return found


def test_no_call_goes_past_the_direct_parent():
    found = parent_skipping_calls(MODULES)
    assert not found, ("calls that go past the caller's own class (write self.method(...), or super().method(...) "
                       "from the method of that name):\n" + "\n".join(found))


_ACCESSORS = ("getattr", "setattr", "hasattr", "delattr")


def foreign_private_access(modules):
    """Outside vmkit.machine (whose cpu.py and quirks.py reach into Unicorn's binding on purpose): an
    underscore attribute of an object other than self, cls or super(); getattr and its kin on one;
    and a name built from strings to find a private attribute (dispatch by string)."""
    found = []
    for name, (path, _, tree) in modules.items():
        if _machine_package(name):
            continue
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                    continue
                found.append(f"    {where}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _ACCESSORS \
                    and len(node.args) >= 2:
                owner, attr = node.args[0], node.args[1]
                if isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                    if _private(attr.value) and not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                        found.append(f"    {where}:{node.lineno}: {ast.unparse(node)}")
                elif any(isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.startswith("_")
                         for c in ast.walk(attr)):
                    found.append(f"    {where}:{node.lineno}: {ast.unparse(node)} builds a private name")
    return found


def test_no_module_reaches_into_another_objects_private_state():
    found = foreign_private_access(MODULES)
    assert not found, ("private attributes of other objects (give that object a public method, or use a table "
                       "of handlers instead of building a name):\n" + "\n".join(found))


def test_the_vmm_interface_checks_find_what_they_look_for():
    """A check that checks nothing passes too: each finds its fault in a small module made to have it."""
    source = '''
from vmkit.machine.machine import Machine, _Stop
from vmkit.machine import machine as m

class Technique(Machine):
    def _slice(self, limit, until):
        m._Stop("x", 0)
        object.__init__(self)
        self.other._stop_requested = True
        return getattr(self, "_" + "iret")(1)

class Child(Technique):
    def exception(self, vector, source):
        Machine.exception(self, vector, source)
        Technique.exception(self, vector, source)
        super().exception(vector, source)

    def callout(self):
        Technique.exception(self, 13, "exception")
        super().exception(13, "exception")
'''
    path = ROOT / "vmkit" / "made_up.py"
    modules = {"vmkit.made_up": (path, source, ast.parse(source))}
    imported = private_imports(modules)
    assert any("_Stop" in f for f in imported) and any("m._Stop" in f for f in imported)
    skipping = parent_skipping_calls(modules)
    assert any("Machine.exception" in f and "in Child.exception" in f for f in skipping)
    assert any("object.__init__" in f for f in skipping)
    assert not any("Child.exception" in f and "Technique.exception" in f for f in skipping)
    assert any("Technique.exception" in f and "Child.callout" in f for f in skipping)
    assert any("super().exception" in f and "Child.callout" in f for f in skipping)
    assert not any("super().exception" in f and "Child.exception" in f for f in skipping)
    foreign = foreign_private_access(modules)
    assert any("self.other._stop_requested" in f for f in foreign)
    assert any("builds a private name" in f for f in foreign)
