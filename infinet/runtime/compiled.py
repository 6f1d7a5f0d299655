"""What the generated-code executors (CPU and CUDA) share: variance tables and packing.

The generated kernels read every self-variance of an input from one packed row
``vt[r, :]`` (layout: ``KernelProgram.vtable``, state → (offset, size)).  The per-input
pass writes that row; :class:`VarianceTables` is the ``{layer: array}`` dict the
executor interface promises, with the packed array kept alongside so the pair pass
never repacks it.  After v and the means come the layers' per-input features of v
(``KernelProgram.vfeatures``: 1/√v for relu, …), which :func:`fill_features` computes
from v on the host once per input, with the layer's own formula evaluated by NumPy
(correctly rounded operations only: the bits the self pass computes inline).
"""
from __future__ import annotations

import numpy as np

from ..codegen.program import KernelProgram
from ..layers.mathns import NumpyMath


class VarianceTables(dict):
    """{state index: v [N, *spatial] or [N]}, views into ``packed`` [N, VT]."""

    packed: np.ndarray

    @classmethod
    def from_packed(cls, prog: KernelProgram, packed) -> "VarianceTables":
        out = cls()
        out.packed = packed
        n = packed.shape[0]
        for index, (offset, size) in prog.vtable.items():
            spatial = tuple(prog.plan.nodes[index].shape.spatial)
            out[index] = packed[:, offset:offset + size].reshape((n,) + spatial)
        return out


def pack(prog: KernelProgram, tables, n: int, dtype, xp=np):
    """The packed [N, max(VT, 1)] array of a variance dict (as the pair pass reads it)."""
    packed = getattr(tables, "packed", None)
    if packed is not None and packed.dtype == dtype and \
            (xp is np) == isinstance(packed, np.ndarray):
        return packed
    out = xp.zeros((n, max(prog.vt_size, 1)), dtype)
    for index, (offset, size) in prog.vtable.items():
        out[:, offset:offset + size] = xp.asarray(tables[index], dtype).reshape(n, size)
    for index, offset in prog.vmeans.items():
        out[:, offset] = out[:, prog.vtable[index][0]:][:, :prog.vtable[index][1]].mean(axis=1)
    return fill_features(prog, out, dtype, xp)


def fill_features(prog: KernelProgram, packed, dtype, xp=np):
    """Write the feature rows of ``packed`` [N, VT] from its v rows (in place); returns it."""
    if not prog.vfeatures or not len(packed):
        return packed
    m = NumpyMath(dtype)
    for blk in prog.vfeatures:
        off, size = prog.vtable[blk.state]
        v = packed[:, off:off + size]
        v = np.asarray(v) if xp is np else xp.asnumpy(v)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            feats = blk.layer.features(m, np.ascontiguousarray(v, dtype=dtype))
        for k, f in enumerate(feats):
            f = np.broadcast_to(np.asarray(f, dtype), v.shape)
            packed[:, blk.offset + k * size:blk.offset + (k + 1) * size] = \
                f if xp is np else xp.asarray(f)
    return packed
