"""The code generator's IR (stages over offset planes of the graph) and small printer units."""
from __future__ import annotations

import pytest

import infinet
from codegen_cases import GRAPH_CASES
from conftest import EXAMPLES, run_cli
from infinet.codegen.printer import lit
from infinet.codegen.render_index import offidx, pos


def program(source, **params):
    return infinet.compile(source, **params).kernel_program


def kinds(stage):
    return [[op.kind for op in sw.ops] for sw in stage.sweeps]


def test_printer_units():
    assert lit(0.5) == "0.5"
    assert lit(2) == "2.0"
    assert lit(2 ** 0.5 * 2 ** 0.5) == "2.0000000000000004"   # W=sqrt(2) squared, exactly
    assert float(lit(1 / 3)) == 1 / 3
    assert offidx((-1, 0, 2), 3) == [-1, 0, 1, -1, 2]
    assert pos((1, 8, 8)) == "(h) * 8 + w" and pos((1, 1, 16)) == "w"
    assert pos((4, 5, 6)) == "((d) * 5 + h) * 6 + w"


def test_cntk_v_is_one_fused_stage_on_plane_zero():
    prog = program(EXAMPLES / "cntk_v.net", depth=21)
    (stage,) = prog.pair.stages
    assert stage.planes == ((0,), (0,), (0,)) and stage.nplanes == 1
    assert stage.partials and not stage.exports and "flatten" in stage.readout_text
    assert kinds(stage) == [["input"]] + [["conv", "ew"]] * 20   # conv+relu fused 20 times
    assert stage.uniform and stage.extent == (1, 34, 34) and stage.halo == (0, 1, 1)
    assert stage.slots == 2                                       # ping-pong buffers
    assert [op.kind for op in prog.pair.tail] == ["readout", "dense"]
    # the self pass: plane 0 only, v taken from the entry itself, 20 tables recorded
    assert all(op.v_source == "self" for st in prog.self_.stages for op in st.nodes
               if op.kind == "ew")
    # v and relu's feature 1/√v of each: two rows of 32·32 per table
    assert len(prog.vtable) == 20 and prog.vt_size == 2 * 20 * 32 * 32
    assert [(b.state, b.n, b.size) for b in prog.vfeatures] == \
        [(s, 1, 32 * 32) for s in sorted(prog.vtable)]
    # every relu prints the same function: printed once
    assert len(prog.functions) == 1


def test_cntk_gap_fuses_all_offsets_and_skips_dead_ntk():
    prog = program(EXAMPLES / "cntk_gap.net", depth=21)
    (stage,) = prog.pair.stages
    assert stage.nplanes == 63 * 63 and "gap" in stage.readout_text
    first_conv = stage.nodes[1]
    assert first_conv.kind == "conv" and not first_conv.trains and not first_conv.t_out
    assert stage.nodes[3].trains and stage.nodes[3].t_out      # the first trained conv
    (readout,) = prog.pair.readouts.values()
    assert readout[1] == 1 / 32 ** 4 and len(readout[2]) == 63 * 63
    # the NNGP alone: a pass without Θ
    assert prog.pairk.active and not any(st.t_slots for st in prog.pairk.stages)


def test_pooling_splits_stages_and_materialises_states():
    prog = program(EXAMPLES / "myrtle.net")
    assert [kinds(st) for st in prog.pair.stages] == [
        [["input"], ["conv", "ew"], ["conv", "ew"]], [["pool"], ["conv", "ew"]],
        [["pool"], ["conv", "ew"]], [["pool"]]]
    assert [(st.exports, st.partials) for st in prog.pair.stages] == \
        [(True, False)] * 3 + [(False, True)]
    last = prog.pair.stages[-1]
    assert last.planes == ((0,), (0,), (0,)) and last.sources[0].size == (1, 8, 8)
    # a circular conv mixes offsets d and d - n: it heads a stage of its own
    circ = program("input 5x6x2\nconv 3x3 pad=circular\nrelu\nconv 2x2 pad=circular\n"
                   "flatten\ndense\n")
    assert [st.sweeps[0].ops[0].kind for st in circ.pair.stages] == ["input", "cconv", "cconv"]


def test_strided_stage_is_not_uniform_and_scales_offsets():
    prog = program("input 8x8x3\nconv 3x3 stride=2\nrelu\nconv 3x3\nrelu\ngap\ndense\n")
    (stage,) = prog.pair.stages
    assert not stage.uniform
    assert [op.mult for op in stage.nodes] == [(1, 2, 2)] + [(1, 1, 1)] * 4


def test_residual_blocks_stay_in_one_stage_with_the_shortcut_on_chip():
    prog = program(GRAPH_CASES["graph_resnet"])
    (stage,) = prog.pair.stages
    assert not stage.sources                          # nothing goes through memory
    sums = [op for op in stage.nodes if op.kind == "sum"]
    assert len(sums) == 2
    for s in sums:      # the body's last conv is the chain value; the shortcut is a slot
        assert sorted(k for k, _, _ in s.operands) == ["chain", "slot"]
    # projection shortcut: strided convs in both branches, still one stage
    proj = program(GRAPH_CASES["graph_projection"])
    (stage,) = proj.pair.stages
    assert {op.mult for op in stage.nodes} == {(1, 2, 2), (1, 1, 1)}
    assert not stage.uniform


def test_pooling_inside_a_branch_meets_in_a_later_stage():
    prog = program(GRAPH_CASES["graph_pooled_branch"])
    last = prog.pair.stages[-1]
    assert [s.state for s in last.sources] == [2, 1]          # both branches' inputs
    assert kinds(last) == [["pool"], ["conv"], ["pool", "sum", "ew"]]
    two = program(GRAPH_CASES["graph_two_readouts"])
    assert [op.kind for op in two.pair.tail].count("readout") == 2
    flatten = [r for n, r in two.pair.readouts.items()
               if two.plan.nodes[n].layer.keyword == "flatten"][0]
    assert len(flatten[2]) == 1                       # the zero plane of the gap's planes


def test_every_input_rank_prints_on_three_axes():
    seq = program(GRAPH_CASES["rank1_sequence"])
    assert all(st.extent[:2] == (1, 1) for st in seq.pair.stages)
    vol = program(GRAPH_CASES["rank3_volume"])
    assert vol.pair.stages[0].extent[0] > 1
    src = infinet.compile(GRAPH_CASES["rank3_volume"]).cuda_source
    assert "x1 + (((d) * 4 + h) * 4 + w) * 2" in src       # a position in the 4x4x4 volume
    assert "x1 + (w) * 3" in infinet.compile(GRAPH_CASES["rank1_sequence"]).cuda_source


def test_generated_source_cites_the_net_lines():
    k = infinet.compile(EXAMPLES / "cnn_gap_small.net")
    src = k.cpu_source
    assert "// ==== pair_stage0: .net lines 4-7" in src
    assert "//   layer 1 (line 6): conv 3x3 pad=same W=1.41421 b=0" in src
    assert "// ---- this plane's sum of the sink, for gap (line 9)" in src
    # stages + tails, for the pair, NNGP-only and self passes, in 2 dtypes
    assert k.cuda_source.count("__global__") == 2 * (3 + 3)


def test_cli_cuda_prints_the_source():
    status, out, err = run_cli("cuda", EXAMPLES / "cntk_v.net", "-D", "depth=3")
    assert status == 0, err
    assert out.startswith("// infinet: generated CUDA kernels for net 'cntk_v'")
    assert "-D depth=3" in out.splitlines()[1]
    status, out, _ = run_cli("cuda", "--cpu", EXAMPLES / "cntk_v.net")
    assert status == 0 and 'extern "C" int infinet_pair_f64' in out


def test_unknown_families_are_refused_by_every_backend():
    """A layer whose family a backend does not implement is an error naming it."""
    from dataclasses import dataclass

    from infinet.codegen.program import CodegenError
    from infinet.layers import Layer
    from infinet.runtime.reference import ReferenceExecutor

    @dataclass(frozen=True)
    class Mystery(Layer):
        keyword = "mystery"
        family = "mystery"

    k = infinet.compile("input 4x4x2\nconv 3x3\nrelu\nflatten\ndense\n")
    nodes = list(k.plan.nodes)
    nodes[2] = type(nodes[2])(**{**nodes[2].__dict__, "layer": Mystery(nodes[2].layer.pos)})
    plan = type(k.plan)(**{**k.plan.__dict__, "nodes": tuple(nodes)})
    with pytest.raises(infinet.InfinetError, match="'mystery' \\(family 'mystery'\\)"):
        ReferenceExecutor(plan, "float64")
    from infinet.codegen.program import lower_program
    with pytest.raises(CodegenError, match="'mystery' \\(family 'mystery'\\)"):
        lower_program(plan)
