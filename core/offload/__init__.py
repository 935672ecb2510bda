"""task-offloading: a plugin-based gateway that runs each task where it finishes best."""

from .errors import ConfigError, OffloadError
from .hookspecs import hookimpl
from .security import OPERATOR, READ, require_operator
from .tasks import OffloadResult, Task

__all__ = ["OPERATOR", "READ", "ConfigError", "OffloadError", "OffloadResult", "Task", "hookimpl", "require_operator"]
__version__ = "0.1.0"
