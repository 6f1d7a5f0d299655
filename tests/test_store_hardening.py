"""Resumable outputs under damage, kills, reuse, full disks and unwritable places.

Kill points are exercised deterministically: a forked child runs the evaluation with
``INFINET_KILLPOINT`` naming the point, kills itself there with SIGKILL (no cleanup runs),
and the parent resumes — the result must be bit-identical to an uninterrupted run and no
temporary file may be left.  Disk-full and permission errors are tested with
monkeypatched errors (always) and with a real tiny or read-only tmpfs (where this
machine can mount one in a private namespace: tests/tinyfs.py).
"""
from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import infinet
from infinet import jobs
from infinet.cli import main
from infinet.errors import DataError, UsageError
from infinet.runtime import atomic, dirstore, npzstore
from infinet.runtime.evaluate import evaluate_tiled
from infinet.runtime.killpoints import POINTS
from infinet.runtime.progress import Progress
from infinet.runtime.stores import StoreWarning
from infinet.runtime.tiles import TileGrid

from conftest import EXAMPLES, ROOT
from forked import run_forked
import tinyfs

GAP = EXAMPLES / "cnn_gap_small.net"
N, TILE = 10, 3                      # a 4 x 4 grid of tiles, 10 of them above the diagonal
TOTAL = N * (N + 1) // 2


def _images(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 1))


class Counting:
    """An executor that counts the pairs it computes and can stop after some calls."""

    def __init__(self, inner, stop_after=None):
        self.inner, self.stop_after = inner, stop_after
        self.plan, self.dtype, self.name = inner.plan, inner.dtype, inner.name
        self.pairs_done = self.calls = 0

    def self_variances(self, x):
        return self.inner.self_variances(x)

    def pairs(self, x1, x2, r, c, v1, v2):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.pairs_done += len(r)
        return self.inner.pairs(x1, x2, r, c, v1, v2)


@pytest.fixture(scope="module")
def gap():
    return infinet.compile(GAP, depth=2).executor("numpy")


@pytest.fixture(scope="module")
def want(gap):
    return evaluate_tiled(gap, _images(N), None, tile=TILE)


def _same(result, want) -> bool:
    return np.array_equal(result.nngp, want.nngp) and np.array_equal(result.ntk, want.ntk)


def _interrupted(gap, out, calls=4):
    with pytest.raises(KeyboardInterrupt):
        evaluate_tiled(Counting(gap, calls), _images(N), None, out=str(out), tile=TILE)


def _files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


def _tiles():
    return TileGrid(N, N, TILE, TILE, True).tiles()


# -- 3. damaged output directories ---------------------------------------------------------------

def _hit(tile, offsets):
    """Whether any of the byte ``offsets`` (into an array's data) lies where the tile writes."""
    for rows, cols, _ in tile.regions():
        for r in range(rows.start, rows.stop):
            lo, hi = (r * N + cols.start) * 8, (r * N + cols.stop) * 8
            if any(lo <= o < hi for o in offsets):
                return True
    return False


def test_a_truncated_partial_array_costs_only_the_tiles_it_lost(gap, want, tmp_path):
    out = tmp_path / "K"
    _interrupted(gap, out, calls=7)                   # 7 of 10 tiles done
    path = out / "nngp.partial.npy"
    header = np.load(path, mmap_mode="r").offset
    cut = header + 45 * 8                             # keep the first 45 entries
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    lost = [t for t in _tiles()[:7] if _hit(t, range(45 * 8, N * N * 8))]
    assert 0 < len(lost) < 7
    again = Counting(gap)
    with pytest.warns(StoreWarning) as caught:
        r = evaluate_tiled(again, _images(N), None, out=str(out))
    texts = [str(w.message) for w in caught]
    assert any("nngp.partial.npy is shorter than it should be" in t for t in texts), texts
    assert any(f"{len(lost)} of 7 finished tiles are damaged" in t for t in texts), texts
    assert again.pairs_done == TOTAL - sum(t.pairs for t in _tiles()[:7] if t not in lost)
    assert _same(r, want)


def test_flipped_bytes_in_a_finished_tile_are_detected(gap, want, tmp_path):
    out = tmp_path / "K"
    _interrupted(gap, out, calls=5)
    path = out / "ntk.partial.npy"
    offset = np.load(path, mmap_mode="r").offset
    entry = 1 * N + 4                                 # row 1, column 4: tile 1 (0..2 x 3..5)
    with open(path, "r+b") as fh:
        fh.seek(offset + entry * 8 + 3)
        byte = fh.read(1)
        fh.seek(offset + entry * 8 + 3)
        fh.write(bytes([byte[0] ^ 0x10]))
    again = Counting(gap)
    with pytest.warns(StoreWarning, match="1 of 5 finished tiles are damaged"):
        r = evaluate_tiled(again, _images(N), None, out=str(out))
    assert again.pairs_done == TOTAL - sum(t.pairs for t in _tiles()[:5]) + _tiles()[1].pairs
    assert _same(r, want)


@pytest.mark.parametrize("damage", ["flipped", "truncated", "missing", "no journal"])
def test_a_damaged_finished_directory_is_repaired_not_reported_done(gap, want, tmp_path, damage):
    out = tmp_path / "K"
    evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE)
    path = out / "nngp.npy"
    if damage == "flipped":                          # entry (9, 9): the last tile only
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) - 8)
    elif damage == "missing":
        path.unlink()
    else:
        (out / "tiles.sha256").unlink()
    again = Counting(gap)
    with pytest.warns(StoreWarning):
        r = evaluate_tiled(again, _images(N), None, out=str(out))
    assert again.pairs_done == (_tiles()[-1].pairs if damage in ("flipped", "truncated")
                                else TOTAL)
    assert _same(r, want)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert sorted(os.listdir(out)) == [".lock", "manifest.json", "nngp.npy", "ntk.npy",
                                       "tiles.sha256"]
    c = Counting(gap)                                 # repaired: now it is done
    assert _same(evaluate_tiled(c, _images(N), None, out=str(out)), want)
    assert c.pairs_done == 0


def test_a_damaged_npz_is_computed_again(gap, want, tmp_path):
    out = tmp_path / "K.npz"
    evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE)
    data = bytearray(out.read_bytes())
    with zipfile.ZipFile(out) as zf:
        info = zf.getinfo("ntk.npy")
    data[info.header_offset + 200] ^= 0x04             # inside ntk's values
    out.write_bytes(bytes(data))
    again = Counting(gap)
    with pytest.warns(StoreWarning, match="the finished results are damaged"):
        r = evaluate_tiled(again, _images(N), None, out=str(out), tile=TILE)
    assert again.pairs_done == TOTAL and _same(r, want)
    with np.load(out) as f:
        assert np.array_equal(f["ntk"], want.ntk)


def test_a_foreign_partial_array_names_its_dtype(gap, tmp_path):
    out = tmp_path / "K"
    _interrupted(gap, out)
    np.save(out / "nngp.partial.npy", np.zeros((N, N), np.float32))
    with pytest.raises(DataError, match=r"nngp.partial.npy holds float32 \(10, 10\), expected "
                                        r"float64 \(10, 10\)"):
        evaluate_tiled(gap, _images(N), None, out=str(out))


# -- 4. every kill point recovers ----------------------------------------------------------------

DIR_POINTS = ["write:manifest.json", "dir.manifest-written", "write:nngp.partial.npy",
              "write:ntk.partial.npy", "dir.tile-written@3", "dir.tile-recorded@3",
              "dir.finish-renamed-one", "dir.finish-renamed", "write:manifest.json@2"]
NPZ_POINTS = DIR_POINTS + ["write:K.npz", "npz.written", "npz.removing"]


def _killed_at(point, fn, *args):
    status, value = run_forked(fn, *args, env={"INFINET_KILLPOINT": point})
    assert status == -signal.SIGKILL, (point, status, value)


def _run(gap, out, **kw):
    evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE, **kw)


@pytest.mark.parametrize("out, point", [("K", p) for p in DIR_POINTS]
                         + [("K.npz", p) for p in NPZ_POINTS])
def test_every_kill_point_recovers(gap, want, tmp_path, out, point):
    assert point.split("@")[0] in POINTS or point.startswith("write:")
    path = tmp_path / out
    _killed_at(point, _run, gap, path)
    again = Counting(gap)
    r = evaluate_tiled(again, _images(N), None, out=str(path), tile=TILE)
    assert _same(r, want)
    recorded = {"dir.tile-written@3": 2, "dir.tile-recorded@3": 3}.get(point)
    if recorded is not None:                          # nothing finished is computed again
        assert again.pairs_done == TOTAL - sum(t.pairs for t in _tiles()[:recorded])
    elif point.startswith(("dir.finish", "write:manifest.json@2", "write:K.npz", "npz.")):
        assert again.pairs_done == 0
    if out == "K":
        assert _files(tmp_path) == ["K/.lock", "K/manifest.json", "K/nngp.npy", "K/ntk.npy",
                                    "K/tiles.sha256"]
    else:
        assert _files(tmp_path) == ["K.npz"]          # no K.npz.partial/, no orphan .tmp
        with np.load(path) as f:
            assert sorted(f.files) == ["nngp", "ntk"]


def test_kill_while_overwriting_and_while_repairing(gap, want, tmp_path):
    out = tmp_path / "K"
    other = infinet.compile(GAP, depth=3).executor("numpy")
    evaluate_tiled(other, _images(N), None, out=str(out), tile=TILE)
    _killed_at("dir.cleared", lambda: _run(gap, out, overwrite=True))
    assert _same(evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE), want)
    data = bytearray((out / "ntk.npy").read_bytes())
    data[-8] ^= 0x40
    (out / "ntk.npy").write_bytes(bytes(data))
    _killed_at("dir.reopened", _run, gap, out)     # (its warning is the child's)
    with pytest.warns(StoreWarning, match="1 of 10 finished tiles are damaged"):
        assert _same(evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE), want)


def test_cli_killed_while_writing_the_npz_leaves_no_orphan(tmp_path):
    np.save(tmp_path / "x.npy", _images(N))
    args = [sys.executable, "-m", "infinet", "eval", str(GAP), "-D", "depth=2", "--x1", "x.npy",
            "--out", "K.npz", "--tile", str(TILE), "--backend", "numpy", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), INFINET_KILLPOINT="write:K.npz")
    killed = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    orphans = [f for f in _files(tmp_path) if ".infinet-" in f]
    assert orphans and all(f.startswith("K.npz.partial/") for f in orphans), orphans
    env.pop("INFINET_KILLPOINT")
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _files(tmp_path) == ["K.npz", "x.npy"]
    ex = infinet.compile(GAP, depth=2).executor("numpy")
    want = evaluate_tiled(ex, _images(N), None, tile=TILE)
    with np.load(tmp_path / "K.npz") as f:
        assert np.array_equal(f["nngp"], want.nngp) and np.array_equal(f["ntk"], want.ntk)


# -- 5. a finished K.npz: reused after verifying it; a different computation refused --------------

def test_a_finished_npz_is_done_and_a_different_computation_refused(gap, want, tmp_path):
    out = tmp_path / "K.npz"
    first = evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE)
    assert first.pairs_computed == TOTAL
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.comment)
    assert manifest["identity"]["params"] == {"depth": 2}
    assert manifest["sha256"]["nngp"].startswith("sha256:")
    c = Counting(gap)
    again = evaluate_tiled(c, _images(N), None, out=str(out))
    assert c.pairs_done == 0 and again.pairs_computed == 0 and _same(again, want)
    mtime = out.stat().st_mtime_ns
    other = infinet.compile(GAP, depth=3).executor("numpy")
    for ex, x, words in [(other, _images(N), "the params changed"),
                         (gap, _images(N, seed=1), "the inputs x1 changed")]:
        with pytest.raises(DataError, match=rf"holds the finished result of a different "
                                            rf"computation \({words}\); refusing to overwrite it "
                                            rf"- use --overwrite"):
            evaluate_tiled(ex, x, None, out=str(out))
    assert out.stat().st_mtime_ns == mtime and not (tmp_path / "K.npz.partial").exists()
    replaced = evaluate_tiled(other, _images(N), None, out=str(out), overwrite=True)
    with np.load(out) as f:
        assert np.array_equal(f["ntk"], replaced.ntk) and not np.array_equal(f["ntk"], want.ntk)


def test_an_npz_infinet_did_not_write_is_refused_unless_overwrite(gap, want, tmp_path):
    out = tmp_path / "K.npz"
    np.savez(out, nngp=np.zeros((N, N)), ntk=np.zeros((N, N)))
    with pytest.raises(DataError, match="holds no infinet manifest"):
        evaluate_tiled(gap, _images(N), None, out=str(out))
    assert _same(evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE,
                                overwrite=True), want)


def test_overwrite_replaces_a_directory_of_another_computation(gap, want, tmp_path):
    out = tmp_path / "K"
    other = infinet.compile(GAP, depth=3).executor("numpy")
    _interrupted(other, out)
    with pytest.raises(DataError, match="use --overwrite to replace it"):
        evaluate_tiled(gap, _images(N), None, out=str(out))
    assert _same(evaluate_tiled(gap, _images(N), None, out=str(out), tile=TILE,
                                overwrite=True), want)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UsageError, match="holds no infinet manifest.json"):   # never deleted
        evaluate_tiled(gap, _images(N), None, out=str(tmp_path / "mine"), overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_cli_reports_done_and_refuses_without_overwrite(tmp_path, capsys):
    np.save(tmp_path / "x.npy", _images(N))
    np.save(tmp_path / "y.npy", _images(N, seed=4))
    base = ["eval", str(GAP), "-D", "depth=2", "--out", str(tmp_path / "K.npz"), "--backend",
            "numpy"]
    assert main(base + ["--x1", str(tmp_path / "x.npy")]) == 0
    assert "wrote " in capsys.readouterr().out
    assert main(base + ["--x1", str(tmp_path / "x.npy")]) == 0
    cap = capsys.readouterr()
    assert "K.npz: already done (verified, nothing recomputed)" in cap.out
    assert "eval: all 55 pairs already done" in cap.err
    assert main(base + ["--x1", str(tmp_path / "y.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and "(the inputs x1 changed); refusing to " \
        "overwrite it - use --overwrite to replace it" in err
    assert main(base + ["--x1", str(tmp_path / "y.npy"), "--overwrite", "-q"]) == 0


def test_a_verified_npz_cleans_up_a_half_removed_work_directory(gap, want, tmp_path):
    out = tmp_path / "K.npz"
    _killed_at("npz.removing", _run, gap, out)
    assert (tmp_path / "K.npz.partial" / "manifest.json").exists()
    c = Counting(gap)
    assert _same(evaluate_tiled(c, _images(N), None, out=str(out)), want) and c.pairs_done == 0
    assert _files(tmp_path) == ["K.npz"]


# -- 6. a full disk ------------------------------------------------------------------------------

def _enospc(*_args, **_kw):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _eval_cli(tmp_path, out, *extra):
    np.save(tmp_path / "x.npy", _images(N))
    return main(["eval", str(GAP), "-D", "depth=2", "--x1", str(tmp_path / "x.npy"), "--out", str(out),
                 "--tile", str(TILE), "--backend", "numpy", "-q", *extra])


def test_no_space_to_reserve_the_arrays(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(atomic.os, "posix_fallocate", _enospc)
    assert _eval_cli(tmp_path, tmp_path / "K") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path / 'K'}: no space left on device while "
                          f"creating nngp.partial.npy") and "\n" == err[-1]
    assert err.endswith("nothing finished is lost: free some space and run the same command "
                        "again to resume\n")
    assert "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("where", ["journal", "manifest", "npz"])
def test_no_space_while_running_loses_nothing_finished(gap, want, tmp_path, monkeypatch, capsys,
                                                       where):
    out = tmp_path / ("K.npz" if where == "npz" else "K")
    if where == "journal":                  # the 4th tile's journal line cannot be written
        real = os.write
        lines = []

        def write(fd, data):
            if data.startswith(b"tile "):
                lines.append(data)
                if len(lines) == 4:
                    return real(fd, data[:9]) and _enospc()     # a torn line, then ENOSPC
            return real(fd, data)
        monkeypatch.setattr(dirstore.os, "write", write)
    elif where == "manifest":               # the final manifest cannot be written
        real = dirstore.write_atomic
        monkeypatch.setattr(dirstore, "write_atomic", lambda p, d: _enospc() if
                            b'"complete"' in d else real(p, d))
    else:
        monkeypatch.setattr(npzstore, "write_npz_atomic", _enospc)
    assert _eval_cli(tmp_path, out) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no space left on device" in err, err
    assert "run the same command again to resume" in err
    monkeypatch.undo()
    c = Counting(gap)
    r = evaluate_tiled(c, _images(N), None, out=str(out), tile=TILE)
    assert _same(r, want)
    assert c.pairs_done == {"journal": TOTAL - sum(t.pairs for t in _tiles()[:3]),
                            "manifest": 0, "npz": 0}[where]


def _cli_script(args: str) -> str:
    return (f'cd "$0" && PYTHONPATH={ROOT} {sys.executable} -m infinet eval {GAP} -D depth=2 '
            f'{args} --backend numpy -q')


def test_a_real_full_disk(tmp_path):
    """A 64 KiB tmpfs: the arrays (2 x 78 KiB) do not fit.  Before space was reserved up
    front, writing through the memory map died of SIGBUS (exit 135)."""
    np.save(tmp_path / "x.npy", _images(100))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = tinyfs.mounted(mnt, _cli_script(f"--x1 {tmp_path}/x.npy --out K/"), size="64k")
    if argv is None:
        pytest.skip("cannot mount a tmpfs here (the monkeypatched tests above still ran)")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: --out K/: no space left on device"), proc.stderr


def test_a_real_disk_too_full_for_the_npz(tmp_path):
    """The tiles fit, the final K.npz does not: exit 2 with the tiles kept; with space
    freed the same command writes K.npz without computing anything again."""
    np.save(tmp_path / "x.npy", _images(100))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run = _cli_script(f"--x1 {tmp_path}/x.npy --out K.npz --tile 25")
    script = (f'head -c 204800 /dev/zero > "$0/filler" && ({run} 2> ../err1; echo $? > ../rc1; '
              f'ls -a "$0" "$0/K.npz.partial" > ../ls1); rm "$0/filler" && ({run} 2> ../err2; '
              f'echo $? > ../rc2; cp "$0/K.npz" ../K.npz; ls -a "$0" > ../ls2)')
    argv = tinyfs.mounted(mnt, script, size="512k")
    if argv is None:
        pytest.skip("cannot mount a tmpfs here (the monkeypatched tests above still ran)")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    read = lambda name: (tmp_path / name).read_text()  # noqa: E731
    assert read("rc1").strip() == "2", read("err1")
    assert read("err1").startswith("error: --out K.npz: no space left on device") \
        and "while writing K.npz" in read("err1")
    assert "tiles.sha256" in read("ls1") and "K.npz\n" not in read("ls1")
    assert read("rc2").strip() == "0", read("err2")
    assert "K.npz.partial" not in read("ls2") and ".infinet-" not in read("ls2")
    ex = infinet.compile(GAP, depth=2).executor("numpy")
    want = evaluate_tiled(ex, _images(100), None, tile=25)
    with np.load(tmp_path / "K.npz") as f:
        assert np.array_equal(f["nngp"], want.nngp) and np.array_equal(f["ntk"], want.ntk)


# -- 9. an output that cannot be written ---------------------------------------------------------

def test_an_unwritable_out_directory_is_an_error_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "K"
    out.mkdir()
    real = os.open

    def deny(path, *args, **kw):
        if os.fspath(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real(path, *args, **kw)
    monkeypatch.setattr(dirstore.os, "open", deny)
    assert _eval_cli(tmp_path, out) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --out {out}: cannot write here (Permission denied ({out}/.lock)); "
                   f"choose another output\n")


def test_a_real_unwritable_out_directory(tmp_path):
    np.save(tmp_path / "x.npy", _images(4))
    out = tmp_path / "ro"
    out.mkdir()
    script = _cli_script(f"--x1 {tmp_path}/x.npy --out $0")
    if os.geteuid() != 0:                     # permission bits bind a normal user
        os.chmod(out, 0o555)
        argv = ["sh", "-c", script, str(out)]
    else:                                     # root: a read-only file system
        argv = tinyfs.mounted(out, script, readonly=True)
        if argv is None:
            pytest.skip("root, and cannot mount a read-only tmpfs here")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    os.chmod(out, 0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: --out {out}: cannot write here (") \
        and "Traceback" not in proc.stderr, proc.stderr


# -- 10. the memory warning and Ctrl-C ------------------------------------------------------------

def test_one_pair_over_the_memory_limit_is_said(tmp_path, capsys):
    assert _eval_cli(tmp_path, tmp_path / "K.npz", "--max-memory", "64K") == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: one pair of net cnn_gap_small needs about 384 KiB of "
                          "working memory (float64, numpy), more than the memory limit of "
                          "64 KiB (--max-memory)"), err


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_ctrl_c_ends_the_bar_line_and_says_how_to_resume(gap, tmp_path, monkeypatch, capsys):
    tty = _Tty()
    monkeypatch.setattr(jobs, "make_progress", lambda label, quiet: Progress(label, stream=tty))
    out = str(tmp_path / "K.npz")
    with pytest.raises(jobs.Interrupted) as info:
        jobs.eval_to_output(Counting(gap, 3), _images(N), None, out, tile=TILE)
    assert tty.getvalue().endswith("\n") and "\r" in tty.getvalue()   # the bar's line ended
    assert info.value.hint == (f"the finished tiles are kept in {out}.partial/: run the same "
                               f"command again to resume")
    monkeypatch.setattr(jobs, "eval_to_output", lambda *a, **k: (_ for _ in ()).throw(
        jobs.Interrupted("HINT")))
    assert _eval_cli(tmp_path, out) == 130
    assert capsys.readouterr().err == "error: interrupted; HINT\n"


def test_a_real_ctrl_c_on_a_terminal(tmp_path):
    """SIGINT to `infinet eval` drawing its bar on a terminal: the error starts a new
    line and says how to resume; the same command then finishes the run."""
    import pty
    import select
    import time
    np.save(tmp_path / "x.npy", _images(60))
    args = [sys.executable, "-m", "infinet", "eval", str(GAP), "-D", "depth=3", "--x1", "x.npy",
            "--out", "K/", "--tile", "4", "--backend", "numpy"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="100")
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            journal = tmp_path / "K" / "tiles.sha256"
            if journal.exists() and journal.read_bytes().count(b"\n") >= 5:
                proc.send_signal(signal.SIGINT)
                break
            if select.select([master], [], [], 0.02)[0]:
                seen += os.read(master, 65536)
        proc.wait(timeout=60)
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = seen.decode("utf-8", "replace").replace("\r\n", "\n")
    assert proc.returncode == 130, text
    assert "\rerror: interrupted" not in text and "\nerror: interrupted; the finished tiles " \
        "are kept in K/: run the same command again to resume" in text, repr(text[-400:])
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "eval: resuming: " in done.stderr, done.stderr
