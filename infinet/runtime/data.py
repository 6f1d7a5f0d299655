"""Reading and checking input arrays against a plan's `input` line."""
from __future__ import annotations

import os
import zipfile

import numpy as np

from ..errors import DataError
from ..ir.plan import Plan


def load_array(path: str, what: str = "data") -> np.ndarray:
    """A `.npy` file, or an `.npz` holding `x` (or a single array)."""
    if not os.path.exists(path):
        raise DataError(f"{what} {path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{what} {path}: is a directory, not an array file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as err:
        raise DataError(f"{what} {path}: cannot read ({err.strerror or err})") from None
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise DataError(f"{what} {path}: not a .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{what} {path}: not a readable .npy/.npz array file ({_short(err)})") \
            from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if "x" in keys:
                key = "x"
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise DataError(f"{what} {path}: an .npz needs an array named 'x' "
                                f"(found: {', '.join(keys) or 'nothing'})")
            try:
                return loaded[key]
            except (ValueError, OSError, zipfile.BadZipFile) as err:
                raise DataError(f"{what} {path}: cannot read array '{key}' ({_short(err)})") \
                    from None
    return loaded


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


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
        raise DataError(f"{what}: cannot be read as an array ({_short(err)})") from None
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
