"""task-offloading: a plugin-based gateway that runs each task where it finishes best."""

from .errors import ConfigError, OffloadError
from .hookspecs import hookimpl
from .tasks import OffloadResult, Task

__all__ = ["ConfigError", "OffloadError", "OffloadResult", "Task", "hookimpl"]
__version__ = "0.1.0"
