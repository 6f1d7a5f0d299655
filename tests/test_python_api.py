"""The Python API as a user meets it: what `k`, `k.plan` look like, `k.summary()`,
`k.explain()`, and errors worded in the API's own terms (not the CLI's flags)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import infinet
from infinet.cli import main
from infinet.errors import UsageError
from infinet.ir.plan import human_count

from conftest import EXAMPLES

GAP = EXAMPLES / "cntk_gap.net"


def test_repr_of_a_kernel_and_of_its_plan_is_one_short_line():
    k = infinet.compile(GAP, depth=5)
    assert repr(k.plan) == (f"<Plan cntk_gap ({GAP}): input 32x32x3, 10 layers, depth=5; "
                            f"{human_count(k.plan.pair_total.flops)} flops "
                            f"per pair>")
    assert repr(k) == "<infinet kernel" + repr(k.plan).removeprefix("<Plan")
    assert "\n" not in repr(k) and len(repr(k.plan)) < 120     # was a 20,000-character dataclass


def test_summary_and_explain_are_what_the_cli_prints(capsys):
    k = infinet.compile(GAP, depth=4)
    assert main(["check", str(GAP), "-D", "depth=4"]) == 0
    assert capsys.readouterr().out == k.summary() + "\n" == k.plan.summary() + "\n"
    assert main(["explain", str(GAP), "-D", "depth=4"]) == 0
    assert capsys.readouterr().out == k.explain() + "\n"
    table = k.explain().splitlines()
    assert table[0] == f"net cntk_gap ({GAP})"
    assert table[1].split()[:4] == ["#", "line", "layer", "output"]
    assert sum(1 for line in table if line.split() and line.split()[0].isdigit()) == 9


def test_a_kernel_pickles_without_its_executors():
    k = infinet.compile(EXAMPLES / "fc_ntk.net")
    x = np.random.default_rng(0).normal(size=(3, 64))
    want = k(x, backend="cpu")
    again = pickle.loads(pickle.dumps(k))
    assert again._executors == {} and repr(again) == repr(k)
    got = again(x, backend="cpu")
    np.testing.assert_array_equal(got.ntk, want.ntk)
    np.testing.assert_array_equal(got.nngp, want.nngp)


@pytest.mark.parametrize("value, message", [
    (float("inf"), "max_memory=inf: expected a finite size, like 512M or 4G"),
    ("1e400", "max_memory='1e400': expected a finite size, like 512M or 4G"),
    ("lots", "max_memory='lots': expected a size like 512M or 4G"),
    (-5, "max_memory=-5: must be positive"),
    ([1], "max_memory=[1]: expected a size like 512M or 4G, not a list"),
])
def test_max_memory_errors_name_the_keyword(value, message):
    k = infinet.compile(EXAMPLES / "fc_ntk.net")
    with pytest.raises(UsageError) as info:
        k(np.ones((2, 64)), max_memory=value, backend="numpy")
    assert str(info.value) == f"error: {message}"


def test_max_memory_takes_bytes_or_a_size():
    k = infinet.compile(EXAMPLES / "fc_ntk.net")
    x = np.random.default_rng(1).normal(size=(4, 64))
    want = k(x, backend="numpy").ntk
    np.testing.assert_array_equal(k(x, backend="numpy", max_memory="64K").ntk, want)
    np.testing.assert_array_equal(k(x, backend="numpy", max_memory=2 ** 16).ntk, want)


def test_cached_kernels_are_shared_read_only_and_keyed_by_everything():
    from infinet.runtime.kernel_cache import KERNELS
    KERNELS.clear()
    k = infinet.compile(EXAMPLES / "fc_ntk.net")
    x = np.random.default_rng(2).normal(size=(4, 64))
    first = k(x, backend="numpy", cache=True)
    again = infinet.compile(EXAMPLES / "fc_ntk.net")(x.copy(), backend="numpy", cache=True)
    assert again.ntk is first.ntk and KERNELS.hits == 1
    with pytest.raises(ValueError, match="read-only"):
        first.ntk[0, 0] = 0
    np.testing.assert_array_equal(first.ntk, k(x, backend="numpy").ntk)
    # a different param, input, dtype or backend is a different kernel
    others = [infinet.compile(EXAMPLES / "fc_ntk.net", depth=2)(x, backend="numpy", cache=True),
              k(x[:3], backend="numpy", cache=True),
              k(x, backend="numpy", dtype="float32", cache=True),
              k(x, x, backend="numpy", cache=True)]
    assert KERNELS.hits == 1 and len(KERNELS) == 5
    assert all(o.ntk is not first.ntk for o in others)
    # bounded: the least recently used go first
    KERNELS.max_bytes = first.ntk.nbytes * 2 + 1
    try:
        k(x[:2], backend="numpy", cache=True)
        assert len(KERNELS) == 1 and KERNELS.nbytes <= KERNELS.max_bytes
    finally:
        KERNELS.max_bytes = 2 ** 30
        KERNELS.clear()


def test_repr_counts_layers_in_words():
    assert repr(infinet.compile("input 4; dense")).startswith(
        "<infinet kernel <string> (<string>): input 4, 1 layer; ")
