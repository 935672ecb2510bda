"""offload-contracts: EVM smart-contract calls through the task-offloading gateway."""

__version__ = "0.1.0"
