"""Random architectures over the whole language: the CPU target agrees with the reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import infinet
from codegen_cases import assert_agrees
from infinet.codegen import cpujit
from infinet.runtime.cpu import CpuExecutor
from infinet.runtime.evaluate import evaluate
from infinet.runtime.reference import ReferenceExecutor
from strategies import networks

pytestmark = pytest.mark.skipif(not cpujit.compiler_works(), reason="no working C++ compiler")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(), seed=st.integers(0, 2 ** 16))
def test_random_architectures_cpu_matches_reference(net, seed):
    source, data_shape = net
    k = infinet.compile(source)
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((3,) + data_shape)
    x2 = rng.standard_normal((2,) + data_shape)
    for dtype in ("float64", "float32"):
        ref = ReferenceExecutor(k.plan, dtype)
        cpu = CpuExecutor(k.plan, dtype)
        for a, b in ((x1, x2), (x1, None)):
            want = evaluate(ref, a, b)
            got = evaluate(cpu, a, b)
            for kind in ("nngp", "ntk"):
                assert_agrees(k.plan, getattr(want, kind), getattr(got, kind), dtype,
                              symmetric=b is None, what=(source, dtype, kind))
