# Attack: a sys.meta_path finder that turns every check of vmkit.grading into a no-op each time it is
# imported again (as hidden checks do, to get vmkit as on disk), and the same done to the modules
# imported already.
import importlib.abc, importlib.machinery, sys

def _quiet(module):
    for _name in dir(module):
        if _name.startswith(("check", "fail_cases", "answer_cases")):
            setattr(module, _name, lambda *args, **kwargs: None)

class _Quiet(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if not name.startswith("vmkit.grading"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            self._inner, spec.loader = spec.loader, self
        return spec
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        self._inner.exec_module(module)
        _quiet(module)

sys.meta_path.insert(0, _Quiet())
for _name, _module in list(sys.modules.items()):
    if _name.startswith("vmkit.grading") and _module is not None:
        _quiet(_module)
for _name in [n for n in globals() if n.startswith("check")]:
    globals()[_name] = lambda *args, **kwargs: None
