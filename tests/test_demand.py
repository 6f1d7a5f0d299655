"""The demand analysis (docs/semantics.md#demand-analysis): which offsets p' - p each state must provide."""
from __future__ import annotations

import infinet
from infinet.ir.demand import all_offsets, pairs_per_axis

from conftest import EXAMPLES


def demands(source, **params):
    plan = infinet.compile(source, **params).plan
    return [(n.layer.keyword, n.pair_demand) for n in plan.nodes], plan


def test_flatten_needs_only_offset_zero_everywhere():
    d, plan = demands(EXAMPLES / "cntk_v.net", depth=5)
    for kind, dem in d:
        assert dem in ((), ((0,), (0,))), (kind, dem)
    # O(P) per pair per layer: 32*32 entries, not (32*32)^2
    assert max(lp.pair_cost.entries for lp in plan.nodes) == 32 * 32


def test_gap_needs_every_offset():
    d, plan = demands(EXAMPLES / "cntk_gap.net", depth=3)
    for kind, dem in d[:-2]:
        assert dem == (all_offsets(32), all_offsets(32)), kind
    assert plan.peak_entries == (32 * 32) ** 2


def test_avgpool_widens_offsets():
    src = "input 8x8x1\nconv 3x3\nrelu\navgpool 2x2\nconv 3x3\nrelu\nflatten\ndense\n"
    d, _ = demands(src)
    rng = tuple(range(-1, 2))
    assert d[6] == ("flatten", ())
    assert d[5][1] == ((0,), (0,))           # relu before flatten
    assert d[3][1] == ((0,), (0,))           # pooled state: offset 0
    assert d[2][1] == (rng, rng)             # before the 2x2 pool: 2*0 - 1 .. 2*0 + 1
    assert d[0][1] == (rng, rng)


def test_pool_stride_and_window_combine():
    src = "input 16x16x1\navgpool 3x3 stride=2\navgpool 2x2\nflatten\n"
    d, _ = demands(src)
    # flatten -> {0}; 2x2/2 pool -> -1..1; 3x3/2 pool -> 2*(-1..1) + (-2..2) = -4..4
    assert d[3] == ("flatten", ()) and d[2][1] == ((0,), (0,))
    assert d[1][1] == ((-1, 0, 1),) * 2 and d[0][1] == (tuple(range(-4, 5)),) * 2


def test_strided_conv_scales_offsets_and_circular_wraps():
    d, _ = demands("input 7x7x1\nconv 3x3 stride=2\ngap\n")
    assert d[1][1] == (all_offsets(4),) * 2
    assert d[0][1] == (tuple(range(-6, 7, 2)),) * 2          # only even offsets are ever read
    d, _ = demands("input 5x5x1\nconv 3x3 pad=circular\nflatten\n")
    assert d[0][1] == ((0,), (0,))                            # same offset, even when wrapped
    d, _ = demands("input 5x6x1\nconv 3x3 pad=circular stride=2\navgpool 2x2 stride=1\nflatten\n")
    # pooled offsets -1..1 at the conv output (3x3), times 2 → -2, 0, 2, wrapped mod 5 / mod 6
    assert d[0][1] == ((-3, -2, 0, 2, 3), (-4, -2, 0, 2, 4))


def test_self_pass_needs_offset_zero_before_each_nonlinearity():
    plan = infinet.compile("input 8x8x1\nconv 3x3\nrelu\navgpool 2x2\nconv 3x3\nrelu\n"
                           "flatten\ndense\n").plan
    self_d = [lp.self_demand for lp in plan.nodes]
    assert self_d[4] == ((0,), (0,))           # input of the second relu
    assert self_d[1] == ((-1, 0, 1),) * 2      # what the pool of the second relu's input needs
    assert self_d[5] is None and self_d[7] is None   # nothing after the last relu is needed


def test_flat_networks_have_scalar_states():
    d, plan = demands(EXAMPLES / "fc_ntk.net")
    assert all(dem == () for _, dem in d)
    assert plan.peak_entries == 1


def test_pairs_per_axis():
    assert pairs_per_axis(4, (0,)) == 4
    assert pairs_per_axis(4, all_offsets(4)) == 16
    assert pairs_per_axis(4, (-1, 1)) == 6
    assert pairs_per_axis(4, (-5, 5)) == 0
