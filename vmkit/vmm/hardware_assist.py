# Moved to vmkit.vtx.hardware_assist.
from ..vtx.hardware_assist import *  # noqa: F401,F403
