"""What evaluating a kernel returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class KernelResult:
    """Infinite-width kernels of a network: ``nngp`` (Σ) and ``ntk`` (Θ), [N1, N2].

    ``pairs_computed``: how many pairs this call computed (0 when every result was read
    back from a finished, verified output; None where not counted).
    """

    nngp: np.ndarray
    ntk: np.ndarray
    pairs_computed: int | None = field(default=None, compare=False)

    def __iter__(self):
        return iter((self.nngp, self.ntk))
