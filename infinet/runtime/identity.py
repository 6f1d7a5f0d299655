"""The identity of a computation: everything that determines a kernel's values.

A stored result records it; resuming or reusing the result compares it, so results of
a different net, params, inputs, dtype or backend are never mixed or passed off.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .datasets import checksum


def identity(executor, x1: np.ndarray, x2: np.ndarray | None) -> dict:
    """What the values depend on (JSON-ready): net, params, inputs, dtype, backend."""
    plan = executor.plan
    return {
        "net": {"name": plan.name,
                "source_sha256": hashlib.sha256(plan.source.encode()).hexdigest()},
        "params": {k: (float(v) if isinstance(v, float) else v) for k, v in plan.params.items()},
        "x1": {"shape": list(x1.shape), "checksum": checksum(x1)},
        "x2": "x1" if x2 is None else {"shape": list(x2.shape), "checksum": checksum(x2)},
        "symmetric": x2 is None,
        "dtype": executor.dtype.name,
        "backend": executor.name,
        "kernels": ["nngp", "ntk"] if getattr(executor, "ntk", True) else ["nngp"],
    }


_WORDS = {
    "net": "the net", "params": "the params", "x1": "the inputs x1", "x2": "the inputs x2",
    "dtype": "the dtype", "backend": "the backend", "symmetric": "whether x2 is x1",
    "kernels": "the kernels computed (NNGP only or NNGP and NTK)",
}


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def differences(old: dict, new: dict) -> list[str]:
    """What differs between two identities, in words ("the params", "the inputs x1")."""
    if not isinstance(old, dict):
        old = {}
    return sorted({_WORDS.get(c.split(".")[0], c) for c in _changed_keys(old, new)})
