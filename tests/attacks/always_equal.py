# Attack: after every cell, replace each function the notebook defines that is still a stub (it
# raises NotImplementedError) by one that returns an object equal to anything, so every comparison a
# check makes succeeds.
import inspect

class _Everything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __hash__(self): return 0
    def __getitem__(self, key): return self
    def __getattr__(self, name): return self
    def __iter__(self): return iter([self] * 2)
    def __len__(self): return 2
    def __call__(self, *args, **kwargs): return self
    def __bool__(self): return True

def _replace_stubs(*args):
    namespace = get_ipython().user_ns
    for _name, _value in list(namespace.items()):
        if inspect.isfunction(_value) and not _name.startswith("_"):
            try:
                stub = "NotImplementedError" in inspect.getsource(_value)
            except (OSError, TypeError):
                continue
            if stub:
                namespace[_name] = lambda *args, **kwargs: _Everything()

get_ipython().events.register("post_run_cell", _replace_stubs)
