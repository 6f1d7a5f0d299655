"""Checking input arrays against a plan's `input` line (files and specs: datasets.py)."""
from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from ..ir.plan import Plan
from .datasets import first_line


def check_inputs(plan: Plan, x, what: str = "x") -> np.ndarray:
    """``x`` as a float64 array [N, *plan.data_shape], or a :class:`DataError`.

    ``x`` may also be a dataset spec ("digits:test", "a.npz", ...) or a Dataset.
    """
    if isinstance(x, (str, os.PathLike)) or hasattr(x, "preprocessing"):
        from .datasets import load_dataset
        x = load_dataset(x, what).x
    try:
        arr = np.asarray(x)
    except Exception as err:  # noqa: BLE001 - anything numpy cannot turn into an array
        raise DataError(f"{what}: cannot be read as an array ({first_line(err)})") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what}: expected numbers, got an array of {arr.dtype} values")
    expected = plan.data_shape
    shown = "[N, " + ", ".join(map(str, expected)) + "]"
    kind = "images" if len(expected) == 3 else "vectors"
    if arr.ndim != len(expected) + 1:
        raise DataError(f"{what}: has shape {tuple(arr.shape)}, but {plan.name} takes {kind} "
                        f"(input {_input_text(expected)}): expected {shown}")
    if arr.shape[0] == 0:
        raise DataError(f"{what}: is empty (0 samples)")
    if tuple(arr.shape[1:]) != expected:
        if len(expected) == 3 and tuple(arr.shape[1:3]) == expected[:2]:
            raise DataError(f"{what}: has {arr.shape[3]} channels but the input line says "
                            f"{expected[2]} (shape {tuple(arr.shape)}, expected {shown})")
        if len(expected) == 3 and arr.shape[1] == expected[2] and \
                tuple(arr.shape[2:]) == expected[:2]:
            raise DataError(f"{what}: has shape {tuple(arr.shape)}, which looks like NCHW; "
                            f"infinet takes NHWC images: expected {shown}")
        raise DataError(f"{what}: has shape {tuple(arr.shape)} but the input line says "
                        f"{_input_text(expected)}: expected {shown}")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{what}: contains NaN or inf ({int(bad.sum())} values, the first "
                        f"at index {first})")
    return arr


def _input_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
