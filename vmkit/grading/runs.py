"""What every lab's runners share: a run that goes wrong turned into a message that names what went
wrong, and how a run ended as plain data."""
from contextlib import contextmanager

from ..errors import AsmError, GuestError, GuestTimeout


@contextmanager
def explained(what, max_instructions, timeout, look, ends="finish", shown="serial output so far", last=None,
              astray=lambda error: f"did something the machine cannot run: {error}", errors=GuestError):
    """Every way a graded run can go wrong, turned into a message that names `what` went wrong: a
    guest that does not assemble (the line), one that runs out of budget (what it printed, and
    `look`: where to look), one that goes astray (`astray(error)`)."""
    try:
        yield
    except AsmError as error:
        raise AssertionError(f"{what} does not assemble: NASM stops at line {error.line} "
                             f"({error.text.strip()!r}): {error.message}") from None
    except GuestTimeout as error:
        serial = error.result.serial if error.result is not None else ""
        raise AssertionError(
            f"{what} did not {ends} within {max_instructions:,} instructions or {timeout:g} s.\n"
            f"  {shown}: {(serial[-last:] if last else serial)!r}\n"
            f"  where to look: {look}") from None
    except errors as error:
        raise AssertionError(f"{what} {astray(error)}") from None


def guest_error_message(error):
    """One line for a guest that failed to assemble or run, for cells that report rather than assert."""
    if isinstance(error, AsmError):
        return f"line {error.line} ({error.text.strip()!r}): {error.message}"
    return str(error)


def ending(result):
    """How a run ended and what it printed, as plain data."""
    return {"serial": result.serial, "exit_code": result.exit_code, "halted": result.halted,
            "shutdown": result.shutdown}
