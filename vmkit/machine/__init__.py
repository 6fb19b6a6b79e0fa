"""The vmkit PC: the model machine every technique runs its guests on."""
from .machine import Machine, MustCount, DEFAULT_MAX_INSTRUCTIONS, DEFAULT_TIMEOUT
from .platform import DEFAULT_MEMORY
from .devices import CPU_HZ, PIT_HZ

__all__ = ["Machine", "MustCount", "DEFAULT_MEMORY", "DEFAULT_MAX_INSTRUCTIONS", "DEFAULT_TIMEOUT", "CPU_HZ", "PIT_HZ"]
