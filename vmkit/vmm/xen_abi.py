# Moved to vmkit.xen.abi.
from ..xen.abi import *  # noqa: F401,F403
