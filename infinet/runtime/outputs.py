"""Which store an output names: ``--out K.npz``, ``--out K.zarr``, ``--out DIR/``, or none
(memory)."""
from __future__ import annotations

import os

from .dirstore import DirStore
from .npzstore import NpzStore
from .stores import ARRAYS, MemoryStore, Store
from .zarrstore import ZarrStore, is_zarr


def open_store(out, identity, n1: int, n2: int, *, what: str = "--out",
               overwrite: bool = False, names=ARRAYS, manifest_extra=None) -> Store:
    """The store for ``out``: None → memory; ``*.npz`` (not an existing directory) → one
    ``.npz`` file; a path or URL with a ``*.zarr`` component → a zarr group; anything else
    → a directory.  ``identity()`` gives the computation's identity (called only for
    stores that keep results); ``names``: the arrays a zarr store keeps;
    ``manifest_extra()``: more manifest entries for a zarr store (the net's source)."""
    if out is None:
        return MemoryStore(n1, n2)
    out = os.fspath(out)
    if is_zarr(out):
        return ZarrStore(out, identity(), what, overwrite=overwrite, names=names,
                         manifest_extra=manifest_extra() if manifest_extra else None)
    if out.endswith(".npz") and not os.path.isdir(out):
        return NpzStore(out, identity(), what, overwrite=overwrite)
    return DirStore(out, identity(), what, overwrite=overwrite)
