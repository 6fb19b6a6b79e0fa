# Moved to vmkit.xen.paravirt (its page layout to vmkit.xen.layout, TrapInfo to vmkit.xen.abi).
from ..xen.abi import TrapInfo  # noqa: F401
from ..xen.layout import *  # noqa: F401,F403
from ..xen.paravirt import *  # noqa: F401,F403
