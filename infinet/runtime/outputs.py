"""Which store an output names: ``--out K.npz``, ``--out DIR/``, or none (memory)."""
from __future__ import annotations

import os

from .dirstore import DirStore
from .npzstore import NpzStore
from .stores import MemoryStore, Store


def open_store(out, identity, n1: int, n2: int, *, what: str = "--out",
               overwrite: bool = False) -> Store:
    """The store for ``out``: None → memory; ``*.npz`` (not an existing directory) → one
    ``.npz`` file; anything else → a directory.  ``identity()`` gives the computation's
    identity (called only for stores that keep results)."""
    if out is None:
        return MemoryStore(n1, n2)
    out = os.fspath(out)
    if out.endswith(".npz") and not os.path.isdir(out):
        return NpzStore(out, identity(), what, overwrite=overwrite)
    return DirStore(out, identity(), what, overwrite=overwrite)
