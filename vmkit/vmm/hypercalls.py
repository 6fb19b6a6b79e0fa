# Moved to vmkit.xen.hypercalls.
from ..xen.hypercalls import *  # noqa: F401,F403
