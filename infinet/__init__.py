"""infinet: a compiler for infinitely wide neural networks.

    >>> import infinet
    >>> k = infinet.compile("examples/cntk_gap.net", depth=5)
    >>> out = k(x1, x2)          # out.nngp, out.ntk: [N1, N2]
"""
from .compiler import build_plan, compile, parse_net
from .errors import DataError, InfinetError, NetError, UsageError
from .runtime.datasets import Dataset, load_dataset

__version__ = "0.1.0"

__all__ = ["DataError", "Dataset", "InfinetError", "NetError", "UsageError", "__version__",
           "build_plan", "compile", "load_dataset", "parse_net"]
