"""Random architectures over the whole language: the CPU target agrees with the reference."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegen_cases import check_random_architecture
from infinet.codegen import cpujit
from strategies import networks

pytestmark = pytest.mark.skipif(not cpujit.compiler_works(), reason="no working C++ compiler")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(), seed=st.integers(0, 2 ** 16))
def test_random_architectures_cpu_matches_reference(net, seed):
    source, data_shape = net
    check_random_architecture(source, data_shape, seed,
                              lambda k, dtype: k.executor("cpu", dtype))
