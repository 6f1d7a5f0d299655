"""The rules that make a sum's kernel the sum of its branches' kernels (every branch
Gaussian, independent of the others, equal shapes), where they were not enforced.

* A branch with a dense or conv layer can still carry the block's input around it, through
  a nested block's shortcut: `residual { residual { dense } }` is y = D(z) + 2z, whose NNGP
  is Σ_D + 4Σ_z, but adding the branches' kernels gives Σ_D + 2Σ_z (neural-tangents
  returns that wrong value without a word; a Monte-Carlo estimate from finite networks
  gives 5.0·s where the sum rule gives 3·s, s = x·x'/6, W = 1).
* The network's input data is not Gaussian (neural-tangents refuses it in FanInSum and
  LayerNorm): a shortcut carrying it, or a layer norm of it (which would have to subtract
  the data's feature mean), are errors.
"""
from __future__ import annotations

import numpy as np
import pytest

import infinet

from conftest import run_cli


def error_of(source: str) -> str:
    with pytest.raises(infinet.NetError) as info:
        infinet.compile(source)
    return str(info.value)


def test_a_nested_shortcut_makes_a_branch_carry_the_input():
    msg = error_of("input 6\ndense\nresidual { residual { dense } }\ndense\n")
    assert "3:1: error: the body and the shortcut of this residual have no dense or conv " \
           "layer of their own on every path" in msg
    assert "a block inside it carries the input around it" in msg and "not independent" in msg
    msg = error_of("input 6\ndense\nsum { branch { identity; sum { branch { dense } "
                   "branch { } } } branch { } }\ndense\n")
    assert "branch 1 and branch 2 of this sum" in msg and "on every path" in msg


def test_a_nested_shortcut_beside_a_branch_with_its_own_weights_is_fine():
    # y = D1(z) + z + D2(z): independent given z, NNGP 3·s (W = 1, b = 0: Σ_z = Σ_D = s)
    x = np.random.default_rng(0).standard_normal((3, 6))
    k = infinet.compile("input 6\ndense\nsum { branch { sum { branch { dense } branch { } } } "
                        "branch { dense } }\ndense\n")
    np.testing.assert_allclose(k(x, backend="numpy").nngp, 3 * x @ x.T / 6, rtol=1e-14)


@pytest.mark.parametrize("source, where, what", [
    ("input 6x6x2\nresidual { conv 3x3 }\ngap\ndense\n", "2:1", "the shortcut of this residual"),
    ("input 6x6x2\nsum { branch { avgpool 2x2 } branch { conv 2x2 stride=2 } }\ngap\ndense\n",
     "2:7", "branch 1 of this sum"),
    ("input 5\nsum { branch { dense } branch { } }\ndense\n", "2:24", "branch 2 of this sum"),
])
def test_a_branch_carrying_the_input_data_is_refused(source, where, what):
    msg = error_of(source)
    assert f"{where}: error: {what} is the network's input data itself, not Gaussian " \
           "features" in msg, msg
    assert "put a dense or conv layer before the" in msg


def test_layernorm_of_the_input_data_is_refused():
    msg = error_of("input 6\nlayernorm\ndense\n")
    assert "2:1: error: layernorm needs Gaussian features (after a dense or conv layer), not " \
           "the network's input data" in msg
    # after a dense layer it is fine
    infinet.compile("input 6\ndense\nlayernorm\ndense\n")


def test_the_command_line_reports_it_with_the_line_and_a_caret(tmp_path):
    net = tmp_path / "nested.net"
    net.write_text("input 6\ndense\nresidual { residual { dense } }\ndense\n")
    status, out, err = run_cli("check", net)
    assert status == 2 and out == ""
    assert err.splitlines()[1:] == ["    residual { residual { dense } }", "    ^"]
