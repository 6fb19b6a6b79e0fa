# Moved to vmkit.xen.domains.
from ..xen.domains import *  # noqa: F401,F403
