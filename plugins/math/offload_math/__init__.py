"""offload-math: the edge math tasks of task-offloading as a plugin."""

__version__ = "0.1.0"
