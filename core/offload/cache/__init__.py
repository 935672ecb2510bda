"""Read caching and request coalescing (see :mod:`offload.cache.read_cache`)."""

from .bounded import BoundedCache
from .coalesce import Coalescer
from .read_cache import OUTCOMES, CacheOutcome, Fresh, ReadCache

__all__ = ["OUTCOMES", "BoundedCache", "CacheOutcome", "Coalescer", "Fresh", "ReadCache"]
