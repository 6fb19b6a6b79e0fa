# Moved to vmkit.xen.grant_tables.
from ..xen.grant_tables import *  # noqa: F401,F403
