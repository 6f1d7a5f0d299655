"""The code generator's IR (stages over offset planes) and small printer units."""
from __future__ import annotations

import pytest

import infinet
from conftest import EXAMPLES, run_cli
from infinet.codegen import generate
from infinet.codegen.program import lower_program
from infinet.codegen.render import lit, offidx, sweeps


def program(source: str, **params):
    return lower_program(infinet.compile(source, **params).plan)


def test_printer_units():
    assert lit(0.5) == "0.5"
    assert lit(2) == "2.0"
    assert lit(2 ** 0.5 * 2 ** 0.5) == "2.0000000000000004"   # W=sqrt(2) squared, exactly
    assert float(lit(1 / 3)) == 1 / 3
    assert offidx((-1, 0, 2), 3) == [-1, 0, 1, -1, 2]


def test_cntk_v_is_one_fused_stage_on_plane_zero():
    prog = program(EXAMPLES / "cntk_v.net", depth=21)
    (stage,) = prog.pair.stages
    assert stage.planes == ((0,), (0,)) and stage.nplanes == 1
    assert stage.sink == "readout" and stage.readout == "flatten"
    assert [op.kind for op in stage.ops] == ["input"] + ["conv", "act"] * 20
    assert stage.uniform and stage.extent == (34, 34) and stage.halo == (1, 1)
    assert len(sweeps(stage)) == 21                  # input, then conv+relu fused 20 times
    assert [op.kind for op in prog.pair.tail] == ["dense"]
    # the self pass: plane 0 only, v taken from the entry itself, 20 tables recorded
    assert all(op.v_source == "self" for st in prog.self_.stages for op in st.ops
               if op.kind == "act")
    assert len(prog.vtable) == 20 and prog.vt_size == 20 * 32 * 32


def test_cntk_gap_fuses_all_offsets_and_skips_dead_ntk():
    prog = program(EXAMPLES / "cntk_gap.net", depth=21)
    (stage,) = prog.pair.stages
    assert stage.nplanes == 63 * 63 and stage.readout == "gap"
    first_conv = stage.ops[1]
    assert first_conv.kind == "conv" and not first_conv.trains and not first_conv.t_out
    assert stage.ops[3].trains and stage.ops[3].t_out      # the first trained conv
    assert prog.pair.readout_scale == 1 / 32 ** 4


def test_pooling_splits_stages_and_materialises_states():
    prog = program(EXAMPLES / "myrtle.net")
    kinds = [[op.kind for op in st.ops] for st in prog.pair.stages]
    assert kinds == [["input", "conv", "act", "conv", "act"], ["pool", "conv", "act"],
                     ["pool", "conv", "act"], ["pool"]]
    assert [st.sink for st in prog.pair.stages] == ["buffer", "buffer", "buffer", "readout"]
    last = prog.pair.stages[-1]
    assert last.planes == ((0,), (0,)) and last.in_size == (8, 8)
    # a circular conv mixes offsets d and d - n: it heads a stage of its own
    circ = program("input 5x6x2\nconv 3x3 pad=circular\nrelu\nconv 2x2 pad=circular\n"
                   "flatten\ndense\n")
    assert [st.ops[0].kind for st in circ.pair.stages] == ["input", "cconv", "cconv"]


def test_strided_stage_is_not_uniform_and_scales_offsets():
    prog = program("input 8x8x3\nconv 3x3 stride=2\nrelu\nconv 3x3\nrelu\ngap\ndense\n")
    (stage,) = prog.pair.stages
    assert not stage.uniform
    assert [op.axes[0].mult for op in stage.ops] == [2, 1, 1, 1, 1]   # output offsets


def test_generated_source_cites_the_net_lines():
    plan = infinet.compile(EXAMPLES / "cnn_gap_small.net").plan
    src = generate(plan, "cpu")
    assert "// ==== pair_stage0: .net lines 4-7" in src
    assert "//   layer 1 (line 6): conv 3x3 pad=same W=1.41421 b=0" in src
    assert "// ---- gap (line 9): this plane's share of the mean" in src
    assert generate(plan, "cuda").count("__global__") == 2 * (2 + 2)  # stages+tails, 2 dtypes


def test_cli_cuda_prints_the_source():
    status, out, err = run_cli("cuda", EXAMPLES / "cntk_v.net", "-D", "depth=3")
    assert status == 0, err
    assert out.startswith("// infinet: generated CUDA kernels for net 'cntk_v'")
    assert "-D depth=3" in out.splitlines()[1]
    status, out, _ = run_cli("cuda", "--cpu", EXAMPLES / "cntk_v.net")
    assert status == 0 and 'extern "C" int infinet_pair_f64' in out


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_cli_eval_backends(tmp_path, backend):
    import numpy as np
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 1))
    np.save(tmp_path / "x.npy", x)
    status, out, err = run_cli("eval", EXAMPLES / "cnn_gap_small.net", "--x1", tmp_path / "x.npy",
                               "--out", tmp_path / "k.npz", "--backend", backend)
    assert status == 0, err
    assert f", {backend})" in out or backend in out
    k = np.load(tmp_path / "k.npz")
    want = infinet.compile(EXAMPLES / "cnn_gap_small.net")(x, backend="numpy")
    np.testing.assert_allclose(k["ntk"], want.ntk, rtol=1e-12)


def test_auto_falls_back_to_numpy_with_one_notice(monkeypatch, capsys):
    from infinet.runtime import backends
    monkeypatch.setattr(backends, "cuda_usable", lambda: False)
    monkeypatch.setattr(backends, "cpu_usable", lambda: False)
    monkeypatch.setattr(backends, "_notified", set())
    assert backends.resolve_backend("auto") == "numpy"
    assert backends.resolve_backend("auto") == "numpy"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "using the NumPy executor" in err
    monkeypatch.setattr(backends, "cpu_usable", lambda: True)
    assert backends.resolve_backend("auto") == "cpu"
    with pytest.raises(infinet.errors.UsageError):
        backends.resolve_backend("opencl")
