"""The two dtypes every backend computes in, and their names on every side (one table)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str          # float32 | float64 (the --dtype / dtype= value)
    numpy: np.dtype
    ctype: str         # the C type of the generated code
    suffix: str        # of the generated entry points (infinet_pair_f32, ...)


DTYPES: dict[str, DType] = {
    "float32": DType("float32", np.dtype(np.float32), "float", "f32"),
    "float64": DType("float64", np.dtype(np.float64), "double", "f64"),
}
