"""How many pairs one executor call takes: the working-memory bound.

Pairs are processed in batches of B, chosen so that the batch's working set (about
``WORKING_ARRAYS`` arrays of the largest state, plus the input gather) fits in
``max_memory`` bytes (default ``DEFAULT_MAX_MEMORY``).  On top of that a run holds the
inputs, the self-variance tables ((N1 + N2) × ``plan.self_variance_entries()`` numbers)
and the two [N1, N2] float64 results.  Nothing else grows with the data.
"""
from __future__ import annotations

import warnings

DEFAULT_MAX_MEMORY = 512 * 2 ** 20
WORKING_ARRAYS = 10
#: Working memory of one pair batch, per executor: NumPy runs about 3x faster with
#: batches that fit in the CPU's cache than with 512 MiB ones.  Executors may say
#: their own with a ``batch_memory`` attribute; otherwise ``max_memory`` is used.
#: Executors may also say their working memory per pair (``pair_bytes``, in bytes).
BATCH_MEMORY = {"numpy": 4 * 2 ** 20}


class MemoryLimitWarning(UserWarning):
    """One pair needs more working memory than the limit allows."""


def pair_bytes(plan, itemsize: int) -> int:
    """Working memory of one pair (bytes): the estimate the batch size is made from."""
    first = plan.nodes[0]
    channels = first.shape.channels or 1
    return itemsize * (WORKING_ARRAYS * plan.peak_entries
                       + 2 * channels * max(first.pair_cost.entries, first.self_cost.entries))


def pair_batch_size(plan, itemsize: int, max_memory: int) -> int:
    """Pairs whose working memory fits in ``max_memory`` bytes (at least 1)."""
    return max(1, int(max_memory // max(pair_bytes(plan, itemsize), 1)))


def batch_size(executor, max_memory: int | None = None) -> int:
    """Pairs per executor call: within ``max_memory``, and cache-sized for NumPy.

    Warns (:class:`MemoryLimitWarning`) when a single pair needs more than
    ``max_memory``: the run then goes one pair at a time and exceeds the limit.
    """
    limit = max_memory or DEFAULT_MAX_MEMORY
    # an executor that knows its own working memory per pair says so (``pair_bytes``);
    # otherwise the NumPy reference's model
    need = getattr(executor, "pair_bytes", None) or pair_bytes(executor.plan,
                                                                executor.dtype.itemsize)
    if need > limit:
        warnings.warn(MemoryLimitWarning(
            f"one pair of net {executor.plan.name} needs about {_size(need)} of working memory "
            f"({executor.dtype.name}, {executor.name}), more than the memory limit of "
            f"{_size(limit)} (--max-memory): pairs are computed one at a time and the run uses "
            f"more memory than the limit"), stacklevel=2)
    memory = limit
    preferred = getattr(executor, "batch_memory", None) or BATCH_MEMORY.get(executor.name)
    if preferred:
        memory = min(memory, preferred)
    return max(1, int(memory // max(need, 1)))


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
