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
* a module at an old path (a shim, kept so that notebooks written before a move still work) that
  does more than re-export from its new place, and a module of vmkit that still imports one.

LET_OFF names the rules that grading does not keep yet; the test warns once one is kept.
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
    "vmkit.errors": 0, "vmkit.trace": 0, "vmkit.asm": 0, "vmkit.guests": 0, "vmkit.machine": 0,
    "vmkit.vmm": 1, "vmkit.xen": 1, "vmkit.vtx": 1, "vmkit.kvm": 1,
    "vmkit": 2, "vmkit.run": 2, "vmkit.doctor": 2,
    "vmkit.migration": 3, "vmkit.compare": 3, "vmkit.census": 3, "vmkit.isolation": 3, "vmkit.consolidation": 3,
    "vmkit.viz": 4,
    "vmkit.grading": 5,
}
LAYER_NAMES = ("machine", "techniques", "run", "experiments", "viz", "grading")

# Old paths kept for the lessons and labs, each re-exporting from its new place. Delete one (and its
# line here) once no notebook imports it.
SHIMS = {
    "vmkit.vmm.xen_abi": ("vmkit.xen.abi",),
    "vmkit.vmm.paravirt": ("vmkit.xen.paravirt", "vmkit.xen.layout", "vmkit.xen.abi"),
    "vmkit.vmm.domains": ("vmkit.xen.domains",),
    "vmkit.vmm.hypercalls": ("vmkit.xen.hypercalls",),
    "vmkit.vmm.event_channels": ("vmkit.xen.event_channels",),
    "vmkit.vmm.grant_tables": ("vmkit.xen.grant_tables",),
    "vmkit.vmm.rings": ("vmkit.xen.io_ring",),
    "vmkit.vmm.hardware_assist": ("vmkit.vtx.hardware_assist",),
    "vmkit.vmm.census": ("vmkit.census",),
}
# Rules that units not yet brought in line are let off, each with what is left to do. Once a unit
# keeps a rule, test_what_is_let_off_is_still_needed warns: delete that line then.
LET_OFF = {
    ("vmkit.grading", "reasons"): "imports inside functions without a comment saying why",
    ("vmkit.grading", "long"): "grading.py is over 600 lines and does not say why",
    ("vmkit.grading", "shims"): "grading imports vmkit.vmm.census, .xen_abi, .hypercalls and .hardware_assist",
}


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


@pytest.mark.parametrize("shim", sorted(SHIMS))
def test_an_old_path_only_re_exports_from_the_new_one(shim):
    path, source, tree = MODULES[shim]
    first = source.splitlines()[0]
    assert first.startswith("# Moved to ") and SHIMS[shim][0] in first, \
        f"{path.relative_to(ROOT)} should start with a comment saying where it moved: '# Moved to {SHIMS[shim][0]}'"
    for node in tree.body:
        assert isinstance(node, ast.ImportFrom), \
            f"{path.relative_to(ROOT)}:{node.lineno} does more than re-export: {ast.unparse(node)}"
        assert set(_targets(shim, node)) <= set(SHIMS[shim]), \
            f"{path.relative_to(ROOT)}:{node.lineno} re-exports from elsewhere than {SHIMS[shim]}"


def test_an_old_path_still_gives_what_it_gave():
    """The lessons' and labs' imports through the old paths find the same objects at the new ones."""
    import vmkit.census
    import vmkit.vmm
    import vmkit.vtx.hardware_assist
    import vmkit.xen.abi
    import vmkit.xen.io_ring
    import vmkit.xen.layout
    import vmkit.xen.paravirt
    from vmkit.vmm import census, hardware_assist, paravirt, rings, xen_abi
    assert vmkit.vmm.Paravirt is paravirt.Paravirt is vmkit.xen.paravirt.Paravirt
    assert vmkit.vmm.HYPERCALLS is vmkit.xen.HYPERCALLS and vmkit.vmm.VmcsControls is vmkit.vtx.VmcsControls
    assert paravirt.SHARED_INFO == vmkit.xen.layout.SHARED_INFO and paravirt.TrapInfo is vmkit.xen.abi.TrapInfo
    assert xen_abi.START_INFO is vmkit.xen.abi.START_INFO and rings.read_ring is vmkit.xen.io_ring.read_ring
    assert hardware_assist.KERNEL_HANDLED is vmkit.vtx.hardware_assist.KERNEL_HANDLED
    assert census.census is vmkit.census.census and census.CensusRow is vmkit.census.CensusRow


def test_what_is_let_off_is_still_needed():
    """An entry no longer needed is a warning, not a failure: delete it, but nothing is broken."""
    breaking = {"reasons": unexplained_function_imports(), "long": long_modules(), "shims": shim_imports()}
    kept = [f"{u} ({rule})" for (u, rule) in LET_OFF if u not in breaking[rule]]
    if kept:
        warnings.warn(f"these now keep the rule: delete their lines from LET_OFF in tests/test_architecture.py: {kept}")
