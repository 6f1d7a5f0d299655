"""`get=`: the NNGP alone skips the Θ recursion and gives the same NNGP, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

import infinet
from infinet.errors import UsageError

NET = "input 6x6x2\nconv 3x3 W=1.2 b=0.1\nresidual { relu; conv 3x3; erf; conv 3x3 }\ngap\ndense\n"


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_nngp_alone_is_the_same_nngp(backend):
    k = infinet.compile(NET)
    rng = np.random.default_rng(3)
    x1, x2 = rng.standard_normal((3, 6, 6, 2)), rng.standard_normal((2, 6, 6, 2))
    both = k(x1, x2, backend=backend)
    alone = k(x1, x2, backend=backend, get="nngp")
    assert alone.ntk is None and np.array_equal(alone.nngp, both.nngp)
    ntk = k(x1, x2, backend=backend, get="ntk")
    assert ntk.nngp is None and np.array_equal(ntk.ntk, both.ntk)
    assert np.abs(both.ntk).min() > 0                  # Θ was really computed there


def test_nngp_alone_runs_no_theta_code():
    k = infinet.compile(NET)
    prog = k.kernel_program
    assert prog.pairk.active and not any(st.t_slots for st in prog.pairk.stages)
    assert all(not op.t_out for op in prog.pairk.tail)
    assert k.executor("numpy", ntk=False).ntk is False
    assert k.executor("cpu", ntk=False)._pair.__name__ == "infinet_pairk_f64"


def test_get_is_checked():
    k = infinet.compile(NET)
    with pytest.raises(UsageError, match="get='cov1': expected 'nngp', 'ntk'"):
        k(np.zeros((1, 6, 6, 2)), get="cov1")
    with pytest.raises(UsageError):
        k(np.zeros((1, 6, 6, 2)), get=())
