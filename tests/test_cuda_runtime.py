"""The CUDA runtime sized for a GPU: launch sequences from the device footprint, one host
synchronisation per tile, uploads and read-backs on a copy stream through pinned memory,
launches bounded by a cost model, and tiles flushed to ``--out DIR`` by their byte ranges.

The structure is asserted (launches, synchronisations, copies, flushed ranges), never
time: the CuPy stand-in (tests/cuda_emu) queues stream work and runs it only when
synchronised, and counts what it was asked to do (``cupy_standin.STATS``).
"""
from __future__ import annotations

import math
import mmap

import numpy as np
import pytest

import cuda_emu
import infinet
from codegen_cases import CASES, assert_agrees, inputs
from infinet.codegen.program import lower_program
from infinet.errors import InfinetError
from infinet.runtime import batching, dirstore
from infinet.runtime.evaluate import evaluate, evaluate_tiled
from infinet.runtime.reference import ReferenceExecutor
from infinet.runtime.tiles import Tile, TileGrid, choose_grid, work_per_pair

#: the BENCHMARKS.md CNTK-GAP depth 21 net (20 convs, gap, dense) on 32x32x3
GAP21 = ("net cntk_gap_d21\ninput 32x32x3\nrepeat 20 {\n  conv 3x3 pad=same W=sqrt(2) b=0\n"
         "  relu\n}\ngap\ndense W=1 b=0\n")
#: a net small enough for thousands of emulated pairs: one stage of one plane, a tail
TINY = "net tiny\ninput 1x1x2\nconv 1x1 W=sqrt(2)\nrelu\ngap\ndense\n"


# -- sizing: pure functions, no device ------------------------------------------------------

def test_launch_sequence_follows_the_footprint_of_cntk_gap21():
    prog = lower_program(infinet.compile(GAP21).plan)
    # the pair pass materialises only the readout partials: K and Θ per offset plane
    assert prog.pair.buffers == [("part40_k", 3969, False), ("part40_t", 3969, True)]
    assert prog.pair.buffer_entries() == 7938
    # per pair: 7938 partials (31,752 B in float32, ~31 KB), and two slots of two int64
    # row indices and two outputs
    assert batching.device_pair_bytes(7938, 4) == 7938 * 4 + 2 * (2 * 8 + 2 * 4) == 31_800
    assert batching.device_pair_bytes(7938, 8) == 7938 * 8 + 2 * (2 * 8 + 2 * 8) == 63_568
    # an 80 GB device with 79 GB free: the fixed cap (1 GiB) decides
    assert batching.DEVICE_BUDGET == 2 ** 30
    assert batching.sequence_pairs(31_800, 79 * 10 ** 9) == 2 ** 30 // 31_800 == 33_765
    assert batching.sequence_pairs(63_568, 79 * 10 ** 9) == 16_891
    # little free memory: 90 % of it, less the fixed scratch
    assert batching.sequence_pairs(31_800, 100 * 2 ** 20) == int(100 * 2 ** 20 * 0.9) // 31_800
    assert batching.sequence_pairs(31_800, 100 * 2 ** 20, fixed=10 * 2 ** 20) == \
        (int(100 * 2 ** 20 * 0.9) - 10 * 2 ** 20) // 31_800 == 2_637
    # a tiny pair: the fixed cap of pairs
    assert batching.sequence_pairs(80, 79 * 10 ** 9) == batching.MAX_SEQUENCE_PAIRS == 65_536
    with pytest.raises(InfinetError) as err:
        batching.sequence_pairs(31_800, 30_000)
    assert str(err.value).startswith("error: one pair needs 31.1 KiB of device memory, but only "
                                  "26.4 KiB can be used (29.3 KiB free on the GPU")
    assert "\n" not in str(err.value)


def test_launches_are_bounded_by_the_cost_model():
    # CNTK-GAP-21: 1.18e9 flops + 20 x 4.19e7 transcendentals per pair
    plan = infinet.compile(GAP21).plan
    assert work_per_pair(plan) == pytest.approx(2.0216e9, rel=1e-4)
    # on 132 SMs at the conservative 4e9 (float32) / 1e8 (float64) work/s per SM, 1 s
    assert batching.launch_pairs(2e9, 132, "float32") == 264
    assert batching.launch_pairs(2e9, 132, "float64") == 6
    assert batching.launch_pairs(1e12, 132, "float64") == 1         # never less than one
    assert batching.launch_pairs(100.0, 4, "float32", seconds=1e-6) == 160
    assert batching.launch_chunks(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert batching.launch_chunks(0, 4) == []


def test_a_gpu_tile_is_one_executor_call():
    plan = infinet.compile(GAP21).plan

    class Gpu:
        device_batches = True
        tile_work = batching.DEVICE_TILE_WORK
        name = "cuda"
        dtype = np.dtype("float32")

    Gpu.plan = plan
    batch = batching.batch_size(Gpu(), None)
    assert batch == int(2e14 / work_per_pair(plan)) == 98_928
    grid = choose_grid(plan, 50_000, 50_000, True, batch, None, None, Gpu.tile_work)
    assert grid.rows == grid.cols == math.isqrt(98_928) == 314
    assert grid.rows * grid.cols <= batch          # every tile in one call
    # the host memory bound still holds: 512 MiB / 128 B per pair
    assert batching.batch_size(Gpu(), 2 ** 20) == 2 ** 20 // 128


# -- the stand-in's streams are those of CUDA ------------------------------------------------

@pytest.mark.cuda
def test_emulated_streams_run_in_order_only_when_synchronised():
    import cupy as cp
    if not getattr(cp, "__cuda_emu__", False):
        pytest.skip("checks the stand-in itself")
    from cuda_emu.cupy_standin import STATS, is_pinned
    s, t = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    mem = cp.cuda.alloc_pinned_memory(8 * 4)
    host = np.frombuffer(mem, np.float64, 4)
    assert is_pinned(host) and not is_pinned(np.zeros(4))
    host[:] = [1, 2, 3, 4]
    d = cp.empty(4, cp.float64)
    d.set(host, stream=s)
    host[:] = 5                        # DMA from pinned memory reads it when it runs
    back = cp.cuda.alloc_pinned_memory(8 * 4)
    out = np.frombuffer(back, np.float64, 4)
    out[:] = 0
    ev = cp.cuda.Event()
    ev.record(s)
    t.wait_event(ev)
    d.get(stream=t, out=out, blocking=False)
    assert (out == 0).all()            # nothing ran yet
    assert np.isnan(d.get()).all()     # the null stream does not wait for non-blocking s
    STATS.reset()
    t.synchronize()                    # runs t, which waits for s up to the event
    assert (out == 5).all() and STATS.syncs == ["stream"] and STATS.blocking == 0


# -- the executor on the emulation ------------------------------------------------------------

def _calls(executor, monkeypatch):
    """Per call of ``executor.pairs``: (pairs, syncs, blocking reads, launches, copies)."""
    from cuda_emu.cupy_standin import STATS
    calls = []
    inner = executor.pairs

    def pairs(x1, x2, r1, r2, v1, v2):
        s0, b0, l0, c0 = len(STATS.syncs), STATS.blocking, len(STATS.launches), len(STATS.copies)
        out = inner(x1, x2, r1, r2, v1, v2)
        calls.append((len(r1), STATS.syncs[s0:], STATS.blocking - b0, STATS.launches[l0:],
                      STATS.copies[c0:]))
        return out
    monkeypatch.setattr(executor, "pairs", pairs)
    return calls


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_2000_pairs_run_in_launch_sequences_with_one_synchronisation(dtype, monkeypatch):
    import cupy as cp
    emulated = getattr(cp, "__cuda_emu__", False)
    k = infinet.compile(TINY)
    gpu = k.executor("cuda", dtype)
    x1, x2 = inputs(k.plan, seed=7, n1=40, n2=50)
    # the pair pass holds the readout's partial sums of K and Θ (one plane): 2 numbers,
    # and two slots of two int64 rows and two outputs, per pair
    item = np.dtype(dtype).itemsize
    assert gpu.pair_pass.buffer_entries() == 2
    assert gpu.footprint(gpu.pair_pass) == (2 * item + 2 * (16 + 2 * item), 0)
    assert gpu.sequence_size(gpu.pair_pass, 10 ** 6) == batching.MAX_SEQUENCE_PAIRS
    want = evaluate(gpu, x1, x2)                       # one sequence of 2000 pairs
    monkeypatch.setattr(batching, "MAX_SEQUENCE_PAIRS", 512)
    assert gpu.sequence_size(gpu.pair_pass, 2000) == 512
    calls = _calls(gpu, monkeypatch)
    got = evaluate_tiled(gpu, x1, x2)
    assert len(calls) == 1                             # 2000 pairs: one tile, one call
    pairs, syncs, blocking, launches, copies = calls[0]
    assert pairs == 2000
    for kind in ("nngp", "ntk"):                        # the same bits, however sequenced
        assert np.array_equal(getattr(got, kind), getattr(want, kind))
        assert_agrees(k.plan, getattr(evaluate(ReferenceExecutor(k.plan, dtype), x1, x2),
                                      kind), getattr(got, kind), dtype, symmetric=False)
    if not emulated:
        return
    suffix = "f64" if dtype == "float64" else "f32"
    assert syncs == ["stream"] and blocking == 0        # the host waited once
    # 4 sequences (512, 512, 512, 464) of one stage launch and one tail launch each
    assert [(name, items) for name, _, _, items, _ in launches] == \
        [(f"pair_{kern}_{suffix}", n) for n in (512, 512, 512, 464)
         for kern in ("stage0", "tail")]
    assert {ptr for *_, ptr in launches} == {gpu.compute.ptr}
    # rows up and results back: two of each per sequence, all pinned, on the copy stream
    ups = [c for c in copies if c[0] == "h2d"]
    downs = [c for c in copies if c[0] == "d2h"]
    assert [c[1] for c in ups] == [8 * n for n in (512, 512, 512, 464) for _ in (0, 1)]
    assert [c[1] for c in downs] == [gpu.dtype.itemsize * n for n in (512, 512, 512, 464)
                                     for _ in (0, 1)]
    assert all(c[2] == gpu.copy.ptr and c[3] for c in copies)
    # issued in the order that overlaps them: the rows of sequence c + 1 go up before
    # sequence c's results come back (so while it computes)
    assert [d for d, *_ in copies[::2]] == ["h2d", "h2d", "d2h", "h2d", "d2h", "h2d", "d2h",
                                            "d2h"]


@pytest.mark.cuda
def test_one_synchronisation_per_tile(monkeypatch):
    import cupy as cp
    k = infinet.compile(TINY)
    gpu = k.executor("cuda", "float64")
    x1, x2 = inputs(k.plan, seed=8, n1=40, n2=50)
    calls = _calls(gpu, monkeypatch)
    got = evaluate_tiled(gpu, x1, None, tile=15)        # symmetric: 3 x 3 grid, 6 tiles
    assert [c[0] for c in calls] == [120, 225, 150, 120, 150, 55]
    want = evaluate_tiled(ReferenceExecutor(k.plan, "float64"), x1, None, tile=15)
    assert_agrees(k.plan, want.ntk, got.ntk, "float64", symmetric=True)
    if getattr(cp, "__cuda_emu__", False):
        assert all(c[1] == ["stream"] and c[2] == 0 for c in calls)
        assert all(len(c[3]) == 2 for c in calls)     # one sequence per tile


@pytest.mark.cuda
def test_stage_launches_are_split_when_the_cost_model_says_so(monkeypatch):
    """more_pool_same: two stages (the first materialises its state for the second)."""
    import cupy as cp
    k = infinet.compile(CASES["more_pool_same"])
    gpu = k.executor("cuda", "float64")
    pas = gpu.pair_pass
    x1, x2 = inputs(k.plan, seed=9, n1=5, n2=4)
    want = evaluate(gpu, x1, x2)
    works = [gpu.pass_work(pas, st.nodes) for st in pas.stages]
    # the bound lowered so that the costlier stage gets 3 pairs per launch
    rate = batching.DEVICE_WORK_PER_SM_S["float64"] * gpu.sms
    seconds = 3.5 * max(works) / rate
    monkeypatch.setattr(batching, "LAUNCH_SECONDS", seconds)
    calls = _calls(gpu, monkeypatch)
    got = evaluate(gpu, x1, x2)
    for kind in ("nngp", "ntk"):
        assert np.array_equal(getattr(got, kind), getattr(want, kind))
    if not getattr(cp, "__cuda_emu__", False):
        return
    (pairs, syncs, _, launches, _), = calls
    assert pairs == 20 and syncs == ["stream"]
    split = {}
    for st, work in zip(pas.stages, works):
        per = max(1, math.floor(seconds * rate / work))
        items = [n for name, _, _, n, _ in launches if name.startswith(st.name + "_")]
        assert items == [n for _, n in batching.launch_chunks(20, per)]
        assert all(n * work / rate <= seconds for n in items)      # none predicted longer
        split[st.name] = items
    costly = pas.stages[works.index(max(works))].name
    assert split[costly] == [3, 3, 3, 3, 3, 3, 2]


@pytest.mark.cuda
def test_inputs_and_tables_upload_through_pinned_staging(monkeypatch):
    import cupy as cp

    from infinet.runtime import cuda
    k = infinet.compile(TINY)
    gpu = k.executor("cuda", "float64")
    x1, _ = inputs(k.plan, seed=6, n1=40, n2=1)            # 40 x 2 float64: 640 bytes
    monkeypatch.setattr(cuda, "UPLOAD_STAGE", 128)
    emulated = getattr(cp, "__cuda_emu__", False)
    if emulated:
        from cuda_emu.cupy_standin import STATS
        STATS.reset()
    v1 = gpu.self_variances(x1)
    if emulated:                                       # five 128-byte pinned chunks
        assert [c[1:] for c in STATS.copies if c[0] == "h2d"] == [(128, gpu.copy.ptr, True)] * 5
    rows, cols = np.triu_indices(40)
    k_dev, t_dev = gpu.pairs(x1, x1, rows, cols, v1, v1)
    # tables made elsewhere (host arrays): packed on the host, uploaded the same way
    ref = ReferenceExecutor(k.plan, "float64")
    vh = ref.self_variances(x1)
    k_host, t_host = gpu.pairs(x1, x1, rows, cols, vh, vh)
    np.testing.assert_allclose(k_host, k_dev, rtol=1e-13)
    np.testing.assert_allclose(t_host, t_dev, rtol=1e-13)
    want = ref.pairs(x1, x1, rows, cols, vh, vh)
    np.testing.assert_allclose(t_dev, want[1], rtol=1e-12)


@pytest.mark.cuda
def test_a_device_too_small_for_one_pair_is_one_error_line(monkeypatch, tmp_path):
    k = infinet.compile(TINY)
    gpu = k.executor("cuda", "float64")
    x1, x2 = inputs(k.plan, seed=1, n1=3, n2=2)
    v1, v2 = gpu.self_variances(x1), gpu.self_variances(x2)
    monkeypatch.setattr(gpu, "free_memory", lambda: 64)
    text = r"^error: one pair needs 80 B of device memory, but only 57 B can be used"
    with pytest.raises(InfinetError, match=text):
        gpu.pairs(x1, x2, np.array([0, 1]), np.array([1, 0]), v1, v2)
    # a run says so before it writes anything
    out = tmp_path / "K"
    with pytest.raises(InfinetError, match=text):
        evaluate_tiled(gpu, x1, x2, out=str(out))
    assert not out.exists()


# -- finished tiles flushed by their byte ranges ---------------------------------------------

def test_tile_byte_ranges_are_the_rows_it_wrote():
    # an off-diagonal tile of a 5 x 7 result: rows 3..4, cols 3..5
    t = Tile(4, 3, 5, 3, 6, diagonal=False, mirrored=False)
    assert dirstore.tile_byte_ranges(t, 7) == [((3 * 7 + 3) * 8, (4 * 7 + 6) * 8)]
    # mirrored (symmetric run): the block, then its mirror image rows 3..5, cols 3..4
    m = Tile(1, 0, 3, 3, 6, diagonal=False, mirrored=True)
    assert dirstore.tile_byte_ranges(m, 7) == [(3 * 8, (2 * 7 + 6) * 8),
                                               ((3 * 7 + 0) * 8, (5 * 7 + 3) * 8)]


def test_finished_tiles_are_flushed_by_range_not_whole(tmp_path, monkeypatch):
    k = infinet.compile(TINY)
    ref = ReferenceExecutor(k.plan, "float64")
    x1, _ = inputs(k.plan, seed=2, n1=700, n2=1)
    flushed, msyncs, whole = [], [], []
    real_flush, real_msync = dirstore.flush_range, dirstore._msync

    def spy(arr, start, stop):
        flushed.append((arr.filename.rsplit("/", 1)[-1], start, stop))
        real_flush(arr, start, stop)

    def msync(mm, offset, size):
        msyncs.append((offset, size))
        real_msync(mm, offset, size)
    monkeypatch.setattr(dirstore, "flush_range", spy)
    monkeypatch.setattr(dirstore, "_msync", msync)
    monkeypatch.setattr(np.memmap, "flush", lambda self: whole.append(self.filename))
    out = tmp_path / "K"
    res = evaluate_tiled(ref, x1, None, out=str(out), tile=300)
    grid = TileGrid(700, 700, 300, 300, True)
    want = []
    for t in grid.tiles():
        for name in ("nngp.partial.npy", "ntk.partial.npy"):
            for rows, cols, _ in t.regions():
                want.append((name, (rows.start * 700 + cols.start) * 8,
                             ((rows.stop - 1) * 700 + cols.stop) * 8))
    assert flushed == want
    assert len(want) == 2 * (3 + 2 * 3)              # 3 diagonal and 3 mirrored tiles
    # page-aligned, and each covers its range (the data starts 128 bytes into the map)
    for (offset, size), (_, start, stop) in zip(msyncs, flushed):
        assert offset % mmap.PAGESIZE == 0
        assert offset <= 128 + start and offset + size >= 128 + stop
        assert offset > 128 + start - mmap.PAGESIZE
    # the whole arrays are flushed only when the run finishes (once each)
    assert sorted(w.rsplit("/", 1)[-1] for w in whole) == ["nngp.partial.npy",
                                                           "ntk.partial.npy"]
    np.testing.assert_array_equal(np.asarray(res.ntk), evaluate(ref, x1, None).ntk)


CHILD = """
import sys, numpy as np, cuda_emu, infinet
from codegen_cases import inputs
from infinet.runtime.evaluate import evaluate_tiled
with cuda_emu.activated(emulator=%(emulated)r):
    k = infinet.compile(%(net)r)
    x1, _ = inputs(k.plan, seed=4, n1=40, n2=1)
    evaluate_tiled(k.executor("cuda", "float64"), x1, None, out=sys.argv[1], tile=15)
"""


@pytest.mark.cuda
@pytest.mark.parametrize("point", ["dir.tile-written@3", "dir.tile-recorded@4"])
def test_cuda_run_killed_at_a_tile_resumes_bit_identical(tmp_path, point, cuda_device):
    """A process running the CUDA executor into --out DIR, SIGKILLed at a tile's kill
    point (a fresh interpreter: the emulator's threads do not survive a fork), resumes
    from the tiles it recorded, bit-identical to an uninterrupted run."""
    import os
    import subprocess
    import sys
    k = infinet.compile(TINY)
    x1, _ = inputs(k.plan, seed=4, n1=40, n2=1)
    want = evaluate_tiled(k.executor("cuda", "float64"), x1, None, tile=15)
    out = str(tmp_path / "K")
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, INFINET_KILLPOINT=point,
               PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    code = CHILD % {"emulated": cuda_device == "emulator", "net": TINY}
    proc = subprocess.run([sys.executable, "-c", code, out], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]       # killed there
    got = evaluate_tiled(k.executor("cuda", "float64"), x1, None, out=out, tile=15)
    assert 0 < got.pairs_computed < 40 * 41 // 2          # resumed, not started over
    for kind in ("nngp", "ntk"):
        assert np.array_equal(np.asarray(getattr(got, kind)), getattr(want, kind))


@pytest.mark.cuda
def test_cli_eval_on_cuda_into_a_directory(tmp_path, monkeypatch, capsys):
    """``infinet eval --backend cuda --out DIR`` (in process, on the emulation or a GPU):
    the same values as numpy; a device too small for one pair: one error line, exit 2,
    nothing written."""
    from infinet.cli import main
    from infinet.runtime.cuda import CudaExecutor
    net = tmp_path / "tiny.net"
    net.write_text(TINY)
    k = infinet.compile(TINY)
    x1, _ = inputs(k.plan, seed=3, n1=30, n2=1)
    np.save(tmp_path / "x.npy", x1)
    out = tmp_path / "K"
    assert main(["eval", str(net), "--x1", str(tmp_path / "x.npy"), "--out", str(out),
                 "--backend", "cuda", "--dtype", "float64"]) == 0
    got = np.load(out / "ntk.npy")
    want = evaluate(ReferenceExecutor(k.plan, "float64"), x1, None).ntk
    assert_agrees(k.plan, want, got, "float64", symmetric=True)
    capsys.readouterr()
    monkeypatch.setattr(CudaExecutor, "free_memory", lambda self: 64)
    small = tmp_path / "K2"
    assert main(["eval", str(net), "--x1", str(tmp_path / "x.npy"), "--out", str(small),
                 "--backend", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: one pair needs ") and err.count("\n") == 1, err
    assert not small.exists()
