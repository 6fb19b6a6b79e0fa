# Moved to vmkit.xen.event_channels.
from ..xen.event_channels import *  # noqa: F401,F403
