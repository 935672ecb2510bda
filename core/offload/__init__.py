"""task-offloading: a plugin-based gateway that runs each task where it finishes best."""

from .engine import OffloadResult, Task
from .errors import ConfigError, OffloadError
from .hookspecs import hookimpl

__all__ = ["ConfigError", "OffloadError", "OffloadResult", "Task", "hookimpl"]
__version__ = "0.1.0"
