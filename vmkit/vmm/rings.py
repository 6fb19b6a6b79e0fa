# Moved to vmkit.xen.io_ring.
from ..xen.io_ring import *  # noqa: F401,F403
