"""The static performance report (benchmarks/sass_report.py, infinet/codegen/sass.py).

The SASS reader on a hand-written listing (exact counts, no tool needed); on CUDA kernels
whose loops are known (NVRTC + nvdisasm, both in the `test` extra); the program-side
model (lane mapping, bank conflicts, occupancy) against values worked out here by hand
or by plain loops; and one small generated net end to end.
"""
from __future__ import annotations

import importlib.util
import itertools
import math
import os
import sys

import pytest

from infinet.codegen import nvrtc, sass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _report_module():
    spec = importlib.util.spec_from_file_location(
        "sass_report", os.path.join(ROOT, "benchmarks", "sass_report.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


R = _report_module()

needs_tools = pytest.mark.skipif(
    not (nvrtc.available() and sass.available()),
    reason="needs NVRTC and nvdisasm (pip install nvidia-cuda-nvrtc nvidia-cuda-nvdisasm: "
           "both in the `test` extra)")


# -- the reader on a hand-written listing ----------------------------------------------------

LISTING = r"""
	.section	.text.k,"ax",@progbits
	.align	128
        .global         k
        .type           k,@function
        .size           k,(.L_x_9 - k)
k:
.text.k:
	//## File "t.cu", line 3
        /*0000*/                   MOV R0, RZ ;
.L_x_1:
	//## File "t.cu", line 5 inlined at "t.cu", line 9
	//## File "t.cu", line 9
        /*0010*/                   LDS R1, [R0] ;
        /*0020*/                   FSETP.GT.AND P0, PT, R1, RZ, PT ;
        /*0030*/               @P0 BRA `(.L_x_2) ;
        /*0040*/                   FADD R1, R1, 1 ;
        /*0050*/                   FADD R1, R1, 2 ;
        /*0060*/                   BRA `(.L_x_3) ;
.L_x_2:
        /*0070*/                   FMUL R1, R1, 3 ;
.L_x_3:
	//## File "t.cu", line 11
        /*0080*/                   FCHK P1, R1, R2 ;
        /*0090*/              @!P1 BRA `(.L_x_4) ;
        /*00a0*/                   MOV R3, 0xc0 ;
        /*00b0*/                   CALL.REL.NOINC `($__internal_0_$__cuda_sm3x_div_rn_noftz_f32_slowpath) ;
.L_x_4:
        /*00c0*/                   CALL.REL.NOINC `($__internal_1_$helper) ;
        /*00d0*/                   IADD3 R0, R0, 0x1, RZ ;
        /*00e0*/                   ISETP.NE.AND P2, PT, R0, 0x10, PT ;
        /*00f0*/               @P2 BRA `(.L_x_1) ;
        /*0100*/                   EXIT ;
.L_x_5:
        /*0110*/                   BRA `(.L_x_5);
        .type           $__internal_0_$__cuda_sm3x_div_rn_noftz_f32_slowpath,@function
$__internal_0_$__cuda_sm3x_div_rn_noftz_f32_slowpath:
        /*0120*/                   FMUL R1, R1, R1 ;
        /*0130*/                   FMUL R1, R1, R1 ;
        /*0140*/                   RET.REL.NODEC R3 `(k) ;
        .type           $__internal_1_$helper,@function
$__internal_1_$helper:
        /*0150*/                   FADD R1, R1, R1 ;
        /*0160*/                   RET.REL.NODEC R4 `(k) ;
.L_x_9:
"""


def test_listing_blocks_loop_and_line_chains():
    kern = sass.parse(LISTING)["k"]
    assert list(kern.functions) == ["k", "$__internal_0_$__cuda_sm3x_div_rn_noftz_f32_slowpath",
                                    "$__internal_1_$helper"]
    fn = kern.entry
    assert len(fn.instrs) == 18
    assert fn.instrs[1].where == (("t.cu", 5), ("t.cu", 9))
    assert fn.instrs[3].pred == "@P0" and fn.instrs[3].target == ".L_x_2"
    # one loop (the self-loop after EXIT is unreachable): header at 0x10, one latch
    assert len(fn.loops) == 1
    lp = fn.loops[0]
    assert fn.instrs[fn.blocks[lp.header].start].addr == 0x10
    assert lp.parent is None and not lp.children
    assert sorted(fn.instrs[fn.blocks[b].start].addr for b in lp.blocks) == \
        [0x10, 0x40, 0x70, 0x80, 0xa0, 0xc0]


def test_listing_cost_of_one_iteration():
    fn = sass.parse(LISTING)["k"].entry
    c = fn.loop_cost(fn.loops[0])
    # 3 (header) + 3 (then) + 1 (else) + 2 (check) + 4 (tail) + 2 (helper, on every path);
    # the block calling the slow path (2) is rare
    assert c.union == 15
    assert c.path == 14          # the longer side of the if/else only
    assert c.rare == 2
    assert c.by_opcode["CALL"] == 1 and c.by_opcode["FADD"] == 3 and c.by_opcode["FMUL"] == 1
    assert c.by_category["fp32"] == 6 and c.by_category["shared"] == 1
    assert c.by_category["control"] == 6     # 4 BRA, the CALL and the helper's RET
    assert sum(c.by_category.values()) == c.union


def test_categories():
    assert sass.category("IMAD.MOV.U32") == "move"
    assert sass.category("IMAD.WIDE.U32") == "int"
    assert sass.category("LDS.U.64") == "shared"
    assert sass.category("DFMA") == "fp64"
    assert sass.category("MUFU.RSQ") == "mufu"
    assert sass.category("ULDC.64") == "uniform"
    assert sass.category("BAR.SYNC.DEFER_BLOCKING") == "control"


# -- the reader on compiled kernels --------------------------------------------------------------

KERNELS = r"""extern "C" __global__ void scale_sum(const float* x, float* y, int n)
{
    float acc = 0.0f;
#pragma unroll 1
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc = acc * 0.5f + x[i];
    y[threadIdx.x] = acc;
}

extern "C" __global__ void quotient(const float* x, float* y, int n)
{
    float acc = 1.0f;
#pragma unroll 1
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc = acc / x[i];
    y[threadIdx.x] = acc;
}

extern "C" __global__ void nested(const float* x, float* y, int n, int m)
{
    float acc = 0.0f;
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
#pragma unroll 1
        for (int j = threadIdx.x; j < m; j += blockDim.x) acc += x[i * m + j];
        acc *= 0.5f;
    }
    y[threadIdx.x] = acc;
}
"""


@pytest.fixture(scope="module")
def compiled():
    result = nvrtc.compile_cubin(KERNELS, "sm_90", "known.cu",
                                 ("--fmad=false", "--generate-line-info"))
    return sass.kernels_of(result.cubin)


@needs_tools
def test_known_loop_counted(compiled):
    fn = compiled["scale_sum"].entry
    assert len(fn.all_loops()) == 1
    c = fn.loop_cost(fn.loops[0])
    # the body: one load, acc * 0.5 and + x[i] (no FMA: --fmad=false), the induction
    # variable, its test and the back branch, and the address
    for op in ("LDG", "FMUL", "FADD", "ISETP", "BRA"):
        assert c.by_opcode[op] == 1, (op, c.by_opcode)
    assert c.path == c.union and 6 <= c.union <= 10
    assert c.rare == 0
    # every instruction of the loop comes from its source line (line 5)
    assert {ins.lines[0] for b in fn.loops[0].blocks for ins in fn.block_instrs(b)} == {5}


@needs_tools
def test_division_slow_path_left_out(compiled):
    fn = compiled["quotient"].entry
    assert len(fn.all_loops()) == 1
    lp = fn.loops[0]
    c = fn.loop_cost(lp)
    total = sum(len(fn.blocks[b]) for b in lp.blocks)
    assert c.by_opcode["MUFU"] == 1 and c.by_opcode["FCHK"] == 1
    assert c.by_opcode["CALL"] == 0                  # the call to the slow path is rare
    assert c.rare >= 2 and c.union + c.rare == total


@needs_tools
def test_nested_loops(compiled):
    fn = compiled["nested"].entry
    loops = fn.all_loops()
    assert len(loops) == 2
    outer, inner = loops
    assert inner.parent is outer and outer.children == [inner] and inner.depth == 2
    ci, co = fn.loop_cost(inner), fn.loop_cost(outer)
    assert ci.by_opcode["LDG"] == 1 and ci.by_opcode["FADD"] == 1
    assert co.by_opcode["LDG"] == 0 and co.by_opcode["FMUL"] == 1   # inner body not in it


# -- the program-side model ---------------------------------------------------------------------

def _plain_wavefronts(words_per_lane):
    """Wavefronts of one warp access, by plain loops: max distinct words per bank."""
    banks = {}
    for words in words_per_lane:
        for w in words:
            banks.setdefault(w % 32, set()).add(w)
    return max(len(v) for v in banks.values())


def test_wavefronts_of_simple_patterns():
    import numpy as np
    lanes = np.arange(32)
    cases = {
        "consecutive": (lanes, 1),
        "stride 2": (2 * lanes, 2),
        "stride 32": (32 * lanes, 32),
        "broadcast": (np.zeros(32, int), 1),
        "stride 33": (33 * lanes, 1),
    }
    for name, (words, expected) in cases.items():
        got = R.wavefronts(words[None, :, None], np.ones((1, 32), bool))
        assert got.tolist() == [expected], name
    # 8-byte words (two 4-byte words a lane): 256 bytes, at best 2 wavefronts
    w64 = (2 * lanes)[:, None] + np.arange(2)
    assert R.wavefronts(w64[None], np.ones((1, 32), bool)).tolist() == [2]
    # idle lanes take no part
    live = np.zeros((1, 32), bool)
    live[0, :4] = True
    assert R.wavefronts((32 * lanes)[None, :, None], live).tolist() == [4]


SMALL = ("net small\ninput 8x8x3\nconv 3x3 pad=same W=sqrt(2)\nrelu\n"
         "conv 3x3 pad=same W=sqrt(2)\nrelu\ngap\ndense W=1\n")


@pytest.fixture(scope="module")
def small_program():
    import infinet
    return infinet.compile(SMALL).kernel_program


def _column_lanes(D, threads=128, n=8):
    """The column walk of an n x n plane D by plain loops (codegen/columns.py): thread t
    -> (its column, its rows), bands of cw threads, ceil(ch / bands) rows a band."""
    lo_h, lo_w = max(0, -D[1]), max(0, -D[2])
    ch, cw = n - abs(D[1]), n - abs(D[2])
    bands = threads // cw
    rows = -(-ch // bands)
    out = []
    for t in range(threads):
        band, w = t // cw, lo_w + t % cw
        ha = lo_h + band * rows
        hb = min(ha + rows, lo_h + ch) if band < bands else ha
        out.append((w, list(range(ha, hb))))
    return out


def test_column_walk_reciprocals_divide_exactly(small_program):
    """columns_setup divides by the plane's width and the band count as (x * r[n]) >> 20
    (codegen/columns.py: reciprocals): the same quotients as integer division for every
    dividend the walk forms, and the table is printed into the CUDA source."""
    import infinet
    from infinet.codegen import columns
    st = small_program.pair.stages[0]
    table = columns.reciprocals(st)
    assert len(table) == st.threads + 1 and table[0] == 0
    top = st.sink_size[1] + st.threads
    for d in range(1, st.threads + 1):
        for x in range(top):
            assert (x * table[d]) >> columns.RCP_SHIFT == x // d, (d, x)
    assert f"{st.name}_rcp[{st.threads + 1}]" in infinet.compile(SMALL).cuda_source


def test_team_walk_covers_every_entry_once(small_program):
    st = small_program.pair.stages[0]
    assert R.sweep_mode(st) == "columns" and st.threads == 128
    for D in [(0, 0, 0), (0, 3, -5), (0, -7, 7), (0, 1, 0)]:
        lanes = _column_lanes(D)
        for sw in st.sweeps:
            walk = R.team_walk(st, sw, D)
            live = walk.pos[walk.live]
            cells = sorted(map(tuple, live.tolist()))
            region = [(0, h, w) for h in range(max(0, -D[1]), 8 - max(0, D[1]))
                      for w in range(max(0, -D[2]), 8 - max(0, D[2]))]
            assert cells == region
            # column walk: a warp iterates as often as its longest band of rows, and each
            # lane stays in its column, one row further each iteration
            assert walk.entry_iters.tolist() == [
                max(len(r) for _, r in lanes[32 * wp:32 * wp + 32]) for wp in range(4)]
            assert walk.live.sum() == len(region) == walk.entries
            for it in range(len(walk.pos)):
                wp = next(k for k in range(4) if it < walk.entry_iters[:k + 1].sum())
                i = it - int(walk.entry_iters[:wp].sum())
                for lane in range(32):
                    w, rows = lanes[32 * wp + lane]
                    assert bool(walk.live[it, lane]) == (i < len(rows))
                    if i < len(rows):
                        assert tuple(walk.pos[it, lane]) == (0, rows[i], w)


def test_flat_walk_of_a_sequence():
    """A sequence stage (height 1) keeps the flat walk: thread e of the team takes
    entries e, e + threads, ... of the valid region."""
    import infinet
    from codegen_cases import CASES
    prog = infinet.compile(CASES["rank1_sequence"]).kernel_program
    st = next(s for s in prog.pair.stages if s.uniform)
    assert R.sweep_mode(st) == "flat"
    n = st.sink_size[2]
    for D in [(0, 0, 0), (0, 0, 3), (0, 0, -(n - 1))]:
        walk = R.team_walk(st, st.sweeps[0], D)
        count = n - abs(D[2])
        assert walk.entry_iters.sum() == sum(
            len(range(32 * wp, count, st.threads)) for wp in range(st.threads // 32))
        assert walk.live.sum() == count == walk.entries


def test_stencil_conflicts_by_plain_loops(small_program):
    """The stencil's (0, 0, 0) tap for two planes of the 8x8 net, counted lane by lane."""
    st = small_program.pair.stages[0]
    sw = next(s for s in st.sweeps if s.starter.kind == "conv")
    pitch = st.extent[2]
    assert st.extent == (1, 10, 10) and st.halo == (0, 1, 1)
    index = R._buffer_index(st)            # the code generator's buffer expression
    assert index(0, 3, 4) == 4 * pitch + 5 and index(0, -1, -1) == 0
    for D in [(0, 0, 0), (0, 2, -3)]:
        walk = R.team_walk(st, sw, D)
        lanes = _column_lanes(D)
        expected = []
        for wp in range(4):
            mine = lanes[32 * wp:32 * wp + 32]
            for i in range(max(len(r) for _, r in mine)):
                # tap (0, 0, 0) of output (h, w) reads buffer row h, column w (halo 1, low 1)
                words = [[r[i] * pitch + w] for w, r in mine if i < len(r)]
                expected.append(_plain_wavefronts(words))
        got = R.wavefronts(
            (lambda d, h, w: ((h - 1) + 1) * pitch + (w - 1) + 1)(
                walk.pos[..., 0], walk.pos[..., 1], walk.pos[..., 2])[..., None], walk.live)
        assert sorted(got.tolist()) == sorted(expected)
    geo = R.sweep_geometry(st, sw, 4, {})
    iters = sum(max(len(r) for _, r in _column_lanes((0, dh, dw))[32 * wp:32 * wp + 32])
                for dh in range(-7, 8) for dw in range(-7, 8) for wp in range(4))
    assert geo.stencil_accesses == 9 * iters
    assert 1.0 <= geo.conflict <= 4.0


def test_sweep_lines_found_in_the_source(small_program):
    from infinet.codegen.render import render
    lines, notes = R.sweep_line_map(small_program)
    assert notes == []
    text = render(small_program, "cuda").splitlines()
    st = small_program.pair.stages[0]
    per_sweep = {}
    for line, ref in lines.items():
        if (ref.pass_, ref.stage) == ("pair", 0):
            per_sweep.setdefault(ref.sweep, []).append(line)
    assert sorted(per_sweep) == list(range(len(st.sweeps)))
    for i, sw in enumerate(st.sweeps):
        block = [text[n - 1] for n in sorted(per_sweep[i])]
        assert sorted(per_sweep[i]) == list(range(min(per_sweep[i]), max(per_sweep[i]) + 1))
        # each block holds its own ops' printed code: a relu sweep calls the relu
        if any(op.kind == "ew" for op in sw.ops):
            assert any(sw.ops[-1].fn.name in ln for ln in block)
        if sw.starter.kind == "input":
            assert any("inf_input" in ln for ln in block)


def test_occupancy_worked_examples():
    # 54 registers: 56 x 32 = 1792 a warp, 36 warps by registers -> 4 blocks of 8 warps
    occ = R.occupancy(54, 256, 20544)
    assert (occ.blocks_per_sm, occ.limiter, occ.occupancy) == (4, "registers", 0.5)
    # 32 registers: 64 warps by registers, 8 blocks by threads: full occupancy
    occ = R.occupancy(32, 256, 0)
    assert occ.blocks_per_sm == 8 and occ.occupancy == 1.0
    # 100 KB of shared memory a block (+1 KB reserved): 2 blocks in 228 KB
    occ = R.occupancy(32, 256, 100 * 1024)
    assert (occ.blocks_per_sm, occ.limiter) == (2, "shared memory")
    # one warp a block: the 32-blocks limit
    occ = R.occupancy(40, 32, 264)
    assert (occ.blocks_per_sm, occ.limiter, occ.occupancy) == (32, "blocks", 0.5)


# -- one generated net end to end ---------------------------------------------------------------

@needs_tools
def test_small_net_report():
    rep, = R.report_net("small", SMALL, ["float32"])
    assert rep.notes == []
    pair = [k for k in rep.kernels if k.pass_ == "pair"]
    assert [k.name for k in pair] == ["pair_stage0_f32"]
    k = pair[0]
    assert k.planes == 15 * 15 and k.threads == 128     # 4 warps walking columns
    labels = [s.label for s in k.sweeps]
    assert labels == ["input", "conv + relu", "conv + relu"]
    for s in k.sweeps:
        assert s.loops >= 1                       # every sweep has its loop in the SASS
        # K and Θ stored once an entry (ptxas may unroll a band's row loop: the input
        # sweep's, whose body is short, by 4)
        assert s.entries_per_iter in (1, 2, 4)
        assert s.stores == s.stores_expected * s.entries_per_iter
    inp, first, second = k.sweeps
    # the second conv + relu carries Θ through both stencils: a K+Θ entry-layer
    assert second.conv_theta and 40 <= second.entry_union <= 400
    assert second.entry_union > first.entry_union > inp.entry_union
    # the stencils' new row (2 x 3 taps; the rows above are in registers) + the stores
    assert second.categories["shared"] >= 8
    assert second.categories["mufu"] >= 1         # the relu's square root / division
    expected_iters = sum(max(len(r) for _, r in _column_lanes((0, dh, dw))[32 * wp:32 * wp + 32])
                         for dh, dw in itertools.product(range(-7, 8), repeat=2)
                         for wp in range(4))
    assert second.warp_iters == expected_iters
    assert 0 < second.lane_use <= 1 and 0 < second.thread_use <= second.lane_use
    assert second.stencil_conflict >= 1
    assert rep.entry_layer == second.entry_union
    assert k.registers > 0 and 0 < k.occupancy <= 1
    # the prediction: every warp instruction of the pair pass at the issue rate
    assert rep.us_per_pair == pytest.approx(
        (rep.pair_warp_instructions + rep.tail_warp_instructions)
        / (132 * 4 * 1.98e9) * 1e6)
    assert rep.pair_warp_instructions >= sum(s.warp_iters * s.entry_union for s in k.sweeps)
    assert rep.us_per_pair_pipes >= rep.us_per_pair * 0.999
