"""``gg.nn.parallel``: data parallelism over the ranks of a ``gg.distributed`` process group."""

from .distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
