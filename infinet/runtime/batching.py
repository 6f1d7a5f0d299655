"""How many pairs one executor call takes: the working-memory bound.

Pairs are processed in batches of B, chosen so that the batch's working set (about
``WORKING_ARRAYS`` arrays of the largest state, plus the input gather) fits in
``max_memory`` bytes (default ``DEFAULT_MAX_MEMORY``).  On top of that a run holds the
inputs, the self-variance tables ((N1 + N2) × ``plan.self_variance_entries()`` numbers)
and the two [N1, N2] float64 results.  Nothing else grows with the data.

A GPU executor sizes its own work instead (``device_batches = True``; the CUDA target):
one executor call (one host synchronisation) takes a whole tile of pairs
(:func:`device_call_pairs`), which it runs as *launch sequences* of as many pairs as its
device footprint allows (:func:`device_pair_bytes`, :func:`sequence_pairs`), every stage
launch split so that none is predicted to run longer than ``LAUNCH_SECONDS``
(:func:`launch_pairs`).
"""
from __future__ import annotations

import math
import warnings

from ..errors import InfinetError

DEFAULT_MAX_MEMORY = 512 * 2 ** 20
WORKING_ARRAYS = 10
#: Working memory of one pair batch, per executor: NumPy runs about 3x faster with
#: batches that fit in the CPU's cache than with 512 MiB ones.  Executors may say
#: their own with a ``batch_memory`` attribute; otherwise ``max_memory`` is used.
#: Executors may also say their working memory per pair (``pair_bytes``, in bytes).
BATCH_MEMORY = {"numpy": 4 * 2 ** 20}


class MemoryLimitWarning(UserWarning):
    """One pair needs more working memory than the limit allows."""


# -- GPU executors: device footprint, launch sequences, bounded launches ------------------------

#: Device memory one launch sequence may hold at most (its stage buffers, row indices and
#: outputs), and the share of the device's free memory left alone (other processes, the
#: memory pool's rounding, the per-launch scratch of kernels).
DEVICE_BUDGET = 2 ** 30
DEVICE_MARGIN = 0.10
#: Pairs of one launch sequence at most (a fixed cap, whatever the memory allows).
MAX_SEQUENCE_PAIRS = 65536
#: Row-index and output buffers per launch sequence: two, so that the next sequence's
#: rows upload (copy stream) while this one computes, and its results are read back.
SEQUENCE_SLOTS = 2
ROW_INDEX_BYTES = 8          # int64
#: No launch is predicted to run longer than this (a desktop GPU's display watchdog
#: kills kernels after ~2 s on Windows (TDR) and ~5 s under X11).
LAUNCH_SECONDS = 1.0
#: The conservative throughput the launch bound is predicted with: work units (flops +
#: 20 per transcendental + 1 per entry, as the plan counts them) per second per streaming
#: multiprocessor.  An SM of a desktop GPU issues ~2e11 lane-instructions/s and the
#: generated kernels issue ~4 instructions per work unit (~5e10 work/s at full issue): the
#: float32 figure is 12x below that; float64 runs at 1/32-1/64 of float32 on desktop
#: GPUs, hence 1/40 of it.  Slower devices than this would need a lower LAUNCH_SECONDS.
DEVICE_WORK_PER_SM_S = {"float32": 4e9, "float64": 1e8}
#: Work (flops + 20 per transcendental) of one GPU tile (= one executor call = one host
#: synchronisation): ~5 s at the 50 us-per-pair CNTK-GAP-21 goal (4e13 work/s), so a
#: kill loses little; e.g. ~1e5 pairs of CNTK-GAP-21 (2.0e9 work per pair).
DEVICE_TILE_WORK = 2e14


def device_pair_bytes(buffer_entries: int, itemsize: int, slots: int = SEQUENCE_SLOTS) -> int:
    """Device bytes per pair of a launch sequence: the materialised states and readout
    partials of the pass (``buffer_entries`` numbers, once: the stages of one stream reuse
    them in order), and per slot two row indices and two outputs (K and Θ)."""
    return itemsize * buffer_entries + slots * (2 * ROW_INDEX_BYTES + 2 * itemsize)


def sequence_pairs(per_pair: int, free: int, fixed: int = 0, *, budget: int | None = None,
                   margin: float | None = None, most: int | None = None) -> int:
    """Pairs (or inputs) of one launch sequence: as many as fit in
    min(``free`` x (1 - margin), budget) - ``fixed`` bytes (``free``: the device's free
    memory now; ``fixed``: what the sequence holds whatever its size, the kernels' global
    scratch), at most ``most``.  An :class:`InfinetError` when not even one fits."""
    budget = DEVICE_BUDGET if budget is None else budget
    margin = DEVICE_MARGIN if margin is None else margin
    most = MAX_SEQUENCE_PAIRS if most is None else most
    room = min(int(free * (1 - margin)), int(budget)) - int(fixed)
    if room < per_pair:
        raise InfinetError(
            f"one pair needs {_size(per_pair + fixed)} of device memory, but only "
            f"{_size(max(room + fixed, 0))} can be used ({_size(free)} free on the GPU, "
            f"{int(margin * 100)} % left alone, at most {_size(budget)}); free GPU memory "
            f"or use --backend cpu")
    return max(1, min(int(most), room // max(int(per_pair), 1)))


def launch_pairs(work_per_item: float, sms: int, dtype_name: str,
                 seconds: float | None = None, rate: dict | None = None) -> int:
    """Items (pairs or inputs) of one stage launch: predicted at the conservative
    throughput to take at most ``seconds`` (``LAUNCH_SECONDS``).  At least one: a single
    item is the smallest launch the kernels allow."""
    seconds = LAUNCH_SECONDS if seconds is None else seconds
    per_s = (rate or DEVICE_WORK_PER_SM_S)[dtype_name] * max(int(sms), 1)
    return max(1, int(math.floor(seconds * per_s / max(float(work_per_item), 1.0))))


def launch_chunks(n: int, per_launch: int) -> list[tuple[int, int]]:
    """(first item, items) of the launches that cover ``n`` items, ``per_launch`` each."""
    per_launch = max(1, int(per_launch))
    return [(a, min(per_launch, n - a)) for a in range(0, n, per_launch)]


def device_call_pairs(plan, max_memory: int, tile_work: float | None = None) -> int:
    """Pairs per call of a GPU executor: a tile of about ``tile_work`` (so that every tile
    is one call, one host synchronisation), within the tiles' host memory bound."""
    from .tiles import TILE_BYTES_PER_PAIR, work_per_pair
    cap = max(1, int(max_memory) // (4 * TILE_BYTES_PER_PAIR))
    return max(1, int(min(cap, (tile_work or DEVICE_TILE_WORK) / work_per_pair(plan))))


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
    """Pairs per executor call: within ``max_memory``, and cache-sized for NumPy; a tile
    for a GPU executor (``device_batches``), which sizes its device work itself.

    Warns (:class:`MemoryLimitWarning`) when a single pair needs more than
    ``max_memory``: the run then goes one pair at a time and exceeds the limit.
    """
    limit = max_memory or DEFAULT_MAX_MEMORY
    if getattr(executor, "device_batches", False):
        return device_call_pairs(executor.plan, limit, getattr(executor, "tile_work", None))
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
