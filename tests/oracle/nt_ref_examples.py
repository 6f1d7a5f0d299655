#!/usr/bin/env python
"""neural-tangents references for shrunk versions of examples/{wide_resnet,sequence_cnn,
mlp_layernorm}.net.

Each example file is read and shrunk by the text replacements in SHRINK (the same ones
tests/codegen_cases.py applies; the test checks that the stored text is what it makes of
the file), and its NT network is written as ops (nt_ref_blocks.py).  Writes
ref_examples.npz next to this file (NT_REF_OUT=DIR to change), laid out as ref_blocks.npz
with names example_wide_resnet, example_sequence_cnn, example_mlp_layernorm.

Run with the oracle environment of README.md:  nt-venv/bin/python nt_ref_examples.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nt_ref_blocks as blocks  # noqa: E402  (sets up jax, float64)
from nt_ref_blocks import (GAP, GELU, RELU, S2, Sum, avgpool, conv, dense, layernorm,  # noqa: E402
                           residual)

import numpy as np  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples")

#: example -> text replacements that shrink it (keep in step with tests/codegen_cases.py)
SHRINK = {
    "wide_resnet": [("input 32x32x3", "input 8x8x3"), ("param blocks = 2", "param blocks = 1")],
    "sequence_cnn": [("input 128x4", "input 16x4")],
    "mlp_layernorm": [("param depth = 4", "param depth = 2")],
}

_block = [RELU, conv(3), RELU, conv(3)]
_down = Sum([RELU, conv(3, stride=2), RELU, conv(3)], [conv(1, 1.0, stride=2)])

OPS = {
    # blocks = 1: one block per group, the `repeat blocks - 1` bodies vanish
    "wide_resnet": ((8, 8, 3), [conv(3, 1.0), residual(*_block), _down, _down, RELU, GAP,
                                dense()]),
    "sequence_cnn": ((16, 4), [conv(9, S2, 0.1)]
                     + [residual(RELU, conv(5), RELU, conv(5)), avgpool(2, 2)] * 3
                     + [layernorm(), RELU, GAP, dense()]),
    "mlp_layernorm": ((64,), [dense(1.0, 0.05)]
                      + [residual(layernorm(), dense(S2, 0.05), GELU, dense(1.0))] * 2
                      + [layernorm(), dense(1.0)]),
}


def shrunk(name):
    with open(os.path.join(EXAMPLES, name + ".net"), encoding="utf-8") as f:
        text = f.read()
    for old, new in SHRINK[name]:
        assert old in text, (name, old)
        text = text.replace(old, new)
    return text


def main():
    cases = [(f"example_{name}", OPS[name][0], shrunk(name), OPS[name][1]) for name in SHRINK]
    out = blocks.references(cases, 1100)
    path = os.path.join(blocks.OUT, "ref_examples.npz")
    np.savez_compressed(path, **out)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
