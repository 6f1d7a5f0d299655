"""Named kill points: how the tests crash a run at an exact moment.

``reached(name)`` does nothing unless the environment variable ``INFINET_KILLPOINT``
names this point (``NAME``, or ``NAME@N`` for its N-th passage, counting from 1); then
the process kills itself with SIGKILL — no cleanup, no ``finally``, exactly like a crash
or power loss at that instant.  The points are listed in ``POINTS``; ``write:FILE`` is
passed by every atomic file write (atomic.py) with its temporary file complete and not
yet renamed to FILE (e.g. ``write:K.npz``, ``write:manifest.json@2``).
"""
from __future__ import annotations

import os
import signal

ENV = "INFINET_KILLPOINT"

POINTS = {
    "write:FILE": "an atomic write of FILE: the temporary file written, not yet renamed",
    "dir.manifest-written": "a fresh output directory: the manifest written, no arrays yet",
    "dir.tile-written": "a tile's values on disk (msync), its journal line not written",
    "dir.tile-recorded": "a tile's journal line written and fsync'ed",
    "dir.finish-renamed-one": "finishing: nngp.partial.npy renamed, ntk.partial.npy not",
    "dir.finish-renamed": "finishing: both arrays renamed, the manifest still 'running'",
    "dir.reopened": "a damaged finished directory reopened as 'running' for repair",
    "dir.cleared": "--overwrite: the old results removed, the new manifest not written",
    "npz.written": "K.npz renamed into place, K.npz.partial/ not yet removed",
    "npz.removing": "K.npz.partial/ half removed (arrays gone, manifest and lock left)",
    "zarr.manifest-written": "a fresh K.zarr: the manifest written, no arrays yet",
    "zarr.tile-written": "a tile's chunks written and fsync'ed (by a worker), not recorded",
    "zarr.tile-recorded": "a tile's checksum recorded in tiles_sha256",
    "zarr.verified": "finishing: every tile verified, the manifest still 'running'",
    "zarr.reopened": "a damaged finished K.zarr reopened as 'running' for repair",
    "zarr.cleared": "--overwrite: the old manifest emptied and its arrays removed",
}

_passes: dict[str, int] = {}


def reached(name: str) -> None:
    """Kill this process here if ``INFINET_KILLPOINT`` says so (tests only)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, count = wanted.partition("@")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
