"""Tiled evaluation: boundaries, symmetry, resumable output, refusal, kill-and-resume."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import infinet
from infinet.errors import DataError, UsageError
from infinet.runtime.dirstore import DirStore
from infinet.runtime.evaluate import evaluate_tiled
from infinet.runtime.evaluate import evaluate_untiled as evaluate
from infinet.runtime.identity import identity
from infinet.runtime.progress import Progress
from infinet.runtime.tiles import TileGrid, choose_grid, tile_pairs

from conftest import EXAMPLES, ROOT, run_cli

GAP = EXAMPLES / "cnn_gap_small.net"   # 8x8x1, every offset


def _images(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 1))


class Counting:
    """An executor wrapper that counts pairs and can fail after a number of calls."""

    def __init__(self, inner, fail_after=None):
        self.inner, self.fail_after = inner, fail_after
        self.plan, self.dtype, self.name = inner.plan, inner.dtype, inner.name
        self.pairs_done = 0
        self.calls = 0

    def self_variances(self, x):
        return self.inner.self_variances(x)

    def pairs(self, x1, x2, r, c, v1, v2):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.pairs_done += len(r)
        return self.inner.pairs(x1, x2, r, c, v1, v2)


@pytest.fixture(scope="module")
def gap():
    return infinet.compile(GAP, depth=2).executor("numpy")


# -- the grid --------------------------------------------------------------------------------

@pytest.mark.parametrize("n1, n2, side, symmetric", [
    (1, 1, 1, True), (1, 1, 5, True), (10, 10, 3, True), (10, 10, 10, True), (10, 10, 4, True),
    (7, 3, 2, False), (1, 9, 4, False), (9, 1, 4, False), (13, 5, 13, False), (6, 6, 100, True),
])
def test_tiles_cover_every_pair_once(n1, n2, side, symmetric):
    grid = TileGrid(n1, n2, min(side, n1), min(side, n2), symmetric)
    hits = np.zeros((n1, n2), int)
    for t in grid.tiles():
        i, j = tile_pairs(t)
        np.add.at(hits, (i + t.r0, j + t.c0), 1)
        assert t.pairs == len(i)
    want = np.triu(np.ones((n1, n2), int)) if symmetric else np.ones((n1, n2), int)
    assert np.array_equal(hits, want)
    assert sum(t.pairs for t in grid.tiles()) == grid.total_pairs


def test_grid_is_sized_from_memory_and_work(gap):
    small = choose_grid(gap.plan, 1000, 1000, True, batch=10)
    assert small.rows == small.cols and 1 <= small.rows < 1000
    # a huge max_memory does not make a tile bigger than its work budget
    assert choose_grid(gap.plan, 5000, 5000, True, batch=10 ** 9).rows < 5000
    # a tiny max_memory keeps the tile's own arrays small
    assert choose_grid(gap.plan, 1000, 1000, True, batch=1, max_memory=4096).rows <= 6
    flat = choose_grid(gap.plan, 500, 1, False, batch=10 ** 6)
    assert flat.cols == 1 and flat.rows > 1
    with pytest.raises(UsageError):
        choose_grid(gap.plan, 4, 4, True, 1, tile=0)


# -- values ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tile", [None, 1, 3, 7, 11, 50])
def test_tiled_equals_untiled(gap, tile):
    x1, x2 = _images(11), _images(4, seed=1)
    want = evaluate(gap, x1, None)
    got = evaluate_tiled(gap, x1, None, tile=tile)
    np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-13, atol=1e-15)
    assert np.array_equal(got.nngp, got.nngp.T) and np.array_equal(got.ntk, got.ntk.T)
    want = evaluate(gap, x1, x2)
    got = evaluate_tiled(gap, x1, x2, tile=tile)
    assert got.ntk.shape == (11, 4)
    np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-13, atol=1e-15)
    one = evaluate_tiled(gap, x1[:1], None, tile=tile)
    np.testing.assert_allclose(one.ntk, evaluate(gap, x1[:1], None).ntk, rtol=1e-13)
    assert one.ntk.shape == (1, 1)


def test_symmetric_run_computes_only_the_upper_triangle(gap):
    c = Counting(gap)
    evaluate_tiled(c, _images(9), None, tile=4)
    assert c.pairs_done == 9 * 10 // 2
    c = Counting(gap)
    evaluate_tiled(c, _images(9), _images(9), tile=4)
    assert c.pairs_done == 81


# -- the result directory ------------------------------------------------------------------------

def test_directory_output_and_manifest(gap, tmp_path):
    x = _images(10)
    out = tmp_path / "K"
    r = evaluate_tiled(gap, x, None, out=str(out), tile=4, describe={"x1": "ten images"})
    assert sorted(os.listdir(out)) == [".lock", "manifest.json", "nngp.npy", "ntk.npy",
                                       "tiles.sha256"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete" and m["shape"] == [10, 10]
    assert m["identity"]["backend"] == "numpy" and m["identity"]["dtype"] == "float64"
    assert m["identity"]["params"] == {"depth": 2} and m["identity"]["x2"] == "x1"
    assert m["identity"]["x1"]["checksum"].startswith("sha256:")
    assert m["infinet_version"] == infinet.__version__ and m["inputs"] == {"x1": "ten images"}
    assert m["grid"]["rows"] == 4 and m["grid"]["tiles"] == 6
    assert m["format"] == "infinet-kernels/2"
    # one checksummed journal line per tile, kept after the run
    assert len((out / "tiles.sha256").read_bytes().splitlines()) == 6
    mm = np.load(out / "ntk.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap) and np.array_equal(mm, r.ntk)
    np.testing.assert_allclose(mm, evaluate(gap, x, None).ntk, rtol=1e-13)
    # a finished directory is reused, not recomputed
    c = Counting(gap)
    again = evaluate_tiled(c, x, None, out=str(out))
    assert c.pairs_done == 0 and np.array_equal(again.nngp, r.nngp)
    assert again.pairs_computed == 0 and r.pairs_computed == 55


def test_resume_after_interruption_is_bit_identical(gap, tmp_path):
    x1, x2 = _images(13), _images(6, seed=2)
    for args in [(x1, None), (x1, x2)]:
        full = evaluate_tiled(gap, *args, tile=3)
        out = str(tmp_path / f"run{args[1] is None}")
        first = Counting(gap, fail_after=4)
        with pytest.raises(KeyboardInterrupt):
            evaluate_tiled(first, *args, out=out, tile=3)
        assert os.path.exists(os.path.join(out, "tiles.sha256"))
        assert json.load(open(os.path.join(out, "manifest.json")))["status"] == "running"
        second = Counting(gap)
        log = io.StringIO()
        r = evaluate_tiled(second, *args, out=out, progress=Progress("k", stream=log, mode="log"))
        total = 13 * 14 // 2 if args[1] is None else 13 * 6
        assert first.pairs_done + second.pairs_done == total      # nothing computed twice
        assert "resuming" in log.getvalue()
        assert np.array_equal(r.nngp, full.nngp) and np.array_equal(r.ntk, full.ntk)


def test_torn_or_garbled_journal_lines_do_not_count(gap, tmp_path):
    out = str(tmp_path / "K")
    with pytest.raises(KeyboardInterrupt):
        evaluate_tiled(Counting(gap, fail_after=2), _images(8), None, out=out, tile=2)
    journal = os.path.join(out, "tiles.sha256")
    lines = open(journal, "rb").read().splitlines(keepends=True)
    assert len(lines) == 2
    tile, k, digest, crc = lines[1].split()
    with open(journal, "ab") as fh:
        fh.write(b"tile 5 %s %s\n" % (digest, crc))    # wrong check value for tile 5
        fh.write(b"tile 7 " + digest[:10])               # torn: no newline
    c = Counting(gap)
    r = evaluate_tiled(c, _images(8), None, out=out)
    done_before = sum(t.pairs for t in TileGrid(8, 8, 2, 2, True).tiles()[:2])
    assert c.pairs_done == 36 - done_before
    np.testing.assert_array_equal(r.ntk, evaluate_tiled(gap, _images(8), None, tile=2).ntk)


def test_refuses_to_resume_a_different_computation(gap, tmp_path):
    x = _images(6)
    out = str(tmp_path / "K")
    with pytest.raises(KeyboardInterrupt):
        evaluate_tiled(Counting(gap, fail_after=1), x, None, out=out, tile=2)
    other_net = infinet.compile(GAP, depth=3).executor("numpy")
    other_src = infinet.compile(EXAMPLES / "digits_cntk_v.net", depth=2).executor("numpy")
    f32 = infinet.compile(GAP, depth=2).executor("numpy", "float32")
    x_changed = x.copy()
    x_changed[3, 4, 4, 0] += 1e-9
    cases = [(gap, x_changed, None, "the inputs x1 changed"),
             (gap, x[:5], None, "the inputs x1 changed"),
             (gap, x, x, "the inputs x2"),
             (other_net, x, None, "the params changed"),
             (other_src, x, None, "the net"),
             (f32, x, None, "the dtype changed")]
    for ex, a, b, message in cases:
        with pytest.raises(DataError, match=message) as err:
            evaluate_tiled(ex, a, b, out=out)
        assert "refusing to mix results" in str(err.value)
    with pytest.raises(UsageError, match="started with tiles of 2x2"):
        evaluate_tiled(gap, x, None, out=out, tile=3)
    # the partial run is untouched and still resumes
    r = evaluate_tiled(gap, x, None, out=out)
    np.testing.assert_array_equal(r.ntk, evaluate_tiled(gap, x, None, tile=2).ntk)


def test_foreign_directories_and_locks(gap, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds no infinet manifest.json"):
        evaluate_tiled(gap, _images(3), None, out=str(tmp_path / "busy"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not an infinet kernel manifest"):
        evaluate_tiled(gap, _images(3), None, out=str(tmp_path / "bad"))
    ident = identity(gap, _images(3), None)
    first = DirStore(str(tmp_path / "locked"), ident)
    try:
        with pytest.raises(UsageError, match=rf"another infinet run \(process {os.getpid()}\) is writing"):
            DirStore(str(tmp_path / "locked"), ident)
    finally:
        first.close()
    with pytest.raises(UsageError, match="does not exist"):
        evaluate_tiled(gap, _images(3), None, out=str(tmp_path / "no" / "such" / "dir"))


# -- progress ------------------------------------------------------------------------------------

class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_log_and_quiet(gap):
    x = _images(12)
    tty = _Tty()
    evaluate_tiled(gap, x, None, tile=3, progress=Progress("eval", stream=tty))
    text = tty.getvalue()
    assert "\r" in text and "pairs/s" in text and "ETA" in text and "|" in text
    assert text.endswith("pairs/s\n") or text.rstrip().endswith("pairs/s")
    assert "eval: 78/78 pairs (100%) in " in text
    log = io.StringIO()
    evaluate_tiled(gap, x, None, tile=3, progress=Progress("eval", stream=log, mode="log",
                                                           interval=0))
    lines = log.getvalue().splitlines()
    assert len(lines) >= 3 and "\r" not in log.getvalue()
    assert "ETA" in lines[0] and lines[-1].startswith("eval: 78/78 pairs (100%) in")
    quiet = io.StringIO()
    evaluate_tiled(gap, x, None, progress=Progress("eval", stream=quiet, mode="quiet"))
    assert quiet.getvalue() == ""
    # a quick job in log mode stays silent (no lines for a job shorter than the interval)
    silent = io.StringIO()
    evaluate_tiled(gap, x, None, progress=Progress("eval", stream=silent, mode="log"))
    assert silent.getvalue() == ""


def test_progress_of_a_resumed_and_of_a_finished_run(gap, tmp_path):
    x = _images(12)
    out = str(tmp_path / "K")
    with pytest.raises(KeyboardInterrupt):
        evaluate_tiled(Counting(gap, fail_after=2), x, None, out=out, tile=3)
    tty = _Tty()
    evaluate_tiled(gap, x, None, out=out, progress=Progress("eval", stream=tty))
    text = tty.getvalue()
    assert text.startswith("eval: resuming: 15 of 78 pairs already done\n\reval:")
    assert "15/78 pairs" in text and text.rstrip().endswith("pairs/s")
    for mode in ("bar", "log"):
        done = io.StringIO()
        evaluate_tiled(gap, x, None, out=out, progress=Progress("eval", stream=done, mode=mode))
        assert done.getvalue() == "eval: all 78 pairs already done\n"
    erased = _Tty()                 # keep=False: the bar is erased, nothing else is said
    evaluate_tiled(gap, x, None, progress=Progress("k", stream=erased, keep=False))
    text = erased.getvalue()
    assert text.endswith("\r") and text.rsplit("\r", 2)[-2].strip() == "" and "\n" not in text


# -- the command line: --out DIR/, kill -9 and resume ---------------------------------------------

def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cli_dir_output_and_errors(tmp_path):
    np.save(tmp_path / "x.npy", _images(7))
    code, out, err = run_cli("eval", GAP, "--x1", "x.npy", "--out", "K/", "--quiet",
                             "--backend", "numpy", cwd=tmp_path)
    assert code == 0 and out == "" and err == "", err
    assert np.load(tmp_path / "K" / "nngp.npy").shape == (7, 7)
    code, out, err = run_cli("eval", GAP, "--x1", "x.npy", "--out", "K/", "--backend", "numpy",
                             cwd=tmp_path)
    assert code == 0 and "K/: already done (verified, nothing recomputed)" in out, out
    code, out, err = run_cli("eval", GAP, "--x1", "x.npy", "--out", "K2/", "--backend", "numpy",
                             cwd=tmp_path)
    assert code == 0 and "wrote K2/" in out and "manifest.json" in out
    code, out, err = run_cli("eval", GAP, "--x1", "x.npy", "--x2", "x.npy", "--out", "S/",
                             "--backend", "numpy", cwd=tmp_path)
    assert code == 0, err
    manifest = json.loads((tmp_path / "S" / "manifest.json").read_text())
    assert manifest["identity"]["x2"] == "x1"            # x2 = x1: the upper triangle only
    np.save(tmp_path / "y.npy", _images(7, seed=5))
    code, out, err = run_cli("eval", GAP, "--x1", "y.npy", "--out", "K/", cwd=tmp_path)
    assert code == 2 and err.startswith("error: --out K/: holds a finished run of a different "
                                        "computation (the inputs x1 changed)"), err
    for args, message in [(["--out", "K.txt"], "expected K.npz (one file) or DIR/"),
                          (["--out", "nodir/K/"], "does not exist"),
                          (["--out", "K.npz", "--tile", "0"], "--tile 0: must be at least 1"),
                          (["--out", "K.npz", "--tile", "x"], "expected a whole number")]:
        code, out, err = run_cli("eval", GAP, "--x1", "x.npy", *args, cwd=tmp_path)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "K.npz").exists() and not (tmp_path / "K.npz.partial").exists()


def _wait_for_tiles(path, count, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path, "rb") as fh:
                if fh.read().count(b"\n") >= count:
                    return True
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("out", ["K/", "K.npz"])
def test_sigkill_and_resume_is_bit_identical(tmp_path, out):
    """A real run killed with SIGKILL mid-way resumes from its finished tiles and ends
    bit-identical to a run that was never interrupted."""
    x = _images(90, seed=3)
    np.save(tmp_path / "x.npy", x)
    args = [sys.executable, "-m", "infinet", "eval", str(GAP), "-D", "depth=3", "--x1", "x.npy",
            "--out", out, "--tile", "6", "--backend", "numpy"]
    work = tmp_path / ("K" if out == "K/" else "K.npz.partial")
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        started = _wait_for_tiles(work / "tiles.sha256", 8, proc)
        assert started, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["status"] == "running"
    tiles_total = manifest["grid"]["tiles"]
    done = (work / "tiles.sha256").read_bytes().count(b"\n")
    assert 8 <= done < tiles_total, "killed too late to test resuming"
    if out == "K.npz":
        assert not (tmp_path / "K.npz").exists()
    resumed = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming:" in resumed.stderr
    if out == "K/":
        got = {k: np.load(tmp_path / "K" / f"{k}.npy") for k in ("nngp", "ntk")}
        assert (tmp_path / "K" / "tiles.sha256").exists()
    else:
        with np.load(tmp_path / "K.npz") as f:
            got = {k: f[k] for k in ("nngp", "ntk")}
        assert not work.exists()
    # the uninterrupted run, in-process, on the same tile grid
    ex = infinet.compile(GAP, depth=3).executor("numpy")
    want = evaluate_tiled(ex, x, None, tile=6)
    assert np.array_equal(got["nngp"], want.nngp) and np.array_equal(got["ntk"], want.ntk)
