"""The .net language: every form of docs/language.md is accepted and means what it says."""
from __future__ import annotations

import math

import pytest

import infinet
from infinet.layers import (ABRelu, AvgPool, Conv, Dense, Elementwise, Erf, Flatten,
                            GlobalAvgPool, Identity, LeakyRelu, Relu)

SPEC_EXAMPLE = """\
# comments run from '#' to the end of the line
net cntk_gap                 # optional name
param depth = 11             # a named constant, overridable from the CLI and API
input 32x32x3                # H x W x C images (NHWC data); `input 20` = flat vectors
repeat depth - 1 {           # a block repeated N times (N: an expression)
  conv 3x3 pad=same W=sqrt(2) b=0
  relu
}
gap                          # or: flatten
dense W=1 b=0
"""


def layers(source, **params):
    return [n.layer for n in infinet.compile(source, **params).plan.nodes]


def test_spec_example():
    plan = infinet.compile(SPEC_EXAMPLE).plan
    assert plan.name == "cntk_gap" and plan.params == {"depth": 11}
    kinds = [n.layer.keyword for n in plan.nodes]
    assert kinds == ["input"] + ["conv", "relu"] * 10 + ["gap", "dense"]
    conv = plan.nodes[1].layer
    assert conv.size == (3, 3) and conv.pad == "same" and conv.stride == 1
    assert conv.W == pytest.approx(math.sqrt(2)) and conv.b == 0 and not conv.fixed
    assert plan.nodes[1].layer.pos.line == 6 and plan.nodes[3].layer.pos.line == 6


def test_params_override_and_expressions():
    assert len(layers(SPEC_EXAMPLE, depth=3)) == 1 + 4 + 2
    src = "param a = 2\nparam b = (a + 1) * 3 / 2 - -1\ninput 3\ndense W=sqrt(b) b=a/4\n"
    dense = layers(src)[1]
    assert dense.W == pytest.approx(math.sqrt(5.5)) and dense.b == pytest.approx(0.5)
    assert layers(src, a=4)[1].W == pytest.approx(math.sqrt(8.5))
    assert layers(src, a="1+1")[1].W == pytest.approx(math.sqrt(5.5))


def test_nested_repeat_and_zero_repeat():
    src = "input 4\nrepeat 2 {\n  repeat 3 { dense; relu }\n  identity\n}\nrepeat 0 { erf }\ndense\n"
    ls = layers(src)
    assert len(ls) == 1 + 2 * (3 * 2 + 1) + 1
    assert sum(isinstance(x, Erf) for x in ls) == 0


def test_every_layer_and_option():
    src = """input 9x8x2
conv 3x3 pad=same W=1.5 b=0.1 fixed
relu
conv 2x4 pad=valid stride=2
erf
conv 3x3 pad=circular
abrelu a=-0.5 b=2
avgpool 2x2 stride=1 pad=same
leaky_relu alpha=0.2
avgpool 2x2
identity
gap
dense W=2 b=0.5 fixed
"""
    ls = layers(src)
    c1, c2, c3 = (x for x in ls if isinstance(x, Conv))
    assert (c1.pad, c1.fixed, c1.W, c1.b) == ("same", True, 1.5, 0.1)
    assert (c2.size, c2.pad, c2.stride) == ((2, 4), "valid", 2)
    assert c3.pad == "circular"
    p1, p2 = (x for x in ls if isinstance(x, AvgPool))
    assert (p1.size, p1.strides(), p1.pad) == ((2, 2), (1, 1), "same")
    assert (p2.size, p2.strides(), p2.pad) == ((2, 2), (2, 2), "valid")
    acts = {x.keyword: x for x in ls if isinstance(x, Elementwise)}
    assert (acts["abrelu"].a, acts["abrelu"].b) == (-0.5, 2.0)
    assert (acts["leaky_relu"].a, acts["leaky_relu"].b) == (0.2, 1.0)
    assert isinstance(acts["relu"], ABRelu) and (acts["relu"].a, acts["relu"].b) == (0.0, 1.0)
    assert isinstance(acts["erf"], Erf) and isinstance(acts["identity"], Identity)
    assert isinstance(ls[-2], GlobalAvgPool)
    assert isinstance(ls[-1], Dense) and ls[-1].fixed and ls[-1].W == 2
    shapes = [n.shape.spatial for n in infinet.compile(src).plan.nodes]
    assert shapes[:8] == [(9, 8), (9, 8), (9, 8), (4, 3), (4, 3), (4, 3), (4, 3), (4, 3)]
    assert shapes[9] == (2, 1)


def test_defaults():
    c, d, p = layers("input 4x4x1\nconv 3x3\navgpool 2x2\nflatten\ndense\n")[1:4:1][0], \
        layers("input 4\ndense\n")[1], layers("input 4x4x1\navgpool 2x2\nflatten\n")[1]
    assert (c.pad, c.stride, c.W, c.b, c.fixed) == ("same", 1, 1.0, 0.0, False)
    assert (d.W, d.b, d.fixed) == (1.0, 0.0, False)
    assert (p.strides(), p.pad) == ((2, 2), "valid")


def test_semicolons_blank_lines_comments_and_crlf():
    src = "\r\n# header\r\n\r\ninput 4 # four features\r\ndense; relu ;dense  \r\n\r\n"
    assert [type(x).__name__ for x in layers(src)] == ["Input", "Dense", "Relu", "Dense"]
    assert isinstance(layers("input 2x2x1; flatten")[-1], Flatten)


def test_vector_input_from_expression():
    assert infinet.compile("param d = 7\ninput d * 2\ndense").plan.data_shape == (14,)


def test_compile_reads_paths(tmp_path):
    f = tmp_path / "n.net"
    f.write_text("input 3\ndense\n")
    assert infinet.compile(f).plan.filename == str(f)
    assert infinet.compile(str(f)).plan.name == "n"
    assert infinet.compile("input 3\ndense\n").plan.filename == "<string>"
