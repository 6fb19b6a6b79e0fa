"""The errors vmkit raises. Each one says what went wrong and what to do about it."""


class VmkitError(Exception):
    """Base class of every error vmkit raises on purpose."""


class AsmError(VmkitError):
    """NASM rejected the source. `line` is 1-based, `text` is that source line, `message` NASM's words."""

    def __init__(self, line, text, message):
        self.line, self.text, self.message = line, text, message
        where = f"line {line}: {text.strip()}" if line else "the source"
        super().__init__(f"{where}\n    {message}")


class ToolMissing(VmkitError):
    """A program vmkit needs (nasm, dot, qemu) is not installed; the message says how to get it."""

    def _render_traceback_(self):
        # IPython shows this instead of a traceback: the message is the whole story, and the
        # command that fixes it should not drown in frames from inside vmkit.
        return [f"{type(self).__name__}: {self}"]


class GuestTimeout(VmkitError):
    """The guest used up its budget (instructions or seconds). `result` is the run so far."""

    def __init__(self, message, result):
        self.result = result
        super().__init__(message)


class GuestError(VmkitError):
    """The guest did something the machine cannot model (memory outside RAM, an unsupported mode).
    `result` is the run so far."""

    def __init__(self, message, result):
        self.result = result
        super().__init__(message)


class GuestInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C, JupyterLab's stop button, a grader's cell timeout). Still a
    KeyboardInterrupt, so nothing that catches Exception swallows it; `result` is the run so far."""

    def __init__(self, message, result):
        self.result = result
        super().__init__(message)


class KvmUnavailable(VmkitError):
    """Real KVM cannot be used here. `reason` says why, `fix` what to do about it (may be empty)."""

    def __init__(self, reason, fix=""):
        self.reason, self.fix = reason, fix
        super().__init__(f"{reason}\n    fix: {fix}" if fix else reason)

    def _render_traceback_(self):
        return [f"{type(self).__name__}: {self}"]       # as for ToolMissing: the message is the story
