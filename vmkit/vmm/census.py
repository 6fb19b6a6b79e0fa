# Moved to vmkit.census.
from ..census import *  # noqa: F401,F403
