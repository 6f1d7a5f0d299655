"""Kernels already computed in this process, for reuse: ``k(x1, x2, cache=True)``.

A grid search over the ridge or over ``kernel='ntk'|'nngp'`` refits the same
estimator on the same folds again and again; the kernels do not change, only the
solve does.  Entries are keyed by everything that determines the values — the net's
source and params, the inputs' sha256 checksums, the dtype and the backend that ran —
and kept least-recently-used first out within ``max_bytes`` (default 1 GiB; set
``KERNELS.max_bytes``, or 0 to keep nothing).  Cached arrays are read-only, so no
caller can change what another one gets.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from .datasets import checksum
from .evaluate import KernelResult

DEFAULT_MAX_BYTES = 2 ** 30


def cache_key(plan, executor, x1: np.ndarray, x2: np.ndarray | None) -> tuple:
    """What determines a kernel's values (as in the resumable runs' manifest)."""
    source = hashlib.sha256(plan.source.encode()).hexdigest()
    params = tuple(sorted((k, float(v)) for k, v in plan.params.items()))
    return (source, params, checksum(x1), None if x2 is None else checksum(x2),
            executor.dtype.name, executor.name, getattr(executor, "ntk", True))


class KernelCache:
    """A bounded least-recently-used map from :func:`cache_key` to a KernelResult."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, KernelResult] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(_nbytes(r) for r in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple) -> KernelResult | None:
        with self._lock:
            result = self._entries.get(key)
            if result is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return result

    def put(self, key: tuple, result: KernelResult) -> KernelResult:
        """Keep ``result`` (its arrays made read-only); returns what the caller gets."""
        kept = KernelResult(_frozen(result.nngp), _frozen(result.ntk))
        size = _nbytes(kept)
        with self._lock:
            if size > self.max_bytes:
                return kept
            self._entries.pop(key, None)
            self._entries[key] = kept
            total = sum(_nbytes(r) for r in self._entries.values())
            while total > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                total -= _nbytes(old)
        return kept

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)      # freshly computed: nobody else holds it, no copy needed
    a.flags.writeable = False
    return a


def _nbytes(r: KernelResult) -> int:
    return int(r.nngp.nbytes + r.ntk.nbytes)


#: The process-wide cache that ``k(..., cache=True)`` and the estimators use.
KERNELS = KernelCache()
